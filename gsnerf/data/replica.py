"""Replica reader for Semantic-NeRF's renders (spec 1.2).

Expected tree (``scene_name`` is the path below the root, e.g. ``office_0/Sequence_1``)::

    <root>/<scene>/<Sequence_N>/
      rgb/rgb_<k>.png                           RGB, 640x480
      depth/depth_<k>.png                       uint16 millimetres
      semantic_class/semantic_class_<k>.png     Replica class ids 0..101 (optional folder)
      traj_w_c.txt                              one row of 16 numbers per frame: 4x4 c2w, row-major

Files are ordered by the integer ``k`` (natural order: ``rgb_10`` after ``rgb_9``); the frame id
is ``k`` and the frame at position ``j`` of that order takes row ``j`` of ``traj_w_c.txt``, as is
(no axis flip, spec 7.4); frames whose row is not a valid pose are dropped and logged
(:mod:`gsnerf.data.pose_validity`). The renders have a 90 degree horizontal field of view and
square pixels, so at the decoded size ``W x H``: ``fx = fy = (W / 2) / tan(45 deg)``,
``cx = (W - 1) / 2``, ``cy = (H - 1) / 2``; at 640x480 that is 320, 320, 319.5, 239.5. The
reference hard-codes ``cy = 229.5``, most likely a typo for 239.5 (spec 1.2), which we do not copy.
"""

import math
import os
import re
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from gsnerf.data.image_io import (
    FrameFiles,
    read_depth_png,
    read_label_png,
    read_pose_rows,
    read_rgb,
    resize_nearest,
    resize_rgb,
    size_of,
)
from gsnerf.data.labels import LabelMapping, replica_table
from gsnerf.data.pose_validity import dropped_summary, log_dropped_frames, split_valid_poses
from gsnerf.data.scannet import frame_tensors, require_files
from gsnerf.data.scene_reader import (
    IGNORE_INDEX,
    DatasetFormatError,
    Frame,
    SceneBase,
    SceneInfo,
)
from gsnerf.geometry.camera import scale_intrinsics

# Horizontal field of view of Semantic-NeRF's Replica renders, degrees (spec 1.2: fx = 320 at 640).
REPLICA_HORIZONTAL_FOV_DEG = 90.0
_RGB_NAME = re.compile(r"rgb_(\d+)\.png")


def replica_intrinsics(
    native_size: tuple[int, int], horizontal_fov_deg: float = REPLICA_HORIZONTAL_FOV_DEG
) -> Float[Tensor, "3 3"]:
    """Pinhole K of a ``(width, height)`` render with the given horizontal field of view.

    Example: 640x480 at 90 degrees -> fx = fy = 320, cx = 319.5, cy = 239.5.
    """
    width, height = native_size
    focal = (width / 2.0) / math.tan(math.radians(horizontal_fov_deg) / 2.0)
    return torch.tensor(
        [[focal, 0.0, (width - 1) / 2.0], [0.0, focal, (height - 1) / 2.0], [0.0, 0.0, 1.0]],
        dtype=torch.float32,
    )


def list_rgb_frames(rgb_dir: Path) -> list[int]:
    """The ``k`` of every ``rgb_<k>.png`` in ``rgb_dir``, ascending."""
    if not rgb_dir.is_dir():
        raise DatasetFormatError(f"{rgb_dir}: colour folder not found")
    ids = sorted(
        int(match.group(1))
        for match in (_RGB_NAME.fullmatch(name) for name in os.listdir(rgb_dir))
        if match
    )
    if not ids:
        raise DatasetFormatError(f"{rgb_dir}: no colour frame (rgb_<k>.png)")
    return ids


class ReplicaScene(SceneBase):
    """One Replica sequence (tree in the module docstring) at ``image_size = (width, height)``."""

    def __init__(
        self,
        root: Path,
        scene_name: str,
        image_size: tuple[int, int],
        mapping: LabelMapping = LabelMapping.BENCHMARK,
        horizontal_fov_deg: float = REPLICA_HORIZONTAL_FOV_DEG,
    ) -> None:
        self.scene_dir = Path(root) / scene_name
        if not self.scene_dir.is_dir():
            raise DatasetFormatError(f"{self.scene_dir}: scene folder not found")
        self.horizontal_fov_deg = horizontal_fov_deg
        ids = list_rgb_frames(self.scene_dir / "rgb")
        require_files(self.scene_dir / "depth", [f"depth_{k}.png" for k in ids], "depth")
        label_dir = self.scene_dir / "semantic_class"
        self._has_labels = label_dir.is_dir()
        if self._has_labels:
            names = [f"semantic_class_{k}.png" for k in ids]
            require_files(label_dir, names, "semantic_class")
        self._labels = replica_table(LabelMapping(mapping))

        trajectory = self.scene_dir / "traj_w_c.txt"
        poses = read_pose_rows(trajectory)
        if len(poses) != len(ids):
            raise DatasetFormatError(
                f"{trajectory}: {len(poses)} pose rows for {len(ids)} frames in "
                f"{self.scene_dir / 'rgb'}; expected one row per frame"
            )
        frame_ids, cam_to_world, dropped = split_valid_poses(
            ids, list(poses), [trajectory] * len(ids), rows=list(range(len(ids)))
        )
        if not frame_ids:
            raise DatasetFormatError(
                f"{trajectory}: every pose is invalid "
                f"({dropped_summary(scene_name, len(ids), dropped)})"
            )
        log_dropped_frames(scene_name, len(ids), dropped)
        info = SceneInfo(
            name=scene_name,
            frame_ids=frame_ids,
            cam_to_world=cam_to_world,
            class_names=list(self._labels.class_names),
            ignore_index=IGNORE_INDEX,
            has_labels=self._has_labels,
            dropped=dropped,
        )
        super().__init__(info, image_size)

    def frame_files(self, frame_id: int) -> FrameFiles:
        """Colour, depth and label files of a valid frame."""
        self._position_of(frame_id)
        labels = None
        if self._has_labels:
            labels = self.scene_dir / "semantic_class" / f"semantic_class_{frame_id}.png"
        return FrameFiles(
            self.scene_dir / "rgb" / f"rgb_{frame_id}.png",
            self.scene_dir / "depth" / f"depth_{frame_id}.png",
            labels,
        )

    def read(self, frame_id: int) -> Frame:
        position = self._position_of(frame_id)
        files = self.frame_files(frame_id)
        rgb = read_rgb(files.color)
        native_size = size_of(rgb)
        depth = resize_nearest(read_depth_png(files.depth), self.image_size)
        labels = None
        if files.labels is not None:
            raw_ids = resize_nearest(read_label_png(files.labels), self.image_size)
            labels = self._labels.apply(raw_ids)
        image, depth_tensor, label_tensor = frame_tensors(
            resize_rgb(rgb, self.image_size), depth, labels
        )
        native_intrinsics = replica_intrinsics(native_size, self.horizontal_fov_deg)
        return Frame(
            image=image,
            depth=depth_tensor,
            labels=label_tensor,
            intrinsics=scale_intrinsics(native_intrinsics, native_size, self.image_size),
            cam_to_world=self.info.cam_to_world[position].clone(),
        )
