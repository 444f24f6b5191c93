#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md in one run on a lent GPU machine, inside a time budget: the correctness
# check first, then the benchmarks by priority (the CUDA kernels per layer and per step, STS on / off, the training
# switches, the loader, multi-view testing), each cut at what is left of the budget. Logs go to $OUT (default
# /tmp/sts3d-gpu), one file per part. Peak memory: bench/train_step.py --device cuda --memory --batches 8 16.
#
#   bash bench/gpu_run.sh [SECONDS [PART...]]   # default 540 s, all parts in the order below
#
# PARTs (check kernels depthwise depthwise_x3d depthwise_csn sts sts_layers train_x3d train_sf loader multiview
# graphs_x3d check_dispatch step_dispatch)
# pick and order the parts; a check that fails (not one cut at its time) switches the kernels off for the parts after
# it, except the per-layer one (which marks wrong results).
#
# A machine without our optional packages or ../shared: fill .gpu/ (ignored by git) beside it first, e.g.
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2010_x86_64 -d .gpu/whl decord
#   cp -r ../shared/bench-videos .gpu/ && mkdir -p .gpu/reference && cp -r ../shared/reference/outputs .gpu/reference/
# and send .gpu along; what is there is used.
set -u
budget=${1:-540}
shift $(($# > 0 ? 1 : 0))
parts=${*:-check kernels depthwise depthwise_x3d depthwise_csn sts sts_layers train_x3d train_sf loader multiview \
    graphs_x3d check_dispatch step_dispatch}
start=$SECONDS
out=${OUT:-/tmp/sts3d-gpu}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if compgen -G ".gpu/whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/sts3d-site .gpu/whl/*.whl \
        && export PYTHONPATH=$PYTHONPATH:/tmp/sts3d-site
fi
if [ -d .gpu/bench-videos ] && [ ! -d ../shared/bench-videos ]; then
    mkdir -p ../shared && cp -r .gpu/bench-videos ../shared/
fi
[ -d .gpu/reference ] && export STS3D_REFERENCE_DIR=$PWD/.gpu/reference

# part NAME SECONDS COMMAND...: run COMMAND for at most SECONDS (less if the budget runs short)
part() {
    local name=$1 limit=$2
    shift 2
    local left=$((budget - (SECONDS - start) - 5))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 10 ]; then
        echo "=== $name: skipped, the budget is spent"
        return 1
    fi
    echo "=== $name (at most ${limit}s, at $((SECONDS - start))s)"
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
    local status=${PIPESTATUS[0]}
    [ "$status" -eq 124 ] && echo "=== $name: cut at ${limit}s"
    return "$status"
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, triton, timm; print('torch', torch.__version__, 'triton', triton.__version__, 'timm', timm.__version__)" \
    | tee -a "$out/gpu.txt"
for name in $parts; do
    case $name in
        check)
            # every kernel per layer, then X3D-S whole (its depthwise convs run our kernels): 197 s on a fresh H200
            # in session 14, most of it Triton compiling (over 120 s for all six networks)
            part check 210 python3 bench/cuda_check.py --models x3d_s
            if [ $? -eq 1 ]; then  # a failed check, not one cut at its time (124)
                echo "=== the Triton kernels failed their check: the benchmarks after it run with them switched off"
                export STS3D_NO_EXTENSION=1
            fi ;;
        kernels) STS3D_NO_EXTENSION=0 part kernels 150 python3 bench/cuda_kernels.py \
            --variants interior interior_forward wgrad128w2 wgrad256w4 sts_faithful sts_aligned dispatch \
            sts_faithful_dispatch ;;
        # the kernels launched through Triton's dispatch on every call (STS3D_DIRECT_LAUNCH=0): checked, and the
        # host-bound step timed both ways
        check_dispatch) STS3D_DIRECT_LAUNCH=0 part check_dispatch 150 python3 bench/cuda_check.py --models x3d_s ;;
        step_dispatch) part step_dispatch 90 python3 bench/depthwise.py --device cuda --forms stencil stencil_dispatch \
            --models x3d_s --batch 8 --size 224 --rounds 9 --skip-layers ;;
        depthwise) part depthwise 75 python3 bench/depthwise.py --device cuda --forms stencil --batch 8 --size 224 \
            --rounds 9 --skip-layers ;;
        depthwise_x3d) part depthwise_x3d 60 python3 bench/depthwise.py --device cuda --forms stencil --models x3d_s \
            --batch 32 --frames 13 --size 160 --rounds 5 --skip-layers ;;  # the K400 config's batch and clip
        depthwise_csn) part depthwise_csn 70 python3 bench/depthwise.py --device cuda --forms stencil \
            --models csn50_ir --batch 8 --frames 32 --size 224 --rounds 3 --skip-layers ;;  # K400 clip, half its batch
        sts) part sts 100 python3 bench/sts_overhead.py --device cuda --batch 8 --size 224 --rounds 7 --instances 1 ;;
        sts_layers) part sts_layers 80 python3 bench/sts_layers.py --device cuda --batch 8 --size 224 --rounds 5 \
            --models r2plus1d34 slowfast50_4x16 x3d_s ;;
        train_x3d) part train_x3d 80 python3 bench/train_step.py --device cuda --models x3d_s --batch 32 --frames 13 \
            --size 160 --rounds 3 --switches channels_last bf16 ;;
        train_sf) part train_sf 70 python3 bench/train_step.py --device cuda --models slowfast50_8x8 --batch 16 \
            --size 224 --rounds 3 --switches channels_last bf16 ;;
        loader) part loader 60 python3 bench/loader_vs_model.py --device cuda --batch 16 --decoders decord --threads 8 ;;
        multiview) part multiview 40 python3 bench/multiview_test.py --device cuda ;;
        graphs_x3d) part graphs_x3d 200 python3 bench/train_step.py --device cuda --models x3d_s --batch 8 --size 224 \
            --rounds 3 --switches cudagraphs ;;  # the host-bound step (batch 8) with its launches replayed
        *) echo "=== unknown part $name" ;;
    esac
done
echo "=== done at $((SECONDS - start))s"
