"""Two builds of the CPU kernels side by side: ``sts3d/csrc`` at a git commit (A) and in the working tree (B).

Each build is loaded as its own extension and swapped in as :mod:`sts3d.models.native`'s module, so the same
modules (the plain depthwise conv at ``impl='stencil'`` and the STS convs, faithful and aligned) run forward +
backward through A and B in turn, interleaved round by round in one process (the order alternates), median of
``--rounds`` rounds of ``--repeats`` calls. Layers: the depthwise conv shapes of X3D-S and ir-CSN-50 at the STS
benchmark's clip (batch 2, 8x128x128), those of ``--layers`` (``C,T,H,W,stride`` each), or with ``--networks``
whole backbones (STS off, faithful, aligned; the same clip, 32 frames for SlowFast). Prints milliseconds, the
ratios A / B of the medians (above 1: B is faster) and the paired estimate: the median over rounds of each round's
B / A (below 1: B is faster), steadier on a noisy machine since both builds of a round share its conditions. For a
kernel change: ``python bench/kernel_builds.py --base HEAD~1``.

    python bench/kernel_builds.py [--base HEAD] [--rounds 7] [--repeats 5] [--threads 2]
                                  [--layers 216,8,8,8,1 ... | --networks x3d_s ...]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from sts3d.models import create_backbone, native
from sts3d.models.depthwise import DepthwiseConv3d
from sts3d.models.sts import STSConv3d
from sts_overhead import clip_shape, step  # the STS benchmark's clips and step

LAYERS = [((54, 8, 32, 32), 1), ((108, 8, 16, 16), 1), ((216, 8, 8, 8), 1), ((432, 8, 4, 4), 1),
          ((54, 8, 64, 64), 2), ((108, 8, 32, 32), 2), ((216, 8, 16, 16), 2), ((432, 8, 8, 8), 2),
          ((64, 8, 32, 32), 1), ((128, 8, 16, 16), 1), ((256, 8, 8, 8), 1), ((512, 8, 4, 4), 1)]


def sources_at(commit: str, into: Path) -> list[Path]:
    """``sts3d/csrc``'s files of ``native._SOURCES`` as they are at ``commit`` (those it has), written to ``into``."""
    root = Path(native.__file__).resolve().parents[2]
    files = []
    for path in native._SOURCES:
        relative = path.relative_to(root).as_posix()
        shown = subprocess.run(["git", "show", f"{commit}:{relative}"], cwd=root, capture_output=True, text=True)
        if shown.returncode == 0:
            (into / path.name).write_text(shown.stdout)
            files.append(into / path.name)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD",
                        help="the git commit of build A (default HEAD: the last commit's kernels against your changes)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", nargs="+", metavar="C,T,H,W,STRIDE", type=parse_layer,
                        help="depthwise layer shapes (batch 2) instead of X3D-S's and ir-CSN-50's")
    parser.add_argument("--networks", nargs="+", help="whole backbones instead of the layers")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as old:
        commit = subprocess.run(["git", "rev-parse", "--short", args.base], capture_output=True, text=True,
                                check=True, cwd=Path(__file__).parent).stdout.strip()
        builds = {"A": native.compile_kernels(f"sts3d_kernels_{commit}", sources_at(commit, Path(old))),
                  "B": native.compile_kernels("sts3d_kernels_tree", native._SOURCES)}
    print(f"A = {commit}, B = working tree; threads={args.threads} rounds={args.rounds} repeats={args.repeats} "
          f"torch={torch.__version__} cpu={native.cpu_name()}")
    print("layer (C, T, H, W), stride | A ms: plain faithful aligned | B ms: plain faithful aligned | A / B | "
          "paired B / A")
    rows = {}
    if args.networks:
        for name in args.networks:
            models = {"plain": create_backbone(name, sts=False),
                      **{mode: create_backbone(name, sts=True, sts_mode=mode) for mode in ("faithful", "aligned")}}
            rows[name] = (models, torch.randn(2, *clip_shape(name, 8, 128)))
    else:
        layers = LAYERS
        if args.layers:
            layers = [(tuple(values[:4]), values[4]) for values in args.layers]
        for shape, stride in layers:
            c = shape[0]
            common = dict(stride=(1, stride, stride), padding=1, groups=c, bias=False)
            convs = {"plain": DepthwiseConv3d(c, c, 3, impl="stencil", **common),
                     **{mode: STSConv3d(c, c, 3, mode=mode, **common) for mode in ("faithful", "aligned")}}
            rows[f"{str(shape):<18} {stride}"] = (convs, torch.randn(2, *shape, requires_grad=True))
    for row, (runs, x) in rows.items():
        a, b, paired = compare(builds, runs, x, args.rounds, args.repeats)
        print(f"{row:<20} | " + " ".join(f"{t:7.2f}" for t in a) + " | " + " ".join(f"{t:7.2f}" for t in b) + " | "
              + " ".join(f"{x / y:5.2f}" for x, y in zip(a, b)) + " | " + " ".join(f"{r:5.3f}" for r in paired),
              flush=True)


def parse_layer(text: str) -> list[int]:
    """``'216,8,8,8,1'`` -> ``[216, 8, 8, 8, 1]`` (channels, frames, height, width, spatial stride)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 5 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected C,T,H,W,STRIDE (positive integers), got {text!r}")
    return values


def compare(builds: dict, runs: dict, x: torch.Tensor, rounds: int, repeats: int) -> tuple[list, list, list]:
    """Median ms of forward + backward of each module in ``runs`` on ``x``, through build A and build B in turn,
    and per module the median of the rounds' B / A."""
    times: dict = {(b, v): [] for b in builds for v in runs}
    for round_ in range(rounds):
        for b in sorted(builds, reverse=round_ % 2 == 1):
            native._built["module"] = builds[b]
            for v, module in runs.items():
                step(module, x)  # warm: plans and buffers of this build
                start = time.perf_counter()
                for _ in range(repeats):
                    step(module, x)
                times[(b, v)].append((time.perf_counter() - start) / repeats * 1e3)
    median = {key: statistics.median(values) for key, values in times.items()}
    paired = [statistics.median(b / a for a, b in zip(times[("A", v)], times[("B", v)])) for v in runs]
    return [median[("A", v)] for v in runs], [median[("B", v)] for v in runs], paired


if __name__ == "__main__":
    main()
