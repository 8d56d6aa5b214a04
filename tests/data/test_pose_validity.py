"""Pose validity: which broken poses readers drop, and the one log line per scene naming them."""

import logging
import math
from pathlib import Path

import numpy as np
import pytest
from scene_files import pose_pattern, write_replica_scene, write_scannet_scene

from gsnerf.data import DatasetFormatError, open_scene
from gsnerf.data.image_io import read_pose_rows
from gsnerf.data.pose_validity import pose_problem

SCENE = "scene0000_00"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _with(pose: np.ndarray, rows: slice, cols: slice, value) -> np.ndarray:
    changed = pose.copy()
    changed[rows, cols] = value
    return changed


# Each defect with the fragment its reason must contain; the numbers are worked out by hand.
BROKEN_POSES = {
    "all zeros": (np.zeros((4, 4)), "singular rotation (det 0)"),
    "rotation scaled by 2": (np.diag([2.0, 1.0, 1.0, 1.0]), "rotation not orthonormal (max"),
    "mirror": (np.diag([-1.0, 1.0, 1.0, 1.0]), "rotation is a reflection (det -1)"),
    "projective bottom row": (
        _with(np.eye(4), 3, slice(0, 4), [0.0, 0.0, 0.5, 1.0]),
        "bottom row [0.  0.  0.5 1. ] is not [0 0 0 1]",
    ),
    "translation past float32": (
        _with(pose_pattern(3), 0, 3, 1e39),
        "entries overflow float32 (|value| up to 1e+39)",
    ),
    "ScanNet -inf": (np.full((4, 4), -np.inf), "inf/NaN entries"),
    # Finite rotation, one non-finite entry elsewhere: the whole matrix is checked.
    "NaN translation": (_with(pose_pattern(3), 1, 3, np.nan), "inf/NaN entries"),
    "inf in the bottom row": (_with(np.eye(4), 3, 3, np.inf), "inf/NaN entries"),
}


@pytest.mark.parametrize("name", list(BROKEN_POSES))
def test_broken_pose_is_named(name: str) -> None:
    pose, fragment = BROKEN_POSES[name]
    problem = pose_problem(pose)
    assert problem is not None and fragment in problem


def test_rotation_scaled_by_two_reports_its_deviation() -> None:
    # R^T R = diag(4, 1, 1): the largest |R^T R - I| entry is 3, det 2.
    problem = pose_problem(np.diag([2.0, 1.0, 1.0, 1.0]))
    assert problem == "rotation not orthonormal (max |R^T R - I| = 3, det 2)"


def test_tolerances_keep_text_rounding_and_drop_a_one_percent_scale() -> None:
    # pose_pattern written with six decimals, as ScanNet's exporter does.
    for frame_id in range(40):
        assert pose_problem(np.round(pose_pattern(frame_id), 6)) is None
    # 0.1 % scale: |R^T R - I| = 0.002, kept; 1 %: 0.0201, dropped.
    assert pose_problem(_with(pose_pattern(5), slice(0, 3), slice(0, 3), 1.001 * np.eye(3))) is None
    scaled = _with(pose_pattern(5), slice(0, 3), slice(0, 3), 1.01 * np.eye(3))
    assert "not orthonormal" in pose_problem(scaled)


def test_captured_hololens_poses_are_all_kept() -> None:
    poses = read_pose_rows(FIXTURES / "hololens_small" / "poses.txt")
    assert len(poses) == 6
    assert [pose_problem(pose) for pose in poses] == [None] * 6


def test_scannet_drops_broken_poses_and_logs_them_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frame_ids = tuple(range(10))
    scene_dir = write_scannet_scene(tmp_path, frame_ids=frame_ids, invalid_pose_ids=(2,))
    np.savetxt(scene_dir / "pose" / "3.txt", np.zeros((4, 4)), fmt="%f")
    np.savetxt(scene_dir / "pose" / "5.txt", _with(pose_pattern(5), 0, 3, 1e39), fmt="%g")
    caplog.set_level(logging.INFO)
    scene = open_scene("scannet", tmp_path, SCENE, (80, 60))
    assert scene.frame_ids == [0, 1, 4, 6, 7, 8, 9]
    assert [(d.frame_id, d.path.name) for d in scene.dropped_frames] == [
        (2, "2.txt"),
        (3, "3.txt"),
        (5, "5.txt"),
    ]
    records = [r for r in caplog.records if r.name == "gsnerf.data.pose_validity"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    # Broken poses first, then the convention's -inf one.
    assert records[0].getMessage() == (
        "scene0000_00: 3 of 10 frames dropped: pose/3.txt singular rotation (det 0), "
        "pose/5.txt entries overflow float32 (|value| up to 1e+39), pose/2.txt inf/NaN entries"
    )


def test_only_inf_poses_are_logged_at_info_and_long_lists_are_cut(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    invalid = tuple(range(1, 9))
    write_scannet_scene(tmp_path, frame_ids=tuple(range(10)), invalid_pose_ids=invalid)
    caplog.set_level(logging.INFO)
    open_scene("scannet", tmp_path, SCENE, (80, 60))
    (record,) = [r for r in caplog.records if r.name == "gsnerf.data.pose_validity"]
    assert record.levelno == logging.INFO
    listed = ", ".join(f"pose/{i}.txt inf/NaN entries" for i in range(1, 6))
    assert record.getMessage() == f"scene0000_00: 8 of 10 frames dropped: {listed} and 3 more"


def test_replica_names_the_trajectory_row(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    scene_dir = write_replica_scene(tmp_path, num_frames=6)
    trajectory = scene_dir / "traj_w_c.txt"
    rows = trajectory.read_text().splitlines()
    angle = math.radians(30)
    # Row 4 rotated about z but with the sine of the wrong sign: a mirror, det -1.
    mirror = np.array(
        [
            [math.cos(angle), math.sin(angle), 0, 0],
            [math.sin(angle), -math.cos(angle), 0, 0],
            [0, 0, 1, 0],
            [0, 0, 0, 1],
        ]
    )
    rows[4] = " ".join(f"{value:.10f}" for value in mirror.reshape(-1))
    trajectory.write_text("\n".join(rows) + "\n")
    scene = open_scene("replica", tmp_path, "office_0/Sequence_1", (32, 24))
    assert scene.frame_ids == [0, 1, 2, 3, 5]
    assert scene.dropped_frames[0].row == 4
    assert "office_0/Sequence_1: 1 of 6 frames dropped: traj_w_c.txt row 4 rotation is a " in (
        caplog.text
    )


def test_every_pose_broken_is_an_error_naming_them(tmp_path: Path) -> None:
    scene_dir = write_scannet_scene(tmp_path, frame_ids=(0, 1), invalid_pose_ids=(0,))
    np.savetxt(scene_dir / "pose" / "1.txt", np.zeros((4, 4)), fmt="%f")
    with pytest.raises(DatasetFormatError, match="pose/1.txt singular rotation") as error:
        open_scene("scannet", tmp_path, SCENE, (80, 60))
    assert str(scene_dir / "pose") in str(error.value)
