"""Posed RGB-D importer, on the real HoloLens fixture (tests/fixtures/hololens_small)."""

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from gsnerf.data import DatasetFormatError, open_scene
from gsnerf.data.posed_rgbd import PosedRgbdSource, import_posed_rgbd
from gsnerf.geometry.camera import invert_pose, project_points, unproject_depth

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "hololens_small"
NAMES = (FIXTURE / "subset_image_names.txt").read_text().split()


def hololens_source() -> PosedRgbdSource:
    return PosedRgbdSource(
        images=FIXTURE / "images",
        depth=FIXTURE / "depth",
        poses=FIXTURE / "poses.txt",
        intrinsics=FIXTURE / "K.txt",
        names=FIXTURE / "subset_image_names.txt",
    )


@pytest.fixture
def imported(tmp_path: Path) -> Path:
    assert import_posed_rgbd(hololens_source(), tmp_path / "hololens") == len(NAMES)
    return tmp_path


def median_reprojection_error(scene, pose_of: dict[int, torch.Tensor]) -> tuple[float, int]:
    """Median |z - D_next| / D_next of each frame's depth seen from the next frame, pooled."""
    errors = []
    frames = {i: scene.read(i) for i in scene.frame_ids}
    width, height = scene.image_size
    for a, b in zip(scene.frame_ids[:-1], scene.frame_ids[1:]):
        source, target = frames[a], frames[b]
        points = unproject_depth(source.depth, source.intrinsics, pose_of[a])[source.depth > 0]
        pixels, z = project_points(points, target.intrinsics, pose_of[b])
        cols, rows = pixels[:, 0].round().long(), pixels[:, 1].round().long()
        inside = (z > 0) & (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
        seen = target.depth[rows[inside], cols[inside]]
        valid = seen > 0
        errors.append((z[inside][valid] - seen[valid]).abs() / seen[valid])
    pooled = torch.cat(errors)
    return pooled.median().item(), pooled.numel()


def test_fixture_is_small_and_licensed() -> None:
    total = sum(path.stat().st_size for path in FIXTURE.rglob("*") if path.is_file())
    assert total < 1_000_000
    assert "MIT License" in (FIXTURE / "LICENSE.deep-video-mvs.txt").read_text()


def test_imported_scene_matches_the_source_files(imported: Path) -> None:
    scene = open_scene("scannet", imported, "hololens", (180, 120))
    assert scene.frame_ids == list(range(6)) and not scene.has_labels
    frame = scene.read(2)
    assert frame.labels is None
    source_rgb = cv2.imread(str(FIXTURE / "images" / NAMES[2]))[..., ::-1]
    np.testing.assert_array_equal(
        (frame.image.numpy() * 255).round(), source_rgb.transpose(2, 0, 1)
    )
    source_depth = cv2.imread(str(FIXTURE / "depth" / NAMES[2]), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(frame.depth.numpy(), source_depth.astype(np.float32) / 1000)
    poses = np.loadtxt(FIXTURE / "poses.txt").reshape(-1, 4, 4)
    np.testing.assert_allclose(scene.cam_to_world.numpy(), poses, atol=1e-6)
    assert (imported / "hololens" / "frame_names.txt").read_text().split() == NAMES


def test_intrinsics_scaled_to_the_requested_size(imported: Path) -> None:
    k = np.loadtxt(FIXTURE / "K.txt")
    frame = open_scene("scannet", imported, "hololens", (90, 60)).read(0)
    expected = [
        [k[0, 0] / 2, 0, (k[0, 2] + 0.5) / 2 - 0.5],
        [0, k[1, 1] / 2, (k[1, 2] + 0.5) / 2 - 0.5],
        [0, 0, 1],
    ]
    np.testing.assert_allclose(frame.intrinsics.numpy(), expected, rtol=1e-6)
    depth_k = np.loadtxt(imported / "hololens" / "intrinsic" / "intrinsic_depth.txt")
    np.testing.assert_allclose(depth_k[:3, :3], k, rtol=1e-12)  # depth is at the colour size


def test_depth_reprojects_consistently_between_frames(imported: Path) -> None:
    scene = open_scene("scannet", imported, "hololens", (180, 120))
    poses = {i: scene.pose(i) for i in scene.frame_ids}
    error, count = median_reprojection_error(scene, poses)
    assert count > 5000 and error < 0.02
    # Negative control: read as world-to-camera the same poses put the depths far apart.
    inverted = {i: invert_pose(pose) for i, pose in poses.items()}
    assert median_reprojection_error(scene, inverted)[0] > 0.1


def test_command_line_writes_the_same_scene(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "import_cli", REPO / "scripts" / "import_posed_rgbd.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = [
        "--images", str(FIXTURE / "images"), "--depth", str(FIXTURE / "depth"),
        "--poses", str(FIXTURE / "poses.txt"), "--intrinsics", str(FIXTURE / "K.txt"),
        "--names", str(FIXTURE / "subset_image_names.txt"),
        "--output-root", str(tmp_path), "--scene", "cli",
    ]  # fmt: skip
    assert module.main(argv) == 0
    assert open_scene("scannet", tmp_path, "cli", (180, 120)).frame_ids == list(range(6))


def test_depth_units_are_converted_to_millimetres(tmp_path: Path) -> None:
    for folder in ("images", "depth"):
        (tmp_path / folder).mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((4, 6, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "depth" / "a.png"), np.full((2, 3), 5000, np.uint16))
    np.savetxt(tmp_path / "poses.txt", np.eye(4).reshape(1, 16))
    np.savetxt(tmp_path / "K.txt", [[5.0, 0, 2.5], [0, 5.0, 1.5], [0, 0, 1]])
    source = PosedRgbdSource(
        tmp_path / "images", tmp_path / "depth", tmp_path / "poses.txt", tmp_path / "K.txt",
        depth_units_per_metre=5000.0,
    )  # fmt: skip
    import_posed_rgbd(source, tmp_path / "out" / "tum")
    stored = cv2.imread(str(tmp_path / "out" / "tum" / "depth" / "0.png"), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == np.uint16 and (stored == 1000).all()
    # Depth 3x2 against colour 6x4: K halves about the pixel centres.
    depth_k = np.loadtxt(tmp_path / "out" / "tum" / "intrinsic" / "intrinsic_depth.txt")
    np.testing.assert_allclose(depth_k[:3, :3], [[2.5, 0, 1.0], [0, 2.5, 0.5], [0, 0, 1]])


def test_pose_count_mismatch_names_the_poses_file(tmp_path: Path) -> None:
    poses = tmp_path / "poses.txt"
    poses.write_text(
        "".join(f"{line}\n" for line in (FIXTURE / "poses.txt").read_text().splitlines()[:5])
    )
    source = hololens_source()
    source.poses = poses
    with pytest.raises(DatasetFormatError, match="5 poses for 6 frames") as error:
        import_posed_rgbd(source, tmp_path / "out")
    assert str(poses) in str(error.value)


def test_refuses_to_write_into_a_non_empty_folder(imported: Path) -> None:
    with pytest.raises(FileExistsError) as error:
        import_posed_rgbd(hololens_source(), imported / "hololens")
    assert str(imported / "hololens") in str(error.value)


def test_broken_pose_is_imported_and_dropped_by_the_reader(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = (FIXTURE / "poses.txt").read_text().splitlines()
    rows[2] = " ".join(["0"] * 16)
    poses = tmp_path / "poses.txt"
    poses.write_text("\n".join(rows) + "\n")
    source = hololens_source()
    source.poses = poses
    assert import_posed_rgbd(source, tmp_path / "out" / "office") == len(NAMES)
    assert f"{poses}: 1 pose(s) are invalid and readers drop their frames (row 2: singular" in (
        caplog.text
    )
    scene = open_scene("scannet", tmp_path / "out", "office", (48, 32))
    assert scene.frame_ids == [0, 1, 3, 4, 5]


def test_binary_names_file_is_named(tmp_path: Path) -> None:
    names = tmp_path / "names.txt"
    names.write_bytes(b"\x89PNG\r\n\x1a\n")
    source = hololens_source()
    source.names = names
    with pytest.raises(DatasetFormatError) as error:
        import_posed_rgbd(source, tmp_path / "out")
    assert str(error.value).startswith(f"{names}: not a text file of image names (byte 0 is")


def tiny_source(tmp_path: Path, depths: dict[str, int], units_per_metre: float) -> PosedRgbdSource:
    """One 4x6 black image per name with a constant raw depth; no names file."""
    for folder in ("images", "depth"):
        (tmp_path / folder).mkdir()
    for name, raw in depths.items():
        cv2.imwrite(str(tmp_path / "images" / name), np.zeros((4, 6, 3), np.uint8))
        cv2.imwrite(str(tmp_path / "depth" / name), np.full((4, 6), raw, np.uint16))
    np.savetxt(tmp_path / "poses.txt", np.tile(np.eye(4).reshape(1, 16), (len(depths), 1)))
    np.savetxt(tmp_path / "K.txt", [[5.0, 0, 2.5], [0, 5.0, 1.5], [0, 0, 1]])
    return PosedRgbdSource(
        tmp_path / "images", tmp_path / "depth", tmp_path / "poses.txt", tmp_path / "K.txt",
        depth_units_per_metre=units_per_metre,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "units_per_metre", "expected_mm"),
    [
        (4999, 5000.0, 1000),  # 999.8 mm rounds up, truncation would store 999
        (10000, 100.0, 65535),  # 100 m saturates instead of wrapping around uint16
    ],
)
def test_converted_depth_is_rounded_and_saturated(
    tmp_path: Path, raw: int, units_per_metre: float, expected_mm: int
) -> None:
    import_posed_rgbd(tiny_source(tmp_path, {"a.png": raw}, units_per_metre), tmp_path / "out")
    stored = cv2.imread(str(tmp_path / "out" / "depth" / "0.png"), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == np.uint16 and (stored == expected_mm).all()


def test_images_without_names_file_are_taken_in_natural_order(tmp_path: Path) -> None:
    # Plain string order would put 10.png before 2.png.
    source = tiny_source(tmp_path, {"2.png": 2000, "10.png": 3000}, 1000.0)
    assert import_posed_rgbd(source, tmp_path / "out") == 2
    assert (tmp_path / "out" / "frame_names.txt").read_text().split() == ["2.png", "10.png"]
    for index, expected_mm in enumerate((2000, 3000)):
        stored = cv2.imread(str(tmp_path / "out" / "depth" / f"{index}.png"), cv2.IMREAD_UNCHANGED)
        assert (stored == expected_mm).all()
