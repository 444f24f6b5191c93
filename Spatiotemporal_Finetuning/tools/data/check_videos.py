"""Try to decode every video of an annotation list (or a folder) and list the ones that fail.

Each video is opened with the training decoder and its first, middle and last frames are decoded. Failures are
printed as ``<list>:<line>: <video>: <reason>`` (folder mode: ``<video>: <reason>``), also written to ``--out``
if given; the exit status is 1 if any video failed.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sts3d.data.prepare import (VIDEO_EXTENSIONS, PrepareError, check_video, find_videos, normalise_extensions,
                                run_parallel)
from sts3d.data.video import DECODERS, AnnotationError, read_annotations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("target", type=Path, metavar="LIST_OR_FOLDER",
                        help="an annotation list (paths joined to --data-prefix) or a folder of videos")
    parser.add_argument("--data-prefix", type=Path, default=Path(""), help="folder the list's paths are under")
    parser.add_argument("--decoder", choices=sorted(DECODERS), default="decord",
                        help="decoder to check with (default: %(default)s, the training default)")
    parser.add_argument("--ext", nargs="+", default=[ext[1:] for ext in VIDEO_EXTENSIONS],
                        help="extensions of the videos in folder mode (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="videos checked at once")
    parser.add_argument("--out", type=Path, help="also write the failures to this file")
    args = parser.parse_args(argv)
    try:
        if args.target.is_dir():
            videos = [(path, str(path)) for path in find_videos(args.target, normalise_extensions(args.ext))]
        else:
            videos = [(record.path, f"{record.source}: {record.path}")
                      for record in read_annotations(args.target, args.data_prefix)]
    except (PrepareError, AnnotationError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    reasons = run_parallel(lambda video: check_video(video[0], args.decoder), videos, args.jobs, desc="check")
    failures = [f"{where}: {reason}" for (_, where), reason in zip(videos, reasons) if reason is not None]
    for line in failures:
        print(line)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("".join(f"{line}\n" for line in failures))
    print(f"{len(videos) - len(failures)} of {len(videos)} videos decode, {len(failures)} failed", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
