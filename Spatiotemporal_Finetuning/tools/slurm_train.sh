#!/usr/bin/env bash
# tools/slurm_train.sh PARTITION JOB_NAME CONFIG GPUS [train.py args...]: train on a Slurm cluster with srun, one
# task per GPU. GPUS_PER_NODE (default 8), CPUS_PER_TASK (default 5), SRUN_ARGS and PORT (default 29502) adjust it;
# DRY_RUN=1 prints the srun command instead of running it.
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG GPUS [--validate] [--work-dir DIR] [--cfg-options k=v ...]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
GPUS=$4
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
PER_NODE=$(( GPUS < GPUS_PER_NODE ? GPUS : GPUS_PER_NODE ))
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON=${PYTHON:-python}
# shellcheck disable=SC2206  # SRUN_ARGS is a list of words by design
COMMAND=(srun -p "$PARTITION" --job-name="$JOB_NAME" --gres="gpu:$PER_NODE" --ntasks="$GPUS"
         --ntasks-per-node="$PER_NODE" --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 ${SRUN_ARGS:-}
         "$PYTHON" -u "$DIR/train.py" "$CONFIG" --launcher slurm "${@:5}")
if [ "${DRY_RUN:-0}" = 1 ]; then
    printf '%q ' "${COMMAND[@]}"
    echo
    exit 0
fi
export PORT=${PORT:-29502}
exec "${COMMAND[@]}"
