#!/usr/bin/env bash
# Example: the paper-scale sweeps on a Slurm cluster, one job per (PE, context, lr, seed) point.
# Hydra's submitit launcher submits the jobs from the login node and waits for them; each job is
# a normal `stripes.train` run (resumes from last.ckpt when requeued; a finished run is skipped).
# Adapt partition/account/time to your cluster (or override any hydra.launcher.* key).
set -euo pipefail
cd "$(dirname "$0")/.."
PARTITION="${PARTITION:-gpu}"
ACCOUNT="${ACCOUNT:-}"
EXTRA=()
[ -n "$ACCOUNT" ] && EXTRA+=("hydra.launcher.account=$ACCOUNT")

for EXPERIMENT in table2 table3 fstripe_table1; do
  .venv/bin/python -m stripes.train -m profile=paper trainer=gpu experiment="$EXPERIMENT" \
    hydra/launcher=submitit_slurm hydra.launcher.partition="$PARTITION" \
    hydra.launcher.gpus_per_node=1 hydra.launcher.timeout_min=240 "${EXTRA[@]}" "$@"
done

# One multi-GPU / multi-node run with Lightning DDP (4 GPUs on each of 2 nodes):
#   .venv/bin/python -m stripes.train -m profile=paper trainer=ddp trainer.devices=4 trainer.num_nodes=2 \
#     pe=ropepool context=bin hydra/launcher=submitit_slurm hydra.launcher.nodes=2 \
#     hydra.launcher.tasks_per_node=4 hydra.launcher.gpus_per_node=4 hydra.launcher.partition="$PARTITION"
