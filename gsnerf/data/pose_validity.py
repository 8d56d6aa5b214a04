"""Which camera-to-world poses a reader keeps, and the log line naming the frames it drops.

A kept pose is finite, fits in float32, has a proper rotation block (orthonormal, det +1) and
the bottom row ``[0 0 0 1]``. ScanNet marks frames whose tracking failed with ``-inf`` poses, and
dropping those is the dataset convention (spec 1.2). Any other broken pose (all zeros, a scaled
or mirrored rotation, a projective bottom row, entries past float32's range) would train silently
with huge losses or NaN-skipped steps, so it is dropped the same way, logged, and reported as an
error by ``scripts/check_dataset.py``.

Tolerances: captured poses stored as text with six decimals have ``max |R^T R - I|`` near 1e-5
(8.9e-6 over the 373 poses of the DeepVideoMVS HoloLens sample, det within 1e-5 of 1) and exact
bottom rows; the bounds below leave three orders of magnitude to them while a rotation scaled by
1 % (``|R^T R - I|`` = 0.02) is dropped.
"""

import logging
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Float64
from torch import Tensor

from gsnerf.data.scene_reader import DroppedFrame

log = logging.getLogger(__name__)

# Largest max |R^T R - I| of a kept pose's rotation block.
ROTATION_TOLERANCE = 1e-2
# Largest |entry - expected| of a kept pose's bottom row against [0 0 0 1].
BOTTOM_ROW_TOLERANCE = 1e-4
# A rotation block with |det| below this is reported as singular rather than non-orthonormal.
SINGULAR_DET = 1e-3
# Reason of ScanNet's -inf poses; the only drop that is the dataset convention.
NON_FINITE_REASON = "inf/NaN entries"
# How many dropped frames a log line names before it only counts.
MAX_LISTED_FRAMES = 5

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_BOTTOM_ROW = np.array([0.0, 0.0, 0.0, 1.0])


def pose_problem(pose: Float64[np.ndarray, "4 4"]) -> str | None:
    """Why a 4x4 camera-to-world pose is unusable, or None when it is kept.

    Example: ``np.zeros((4, 4))`` gives ``"singular rotation (det 0)"``.
    """
    if not np.isfinite(pose).all():
        return NON_FINITE_REASON
    largest = float(np.abs(pose).max())
    if largest > _FLOAT32_MAX:
        return f"entries overflow float32 (|value| up to {largest:.3g})"
    rotation = pose[:3, :3]
    det = float(np.linalg.det(rotation))
    if abs(det) < SINGULAR_DET:
        return f"singular rotation (det {det:.3g})"
    if det < 0:
        return f"rotation is a reflection (det {det:.3g})"
    deviation = float(np.abs(rotation.T @ rotation - np.eye(3)).max())
    if deviation > ROTATION_TOLERANCE:
        return f"rotation not orthonormal (max |R^T R - I| = {deviation:.3g}, det {det:.3g})"
    if np.abs(pose[3] - _BOTTOM_ROW).max() > BOTTOM_ROW_TOLERANCE:
        return f"bottom row {np.array2string(pose[3], precision=4)} is not [0 0 0 1]"
    return None


def is_dataset_convention(dropped: DroppedFrame) -> bool:
    """True for ScanNet's inf/NaN poses, which are dropped by design rather than broken."""
    return dropped.reason == NON_FINITE_REASON


def split_valid_poses(
    frame_ids: list[int],
    poses: list[Float64[np.ndarray, "4 4"]],
    paths: list[Path],
    rows: list[int] | None = None,
) -> tuple[list[int], Float[Tensor, "frames 4 4"], list[DroppedFrame]]:
    """Keep the frames whose pose passes :func:`pose_problem`; the others become dropped entries.

    ``rows`` gives the index of each pose in its file where one file holds them all.
    """
    kept_ids, kept_poses, dropped = [], [], []
    for index, (frame_id, pose, path) in enumerate(zip(frame_ids, poses, paths)):
        problem = pose_problem(pose)
        if problem is None:
            kept_ids.append(frame_id)
            kept_poses.append(pose)
        else:
            row = None if rows is None else rows[index]
            dropped.append(DroppedFrame(frame_id, path, problem, row))
    stacked = np.stack(kept_poses) if kept_poses else np.zeros((0, 4, 4))
    return kept_ids, torch.from_numpy(stacked).float(), dropped


def dropped_summary(scene_name: str, num_frames: int, dropped: list[DroppedFrame]) -> str:
    """``scene: 2 of 8 frames dropped: pose/3.txt singular rotation (det 0), pose/5.txt ...``.

    Broken poses are listed before the convention's inf/NaN ones, so a long run of those never
    hides them behind "and N more".
    """
    ordered = sorted(dropped, key=is_dataset_convention)
    listed = ", ".join(f"{d.source} {d.reason}" for d in ordered[:MAX_LISTED_FRAMES])
    extra = len(dropped) - MAX_LISTED_FRAMES
    more = f" and {extra} more" if extra > 0 else ""
    return f"{scene_name}: {len(dropped)} of {num_frames} frames dropped: {listed}{more}"


def log_dropped_frames(scene_name: str, num_frames: int, dropped: list[DroppedFrame]) -> None:
    """One log line per scene: info for the convention's drops, a warning if any pose is broken."""
    if not dropped:
        return
    broken = not all(is_dataset_convention(d) for d in dropped)
    level = logging.WARNING if broken else logging.INFO
    log.log(level, "%s", dropped_summary(scene_name, num_frames, dropped))
