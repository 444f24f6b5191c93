#!/usr/bin/env bash
# Session 16, GPU call 3: the streaming kernel in runs of frames (more programs on small frames), the stride-1 maps
# of 28x28 and smaller by it, then the X3D-S batch-8 step launched directly again (9 rounds).
set -u
out=${OUT:-/tmp/out}; mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 STS3D_REFERENCE_DIR=$PWD/.gpu/reference
start=$SECONDS
part() { local name=$1 limit=$2; shift 2; echo "=== $name (at most ${limit}s, at $((SECONDS - start))s)";
  timeout "$limit" "$@" 2>&1 | grep -v "Profiler clears events\|_warn_once" | tee "$out/$name.log"; echo "=== $name rc ${PIPESTATUS[0]}"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
part kernels_runs 190 python3 bench/cuda_kernels.py --variants stream_s1 stream_s1_runs2 stream_s1_runs4 stream_s1_t64 runs4
part step_direct2 50 python3 bench/depthwise.py --device cuda --forms stencil stencil_direct --models x3d_s --batch 8 \
  --size 224 --rounds 9 --skip-layers
echo "=== done at $((SECONDS - start))s"
