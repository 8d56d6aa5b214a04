"""Import a folder of posed RGB-D frames into the ScanNet layout, without labels.

Input::

    images/        colour images (any format OpenCV decodes), all of one size
    depth/         single-channel 16-bit depth PNGs, same file name (or stem + .png) as the colour
                   image, registered to it (same view, possibly another resolution); 0 = invalid
    poses file     one row-major flattened 4x4 camera-to-world (OpenCV axes) per line, frame order
    K file         3x3 (or 4x4) intrinsics of the colour images, pixels
    names file     optional: colour file names in frame order; default: natural order of images/

Output ``<scene_dir>/``: ``color/<i>.png`` (lossless), ``depth/<i>.png`` (uint16 millimetres),
``pose/<i>.txt``, ``intrinsic/intrinsic_color.txt`` and ``intrinsic_depth.txt`` (4x4, the depth
one scaled to the depth resolution) and ``frame_names.txt`` (source name of frame ``i`` on line
``i``), readable with ``open_scene("scannet", <parent>, <scene>, ...)``. Poses are written as
given: frames with invalid poses (inf/NaN, broken rotation) are kept and the reader drops them.
"""

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from jaxtyping import Float, Float64

from gsnerf.data.image_io import (
    MILLIMETRES_PER_METRE,
    read_depth_png,
    read_matrix_txt,
    read_pose_rows,
    read_rgb,
    read_text,
    size_of,
)
from gsnerf.data.pose_validity import pose_problem
from gsnerf.data.scene_reader import DatasetFormatError
from gsnerf.geometry.camera import scale_intrinsics

log = logging.getLogger(__name__)

_DIGITS = re.compile(r"(\d+)")
# Largest depth a uint16 millimetre PNG can hold.
_MAX_UINT16 = np.iinfo(np.uint16).max


@dataclass
class PosedRgbdSource:
    """Where the frames to import are."""

    # Folder of colour images.
    images: Path
    # Folder of 16-bit depth PNGs, one per colour image.
    depth: Path
    # Text file: one flattened 4x4 camera-to-world per line, in frame order.
    poses: Path
    # Text file: 3x3 (or 4x4) colour intrinsics in pixels.
    intrinsics: Path
    # Optional text file of colour file names in frame order (one per line).
    names: Path | None = None
    # Depth PNG units per metre: 1000 for millimetres (ScanNet), 5000 for TUM RGB-D.
    depth_units_per_metre: float = MILLIMETRES_PER_METRE


def _natural_key(name: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in _DIGITS.split(name)]


def frame_names(source: PosedRgbdSource) -> list[str]:
    """Colour file names in frame order: the names file, else natural order of the folder."""
    if source.names is not None:
        text = read_text(source.names, "text file of image names")
        names = [line.strip() for line in text.splitlines() if line.strip()]
    elif source.images.is_dir():
        names = sorted((p.name for p in source.images.iterdir() if p.is_file()), key=_natural_key)
    else:
        raise DatasetFormatError(f"{source.images}: image folder not found")
    if not names:
        raise DatasetFormatError(f"{source.names or source.images}: no frame listed")
    return names


def _depth_path(depth_dir: Path, name: str) -> Path:
    same_name = depth_dir / name
    return same_name if same_name.is_file() else depth_dir / f"{Path(name).stem}.png"


def _as_4x4(intrinsics: Float[np.ndarray, "3 3"]) -> Float64[np.ndarray, "4 4"]:
    matrix = np.eye(4)
    matrix[:3, :3] = intrinsics
    return matrix


def import_posed_rgbd(source: PosedRgbdSource, scene_dir: Path) -> int:
    """Write ``source`` into ``scene_dir`` in the ScanNet layout; returns the frame count.

    ``scene_dir`` must not exist or be empty. Every image is decoded (and so checked) on the way.
    """
    scene_dir = Path(scene_dir)
    if scene_dir.exists() and any(scene_dir.iterdir()):
        raise FileExistsError(f"{scene_dir}: output scene folder exists and is not empty")
    # Written beside the target and renamed at the end, so a failure leaves no half scene.
    partial = scene_dir.with_name(f"{scene_dir.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    count = _write_scene(source, partial)
    if scene_dir.exists():
        scene_dir.rmdir()
    partial.rename(scene_dir)
    log.info("imported %d frames into %s", count, scene_dir)
    return count


def _write_scene(source: PosedRgbdSource, scene_dir: Path) -> int:
    names = frame_names(source)
    poses = read_pose_rows(source.poses)
    if len(poses) != len(names):
        raise DatasetFormatError(
            f"{source.poses}: {len(poses)} poses for {len(names)} frames "
            f"(listed in {source.names or source.images}); expected one pose per frame"
        )
    intrinsics = read_matrix_txt(source.intrinsics, ((3, 3), (4, 4)))[:3, :3]
    for folder in ("color", "depth", "pose", "intrinsic"):
        (scene_dir / folder).mkdir(parents=True, exist_ok=True)

    color_size = depth_size = None
    for index, (name, pose) in enumerate(zip(names, poses)):
        rgb = read_rgb(source.images / name)
        depth_file = _depth_path(source.depth, name)
        # Raw stored values (units_per_metre = 1), converted to millimetres below.
        raw_depth = read_depth_png(depth_file, units_per_metre=1.0).astype(np.float64)
        if color_size is None:
            color_size, depth_size = size_of(rgb), size_of(raw_depth)
        if size_of(rgb) != color_size or size_of(raw_depth) != depth_size:
            raise DatasetFormatError(
                f"{source.images / name} / {depth_file}: size {size_of(rgb)} / "
                f"{size_of(raw_depth)} differs from the first frame's {color_size} / {depth_size}"
            )
        millimetres = raw_depth * (MILLIMETRES_PER_METRE / source.depth_units_per_metre)
        depth_mm = np.clip(np.round(millimetres), 0, _MAX_UINT16).astype(np.uint16)
        cv2.imwrite(str(scene_dir / "color" / f"{index}.png"), rgb[..., ::-1])
        cv2.imwrite(str(scene_dir / "depth" / f"{index}.png"), depth_mm)
        np.savetxt(scene_dir / "pose" / f"{index}.txt", pose, fmt="%.17g")

    depth_intrinsics = scale_intrinsics(torch.from_numpy(intrinsics), color_size, depth_size)
    np.savetxt(scene_dir / "intrinsic" / "intrinsic_color.txt", _as_4x4(intrinsics), fmt="%.17g")
    np.savetxt(
        scene_dir / "intrinsic" / "intrinsic_depth.txt",
        _as_4x4(depth_intrinsics.numpy()),
        fmt="%.17g",
    )
    (scene_dir / "frame_names.txt").write_text("".join(f"{name}\n" for name in names))
    problems = [(row, pose_problem(pose)) for row, pose in enumerate(poses)]
    invalid = [f"row {row}: {problem}" for row, problem in problems if problem is not None]
    if invalid:
        log.warning(
            "%s: %d pose(s) are invalid and readers drop their frames (%s)",
            source.poses,
            len(invalid),
            "; ".join(invalid[:5]) + (f" and {len(invalid) - 5} more" if len(invalid) > 5 else ""),
        )
    return len(names)
