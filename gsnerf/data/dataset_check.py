"""Validate a dataset tree before training: one report per scene, errors and warnings.

Errors (the tree cannot be used as it is): missing or misnamed files, images that do not decode
(corrupt JPEG data included), malformed pose or intrinsics files, broken poses that the readers
drop (all zeros, a non-orthonormal or mirrored rotation, a bottom row other than [0 0 0 1],
values past float32; see :mod:`gsnerf.data.pose_validity`), colour, depth or label frames whose
size differs from the scene's first one of their kind, a median valid depth outside a plausible
indoor range (depth PNGs not in millimetres), and anything unexpected that stops a scene's check
(the other scenes are still checked). Warnings: label ids the label table does not know, frames
with no valid depth, kept poses that are slightly non-rigid, depth maps whose aspect ratio differs
from the colour's (depth is resized without registration, spec 1.2). Frames with inf/NaN poses
are counted, not reported: dropping them is the dataset convention. Every frame is decoded.
"""

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from gsnerf.data import open_scene
from gsnerf.data.image_io import read_depth_png, read_label_png, read_rgb, size_of
from gsnerf.data.labels import REPLICA_MAX_ID, SCANNET_TSV_NAME, read_scannet_tsv
from gsnerf.data.pose_validity import is_dataset_convention
from gsnerf.data.replica import ReplicaScene
from gsnerf.data.scannet import ScanNetScene
from gsnerf.data.scene_reader import DatasetFormatError

log = logging.getLogger(__name__)

# Size the readers are opened at; nothing is resized during a check.
_NOMINAL_SIZE = (320, 240)


@dataclass
class DatasetCheckCfg:
    # Smallest plausible median valid depth of an indoor scene, metres (below: wrong unit).
    min_median_depth_m: float = 0.05
    # Largest plausible median valid depth of an indoor scene, metres (above: wrong unit).
    max_median_depth_m: float = 20.0
    # Relative aspect-ratio difference between depth and colour that earns a warning.
    max_aspect_mismatch: float = 0.02
    # Largest |R^T R - I| entry of a kept pose not warned about (past 1e-2 the reader drops it).
    rigid_tolerance: float = 1e-3


@dataclass
class SceneReport:
    """What the check found in one scene."""

    name: str
    frames: int = 0
    dropped: int = 0
    median_depth_m: float | None = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def find_scenes(kind: str, root: Path) -> list[str]:
    """Scene names under ``root``: folders with ``color/`` (ScanNet layout) or ``rgb/`` (Replica,
    one or two levels deep, e.g. ``office_0/Sequence_1``)."""
    if not root.is_dir():
        return []
    marker = "rgb" if kind == "replica" else "color"
    found = []
    for first in sorted(os.listdir(root)):
        if (root / first / marker).is_dir():
            found.append(first)
        elif kind == "replica" and (root / first).is_dir():
            found += [
                f"{first}/{second}"
                for second in sorted(os.listdir(root / first))
                if (root / first / second / marker).is_dir()
            ]
    return found


def _known_label_ids(kind: str, root: Path) -> set[int] | None:
    if kind == "replica":
        return set(range(REPLICA_MAX_ID + 1))
    # Raw id 0 is ScanNet's "unannotated" and is never listed in the tsv.
    return set(read_scannet_tsv(root / SCANNET_TSV_NAME)) | {0}


def _non_rigid_count(cam_to_world: Float[Tensor, "frames 4 4"], tolerance: float) -> int:
    rotation = cam_to_world[:, :3, :3].double()
    gram = rotation.transpose(-1, -2) @ rotation
    deviation = (gram - torch.eye(3, dtype=gram.dtype)).abs().amax(dim=(-1, -2))
    return int((deviation > tolerance).sum())


def _check_frames(
    scene: ScanNetScene | ReplicaScene,
    known_ids: set[int] | None,
    cfg: DatasetCheckCfg,
    report: SceneReport,
) -> None:
    first_sizes: dict[str, tuple[int, int]] = {}
    medians, empty_depth, aspect_warned = [], 0, False
    unknown: dict[int, int] = {}
    for frame_id in scene.frame_ids:
        files = scene.frame_files(frame_id)
        try:
            rgb = read_rgb(files.color)
            depth = read_depth_png(files.depth)
            labels = None if files.labels is None else read_label_png(files.labels)
        except DatasetFormatError as error:
            report.errors.append(str(error))
            continue
        # Each kind against its own first frame: colour and depth may differ by design (ScanNet).
        for kind, path, array in (
            ("colour", files.color, rgb),
            ("depth", files.depth, depth),
            ("label", files.labels, labels),
        ):
            if array is None:
                continue
            first = first_sizes.setdefault(kind, size_of(array))
            if size_of(array) != first:
                report.errors.append(
                    f"{path}: {kind} size {size_of(array)} differs from the scene's {first}"
                )
        valid = depth[depth > 0]
        if valid.size:
            medians.append(float(np.median(valid)))
        else:
            empty_depth += 1
        aspect_color, aspect_depth = rgb.shape[1] / rgb.shape[0], depth.shape[1] / depth.shape[0]
        if abs(aspect_depth / aspect_color - 1.0) > cfg.max_aspect_mismatch and not aspect_warned:
            aspect_warned = True
            report.warnings.append(
                f"{files.depth}: depth aspect {aspect_depth:.3f} differs from colour "
                f"{aspect_color:.3f}; depth is stretched onto the colour grid"
            )
        if labels is not None and known_ids is not None:
            for raw_id in set(np.unique(labels).tolist()) - known_ids:
                unknown[raw_id] = unknown.get(raw_id, 0) + 1
    if empty_depth:
        report.warnings.append(f"{empty_depth} frame(s) have no valid depth pixel")
    if unknown:
        listed = ", ".join(f"{i} ({n} frames)" for i, n in sorted(unknown.items())[:20])
        report.warnings.append(f"label ids unknown to the label table (ignored): {listed}")
    if medians:
        report.median_depth_m = float(np.median(medians))
        if not cfg.min_median_depth_m <= report.median_depth_m <= cfg.max_median_depth_m:
            report.errors.append(
                f"median valid depth {report.median_depth_m:.3g} m is outside "
                f"[{cfg.min_median_depth_m}, {cfg.max_median_depth_m}] m: depth PNGs must be "
                "uint16 millimetres"
            )


def check_scene(
    kind: str, root: Path, scene_name: str, cfg: DatasetCheckCfg | None = None
) -> SceneReport:
    """Open one scene, decode every frame and report what is wrong with it.

    An unexpected exception becomes an error of this scene's report (its traceback is logged),
    so one bad scene never hides the others' reports.
    """
    cfg = cfg or DatasetCheckCfg()
    report = SceneReport(scene_name)
    try:
        _check_scene_into(kind, Path(root), scene_name, cfg, report)
    except DatasetFormatError as error:
        report.errors.append(str(error))
    except Exception as error:
        log.warning("%s: unexpected error while checking", scene_name, exc_info=True)
        report.errors.append(f"unexpected {type(error).__name__} while checking: {error}")
    return report


def _check_scene_into(
    kind: str, root: Path, scene_name: str, cfg: DatasetCheckCfg, report: SceneReport
) -> None:
    scene = open_scene(kind, root, scene_name, _NOMINAL_SIZE)
    known_ids = _known_label_ids(kind, root) if scene.has_labels else None
    report.frames = len(scene.frame_ids)
    report.dropped = len(scene.dropped_frames)
    # Broken poses are dropped like ScanNet's -inf ones, but they mean a broken export.
    for dropped in scene.dropped_frames:
        if not is_dataset_convention(dropped):
            where = dropped.path if dropped.row is None else f"{dropped.path} row {dropped.row}"
            report.errors.append(f"{where}: {dropped.reason}; frame {dropped.frame_id} is dropped")
    non_rigid = _non_rigid_count(scene.cam_to_world, cfg.rigid_tolerance)
    if non_rigid:
        report.warnings.append(
            f"{non_rigid} kept pose(s) have a rotation that deviates from orthonormal by more "
            f"than {cfg.rigid_tolerance:g}"
        )
    _check_frames(scene, known_ids, cfg, report)


def check_dataset(
    kind: str, root: Path, scenes: list[str] | None = None, cfg: DatasetCheckCfg | None = None
) -> list[SceneReport]:
    """Check ``scenes`` (default: every scene found under ``root``)."""
    root = Path(root)
    names = scenes or find_scenes(kind, root)
    if not names:
        return [SceneReport(str(root), errors=[f"{root}: no {kind} scene found"])]
    reports = []
    for name in names:
        log.info("checking %s", name)
        reports.append(check_scene(kind, root, name, cfg))
    return reports


def format_report(reports: list[SceneReport], max_listed: int = 10) -> str:
    """Human-readable per-scene summary, errors and warnings first ``max_listed`` of each."""
    lines = []
    for report in reports:
        depth = "n/a" if report.median_depth_m is None else f"{report.median_depth_m:.2f} m"
        status = "OK" if report.ok else "ERRORS"
        lines.append(
            f"{report.name}: {status}, {report.frames} frames, {report.dropped} dropped "
            f"(invalid pose), median depth {depth}"
        )
        for severity, messages in (("error", report.errors), ("warning", report.warnings)):
            lines += [f"  {severity}: {message}" for message in messages[:max_listed]]
            if len(messages) > max_listed:
                lines.append(f"  ... {len(messages) - max_listed} more {severity}s")
    failed = sum(not report.ok for report in reports)
    lines.append(f"{len(reports)} scene(s) checked, {failed} with errors")
    return "\n".join(lines)
