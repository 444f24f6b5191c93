"""Params and GMACs of a backbone, or of a config's recognizer, on one input clip.

Usage: ``python Spatiotemporal_Finetuning/tools/analysis/get_flops.py NAME [--shape ...] [--sts] [--sts-mode M]``
or, as the seed's, ``get_flops.py CONFIG [--shape ...]`` (backbone and head, STS as the config sets it).

``--shape`` takes ``N C T H W``, ``C T H W``, ``T H W``, ``H W`` or ``S`` (a square frame); missing values are
batch 1, 3 channels and the training clip length. Without ``--shape`` the training clip ``(1, 3, T, H, W)`` is
used (a config's: its training pipeline's frames and crop). GMACs are multiply-accumulates, what papers' tables
call GFLOPs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import sts3d  # noqa: F401  (installed with pip install -e .)
except ImportError:  # a checkout that was not installed: use the library beside this script
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from sts3d.flops import add_count_arguments, counted_what, measure, parse_shape, resolve_model
from sts3d.models import list_backbones


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", metavar="NAME_OR_CONFIG",
                        help=f"a backbone name ({', '.join(list_backbones())}) or a fine-tuning config file (.py)")
    parser.add_argument("--shape", type=int, nargs="+", metavar="N",
                        help="input shape: N C T H W | C T H W | T H W | H W | S (default: the training clip)")
    parser.add_argument("--sts", action="store_true", help="switch STS on, for a backbone name (a config sets it)")
    add_count_arguments(parser)
    args = parser.parse_args(argv)
    try:
        model, (t, h, w) = resolve_model(args.model, sts=args.sts, sts_mode=args.sts_mode, device=args.device)
        shape = parse_shape(args.shape, default_t=t) if args.shape else (1, 3, t, h, w)
        result = measure(model, shape, name=args.model, device=args.device, count_norm=not args.no_norm)
    except (KeyError, ValueError) as err:
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    config = args.model.endswith(".py")
    if config:
        print(f"Model: {result.name} (backbone and head), {result.sts_convs} STS convs")
    else:
        sts = f"on ({args.sts_mode}), {result.sts_convs} STS convs" if args.sts else "off"
        print(f"Model: {result.name} (backbone), STS {sts}")
    print(f"Input shape: {result.input_shape}")
    print(f"GMACs: {result.gmacs:.2f} (multiply-accumulates, what papers' tables call GFLOPs; "
          f"{counted_what(args.no_norm)})")
    print(f"Params: {result.params_m:.2f} M")
    return 0


if __name__ == "__main__":
    sys.exit(main())
