"""Replica reader on sequences written in Semantic-NeRF's layout (tests/data/scene_files.py)."""

import math
from pathlib import Path

import numpy as np
import pytest
from scene_files import (
    REPLICA_BENCHMARK_EXPECTED,
    REPLICA_PAPER_EXPECTED,
    REPLICA_RAW_IDS,
    color_pattern,
    depth_pattern_mm,
    label_pattern,
    pose_pattern,
    resize_nearest_reference,
    write_replica_scene,
)

from gsnerf.data import DatasetFormatError, open_scene
from gsnerf.data.labels import LabelMapping

SEQUENCE = "office_0/Sequence_1"


def test_natural_order_and_pose_rows(replica_root: Path) -> None:
    scene = open_scene("replica", replica_root, SEQUENCE, (32, 24))
    # rgb_10 comes after rgb_9 (a plain string sort would put it after rgb_1).
    assert scene.frame_ids == list(range(11))
    expected = np.stack([pose_pattern(k) for k in range(11)])
    np.testing.assert_allclose(scene.cam_to_world.numpy(), expected, atol=1e-6)
    assert scene.read(10).cam_to_world[0, 3].item() == pytest.approx(1.0)
    assert scene.dropped_frames == [] and scene.has_labels and scene.num_classes == 19


def test_frame_contents(replica_root: Path) -> None:
    frame = open_scene("replica", replica_root, SEQUENCE, (64, 48)).read(9)
    stored = color_pattern(9, (64, 48)).transpose(2, 0, 1)
    np.testing.assert_array_equal((frame.image.numpy() * 255).round(), stored)
    np.testing.assert_array_equal(
        frame.depth.numpy(), depth_pattern_mm(9, (64, 48)).astype(np.float32) / 1000
    )


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        (LabelMapping.BENCHMARK, REPLICA_BENCHMARK_EXPECTED),
        (LabelMapping.GSNERF_PAPER, REPLICA_PAPER_EXPECTED),
    ],
)
def test_labels(replica_root: Path, mapping: LabelMapping, expected: tuple[int, ...]) -> None:
    size = (26, 20)
    frame = open_scene("replica", replica_root, SEQUENCE, size, mapping).read(4)
    raw = resize_nearest_reference(label_pattern(REPLICA_RAW_IDS, (64, 48), np.int64), size)
    lookup = dict(zip(REPLICA_RAW_IDS, expected))
    assert frame.labels is not None
    np.testing.assert_array_equal(frame.labels.numpy(), np.vectorize(lookup.get)(raw))


def test_intrinsics_from_90_degree_field_of_view(tmp_path: Path) -> None:
    write_replica_scene(tmp_path, num_frames=1, size=(640, 480), with_labels=False)
    native = open_scene("replica", tmp_path, SEQUENCE, (640, 480)).read(0).intrinsics
    # Not the reference's cy = 229.5 (spec 7.4).
    np.testing.assert_allclose(native.numpy(), [[320, 0, 319.5], [0, 320, 239.5], [0, 0, 1]])
    half = open_scene("replica", tmp_path, SEQUENCE, (320, 240)).read(0)
    np.testing.assert_allclose(
        half.intrinsics.numpy(), [[160, 0, 159.5], [0, 160, 119.5], [0, 0, 1]]
    )
    assert half.labels is None


def test_intrinsics_follow_the_decoded_size(replica_root: Path) -> None:
    # 64x48 renders: fx = 32 / tan(45 deg) = 32; at 32x24 every entry halves about the centre.
    k = open_scene("replica", replica_root, SEQUENCE, (32, 24)).read(0).intrinsics
    fx = 16 / math.tan(math.radians(45))
    np.testing.assert_allclose(k.numpy(), [[fx, 0, 15.5], [0, fx, 11.5], [0, 0, 1]], rtol=1e-6)


def test_pose_row_count_mismatch_names_the_trajectory(replica_root: Path) -> None:
    trajectory = replica_root / SEQUENCE / "traj_w_c.txt"
    rows = trajectory.read_text().splitlines()
    trajectory.write_text("\n".join(rows[:-1]) + "\n")
    with pytest.raises(DatasetFormatError, match="10 pose rows for 11 frames") as error:
        open_scene("replica", replica_root, SEQUENCE, (32, 24))
    assert str(trajectory) in str(error.value)


def test_short_pose_row_names_the_trajectory(replica_root: Path) -> None:
    trajectory = replica_root / SEQUENCE / "traj_w_c.txt"
    rows = trajectory.read_text().splitlines()
    rows[3] = " ".join(rows[3].split()[:12])
    trajectory.write_text("\n".join(rows) + "\n")
    with pytest.raises(DatasetFormatError, match="line 4") as error:
        open_scene("replica", replica_root, SEQUENCE, (32, 24))
    assert str(trajectory) in str(error.value)


def test_missing_depth_is_named(replica_root: Path) -> None:
    missing = replica_root / SEQUENCE / "depth" / "depth_10.png"
    missing.unlink()
    with pytest.raises(DatasetFormatError) as error:
        open_scene("replica", replica_root, SEQUENCE, (32, 24))
    assert str(missing) in str(error.value)


def test_missing_sequence_is_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError) as error:
        open_scene("replica", tmp_path, "room_9/Sequence_1", (32, 24))
    assert str(tmp_path / "room_9" / "Sequence_1") in str(error.value)


def test_nan_pose_row_is_dropped(replica_root: Path) -> None:
    trajectory = replica_root / SEQUENCE / "traj_w_c.txt"
    rows = trajectory.read_text().splitlines()
    rows[5] = " ".join(["nan"] * 16)
    trajectory.write_text("\n".join(rows) + "\n")
    scene = open_scene("replica", replica_root, SEQUENCE, (32, 24))
    assert 5 not in scene.frame_ids and len(scene.frame_ids) == 10
    assert [d.frame_id for d in scene.dropped_frames] == [5]


def test_binary_trajectory_is_named_not_a_decode_error(replica_root: Path) -> None:
    trajectory = replica_root / SEQUENCE / "traj_w_c.txt"
    # A gzip header: 0x8b is never valid as the second byte of UTF-8 text.
    trajectory.write_bytes(b"\x1f\x8b\x08\x00" + bytes(60))
    with pytest.raises(DatasetFormatError) as error:
        open_scene("replica", replica_root, SEQUENCE, (32, 24))
    assert str(error.value).startswith(f"{trajectory}: not a text file of poses (byte 1 is not")
