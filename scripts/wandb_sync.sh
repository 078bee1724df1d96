#!/usr/bin/env bash
# `make wandb-sync`: upload every offline W&B run written by training/evaluation.
# Needs network and a W&B account (run `wandb login` once, or set WANDB_API_KEY).
# Usage: bash scripts/wandb_sync.sh [ROOT]    (default outputs: the runs and the summary runs)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="${1:-outputs}"
WANDB="${WANDB:-.venv/bin/wandb}"
command -v "$WANDB" >/dev/null 2>&1 || WANDB=wandb
# wandb/superseded/ holds the folders of killed attempts whose history a resumed attempt replayed
# (stripes/run_logs.py): one folder per run is uploaded, with the whole history.
mapfile -t RUNS < <(find "$ROOT" -type d -name superseded -prune -o -type d -name 'offline-run-*' -print \
                    2>/dev/null | sort)
if [ "${#RUNS[@]}" -eq 0 ]; then
  echo "wandb-sync: no offline W&B runs under $ROOT" >&2
  exit 0
fi
echo "wandb-sync: uploading ${#RUNS[@]} offline run(s) from $ROOT"
"$WANDB" sync --include-offline "${RUNS[@]}"
