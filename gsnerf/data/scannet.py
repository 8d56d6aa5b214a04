"""ScanNet v2 reader (SensReader export, spec 1.2); also reads the synthetic scenes and imports.

Expected tree::

    <root>/
      scannetv2-labels.combined.tsv      raw category id -> nyu40 id (needed only with label-filt/)
      <scene>/
        color/<i>.jpg (or .png)          RGB, 1296x968 in ScanNet
        depth/<i>.png                    uint16 millimetres, 0 = invalid; 640x480 in ScanNet
        label-filt/<i>.png               uint16 raw category ids (optional folder)
        pose/<i>.txt                     4x4 camera-to-world, OpenCV axes; -inf rows = invalid
        intrinsic/intrinsic_color.txt    4x4 (or 3x3); the top-left 3x3 is K of the colour image

Frame ids are the integer stems of ``color/``, sorted numerically (gaps are allowed). Frames whose
pose has inf or NaN entries are dropped and listed in ``dropped_frames`` (the dataset convention).
Depth and labels are resized onto the output grid with nearest neighbour and no registration
(spec 1.2, a Semantic-Ray convention); intrinsics are scaled per axis from the true size of the
decoded colour image, not from the reference's hard-coded 1296x972 (spec 7.5).
"""

import os
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Float64, Int64, Integer, UInt8
from torch import Tensor

from gsnerf.data.image_io import (
    FrameFiles,
    read_depth_png,
    read_label_png,
    read_matrix_txt,
    read_rgb,
    resize_nearest,
    resize_rgb,
    size_of,
)
from gsnerf.data.labels import (
    SCANNET_TSV_NAME,
    LabelMapping,
    LabelTable,
    read_scannet_tsv,
    scannet_class_names,
    scannet_table,
)
from gsnerf.data.scene_reader import (
    IGNORE_INDEX,
    DatasetFormatError,
    DroppedFrame,
    Frame,
    SceneBase,
    SceneInfo,
)
from gsnerf.geometry.camera import scale_intrinsics

COLOR_SUFFIXES = (".jpg", ".jpeg", ".png")
INVALID_POSE_REASON = "pose has inf/NaN entries"
# How many missing file names an error message lists before it only counts.
MAX_LISTED_FILES = 5


def list_color_frames(color_dir: Path) -> dict[int, Path]:
    """Frame id -> colour file for ``<i>.jpg|.jpeg|.png`` in ``color_dir``, ids ascending."""
    if not color_dir.is_dir():
        raise DatasetFormatError(f"{color_dir}: colour folder not found")
    frames: dict[int, Path] = {}
    for name in os.listdir(color_dir):
        path = color_dir / name
        if name.startswith(".") or path.suffix.lower() not in COLOR_SUFFIXES:
            continue
        if not path.stem.isdigit():
            raise DatasetFormatError(f"{path}: colour frames must be named <integer>.jpg or .png")
        frame_id = int(path.stem)
        if frame_id in frames:
            raise DatasetFormatError(f"{path}: frame {frame_id} also stored as {frames[frame_id]}")
        frames[frame_id] = path
    if not frames:
        raise DatasetFormatError(f"{color_dir}: no colour frame (<i>.jpg or <i>.png)")
    return dict(sorted(frames.items()))


def require_files(folder: Path, names: list[str], what: str) -> None:
    """Raise naming the files of ``names`` missing from ``folder`` (one directory listing)."""
    present = set(os.listdir(folder)) if folder.is_dir() else set()
    missing = [folder / name for name in names if name not in present]
    if missing:
        listed = ", ".join(str(path) for path in missing[:MAX_LISTED_FILES])
        extra = len(missing) - MAX_LISTED_FILES
        more = f" and {extra} more" if extra > 0 else ""
        raise DatasetFormatError(f"{len(missing)} {what} file(s) missing: {listed}{more}")


def read_intrinsics(path: Path) -> Float[Tensor, "3 3"]:
    """K (3x3, float32) from a 4x4 or 3x3 text matrix; focal lengths must be positive."""
    matrix = read_matrix_txt(path, ((4, 4), (3, 3)))[:3, :3]
    if not np.isfinite(matrix).all() or matrix[0, 0] <= 0 or matrix[1, 1] <= 0:
        raise DatasetFormatError(f"{path}: not a valid camera matrix:\n{matrix}")
    return torch.from_numpy(matrix).float()


def split_valid_poses(
    frame_ids: list[int], poses: list[Float64[np.ndarray, "4 4"]], paths: list[Path]
) -> tuple[list[int], Float[Tensor, "frames 4 4"], list[DroppedFrame]]:
    """Keep frames whose 4x4 pose is finite; the others become :class:`DroppedFrame` entries."""
    kept_ids, kept_poses, dropped = [], [], []
    for frame_id, pose, path in zip(frame_ids, poses, paths):
        if np.isfinite(pose).all():
            kept_ids.append(frame_id)
            kept_poses.append(pose)
        else:
            dropped.append(DroppedFrame(frame_id, path, INVALID_POSE_REASON))
    stacked = np.stack(kept_poses) if kept_poses else np.zeros((0, 4, 4))
    return kept_ids, torch.from_numpy(stacked).float(), dropped


def frame_tensors(
    rgb: UInt8[np.ndarray, "h w 3"],
    depth: Float[np.ndarray, "h w"],
    labels: Integer[np.ndarray, "h w"] | None,
) -> tuple[Float[Tensor, "3 h w"], Float[Tensor, "h w"], Int64[Tensor, "h w"] | None]:
    """uint8 RGB -> ``3 h w`` float in [0, 1]; depth and class ids to tensors."""
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255.0
    depth_tensor = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))
    label_tensor = None if labels is None else torch.from_numpy(labels.astype(np.int64))
    return image, depth_tensor, label_tensor


class ScanNetScene(SceneBase):
    """One ScanNet scene (tree in the module docstring) at ``image_size = (width, height)``."""

    def __init__(
        self,
        root: Path,
        scene_name: str,
        image_size: tuple[int, int],
        mapping: LabelMapping = LabelMapping.BENCHMARK,
    ) -> None:
        root = Path(root)
        self.scene_dir = root / scene_name
        if not self.scene_dir.is_dir():
            raise DatasetFormatError(f"{self.scene_dir}: scene folder not found")
        self._color = list_color_frames(self.scene_dir / "color")
        ids = list(self._color)
        self._depth_dir = self.scene_dir / "depth"
        pose_dir = self.scene_dir / "pose"
        require_files(self._depth_dir, [f"{i}.png" for i in ids], "depth")
        require_files(pose_dir, [f"{i}.txt" for i in ids], "pose")
        label_dir = self.scene_dir / "label-filt"
        self._label_dir = label_dir if label_dir.is_dir() else None
        self._labels: LabelTable | None = None
        if self._label_dir is not None:
            require_files(self._label_dir, [f"{i}.png" for i in ids], "label")
            raw_to_nyu40 = read_scannet_tsv(root / SCANNET_TSV_NAME)
            self._labels = scannet_table(raw_to_nyu40, LabelMapping(mapping))
        self._intrinsics = read_intrinsics(self.scene_dir / "intrinsic" / "intrinsic_color.txt")

        pose_paths = [pose_dir / f"{i}.txt" for i in ids]
        poses = [read_matrix_txt(path, ((4, 4),)) for path in pose_paths]
        frame_ids, cam_to_world, dropped = split_valid_poses(ids, poses, pose_paths)
        if not frame_ids:
            raise DatasetFormatError(
                f"{pose_dir}: all {len(ids)} frames have invalid (inf/NaN) poses"
            )
        info = SceneInfo(
            name=scene_name,
            frame_ids=frame_ids,
            cam_to_world=cam_to_world,
            class_names=list(scannet_class_names(LabelMapping(mapping))),
            ignore_index=IGNORE_INDEX,
            has_labels=self._labels is not None,
            dropped=dropped,
        )
        super().__init__(info, image_size)

    def frame_files(self, frame_id: int) -> FrameFiles:
        """Colour, depth and label files of a valid frame."""
        self._position_of(frame_id)
        labels = None if self._label_dir is None else self._label_dir / f"{frame_id}.png"
        return FrameFiles(self._color[frame_id], self._depth_dir / f"{frame_id}.png", labels)

    def read(self, frame_id: int) -> Frame:
        position = self._position_of(frame_id)
        files = self.frame_files(frame_id)
        rgb = read_rgb(files.color)
        native_size = size_of(rgb)
        depth = resize_nearest(read_depth_png(files.depth), self.image_size)
        labels = None
        if files.labels is not None and self._labels is not None:
            raw_ids = resize_nearest(read_label_png(files.labels), self.image_size)
            labels = self._labels.apply(raw_ids)
        image, depth_tensor, label_tensor = frame_tensors(
            resize_rgb(rgb, self.image_size), depth, labels
        )
        return Frame(
            image=image,
            depth=depth_tensor,
            labels=label_tensor,
            intrinsics=scale_intrinsics(self._intrinsics, native_size, self.image_size),
            cam_to_world=self.info.cam_to_world[position].clone(),
        )
