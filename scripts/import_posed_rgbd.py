"""Convert a folder of posed RGB-D frames into the ScanNet layout (no labels).

Example (the HoloLens sample of DeepVideoMVS)::

    python scripts/import_posed_rgbd.py --images hololens/images --depth hololens/depth \
        --poses hololens/poses.txt --intrinsics hololens/K.txt \
        --names hololens/subset_image_names.txt --output-root data/posed --scene hololens

Then evaluate with ``dataset=scannet dataset.root=data/posed``. Input formats: see
:mod:`gsnerf.data.posed_rgbd`.
"""

import argparse
import logging
from pathlib import Path

from gsnerf.data.image_io import MILLIMETRES_PER_METRE
from gsnerf.data.posed_rgbd import PosedRgbdSource, import_posed_rgbd


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, required=True, help="folder of colour images")
    parser.add_argument(
        "--depth", type=Path, required=True, help="folder of 16-bit depth PNGs (same names)"
    )
    parser.add_argument(
        "--poses", type=Path, required=True, help="one flattened 4x4 camera-to-world per line"
    )
    parser.add_argument("--intrinsics", type=Path, required=True, help="3x3 K text file")
    parser.add_argument("--names", type=Path, help="colour file names in pose order (optional)")
    parser.add_argument(
        "--depth-units-per-metre",
        type=float,
        default=MILLIMETRES_PER_METRE,
        help="depth PNG units per metre (1000 = millimetres, 5000 = TUM)",
    )
    parser.add_argument("--output-root", type=Path, required=True, help="dataset root to write")
    parser.add_argument("--scene", required=True, help="scene folder name under the root")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    source = PosedRgbdSource(
        images=args.images,
        depth=args.depth,
        poses=args.poses,
        intrinsics=args.intrinsics,
        names=args.names,
        depth_units_per_metre=args.depth_units_per_metre,
    )
    import_posed_rgbd(source, args.output_root / args.scene)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
