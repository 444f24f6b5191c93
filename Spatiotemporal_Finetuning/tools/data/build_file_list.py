"""Build train / val annotation lists (``relative/path/video.ext <int label>`` per line) for video fine-tuning.

Two sources:

* ``folders ROOT``: a folder-per-class tree, ``ROOT/<split>/<class name>/<video>`` (the Kinetics layout). Label ids
  are the class folders of the first split in alphabetical order, written to ``label_map.txt`` (one name per
  line, in id order); ``--label-map`` gives an existing map instead, so another split gets the same ids.
* ``sthv2 ANNO_DIR --video-dir DIR``: the Something-Something V2 json files in ``ANNO_DIR``
  (``something-something-v2-{labels,train,validation}.json``); the class of a video is its template without the
  square brackets, its file ``<id>.webm``.

Lists go to ``--out-dir`` as ``<split>.txt`` (SSv2: ``train.txt`` and ``val.txt``) unless ``--list-names`` names
them (e.g. the seed configs' ``train_new.txt val_new.txt``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sts3d.data.prepare import (SSV2_FILES, VIDEO_EXTENSIONS, PrepareError, class_folders, normalise_extensions,
                                read_label_map, read_ssv2_labels, read_ssv2_split, scan_class_tree, split_missing,
                                write_label_map, write_list)


def list_names(args: argparse.Namespace, splits: list[str]) -> list[str]:
    """The file name of each split's list: ``--list-names`` if given, else ``<split>.txt``."""
    if args.list_names is None:
        return [f"{split}.txt" for split in splits]
    if len(args.list_names) != len(splits):
        raise PrepareError(f"--list-names: {len(args.list_names)} names for {len(splits)} splits ({' '.join(splits)})")
    return args.list_names


def build_from_folders(args: argparse.Namespace) -> None:
    root: Path = args.root
    out_dir: Path = args.out_dir or root
    names = list_names(args, args.splits)
    extensions = normalise_extensions(args.ext)
    if args.label_map:
        classes = read_label_map(args.label_map)
    else:
        classes = class_folders(root / args.splits[0])
        write_label_map(out_dir / "label_map.txt", classes)
        print(f"{out_dir / 'label_map.txt'}: {len(classes)} classes from {root / args.splits[0]}")
    for split, name in zip(args.splits, names):
        split_dir = root / split
        relative_to = root if args.relative_to == "root" else split_dir
        count = write_list(out_dir / name, scan_class_tree(split_dir, classes, extensions, relative_to))
        print(f"{out_dir / name}: {count} videos (data_prefix {relative_to})")


def build_from_sthv2(args: argparse.Namespace) -> None:
    out_dir: Path = args.out_dir or args.anno_dir
    names = list_names(args, ["train", "val"])
    classes = read_ssv2_labels(args.anno_dir / SSV2_FILES["labels"])
    write_label_map(out_dir / "label_map.txt", classes)
    extension = normalise_extensions([args.ext])[0]
    for split, name in zip(("train", "val"), names):
        entries = read_ssv2_split(args.anno_dir / SSV2_FILES[split], classes, extension)
        present, missing = split_missing(entries, args.video_dir)
        if entries and not present and args.missing == "skip":
            raise PrepareError(f"{args.video_dir}: none of the {len(entries)} videos of {SSV2_FILES[split]} is there "
                               f"(wrong --video-dir? --missing keep lists them anyway)")
        if missing:
            action = "left out" if args.missing == "skip" else "kept"
            print(f"warning: {split}: {len(missing)} of {len(entries)} videos not found in {args.video_dir} "
                  f"({action}), e.g. {missing[0].path}", file=sys.stderr)
        count = write_list(out_dir / name, present if args.missing == "skip" else entries)
        print(f"{out_dir / name}: {count} videos (data_prefix {args.video_dir})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    sources = parser.add_subparsers(dest="source", required=True)

    folders = sources.add_parser("folders", help="a ROOT/<split>/<class>/<video> tree (Kinetics)")
    folders.add_argument("root", type=Path, metavar="ROOT")
    folders.add_argument("--splits", nargs="+", default=["train", "val"],
                         help="split folders under ROOT; the first one defines the label map (default: train val)")
    folders.add_argument("--label-map", type=Path, metavar="FILE",
                         help="use this label map (one class name per line) instead of deriving one")
    folders.add_argument("--ext", nargs="+", default=[ext[1:] for ext in VIDEO_EXTENSIONS],
                         help="video extensions to list (default: %(default)s)")
    folders.add_argument("--relative-to", choices=["split", "root"], default="split",
                         help="list paths relative to ROOT/<split> (the data_prefix of that split; default) or ROOT")
    folders.add_argument("--out-dir", type=Path, help="where the lists go (default: ROOT)")
    folders.add_argument("--list-names", nargs="+", metavar="NAME", help="file names of the lists, one per split")
    folders.set_defaults(build=build_from_folders)

    sthv2 = sources.add_parser("sthv2", help="the Something-Something V2 json label files")
    sthv2.add_argument("anno_dir", type=Path, metavar="ANNO_DIR",
                       help=f"folder holding {', '.join(SSV2_FILES.values())}")
    sthv2.add_argument("--video-dir", type=Path, required=True, help="folder of <id>.webm (the data_prefix)")
    sthv2.add_argument("--ext", default="webm", help="video extension (default: %(default)s)")
    sthv2.add_argument("--missing", choices=["skip", "keep"], default="skip",
                       help="videos not in --video-dir: leave them out (default) or keep them; both warn with a count")
    sthv2.add_argument("--out-dir", type=Path, help="where the lists go (default: ANNO_DIR)")
    sthv2.add_argument("--list-names", nargs=2, metavar=("TRAIN", "VAL"),
                       help="file names of the two lists (default: train.txt val.txt)")
    sthv2.set_defaults(build=build_from_sthv2)

    args = parser.parse_args(argv)
    try:
        args.build(args)
    except PrepareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
