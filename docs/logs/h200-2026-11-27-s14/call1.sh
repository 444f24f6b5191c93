#!/usr/bin/env bash
# Session 14, GPU call 1: correctness after session 11's faithful index math, host-cost breakdown, STS per layer and
# whole network on ir-CSN-50 / X3D-S, X3D-S step wall vs GPU time.
set -u
out=${OUT:-/tmp/out}; mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 STS3D_REFERENCE_DIR=$PWD/.gpu/reference
start=$SECONDS
part() { local name=$1 limit=$2; shift 2; echo "=== $name (at most ${limit}s, at $((SECONDS - start))s)";
  timeout "$limit" "$@" 2>&1 | grep -v "Profiler clears events\|_warn_once" | tee "$out/$name.log"; echo "=== $name rc ${PIPESTATUS[0]}"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, triton, timm; print('torch', torch.__version__, 'triton', triton.__version__, 'timm', timm.__version__)" | tee -a "$out/gpu.txt"
git log -1 --format='commit %h %s' 2>/dev/null | tee -a "$out/gpu.txt"
part check 110 python3 bench/cuda_check.py --models x3d_s
part kernels 130 python3 bench/cuda_kernels.py --variants sts_faithful sts_aligned
part sts 90 python3 bench/sts_overhead.py --device cuda --batch 8 --size 224 --rounds 7 --instances 1 --models csn50_ir x3d_s
part step_x3d 45 python3 bench/depthwise.py --device cuda --forms stencil --models x3d_s --batch 8 --size 224 --rounds 5 --skip-layers
echo "=== done at $((SECONDS - start))s"
