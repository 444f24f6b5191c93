"""Print params, GMACs and STS conv counts of the registered backbones at the seed's training clip shapes.

Usage: ``python -m sts3d.tools.flops_table [--sts-mode faithful|aligned] [--device meta|cpu] [NAME ...]``
"""
from __future__ import annotations

import argparse
import sys

from sts3d.flops import add_count_arguments, complexity_table, counted_what, format_table
from sts3d.models import list_backbones


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sts3d.tools.flops_table", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"backbones (default: all of {list_backbones()})")
    add_count_arguments(parser)
    args = parser.parse_args(argv)
    try:
        rows = complexity_table(args.names or None, sts_mode=args.sts_mode, device=args.device,
                                count_norm=not args.no_norm)
    except (KeyError, ValueError) as err:
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    counted = counted_what(args.no_norm)
    print(format_table(rows))
    print(f"\nBackbone only, batch 1, one view. GMACs = multiply-accumulates, what papers' tables call GFLOPs "
          f"({counted}).\n"
          "STS convs: convs that compute the STS convolution with sts=True; STS changes neither params nor MACs.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
