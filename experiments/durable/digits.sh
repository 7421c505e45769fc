#!/usr/bin/env bash
# Digits 7 and 8 on report seeds 0-9 with the shared measures (docs/durable.md), in the order of priority:
# retain-hat (selected), retain-hat (lr 1e-3, 300 updates), kick-hat, fill, uno-hat, salun, surgery-ascent.
# Each method runs both digits before the next starts, so a stopped run leaves whole methods; rerunning
# skips the runs already logged. WAIT_PID: a process (the retune) to wait for before the tuned picks
# that it may change (everything after the retain-hat rows). SEEDS: the report seeds of one pass
# (default 0-9; this session ran "0 1 2 3 4" first for lack of CPU time). One thread; run it with
# nohup and a log.
set -u
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 PYTHONPATH=python
read -r -a seeds <<< "${SEEDS:-0 1 2 3 4 5 6 7 8 9}"
study() { python experiments/durable/study.py --phase report --seeds "${seeds[@]}" "$@" || echo "study.py $* failed: rc=$?"; }
for d in 7 8; do study --digit "$d" --methods retain-hat; done
for d in 7 8; do study --digit "$d" --methods retain-hat --config "lr=0.001,steps=300"; done
if [ -n "${WAIT_PID:-}" ]; then while kill -0 "$WAIT_PID" 2>/dev/null; do sleep 20; done; fi
for m in kick-hat fill uno-hat salun surgery-ascent; do
  for d in 7 8; do study --digit "$d" --methods "$m"; done
done
echo "digits.sh done $(date -u +%FT%TZ)"
