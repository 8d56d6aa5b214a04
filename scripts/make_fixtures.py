"""Write the small real-data test fixture ``tests/fixtures/hololens_small/``.

It takes consecutive frames of the DeepVideoMVS HoloLens sample (MIT licence, 540x360 colour,
uint16 millimetre depth, camera-to-world poses, 3x3 K), downsizes colour with area averaging and
depth with nearest neighbour (no depth is blended across an edge), scales K to match
(``gsnerf.geometry.camera.scale_intrinsics``) and copies the poses and the licence::

    python scripts/make_fixtures.py --source /path/to/hololens_deep-video-mvs

The fixture keeps the source layout (images/, depth/, poses.txt, K.txt,
subset_image_names.txt), so tests run it through ``scripts/import_posed_rgbd.py``'s importer.
"""

import argparse
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import torch

from gsnerf.data.image_io import (
    read_matrix_txt,
    read_rgb,
    resize_nearest,
    resize_rgb,
    size_of,
)
from gsnerf.geometry.camera import scale_intrinsics

log = logging.getLogger(__name__)

LICENSE_NAME = "LICENSE.deep-video-mvs.txt"
NAMES_FILE = "subset_image_names.txt"
README = """# hololens_small

{count} consecutive frames of the DeepVideoMVS HoloLens sample (an office; every 12th frame of the
original sequence), downsized from 540x360 to {width}x{height} for tests of the posed RGB-D
importer and of multi-view geometry on real data. MIT licence: see `{license}`.

- `images/`: colour PNGs, area-averaged.
- `depth/`: uint16 PNGs in millimetres, 0 = invalid, nearest-neighbour downsized.
- `poses.txt`: one flattened row-major 4x4 camera-to-world (OpenCV axes) per line, in the order
  of `{names}`; copied unchanged.
- `K.txt`: the 3x3 intrinsics scaled to {width}x{height} with pixel centres kept aligned
  (`c' = (c + 0.5) s - 0.5`).

Made by `python scripts/make_fixtures.py --source <hololens_deep-video-mvs folder> --first {first}
--count {count}`.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    here = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="hololens_deep-video-mvs")
    parser.add_argument(
        "--output", type=Path, default=here / "tests" / "fixtures" / "hololens_small"
    )
    parser.add_argument("--first", type=int, default=0, help="first frame (index in the names)")
    parser.add_argument("--count", type=int, default=6, help="number of consecutive frames")
    parser.add_argument("--width", type=int, default=180, help="output width, pixels")
    parser.add_argument("--height", type=int, default=120, help="output height, pixels")
    return parser.parse_args(argv)


def make_hololens_small(
    source: Path, output: Path, first: int, count: int, size: tuple[int, int]
) -> None:
    """Write ``count`` frames from ``first`` of ``source`` into ``output`` at ``size``."""
    names = (source / NAMES_FILE).read_text().split()
    pose_lines = [line for line in (source / "poses.txt").read_text().splitlines() if line.strip()]
    chosen = range(first, first + count)
    if output.exists():
        shutil.rmtree(output)
    (output / "images").mkdir(parents=True)
    (output / "depth").mkdir()
    native_size = None
    for index in chosen:
        rgb = read_rgb(source / "images" / names[index])
        native_size = size_of(rgb)
        depth = cv2.imread(str(source / "depth" / names[index]), cv2.IMREAD_UNCHANGED)
        small_rgb = resize_rgb(rgb, size)
        cv2.imwrite(str(output / "images" / names[index]), small_rgb[..., ::-1])
        cv2.imwrite(str(output / "depth" / names[index]), resize_nearest(depth, size))
    intrinsics = torch.from_numpy(read_matrix_txt(source / "K.txt", ((3, 3),)))
    small_intrinsics = scale_intrinsics(intrinsics, native_size, size).numpy()
    np.savetxt(output / "K.txt", small_intrinsics, fmt="%.17g")
    (output / "poses.txt").write_text("".join(f"{pose_lines[i]}\n" for i in chosen))
    (output / NAMES_FILE).write_text("".join(f"{names[i]}\n" for i in chosen))
    shutil.copyfile(source / LICENSE_NAME, output / LICENSE_NAME)
    (output / "README.md").write_text(
        README.format(
            width=size[0],
            height=size[1],
            license=LICENSE_NAME,
            names=NAMES_FILE,
            first=first,
            count=count,
        )
    )
    total = sum(path.stat().st_size for path in output.rglob("*") if path.is_file())
    log.info("wrote %d frames to %s (%.0f kB)", count, output, total / 1024)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    make_hololens_small(args.source, args.output, args.first, args.count, (args.width, args.height))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
