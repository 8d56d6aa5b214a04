"""Generate the built-in synthetic rooms (ScanNet layout) without starting a training run.

    python scripts/make_synthetic.py
    python scripts/make_synthetic.py --root data/synthetic --train 16 --test 4 --frames 80 \
        --width 160 --height 120 --seed 0

Scenes already generated with the same settings are skipped; see gsnerf.data.synthetic.
"""

import argparse
import logging
import sys
import time
from pathlib import Path

from gsnerf.data.synthetic import SyntheticCfg, generate_dataset

log = logging.getLogger("make_synthetic")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = SyntheticCfg()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        type=Path,
        default=Path("data/synthetic"),
        help="dataset folder (default: data/synthetic)",
    )
    parser.add_argument(
        "--train", type=int, default=defaults.num_train_scenes, help="training rooms"
    )
    parser.add_argument(
        "--test", type=int, default=defaults.num_test_scenes, help="held-out test rooms"
    )
    parser.add_argument(
        "--frames", type=int, default=defaults.frames_per_scene, help="frames per room"
    )
    parser.add_argument("--width", type=int, default=defaults.width, help="pixels")
    parser.add_argument("--height", type=int, default=defaults.height, help="pixels")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="dataset seed")
    parser.add_argument(
        "--workers", type=int, default=defaults.num_workers, help="parallel processes"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    args = parse_args(argv)
    cfg = SyntheticCfg(
        num_train_scenes=args.train,
        num_test_scenes=args.test,
        frames_per_scene=args.frames,
        width=args.width,
        height=args.height,
        seed=args.seed,
        num_workers=args.workers,
    )
    started = time.perf_counter()
    split = generate_dataset(cfg, args.root)
    log.info(
        "%s: %d training and %d test scenes ready in %.1f s",
        args.root,
        len(split.train),
        len(split.test),
        time.perf_counter() - started,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
