#!/usr/bin/env bash
# tools/dist_train.sh CONFIG GPUS [train.py args...]: one training process per GPU through torchrun (NCCL on GPUs,
# gloo on a CPU-only machine, where GPUS is the number of processes). PORT sets the rendezvous port (default 29502,
# the seed's); NNODES, NODE_RANK and MASTER_ADDR run it over several nodes; PYTHON picks the interpreter.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG GPUS [--validate] [--work-dir DIR] [--cfg-options k=v ...]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON=${PYTHON:-python}
exec "$PYTHON" -m torch.distributed.run --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29502}" --nproc_per_node="$GPUS" \
    "$DIR/train.py" "$CONFIG" --launcher pytorch "${@:3}"
