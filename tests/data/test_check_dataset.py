"""Dataset checker: reports on clean and broken trees, and the command's exit status."""

import importlib.util
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from scene_files import depth_pattern_mm, write_replica_scene, write_scannet_scene

from gsnerf.data import dataset_check
from gsnerf.data.dataset_check import check_dataset, check_scene, find_scenes, format_report

SCENE = "scene0000_00"
REPO = Path(__file__).resolve().parents[2]


def load_cli():
    spec = importlib.util.spec_from_file_location(
        "check_dataset_cli", REPO / "scripts" / "check_dataset.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_clean_scannet_scene(scannet_root: Path) -> None:
    report = check_scene("scannet", scannet_root, SCENE)
    assert report.ok and report.frames == 4 and report.dropped == 1
    # Median over frames 0, 1, 3, 10 of each frame's median valid depth.
    medians = []
    for frame_id in (0, 1, 3, 10):
        depth = depth_pattern_mm(frame_id, (160, 120))
        medians.append(np.median(depth[depth > 0]) / 1000)
    assert report.median_depth_m == pytest.approx(np.median(medians), rel=1e-6)
    # Raw ids 99 and 1500 of the label maps are not in the tsv.
    assert len(report.warnings) == 1
    assert "99 (4 frames)" in report.warnings[0] and "1500 (4 frames)" in report.warnings[0]


def test_corrupt_image_is_an_error_naming_it(scannet_root: Path) -> None:
    color = scannet_root / SCENE / "color" / "10.png"
    color.write_bytes(color.read_bytes()[:100])
    report = check_scene("scannet", scannet_root, SCENE)
    assert not report.ok and len(report.errors) == 1 and str(color) in report.errors[0]


def test_missing_depth_is_an_error_naming_it(scannet_root: Path) -> None:
    missing = scannet_root / SCENE / "depth" / "3.png"
    missing.unlink()
    report = check_scene("scannet", scannet_root, SCENE)
    assert not report.ok and str(missing) in report.errors[0]


def test_depth_in_the_wrong_unit_is_an_error(tmp_path: Path) -> None:
    write_scannet_scene(tmp_path, frame_ids=(0, 1), invalid_pose_ids=(), with_labels=False)
    for frame_id in (0, 1):
        # Tenths of a millimetre instead of millimetres: about 12 m read as 120 m.
        path = tmp_path / SCENE / "depth" / f"{frame_id}.png"
        cv2.imwrite(str(path), np.full((120, 160), 60000, dtype=np.uint16))
    report = check_scene("scannet", tmp_path, SCENE)
    assert not report.ok and "millimetres" in report.errors[0]


def test_broken_poses_are_errors_naming_their_files(scannet_root: Path) -> None:
    pose_dir = scannet_root / SCENE / "pose"
    np.savetxt(pose_dir / "1.txt", np.diag([2.0, 1.0, 1.0, 1.0]))
    np.savetxt(pose_dir / "3.txt", np.zeros((4, 4)))
    report = check_scene("scannet", scannet_root, SCENE)
    # Frame 2's -inf pose is the dataset convention: counted, not an error.
    assert not report.ok and report.frames == 2 and report.dropped == 3
    assert report.errors == [
        f"{pose_dir / '1.txt'}: rotation not orthonormal (max |R^T R - I| = 3, det 2); "
        "frame 1 is dropped",
        f"{pose_dir / '3.txt'}: singular rotation (det 0); frame 3 is dropped",
    ]


def test_slightly_non_rigid_kept_pose_is_a_warning(scannet_root: Path) -> None:
    # 0.2 % scale: |R^T R - I| = 0.004, past the 1e-3 warning, within the reader's 1e-2.
    np.savetxt(scannet_root / SCENE / "pose" / "1.txt", np.diag([1.002, 1.0, 1.0, 1.0]))
    report = check_scene("scannet", scannet_root, SCENE)
    assert report.ok and report.frames == 4
    assert "1 kept pose(s) have a rotation that deviates from orthonormal" in report.warnings[0]


def test_corrupt_jpeg_data_is_an_error(tmp_path: Path) -> None:
    write_scannet_scene(tmp_path, frame_ids=(0, 1), invalid_pose_ids=(), color_ext=".jpg")
    color = tmp_path / SCENE / "color" / "0.jpg"
    data = bytearray(color.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 2048] = bytes(2048)
    color.write_bytes(bytes(data))
    report = check_scene("scannet", tmp_path, SCENE)
    assert not report.ok and report.errors[0].startswith(f"{color}: corrupt JPEG data")


def test_depth_frame_of_another_size_is_an_error(scannet_root: Path) -> None:
    depth = scannet_root / SCENE / "depth" / "3.png"
    cv2.imwrite(str(depth), depth_pattern_mm(3, (80, 60)))
    report = check_scene("scannet", scannet_root, SCENE)
    assert report.errors == [f"{depth}: depth size (80, 60) differs from the scene's (160, 120)"]


def test_unexpected_error_in_one_scene_is_its_error_and_the_others_are_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_scannet_scene(tmp_path, "scene0000_00", invalid_pose_ids=(), with_labels=False)
    write_scannet_scene(tmp_path, "scene0001_00", invalid_pose_ids=(), with_labels=False)
    real_open = dataset_check.open_scene

    def open_failing_first(kind, root, name, size):
        if name == "scene0000_00":
            # A disk fault: not a format problem the readers know how to name.
            raise OSError(5, "Input/output error")
        return real_open(kind, root, name, size)

    monkeypatch.setattr(dataset_check, "open_scene", open_failing_first)
    reports = check_dataset("scannet", tmp_path)
    assert [report.name for report in reports] == ["scene0000_00", "scene0001_00"]
    assert reports[0].errors == ["unexpected OSError while checking: [Errno 5] Input/output error"]
    assert reports[1].ok and reports[1].frames == 5


def test_replica_scenes_are_found_two_levels_deep(tmp_path: Path) -> None:
    write_replica_scene(tmp_path, "office_0/Sequence_1", num_frames=2)
    write_replica_scene(tmp_path, "room_0/Sequence_2", num_frames=2)
    assert find_scenes("replica", tmp_path) == ["office_0/Sequence_1", "room_0/Sequence_2"]
    reports = check_dataset("replica", tmp_path)
    assert [report.ok for report in reports] == [True, True]
    # Replica id 150 is outside the 0..101 taxonomy.
    assert "150 (2 frames)" in reports[0].warnings[0]


def test_empty_root_is_an_error(tmp_path: Path) -> None:
    reports = check_dataset("scannet", tmp_path)
    assert not reports[0].ok and str(tmp_path) in reports[0].errors[0]


def test_command_exit_status(scannet_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    cli = load_cli()
    assert cli.main(["--kind", "scannet", "--root", str(scannet_root)]) == 0
    assert f"{SCENE}: OK, 4 frames, 1 dropped" in caplog.text
    (scannet_root / SCENE / "color" / "0.png").write_bytes(b"not an image")
    assert cli.main(["--kind", "scannet", "--root", str(scannet_root), "--scenes", SCENE]) == 1


def test_report_lists_a_bounded_number_of_messages(scannet_root: Path) -> None:
    for frame_id in (0, 1, 3, 10):
        (scannet_root / SCENE / "color" / f"{frame_id}.png").write_bytes(b"broken")
    text = format_report([check_scene("scannet", scannet_root, SCENE)], max_listed=2)
    assert text.count("  error:") == 2 and "... 2 more errors" in text
    assert text.endswith("1 scene(s) checked, 1 with errors")
