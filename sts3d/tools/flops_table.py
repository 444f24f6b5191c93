"""Print params, GMACs and STS conv counts of the registered backbones at the seed's training clip shapes.

Usage: ``python -m sts3d.tools.flops_table [--sts-mode faithful|aligned] [--device meta|cpu] [NAME ...]``
"""
from __future__ import annotations

import argparse
import sys

from sts3d.flops import complexity_table, format_table
from sts3d.models import list_backbones
from sts3d.models.sts import STS_MODES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sts3d.tools.flops_table", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"backbones (default: all of {list_backbones()})")
    parser.add_argument("--sts-mode", choices=STS_MODES, default="faithful", help="STS behaviour of the STS column")
    parser.add_argument("--device", default="meta",
                        help="where to run the count; 'meta' (default) does no arithmetic and allocates nothing")
    parser.add_argument("--no-norm", action="store_true",
                        help="count convs and matmuls only (by default batch norm is counted as fvcore counts it)")
    args = parser.parse_args(argv)
    try:
        rows = complexity_table(args.names or None, sts_mode=args.sts_mode, device=args.device,
                                count_norm=not args.no_norm)
    except (KeyError, ValueError) as err:
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    counted = "convs and matmuls only" if args.no_norm else "convs, matmuls and batch norm, as fvcore counts them"
    print(format_table(rows))
    print(f"\nBackbone only, batch 1, one view. GMACs = multiply-accumulates, what papers' tables call GFLOPs "
          f"({counted}).\n"
          "STS convs: convs that compute the STS convolution with sts=True; STS changes neither params nor MACs.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
