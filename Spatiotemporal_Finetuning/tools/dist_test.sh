#!/usr/bin/env bash
# tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]: one test process per GPU through torchrun; every
# video is tested exactly once and the scores are gathered in dataset order. PORT sets the rendezvous port
# (default 29500, the seed's); NNODES, NODE_RANK and MASTER_ADDR as in dist_train.sh; PYTHON picks the interpreter.
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT GPUS [--eval top_k_accuracy mean_class_accuracy] [--out result.json]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON=${PYTHON:-python}
exec "$PYTHON" -m torch.distributed.run --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" --nproc_per_node="$GPUS" \
    "$DIR/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
