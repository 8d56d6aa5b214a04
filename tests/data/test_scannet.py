"""ScanNet reader on scenes written in the SensReader layout (tests/data/scene_files.py)."""

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scene_files import (
    SCANNET_BENCHMARK_EXPECTED,
    SCANNET_PAPER_EXPECTED,
    SCANNET_RAW_IDS,
    color_pattern,
    depth_pattern_mm,
    label_pattern,
    pose_pattern,
    resize_nearest_reference,
    scannet_intrinsics,
    write_scannet_scene,
)

from gsnerf.data import IGNORE_INDEX, DatasetFormatError, open_scene
from gsnerf.data.labels import LabelMapping

SCENE = "scene0000_00"


def expected_intrinsics(k: np.ndarray, native: tuple[int, int], out: tuple[int, int]) -> np.ndarray:
    """Per-axis scaling with pixel centres aligned, written out by hand."""
    sx, sy = out[0] / native[0], out[1] / native[1]
    return np.array(
        [
            [k[0, 0] * sx, 0.0, (k[0, 2] + 0.5) * sx - 0.5],
            [0.0, k[1, 1] * sy, (k[1, 2] + 0.5) * sy - 0.5],
            [0.0, 0.0, 1.0],
        ]
    )


def test_frames_sorted_numerically_and_minus_inf_pose_dropped(scannet_root: Path) -> None:
    scene = open_scene("scannet", scannet_root, SCENE, (160, 120))
    assert scene.frame_ids == [0, 1, 3, 10]
    assert len(scene.dropped_frames) == 1
    dropped = scene.dropped_frames[0]
    assert dropped.frame_id == 2
    assert dropped.path == scannet_root / SCENE / "pose" / "2.txt"
    assert "inf" in dropped.reason
    expected = np.stack([pose_pattern(i) for i in (0, 1, 3, 10)])
    np.testing.assert_allclose(scene.cam_to_world.numpy(), expected, atol=1e-6)
    assert scene.has_labels and scene.num_classes == 20 and scene.ignore_index == IGNORE_INDEX
    with pytest.raises(KeyError):
        scene.read(2)


@pytest.mark.parametrize("size", [(320, 240), (64, 48)])
def test_depth_in_metres_resized_nearest_without_registration(
    scannet_root: Path, size: tuple[int, int]
) -> None:
    # Depth is 160x120 and colour 324x242: depth goes onto the output grid, nearest, hole kept.
    frame = open_scene("scannet", scannet_root, SCENE, size).read(3)
    expected_mm = resize_nearest_reference(depth_pattern_mm(3, (160, 120)), size)
    np.testing.assert_array_equal(frame.depth.numpy(), expected_mm.astype(np.float32) / 1000)
    # The hole covers depth rows 12..29 and columns 32..63, i.e. 15-37 % of the height.
    assert frame.depth[size[1] // 5, size[0] // 3].item() == 0.0


def test_depth_png_value_is_millimetres(scannet_root: Path) -> None:
    frame = open_scene("scannet", scannet_root, SCENE, (160, 120)).read(3)
    assert frame.depth[0, 0].item() == pytest.approx(1.3)  # 1000 + 100 * 3 mm
    assert frame.depth[119, 159].item() == pytest.approx(1.3 + (7 * 119 + 3 * 159) / 1000)


def test_labels_benchmark_and_paper(scannet_root: Path) -> None:
    size = (60, 45)
    raw = resize_nearest_reference(label_pattern(SCANNET_RAW_IDS, (324, 242), np.int64), size)
    for mapping, expected in (
        (LabelMapping.BENCHMARK, SCANNET_BENCHMARK_EXPECTED),
        (LabelMapping.GSNERF_PAPER, SCANNET_PAPER_EXPECTED),
    ):
        lookup = dict(zip(SCANNET_RAW_IDS, expected))
        frame = open_scene("scannet", scannet_root, SCENE, size, mapping).read(0)
        assert frame.labels is not None and frame.labels.dtype == torch.int64
        np.testing.assert_array_equal(frame.labels.numpy(), np.vectorize(lookup.get)(raw))


def test_colour_area_averaged_and_intrinsics_scaled(scannet_root: Path) -> None:
    scene = open_scene("scannet", scannet_root, SCENE, (162, 121))
    frame = scene.read(1)
    # Exact factor 2: area averaging is the mean of each 2x2 block.
    blocks = color_pattern(1, (324, 242)).astype(np.float64).reshape(121, 2, 162, 2, 3)
    expected = blocks.mean(axis=(1, 3)).transpose(2, 0, 1) / 255
    assert np.abs(frame.image.numpy() - expected).max() <= 1 / 255 + 1e-6
    k = expected_intrinsics(scannet_intrinsics((324, 242)), (324, 242), (162, 121))
    np.testing.assert_allclose(frame.intrinsics.numpy(), k, rtol=1e-5)


def test_native_size_returns_stored_pixels(scannet_root: Path) -> None:
    frame = open_scene("scannet", scannet_root, SCENE, (324, 242)).read(10)
    stored = color_pattern(10, (324, 242)).transpose(2, 0, 1)
    np.testing.assert_array_equal((frame.image.numpy() * 255).round(), stored)
    np.testing.assert_allclose(frame.intrinsics.numpy(), scannet_intrinsics((324, 242)), rtol=1e-6)


def test_full_size_jpeg_intrinsics_use_the_true_height(tmp_path: Path) -> None:
    write_scannet_scene(tmp_path, frame_ids=(0,), color_size=(1296, 968), depth_size=(640, 480),
                        invalid_pose_ids=(), with_labels=False, color_ext=".jpg")  # fmt: skip
    frame = open_scene("scannet", tmp_path, SCENE, (320, 240)).read(0)
    k = scannet_intrinsics((1296, 968))
    np.testing.assert_allclose(
        frame.intrinsics.numpy(), expected_intrinsics(k, (1296, 968), (320, 240)), rtol=1e-5
    )
    # The reference scales fy by 320 / 1296 (as if 972 px high): about 0.4 % off.
    assert frame.intrinsics[1, 1].item() == pytest.approx(k[1, 1] * 240 / 968, rel=1e-6)
    assert abs(frame.intrinsics[1, 1].item() / (k[1, 1] * 320 / 1296) - 1) > 0.003
    assert frame.image.shape == (3, 240, 320) and frame.labels is None


def test_scene_without_label_folder_needs_no_tsv(tmp_path: Path) -> None:
    write_scannet_scene(tmp_path, with_labels=False)
    scene = open_scene("scannet", tmp_path, SCENE, (80, 60))
    assert not scene.has_labels and scene.read(0).labels is None
    assert scene.class_names[0] == "wall" and scene.num_classes == 20


def test_synthetic_kind_opens_the_scannet_layout(scannet_root: Path) -> None:
    assert open_scene("synthetic", scannet_root, SCENE, (80, 60)).frame_ids == [0, 1, 3, 10]


def test_missing_scene_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError) as error:
        open_scene("scannet", tmp_path, "scene9999_00", (80, 60))
    assert str(tmp_path / "scene9999_00") in str(error.value)


@pytest.mark.parametrize(
    "folder, name", [("depth", "1.png"), ("pose", "10.txt"), ("label-filt", "3.png")]
)
def test_missing_frame_file_is_named(scannet_root: Path, folder: str, name: str) -> None:
    missing = scannet_root / SCENE / folder / name
    missing.unlink()
    with pytest.raises(DatasetFormatError) as error:
        open_scene("scannet", scannet_root, SCENE, (80, 60))
    assert str(missing) in str(error.value)


def test_label_folder_without_tsv_names_the_tsv(scannet_root: Path) -> None:
    tsv = scannet_root / "scannetv2-labels.combined.tsv"
    tsv.unlink()
    with pytest.raises(DatasetFormatError) as error:
        open_scene("scannet", scannet_root, SCENE, (80, 60))
    assert str(tsv) in str(error.value)


def test_truncated_image_is_named_when_read(scannet_root: Path) -> None:
    color = scannet_root / SCENE / "color" / "1.png"
    color.write_bytes(color.read_bytes()[:500])
    scene = open_scene("scannet", scannet_root, SCENE, (80, 60))
    with pytest.raises(DatasetFormatError, match="cannot decode") as error:
        scene.read(1)
    assert str(color) in str(error.value)


def test_truncated_jpeg_is_named(tmp_path: Path) -> None:
    write_scannet_scene(tmp_path, frame_ids=(0,), invalid_pose_ids=(), color_ext=".jpg")
    color = tmp_path / SCENE / "color" / "0.jpg"
    color.write_bytes(color.read_bytes()[:-300])
    with pytest.raises(DatasetFormatError) as error:
        open_scene("scannet", tmp_path, SCENE, (80, 60)).read(0)
    assert str(color) in str(error.value)


def test_eight_bit_depth_is_rejected_with_its_path(scannet_root: Path) -> None:
    depth = scannet_root / SCENE / "depth" / "0.png"
    cv2.imwrite(str(depth), np.full((120, 160), 3, dtype=np.uint8))
    with pytest.raises(DatasetFormatError, match="16-bit") as error:
        open_scene("scannet", scannet_root, SCENE, (80, 60)).read(0)
    assert str(depth) in str(error.value)


def test_pose_with_three_rows_is_named(scannet_root: Path) -> None:
    pose = scannet_root / SCENE / "pose" / "3.txt"
    np.savetxt(pose, pose_pattern(3)[:3], fmt="%f")
    with pytest.raises(DatasetFormatError, match="4x4") as error:
        open_scene("scannet", scannet_root, SCENE, (80, 60))
    assert str(pose) in str(error.value)


def test_unparsable_pose_is_named(scannet_root: Path) -> None:
    pose = scannet_root / SCENE / "pose" / "1.txt"
    pose.write_text("1 0 0 0\n0 1 0 0\n0 0 1 zero\n0 0 0 1\n")
    with pytest.raises(DatasetFormatError) as error:
        open_scene("scannet", scannet_root, SCENE, (80, 60))
    assert str(pose) in str(error.value)


def test_all_invalid_poses_is_an_error_naming_the_scene(tmp_path: Path) -> None:
    write_scannet_scene(tmp_path, frame_ids=(0, 1), invalid_pose_ids=(0, 1))
    with pytest.raises(DatasetFormatError, match="invalid") as error:
        open_scene("scannet", tmp_path, SCENE, (80, 60))
    assert str(tmp_path / SCENE) in str(error.value)


@pytest.mark.parametrize(
    "folder, name, half, full",
    [
        ("color", "3.png", (162, 121), (324, 242)),
        ("depth", "10.png", (80, 60), (160, 120)),
        ("label-filt", "1.png", (162, 121), (324, 242)),
    ],
)
def test_frame_stored_at_another_size_is_named_with_both_sizes(
    scannet_root: Path, folder: str, name: str, half: tuple[int, int], full: tuple[int, int]
) -> None:
    # Colour 324x242 and depth 160x120 differ by design; one frame at half size does not.
    path = scannet_root / SCENE / folder / name
    stored = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(path), cv2.resize(stored, half, interpolation=cv2.INTER_NEAREST))
    scene = open_scene("scannet", scannet_root, SCENE, (160, 120))
    scene.read(0)
    with pytest.raises(DatasetFormatError) as error:
        scene.read(int(Path(name).stem))
    message = str(error.value)
    first = scannet_root / SCENE / folder / f"0{path.suffix}"
    assert message.startswith(f"{path}: ")
    assert f"is {half[0]}x{half[1]}" in message and f"{first} is {full[0]}x{full[1]}" in message


def test_binary_pose_file_is_named_not_a_decode_error(scannet_root: Path) -> None:
    pose = scannet_root / SCENE / "pose" / "3.txt"
    pose.write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(DatasetFormatError, match="not a text matrix") as error:
        open_scene("scannet", scannet_root, SCENE, (80, 60))
    assert str(error.value).startswith(f"{pose}: not a text matrix (byte 0 is not UTF-8")


def test_jpeg_with_zeroed_bytes_is_an_error_and_stderr_is_restored(
    tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    write_scannet_scene(tmp_path, frame_ids=(0, 1), invalid_pose_ids=(), color_ext=".jpg")
    color = tmp_path / SCENE / "color" / "1.jpg"
    data = bytearray(color.read_bytes())
    # 2 kB zeroed mid-scan, end marker kept: libjpeg only warns and decodes wrong pixels.
    middle = len(data) // 2
    data[middle : middle + 2048] = bytes(2048)
    color.write_bytes(bytes(data))
    scene = open_scene("scannet", tmp_path, SCENE, (80, 60))
    assert scene.read(0).image.shape == (3, 60, 80)
    with pytest.raises(DatasetFormatError, match="corrupt JPEG data") as error:
        scene.read(1)
    assert str(error.value).startswith(f"{color}: corrupt JPEG data")
    assert "libjpeg: Corrupt JPEG data" in str(error.value)
    # The warning became the error; standard error points where it did before.
    os.write(2, b"written after decoding\n")
    assert capfd.readouterr().err == "written after decoding\n"


def test_jpeg_markers_around_garbage_is_named(tmp_path: Path) -> None:
    write_scannet_scene(tmp_path, frame_ids=(0,), invalid_pose_ids=(), color_ext=".jpg")
    color = tmp_path / SCENE / "color" / "0.jpg"
    color.write_bytes(b"\xff\xd8" + bytes(range(256)) * 4 + b"\xff\xd9")
    with pytest.raises(DatasetFormatError) as error:
        open_scene("scannet", tmp_path, SCENE, (80, 60)).read(0)
    assert str(error.value) == f"{color}: cannot decode image (corrupt or not an image)"
