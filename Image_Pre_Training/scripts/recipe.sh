# The seed's ImageNet recipe (RSB A2: LAMB, 300 epochs, RandAugment m7, Mixup 0.1 / CutMix 1.0, BCE, 3 repeated
# augmentations, 256 images per GPU) through torchrun; sourced by the per-model scripts, which name the model.
#
#   [DATA=...] [OUTPUT=...] bash scripts/<model>/distributed_train.sh [GPUS [DATA [OUTPUT]]] [train.py flags]
#   [DATA=...] [CHECKPOINT=...] bash scripts/<model>/distributed_eval.sh [GPUS [DATA [CHECKPOINT]]] [validate.py flags]
#
# GPUS defaults to 8. Flags after the positional arguments are appended, so they override the recipe's
# (e.g. --resume OUTPUT/EXPERIMENT/last.pth.tar). Environment: EXPERIMENT, PROJECT (wandb), TORCHRUN (default:
# torchrun), and NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT for several nodes.
set -euo pipefail

STAGE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Up to three leading arguments that are not flags go to POSITIONAL, the rest to EXTRA.
split_arguments() {
    POSITIONAL=()
    while [ $# -gt 0 ] && [ ${#POSITIONAL[@]} -lt 3 ] && [[ $1 != -* ]]; do
        POSITIONAL+=("$1")
        shift
    done
    EXTRA=("$@")
}

launch() {  # launch GPUS SCRIPT [ARGS...]
    local gpus=$1
    shift
    # TORCHRUN may hold several words (e.g. "python -m torch.distributed.run"): left unquoted on purpose
    ${TORCHRUN:-torchrun} --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
        --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-22234}" \
        --nproc_per_node="$gpus" "$@"
}

# pretrain MODEL EXPERIMENT DROP_PATH [GPUS [DATA [OUTPUT]]] [train.py flags]
pretrain() {
    local model=$1 experiment=$2 drop_path=$3
    shift 3
    split_arguments "$@"
    local gpus=${POSITIONAL[0]:-8} data=${POSITIONAL[1]:-${DATA:-}} output=${POSITIONAL[2]:-${OUTPUT:-}}
    if [ -z "$data" ] || [ -z "$output" ]; then
        echo "usage: [DATA=imagenet] [OUTPUT=dir] bash $0 [GPUS [DATA [OUTPUT]]] [train.py flags]" \
             "(DATA holds train/ and val/; runs go to OUTPUT/${EXPERIMENT:-$experiment})" >&2
        exit 2
    fi
    launch "$gpus" "$STAGE_DIR/train.py" "$data" --model "$model" --num-classes 1000 --val-split val \
        --batch-size 256 --opt lamb --weight-decay 0.02 --lr 5e-3 \
        --sched cosine --lr-cycle-decay 1.0 --warmup-epochs 5 --warmup-lr 5e-6 --epochs 300 --cooldown-epochs 0 \
        --aa rand-m7-mstd0.5-inc1 --color-jitter 0 --aug-repeats 3 --reprob 0 \
        --mixup 0.1 --cutmix 1.0 --smoothing 0 --bce-loss \
        --train-interpolation bicubic --crop-pct 0.95 --drop-path "$drop_path" \
        --amp --native-amp --workers 8 --seed 0 --pin-mem --log-interval 50 \
        --log-wandb --project "${PROJECT:-sts3d-image-pretraining}" \
        --experiment "${EXPERIMENT:-$experiment}" --output "$output" ${EXTRA[@]+"${EXTRA[@]}"}
}

# evaluate MODEL [GPUS [DATA [CHECKPOINT]]] [validate.py flags]: the training validation's crop (0.95)
evaluate() {
    local model=$1
    shift
    split_arguments "$@"
    local gpus=${POSITIONAL[0]:-8} data=${POSITIONAL[1]:-${DATA:-}} checkpoint=${POSITIONAL[2]:-${CHECKPOINT:-}}
    if [ -z "$data" ] || [ -z "$checkpoint" ]; then
        echo "usage: [DATA=imagenet] [CHECKPOINT=file] bash $0 [GPUS [DATA [CHECKPOINT]]] [validate.py flags]" \
             "(DATA holds val/)" >&2
        exit 2
    fi
    launch "$gpus" "$STAGE_DIR/validate.py" "$data" --model "$model" --checkpoint "$checkpoint" --val-split val \
        --batch-size 256 --workers 8 --pin-mem --crop-pct 0.95 ${EXTRA[@]+"${EXTRA[@]}"}
}
