"""Writers of small dataset scenes in the real on-disk formats, quirks included.

Everything is written with OpenCV / numpy directly (not with gsnerf code), from the pattern
functions below, so tests recompute what a reader must return from those same patterns.
"""

import math
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

# The label table written beside ScanNet fixtures: (raw id, nyu40 id, raw name).
SCANNET_TSV_ROWS = (
    (1, 1, "wall"),
    (2, 5, "chair"),
    (3, 39, "otherfurniture"),
    (4, 40, "otherprop"),
    (7, 22, "ceiling"),
    (13, 7, "table"),
    (21, 28, "shower curtain"),
)
# Raw ids painted into ScanNet label maps: 99 and 1500 are not in the tsv.
SCANNET_RAW_IDS = (0, 1, 2, 3, 4, 7, 13, 21, 99, 1500)
# Class ids expected for SCANNET_RAW_IDS, worked out by hand from spec 1.4.
SCANNET_BENCHMARK_EXPECTED = (255, 0, 4, 19, 255, 255, 6, 15, 255, 255)
SCANNET_PAPER_EXPECTED = (19, 0, 4, 6, 19, 19, 6, 15, 19, 19)

# Replica class ids painted into label maps: 5 is unlisted, 150 is past the taxonomy.
REPLICA_RAW_IDS = (0, 12, 40, 93, 5, 97, 150)
REPLICA_BENCHMARK_EXPECTED = (255, 0, 6, 16, 255, 18, 255)
REPLICA_PAPER_EXPECTED = (6, 0, 6, 16, 6, 18, 6)

# Rectangle of invalid (0) depth: rows, columns as fractions of the depth map.
HOLE = (slice(0.1, 0.25), slice(0.2, 0.4))


def color_pattern(frame_id: int, size: tuple[int, int]) -> np.ndarray:
    """Random RGB (uint8, h w 3), seeded by the frame id."""
    width, height = size
    return np.random.default_rng(frame_id).integers(0, 256, (height, width, 3), dtype=np.uint8)


def depth_pattern_mm(frame_id: int, size: tuple[int, int]) -> np.ndarray:
    """uint16 millimetres: ``1000 + 7 row + 3 col + 100 frame``, with a rectangle of zeros."""
    width, height = size
    rows, cols = np.mgrid[0:height, 0:width]
    depth = (1000 + 7 * rows + 3 * cols + 100 * frame_id).astype(np.uint16)
    rs, cs = HOLE
    depth[
        int(rs.start * height) : int(rs.stop * height), int(cs.start * width) : int(cs.stop * width)
    ] = 0
    return depth


def label_pattern(ids: tuple[int, ...], size: tuple[int, int], dtype: type) -> np.ndarray:
    """Checkerboard-like stripes of ``ids``: pixel (r, c) holds ``ids[(r//8 + c//8) % n]``."""
    width, height = size
    rows, cols = np.mgrid[0:height, 0:width]
    return np.asarray(ids)[(rows // 8 + cols // 8) % len(ids)].astype(dtype)


def pose_pattern(frame_id: int) -> np.ndarray:
    """Camera-to-world of frame k: 5k degrees about y, translation k (0.1, 0.02, -0.05)."""
    angle = math.radians(5.0 * frame_id)
    pose = np.eye(4)
    pose[:3, :3] = [
        [math.cos(angle), 0.0, math.sin(angle)],
        [0.0, 1.0, 0.0],
        [-math.sin(angle), 0.0, math.cos(angle)],
    ]
    pose[:3, 3] = [0.1 * frame_id, 0.02 * frame_id, -0.05 * frame_id]
    return pose


def scannet_intrinsics(size: tuple[int, int]) -> np.ndarray:
    """A ScanNet-like colour K for ``size``: fx 0.9 W, fy 0.9 W + 1, centre slightly off."""
    width, height = size
    return np.array(
        [[0.9 * width, 0.0, width / 2 - 0.3], [0.0, 0.9 * width + 1.0, height / 2 + 0.4], [0, 0, 1]]
    )


def write_tsv(root: Path) -> Path:
    """``scannetv2-labels.combined.tsv`` with its columns in a non-standard order."""
    path = root / "scannetv2-labels.combined.tsv"
    lines = ["raw_category\tnyu40id\tcategory\tcount\tid"]
    lines += [f"{name}\t{nyu}\t{name}\t10\t{raw}" for raw, nyu, name in SCANNET_TSV_ROWS]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_scannet_scene(
    root: Path,
    name: str = "scene0000_00",
    frame_ids: tuple[int, ...] = (0, 1, 2, 3, 10),
    color_size: tuple[int, int] = (324, 242),
    depth_size: tuple[int, int] = (160, 120),
    invalid_pose_ids: tuple[int, ...] = (2,),
    with_labels: bool = True,
    color_ext: str = ".png",
) -> Path:
    """A ScanNet scene (SensReader layout) plus the tsv; returns the scene folder."""
    scene = root / name
    for folder in ("color", "depth", "pose", "intrinsic") + (
        ("label-filt",) if with_labels else ()
    ):
        (scene / folder).mkdir(parents=True, exist_ok=True)
    if with_labels:
        write_tsv(root)
    k4 = np.eye(4)
    k4[:3, :3] = scannet_intrinsics(color_size)
    np.savetxt(scene / "intrinsic" / "intrinsic_color.txt", k4, fmt="%f")
    for frame_id in frame_ids:
        rgb = color_pattern(frame_id, color_size)
        cv2.imwrite(str(scene / "color" / f"{frame_id}{color_ext}"), rgb[..., ::-1])
        cv2.imwrite(
            str(scene / "depth" / f"{frame_id}.png"), depth_pattern_mm(frame_id, depth_size)
        )
        pose = np.full((4, 4), -np.inf) if frame_id in invalid_pose_ids else pose_pattern(frame_id)
        np.savetxt(scene / "pose" / f"{frame_id}.txt", pose, fmt="%f")
        if with_labels:
            labels = label_pattern(SCANNET_RAW_IDS, color_size, np.uint16)
            cv2.imwrite(str(scene / "label-filt" / f"{frame_id}.png"), labels)
    return scene


def write_replica_scene(
    root: Path,
    name: str = "office_0/Sequence_1",
    num_frames: int = 11,
    size: tuple[int, int] = (64, 48),
    with_labels: bool = True,
) -> Path:
    """A Semantic-NeRF Replica sequence; pose row k translates by (0.1 k, ...); returns it."""
    scene = root / name
    for folder in ("rgb", "depth") + (("semantic_class",) if with_labels else ()):
        (scene / folder).mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(num_frames):
        cv2.imwrite(str(scene / "rgb" / f"rgb_{k}.png"), color_pattern(k, size)[..., ::-1])
        cv2.imwrite(str(scene / "depth" / f"depth_{k}.png"), depth_pattern_mm(k, size))
        if with_labels:
            labels = label_pattern(REPLICA_RAW_IDS, size, np.uint8)
            cv2.imwrite(str(scene / "semantic_class" / f"semantic_class_{k}.png"), labels)
        rows.append(" ".join(f"{value:.10f}" for value in pose_pattern(k).reshape(-1)))
    (scene / "traj_w_c.txt").write_text("\n".join(rows) + "\n")
    return scene


def nearest_source_index(out_count: int, src_count: int) -> np.ndarray:
    """Source index read by each output index under centre-aligned nearest resizing.

    Output pixel i covers [i, i + 1) * src / out; its centre (i + 0.5) * src / out falls in
    source pixel floor of that, computed here with fractions to stay exact at ties.
    """
    return np.array(
        [math.floor(Fraction(2 * i + 1, 2) * src_count / out_count) for i in range(out_count)]
    )


def resize_nearest_reference(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre-aligned nearest resize with numpy indexing (independent of OpenCV)."""
    width, height = size
    rows = nearest_source_index(height, image.shape[0])
    cols = nearest_source_index(width, image.shape[1])
    return image[rows][:, cols]
