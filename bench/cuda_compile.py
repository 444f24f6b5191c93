"""The CUDA depthwise kernels compiled for a GPU without one: static counts of their code, per kernel variant.

Triton compiles to PTX and a cubin on any machine; only running needs the GPU. For each variant the depthwise and
STS convs launch (forward and input gradient, per-frame and streaming, and the weight gradient; plain, faithful with
and without the single-wrap line taps, aligned) this prints the machine code's (SASS) instruction count, the PTX's
integer divisions and remainders by a runtime value (each becomes dozens of SASS instructions), and the registers
``ptxas`` gives a thread with its spills. A check to run on the CPU machine before a kernel change goes to the GPU;
the figures are static (instructions in the code, not executed per output). Frames are even-sized (the faithful
lines fill the strided map, as on every stride-2 layer of ir-CSN-50 and X3D-S at 224 x 224).

    python bench/cuda_compile.py [--arch 90] [--modes plain faithful aligned]
"""
from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from pathlib import Path

from sts3d.models import cuda_stencil

triton = cuda_stencil.triton  # None where PyTorch came without it (CPU-only wheels)

MODES = {"plain": cuda_stencil.PLAIN, "faithful": cuda_stencil.FAITHFUL, "aligned": cuda_stencil.ALIGNED}


def compiled(kernel, constants: dict, pointers: int, warps: int, arch: int) -> dict:
    """SASS and PTX counts and ``ptxas`` resource use of ``kernel`` with ``constants``; its first ``pointers`` arguments
    are float32 pointers, the other non-constant ones 32-bit integers (the layer sizes)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {name: "constexpr" if name in constants else "*fp32" if i < pointers else "i32"
                 for i, name in enumerate(kernel.arg_names)}
    binary = triton.compile(ASTSource(kernel, signature, constexprs=constants), target=GPUTarget("cuda", arch, 32),
                            options={"num_warps": warps})
    ptx = binary.asm["ptx"]
    stats = {"divisions": len(re.findall(r"\b(?:div|rem)\.[su]32", ptx))}
    tools = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    target = re.search(r"\.target\s+(sm_\w+)", ptx).group(1)  # e.g. sm_90a
    with tempfile.TemporaryDirectory() as folder:
        cubin = Path(folder) / "kernel.cubin"
        cubin.write_bytes(binary.asm["cubin"])
        sass = subprocess.run([str(tools / "cuobjdump"), "-sass", str(cubin)], capture_output=True, text=True).stdout
        source = Path(folder) / "kernel.ptx"
        source.write_text(ptx)
        report = subprocess.run([str(tools / "ptxas"), f"-arch={target}", "-v", str(source), "-o",
                                 str(Path(folder) / "again.cubin")], capture_output=True, text=True).stderr
    stats["instructions"] = len(re.findall(r"^\s+/\*[0-9a-f]{4}\*/\s+[A-Z@]", sass, re.MULTILINE))
    registers = re.search(r"Used (\d+) registers", report)
    spills = re.search(r"(\d+) bytes spill stores", report)
    stats["registers"] = int(registers.group(1)) if registers else -1
    stats["spill bytes"] = int(spills.group(1)) if spills else -1
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 (H100 / H200)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    args = parser.parse_args()
    if triton is None:
        print("triton is not installed here (it comes with PyTorch's CUDA wheels): nothing to compile")
        return
    print(f"triton {triton.__version__}, sm_{args.arch}; SASS instructions, PTX integer divisions / remainders by "
          f"runtime values, registers per thread, spilled bytes")
    print(f"{'kernel':<38}{'mode':<10}{'wraps':>6}{'S':>3}{'instructions':>14}{'divisions':>11}{'registers':>11}"
          f"{'spills':>8}")
    for mode_name in args.modes:
        mode = MODES[mode_name]
        for wraps in ((False, True) if mode == cuda_stencil.FAITHFUL else (False,)):
            rows = []
            for transposed in (False, True):
                direction = "input gradient" if transposed else "forward"
                for stride in (1, 2):
                    # the stride-2 input gradient by phase (as the kernels run it) and, to compare, with masked taps;
                    # at stride 1 also with the path for frames whose temporal taps all fall inside the clip (the
                    # kernel holds both paths: its count is their sum, its registers the more of the two)
                    variants = ((True, False), (False, False)) if transposed and stride == 2 else (
                        ((False, False), (False, True)) if stride == 1 else ((False, False),))
                    for phases, interior in variants:
                        flags = dict(FILLS=True, S=stride, MODE=mode, ONE_FRAME=False, TRANSPOSED=transposed,
                                     HAS_BIAS=False, WRAPS=wraps, PHASES=phases, INTERIOR=interior)
                        masked = ", masked" if transposed and stride == 2 and not phases else ""
                        masked += ", + inside" if interior else ""
                        rows.append((f"per frame, {direction}{masked}", stride, compiled(
                            cuda_stencil._conv_kernel, dict(KT=3, KH=3, KW=3, **flags, BH=4, BW=64), 4,
                            cuda_stencil._WARPS, args.arch)))
                flags = dict(FILLS=True, S=1, MODE=mode, ONE_FRAME=False, TRANSPOSED=transposed, HAS_BIAS=False,
                             WRAPS=wraps)
                rows.append((f"streaming, {direction}", 1, compiled(
                    cuda_stencil._stream_kernel, dict(**flags, BH=2, BW=64), 4, cuda_stencil._STREAM_WARPS,
                    args.arch)))
            for stride in (1, 2):
                rows.append(("weight gradient", stride, compiled(
                    cuda_stencil._weight_grad_kernel,
                    dict(FILLS=True, KT=3, KH=3, KW=3, S=stride, MODE=mode, WRAPS=wraps, TAPS=32,
                         BLOCK=cuda_stencil._WGRAD_BLOCK, STREAM=True), 3, cuda_stencil._WGRAD_WARPS, args.arch)))
            for name, stride, stats in rows:
                print(f"{name:<38}{mode_name:<10}{'yes' if wraps else 'no':>6}{stride:>3}{stats['instructions']:>14}"
                      f"{stats['divisions']:>11}{stats['registers']:>11}{stats['spill bytes']:>8}", flush=True)


if __name__ == "__main__":
    main()
