#!/usr/bin/env bash
# Print the test command shown in README.md (the line after the marker comment), so CI runs exactly it.
set -euo pipefail
cd "$(dirname "$0")/.."
awk '/<!-- test-command -->/{getline; getline; print; exit}' README.md
