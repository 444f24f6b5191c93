#!/usr/bin/env python
"""Curves and training time from fine-tuning json logs (``work_dir/<stamp>.log.json``), as mmaction's tool.

    python tools/analysis/analyze_logs.py plot_curve LOG.json [LOG2.json ...] [--keys loss top1_acc]
        [--title T] [--legend L1 L2 ...] [--out curves.pdf]
    python tools/analysis/analyze_logs.py cal_train_time LOG.json [...] [--include-outliers]

``plot_curve`` draws each key of each log against the global iteration: the training rows (averages over each
logging window), and, for a key the validation rows hold too (``top1_acc``, ``mean_class_accuracy``), the
validation points at the end of their epochs. Without ``--out`` the figure opens in a window.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import sts3d  # noqa: F401  (installed with pip install -e .)
except ImportError:  # a checkout that was not installed: use the library beside this script
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from sts3d.engine.log_analysis import LogError, load_json_log, plot_curves, train_time


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    tasks = parser.add_subparsers(dest="task", required=True)
    plot = tasks.add_parser("plot_curve", help="plot logged keys against the iteration", allow_abbrev=False)
    plot.add_argument("json_logs", nargs="+", type=Path, help="json logs of fine-tuning runs")
    plot.add_argument("--keys", nargs="+", default=["top1_acc"], help="keys to plot (default: %(default)s)")
    plot.add_argument("--title", help="title of the figure")
    plot.add_argument("--legend", nargs="+", help="a name per (log, key), log-major (default: <log>_<key>)")
    plot.add_argument("--backend", help="matplotlib backend, e.g. Agg")
    plot.add_argument("--style", default="dark", help="plot style, a seaborn style name (default: %(default)s)")
    plot.add_argument("--out", type=Path, help="save the figure here (.png, .pdf, .svg) instead of showing it")
    timing = tasks.add_parser("cal_train_time", help="seconds per training iteration", allow_abbrev=False)
    timing.add_argument("json_logs", nargs="+", type=Path, help="json logs of fine-tuning runs")
    timing.add_argument("--include-outliers", action="store_true",
                        help="count each epoch's first row too (it holds the loader's start-up)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        logs = [load_json_log(path) for path in args.json_logs]
        if args.task == "cal_train_time":
            for rows in logs:
                print(f"-----Analyze train time of {rows.path}-----")
                print(train_time(rows, args.include_outliers).report() + "\n")
            return 0
        import matplotlib

        if args.backend:
            matplotlib.use(args.backend)
        elif args.out:
            matplotlib.use("Agg")  # saving needs no display
        import matplotlib.pyplot as plt

        figure = plot_curves(logs, args.keys, args.legend, args.title, args.style)
        if args.out:
            figure.savefig(args.out, bbox_inches="tight")
            print(f"save curve to: {args.out}")
        else:
            plt.show()
    except LogError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
