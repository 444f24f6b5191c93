"""Resize every video of a tree to a given short side (aspect ratio kept, even sides) with ffmpeg.

``SRC_DIR`` is mirrored into ``DST_DIR``; each output is H.264 ``.mp4`` (same relative path, extension ``.mp4``),
video only. Outputs that exist and are newer than their source are skipped, so an interrupted run resumes; each
video is written under a temporary ``.part`` name and renamed when complete. ffmpeg is the system's if on PATH,
else the one of the ``imageio-ffmpeg`` package. Failures are listed at the end and make the exit status 1.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sts3d.data.prepare import (VIDEO_EXTENSIONS, PrepareError, find_ffmpeg, normalise_extensions, plan_resize,
                                resize_one, run_parallel)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("src_dir", type=Path, metavar="SRC_DIR")
    parser.add_argument("dst_dir", type=Path, metavar="DST_DIR")
    parser.add_argument("--short-side", type=int, default=320,
                        help="shorter side of the output, even (default: %(default)s, the seed's Kinetics-400)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="videos resized at once, one ffmpeg thread each (default: %(default)s)")
    parser.add_argument("--ext", nargs="+", default=[ext[1:] for ext in VIDEO_EXTENSIONS],
                        help="input extensions (default: %(default)s)")
    parser.add_argument("--crf", type=int, default=23, help="x264 quality, lower is better (default: %(default)s)")
    parser.add_argument("--preset", default="veryfast", help="x264 speed preset (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.short_side <= 0 or args.short_side % 2:
        parser.error(f"--short-side {args.short_side}: must be a positive even number (H.264 yuv420p)")
    try:
        ffmpeg = find_ffmpeg()
        plan = plan_resize(args.src_dir, args.dst_dir, normalise_extensions(args.ext))
    except PrepareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(plan.todo)} to resize, {plan.up_to_date} already done; ffmpeg: {ffmpeg}")
    reasons = run_parallel(
        lambda pair: resize_one(ffmpeg, pair[0], pair[1], args.short_side, args.crf, args.preset),
        plan.todo, args.jobs, desc="resize")
    failures = [(source, reason) for (source, _), reason in zip(plan.todo, reasons) if reason is not None]
    for source, reason in failures:
        print(f"{source}: {reason}", file=sys.stderr)
    print(f"{len(plan.todo) - len(failures)} resized, {plan.up_to_date} skipped, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
