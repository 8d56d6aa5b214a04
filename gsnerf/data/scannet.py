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
pose has inf or NaN entries are dropped and listed in ``dropped_frames`` (the dataset convention);
so are frames with any other broken pose (:mod:`gsnerf.data.pose_validity`), and the drops are
logged once per scene. Depth and labels are resized onto the output grid with nearest neighbour
and no registration (spec 1.2, a Semantic-Ray convention); intrinsics are scaled per axis from the
true size of the decoded colour image, not from the reference's hard-coded 1296x972 (spec 7.5).
Colour, depth and label frames may differ in size from each other (ScanNet: 1296x968 colour,
640x480 depth), but every frame of one kind must have the size of that kind in the scene's first
frame: the one intrinsics file describes every colour frame.
"""

import os
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Int64, Integer, UInt8
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
    stored_size,
)
from gsnerf.data.labels import (
    SCANNET_TSV_NAME,
    LabelMapping,
    LabelTable,
    read_scannet_tsv,
    scannet_class_names,
    scannet_table,
)
from gsnerf.data.pose_validity import dropped_summary, log_dropped_frames, split_valid_poses
from gsnerf.data.scene_reader import (
    IGNORE_INDEX,
    DatasetFormatError,
    Frame,
    SceneBase,
    SceneInfo,
)
from gsnerf.geometry.camera import scale_intrinsics

COLOR_SUFFIXES = (".jpg", ".jpeg", ".png")
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
                f"{pose_dir}: every frame has an invalid pose "
                f"({dropped_summary(scene_name, len(ids), dropped)})"
            )
        log_dropped_frames(scene_name, len(ids), dropped)
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
        # Stored size of each kind of file of the first frame, from headers, read on first use.
        self._first_sizes: dict[str, tuple[Path, tuple[int, int]]] | None = None

    def _check_stored_sizes(self, stored: dict[str, tuple[Path, tuple[int, int]]]) -> None:
        """Raise if a frame's colour, depth or label file differs in size from the first frame's."""
        if self._first_sizes is None:
            first = self.frame_files(self.info.frame_ids[0])
            kinds = (("colour", first.color), ("depth", first.depth), ("label", first.labels))
            self._first_sizes = {
                kind: (path, stored_size(path)) for kind, path in kinds if path is not None
            }
        for kind, (path, size) in stored.items():
            first_path, first_size = self._first_sizes[kind]
            if size != first_size:
                raise DatasetFormatError(
                    f"{path}: {kind} frame is {size[0]}x{size[1]}, but the scene's first {kind} "
                    f"frame {first_path} is {first_size[0]}x{first_size[1]}; every {kind} frame "
                    "of a scene must have one size (the intrinsics describe one colour size)"
                )

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
        depth = read_depth_png(files.depth)
        stored = {"colour": (files.color, native_size), "depth": (files.depth, size_of(depth))}
        labels = None
        if files.labels is not None and self._labels is not None:
            raw_ids = read_label_png(files.labels)
            stored["label"] = (files.labels, size_of(raw_ids))
            labels = self._labels.apply(resize_nearest(raw_ids, self.image_size))
        # A frame stored at another size would be resized silently and get intrinsics meant for
        # the first frame's size.
        self._check_stored_sizes(stored)
        image, depth_tensor, label_tensor = frame_tensors(
            resize_rgb(rgb, self.image_size), resize_nearest(depth, self.image_size), labels
        )
        return Frame(
            image=image,
            depth=depth_tensor,
            labels=label_tensor,
            intrinsics=scale_intrinsics(self._intrinsics, native_size, self.image_size),
            cam_to_world=self.info.cam_to_world[position].clone(),
        )
