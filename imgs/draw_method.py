"""Draw ``imgs/method.png``: the two-stage method (left) and the STS channel split of one conv (right).

Usage: ``python imgs/draw_method.py [--out PATH]``. Pure matplotlib, no external images; the content follows spec
section 1 and ``docs/sts.md``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # a file is the only output; no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.patches import FancyBboxPatch, Rectangle  # noqa: E402

STATIC = "#f4a259"    # static / appearance half
DYNAMIC = "#5b8fd1"   # dynamic / motion half
TRAINED = "#6bb36b"   # kernel taps that get gradient in image pre-training
DECAYED = "#d0d0d0"   # taps only weight decay touches
NEUTRAL = "#f2f2f2"
INK = "#222222"


def box(ax: Axes, x: float, y: float, w: float, h: float, text: str = "", color: str = NEUTRAL,
        size: float = 9, weight: str = "normal", edge: str = INK, style: str = "-") -> None:
    """A rounded box with centred text; (x, y) is the lower-left corner."""
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.12", facecolor=color,
                                edgecolor=edge, linewidth=1.0, linestyle=style))
    if text:
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size, weight=weight, color=INK)


def arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], text: str = "", size: float = 8.5,
          offset: tuple[float, float] = (0.0, 0.12)) -> None:
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="-|>", color=INK, lw=1.2,
                                                          shrinkA=0, shrinkB=0))
    if text:
        ax.text((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1], text, ha="center",
                va="bottom", fontsize=size, color=INK)


def taps(ax: Axes, x: float, y: float, rows: int, cols: int, cell: float, color: str, hatch: str = "") -> None:
    """A ``rows x cols`` grid of kernel taps; (x, y) is the lower-left corner."""
    for r in range(rows):
        for c in range(cols):
            ax.add_patch(Rectangle((x + c * cell, y + r * cell), cell, cell, facecolor=color, edgecolor=INK,
                                   linewidth=0.6, hatch=hatch))


def kernel_3x3x3(ax: Axes, x: float, y: float, cell: float, colors: tuple[str, str, str],
                 hatches: tuple[str, str, str] = ("", "", "")) -> None:
    """Three 3x3 temporal slices t = 0, 1, 2, drawn back to front with a small offset."""
    for t in range(3):
        taps(ax, x + t * 1.2 * cell, y + t * 0.9 * cell, 3, 3, cell, colors[t], hatches[t])


def image_icon(ax: Axes, x: float, y: float, size: float) -> None:
    """A stylised photo: sky, hill, sun."""
    ax.add_patch(Rectangle((x, y), size, size, facecolor="#bfe0f5", edgecolor=INK, linewidth=1.0))
    ax.add_patch(Rectangle((x, y), size, size * 0.38, facecolor="#8cc46a", edgecolor="none"))
    ax.add_patch(plt.Circle((x + size * 0.72, y + size * 0.72), size * 0.12, facecolor="#f7d547",
                            edgecolor="none"))


def video_icon(ax: Axes, x: float, y: float, size: float, frames: int = 4) -> None:
    """A stack of frames, front frame last."""
    for k in reversed(range(frames)):
        image_icon(ax, x + k * 0.13 * size, y + k * 0.10 * size, size)


def legend_tap(ax: Axes, x: float, y: float, color: str, text: str, hatch: str = "") -> None:
    taps(ax, x, y - 0.07, 1, 1, 0.14, color, hatch)
    ax.text(x + 0.22, y, text, fontsize=8, va="center")


def draw_pipeline(ax: Axes) -> None:
    ax.set_xlim(0, 10)
    ax.set_ylim(-0.1, 6.2)
    ax.text(0.0, 6.05, "(a) Image pre-training, then spatiotemporal fine-tuning", fontsize=11.5, weight="bold",
            va="top")

    # Stage 1: ImageNet images as one-frame clips
    box(ax, 0.0, 3.15, 10.0, 2.45, color="#fbfbfb", edge="#999999", style="--")
    ax.text(0.15, 5.4, "Stage 1: pre-train the 3D CNN on ImageNet-1k images", fontsize=9.5, weight="bold",
            va="center")
    image_icon(ax, 0.45, 3.95, 0.95)
    ax.text(0.92, 3.85, "image = one-frame clip\nB×3×1×224×224", ha="center", va="top", fontsize=8)
    arrow(ax, (1.5, 4.42), (2.2, 4.42))
    box(ax, 2.2, 3.9, 1.9, 1.05, "3D CNN\n(3D kernels,\nk_t = 3)", size=8.5)
    arrow(ax, (4.1, 4.42), (4.6, 4.42))
    for t, (color, hatch) in enumerate(((DECAYED, "//"), (TRAINED, ""), (DECAYED, "//"))):
        taps(ax, 4.7 + t * 0.8, 4.12, 3, 3, 0.2, color, hatch)
        ax.text(5.0 + t * 0.8, 4.0, f"t = {t}", ha="center", va="top", fontsize=8)
    ax.text(7.15, 4.85, "centre slice (t = 1):\ngradient + weight decay", fontsize=8.5, va="center",
            color="#2e7d32")
    ax.text(7.15, 3.95, "outer slices (t = 0, 2):\nweight decay only; with T = 1\nthey meet only zero padding",
            fontsize=8.5, va="center", color="#555555")

    # the checkpoint carries over unchanged
    arrow(ax, (3.15, 3.15), (3.15, 2.45))
    ax.text(3.3, 2.8, "checkpoint → load_from, loaded as is (same names and shapes)", fontsize=8.5, va="center")

    # Stage 2: fine-tuning on videos with STS, multi-view test
    box(ax, 0.0, 0.0, 10.0, 2.45, color="#fbfbfb", edge="#999999", style="--")
    ax.text(0.15, 2.25, "Stage 2: fine-tune on videos (Kinetics-400 / Something-Something V2)", fontsize=9.5,
            weight="bold", va="center")
    video_icon(ax, 0.4, 0.75, 0.78)
    ax.text(0.92, 0.62, "video clip\nB×3×T×H×W", ha="center", va="top", fontsize=8)
    arrow(ax, (1.5, 1.2), (2.2, 1.2))
    box(ax, 2.2, 0.55, 3.4, 1.3, "same 3D CNN, STS convs\n(static | dynamic halves, (b))\nno new parameters, "
        "same FLOPs\nfine-tuned end to end", size=8.5)
    ax.add_patch(Rectangle((2.5, 0.63), 1.38, 0.09, facecolor=STATIC, edgecolor="none"))
    ax.add_patch(Rectangle((3.92, 0.63), 1.38, 0.09, facecolor=DYNAMIC, edgecolor="none"))
    arrow(ax, (5.6, 1.2), (6.3, 1.2))
    box(ax, 6.3, 0.45, 3.55, 1.5, "multi-view test\nK400: 10 clips × 3 crops\nSSv2: 1 clip × 3 crops\n"
        "softmax per view, then the mean", size=8.5)


def draw_sts(ax: Axes) -> None:
    ax.set_xlim(0, 10)
    ax.set_ylim(-0.1, 6.2)
    ax.text(0.0, 6.05, "(b) STS: a conv's output channels split in half, same weight W", fontsize=11.5,
            weight="bold", va="top")

    # depthwise 3x3x3 (ir-CSN, X3D)
    ax.text(0.0, 5.5, "Depthwise 3×3×3 conv (ir-CSN, X3D)", fontsize=9.5, weight="bold", va="center")
    box(ax, 0.0, 3.95, 1.3, 1.2, "input\nX[:, :C/2]", color="#fde7d1", edge=STATIC, size=8.5)
    box(ax, 0.0, 2.85, 1.3, 0.9, "input\nX[:, C/2:]", color="#dbe6f6", edge=DYNAMIC, size=8.5)

    # static half: per frame, the three temporal slices as spatial kernels
    arrow(ax, (1.3, 4.55), (1.75, 4.55))
    box(ax, 1.75, 3.85, 6.45, 1.4, color="#fde7d1", edge=STATIC)
    ax.text(1.85, 5.08, "static: first C/2 output channels, time as batch: (B·T) × C/2 × H × W", fontsize=8.5,
            va="center")
    taps(ax, 1.95, 4.0, 3, 3, 0.2, TRAINED)
    ax.text(2.65, 4.3, "W[:, :, 1]\n3×3 conv", fontsize=8, va="center")
    ax.text(3.75, 4.3, "+", fontsize=13, va="center", ha="center")
    taps(ax, 3.95, 4.3, 1, 9, 0.14, DECAYED, "//")
    ax.text(4.58, 4.2, "W[:, :, 0] as a\n1×9 line (width)", fontsize=8, va="top", ha="center")
    ax.text(5.5, 4.3, "+", fontsize=13, va="center", ha="center")
    taps(ax, 5.75, 3.92, 9, 1, 0.1, DECAYED, "//")
    ax.text(5.98, 4.38, "W[:, :, 2] as a\n9×1 line (height)", fontsize=8, va="center")

    # dynamic half: the ordinary 3D conv
    arrow(ax, (1.3, 3.3), (1.75, 3.3))
    box(ax, 1.75, 2.85, 6.45, 0.85, color="#dbe6f6", edge=DYNAMIC)
    ax.text(1.85, 3.5, "dynamic: last C/2 output channels: B × C/2 × T × H × W", fontsize=8.5, va="center")
    for t, (color, hatch) in enumerate(((DECAYED, "//"), (TRAINED, ""), (DECAYED, "//"))):
        taps(ax, 1.95 + t * 0.42, 2.93, 3, 3, 0.11, color, hatch)
    ax.text(3.3, 3.1, "W[:, :, 0..2]: an ordinary depthwise 3×3×3 conv", fontsize=8, va="center")

    # concatenation, then the conv's own norm and activation
    arrow(ax, (8.2, 4.55), (8.55, 4.15))
    arrow(ax, (8.2, 3.3), (8.55, 3.7))
    box(ax, 8.55, 3.35, 1.3, 1.15, "concat\n[static,\ndynamic]\n→ BN → ReLU", size=8)

    # dense 3x1x1 (SlowOnly, SlowFast, R(2+1)D)
    ax.text(0.0, 2.3, "Dense 3×1×1 conv (SlowOnly, SlowFast, R(2+1)D's conv_t)", fontsize=9.5, weight="bold",
            va="center")
    y, h = 1.0, 0.95
    colors, hatches = (DECAYED, TRAINED, DECAYED), ("//", "", "//")
    box(ax, 0.0, y, 2.4, h, color="#fde7d1", edge=STATIC)
    ax.text(1.2, y + 0.7, "width line 1×3, C/4", fontsize=8.5, ha="center", va="center")
    for k in range(3):
        taps(ax, 0.93 + k * 0.18, y + 0.2, 1, 1, 0.18, colors[k], hatches[k])
    box(ax, 2.5, y, 2.4, h, color="#fde7d1", edge=STATIC)
    ax.text(3.7, y + 0.7, "height line 3×1, C/4", fontsize=8.5, ha="center", va="center")
    for k in range(3):
        taps(ax, 3.61, y + 0.44 - k * 0.14, 1, 1, 0.14, colors[k], hatches[k])
    box(ax, 5.0, y, 4.85, h, color="#dbe6f6", edge=DYNAMIC)
    ax.text(7.42, y + 0.7, "temporal 3×1×1 conv, C/2: B × C/2 × T × H × W", fontsize=8.5, ha="center",
            va="center")
    for k in range(3):
        taps(ax, 7.0 + k * 0.25, y + 0.2, 1, 1, 0.18, colors[k], hatches[k])
    ax.text(7.8, y + 0.29, "along T", fontsize=8, va="center")
    ax.text(0.0, 0.68, "Output channels in this order. The input is not split: every filter reads all C_in channels,"
            "\nand its 3 temporal taps become the 3 taps of its line kernel.", fontsize=8, va="center")
    legend_tap(ax, 0.0, 0.18, TRAINED, "pre-trained centre taps")
    legend_tap(ax, 2.35, 0.18, DECAYED, "outer taps (weight decay only);  zero outer taps: STS = the per-frame "
               "2D conv", "//")


def draw(out: Path) -> None:
    fig = plt.figure(figsize=(14, 5))
    left = fig.add_axes((0.01, 0.03, 0.47, 0.94))
    right = fig.add_axes((0.515, 0.03, 0.47, 0.94))
    for ax in (left, right):
        ax.set_axis_off()
    draw_pipeline(left)
    draw_sts(right)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150, facecolor="white")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "method.png",
                        help="PNG to write (default: imgs/method.png)")
    args = parser.parse_args(argv)
    draw(args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
