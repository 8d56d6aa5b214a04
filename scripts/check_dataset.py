"""Check a dataset tree before training; prints a per-scene report, exits 1 on errors.

    python scripts/check_dataset.py --kind scannet --root data/scannet
    python scripts/check_dataset.py --kind replica --root data/replica --scenes office_0/Sequence_1

What is checked: see :mod:`gsnerf.data.dataset_check`.
"""

import argparse
import logging
import sys
from pathlib import Path

from gsnerf.data import SCENE_KINDS
from gsnerf.data.dataset_check import DatasetCheckCfg, check_dataset, format_report

log = logging.getLogger("check_dataset")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = DatasetCheckCfg()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=SCENE_KINDS, required=True, help="dataset layout")
    parser.add_argument("--root", type=Path, required=True, help="dataset root folder")
    parser.add_argument("--scenes", nargs="+", help="scene names (default: every scene found)")
    parser.add_argument(
        "--min-median-depth",
        type=float,
        default=defaults.min_median_depth_m,
        help="metres; a smaller median valid depth is an error (wrong unit)",
    )
    parser.add_argument(
        "--max-median-depth",
        type=float,
        default=defaults.max_median_depth_m,
        help="metres; a larger median valid depth is an error (wrong unit)",
    )
    parser.add_argument("--max-listed", type=int, default=10, help="messages shown per scene")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    args = parse_args(argv)
    cfg = DatasetCheckCfg(
        min_median_depth_m=args.min_median_depth, max_median_depth_m=args.max_median_depth
    )
    reports = check_dataset(args.kind, args.root, args.scenes, cfg)
    log.info("%s", format_report(reports, args.max_listed))
    return 0 if all(report.ok for report in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())
