#!/usr/bin/env bash
# The GAN grid of the durable study (experiments/durable/grid_gan.md): tuning on seeds 100-102, then each
# method's pick on seeds 0-9, two 1-thread table processes at a time; finished folders are skipped, so
# running it again resumes. Log: experiments/results/durable_gan/_logs/gan.log (one per table folder
# beside it); the runner's PID in gan.pid.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${UNO_CACHE_DIR:?set UNO_CACHE_DIR (the cached GAN, gan-retain and both judges)}"
PYTHONPATH=python "${PYTHON:-python}" -c "import torch, uno" 2>/dev/null ||
    { echo "gan.sh: no torch/uno: activate the venv (or set PYTHON)" >&2; exit 2; }
LOGS=experiments/results/durable_gan/_logs
mkdir -p "$LOGS"
OMP_NUM_THREADS=1 PYTHONPATH=python nohup "${PYTHON:-python}" experiments/durable/grid_gan.py run --jobs "${JOBS:-2}" \
    >> "$LOGS/gan.log" 2>&1 &
echo $! > "$LOGS/gan.pid"
echo "runner pid $(cat "$LOGS/gan.pid"), log $LOGS/gan.log"
