"""Dataset checker: reports on clean and broken trees, and the command's exit status."""

import importlib.util
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from scene_files import depth_pattern_mm, write_replica_scene, write_scannet_scene

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


def test_non_rigid_pose_is_a_warning(scannet_root: Path) -> None:
    np.savetxt(scannet_root / SCENE / "pose" / "1.txt", np.diag([2.0, 1.0, 1.0, 1.0]))
    report = check_scene("scannet", scannet_root, SCENE)
    assert report.ok and any("not orthonormal" in warning for warning in report.warnings)


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
