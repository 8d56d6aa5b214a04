"""CachedSceneReader on ScanNet and Replica fixtures written in their on-disk formats.

Two code paths must agree: every cached frame equals the frame the wrapped reader decodes, field
by field and dtype by dtype.
"""

import dataclasses
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scene_files import color_pattern, write_replica_scene, write_scannet_scene
from torch.utils.data import DataLoader

from gsnerf.data import SceneReader, open_scene
from gsnerf.data.dataset import DatasetCfg, MultiViewDataset, collate_examples, open_split
from gsnerf.data.frame_cache import CachedSceneReader
from gsnerf.data.replica import ReplicaScene
from gsnerf.data.scene_reader import Frame
from gsnerf.data.view_selection import ViewSelectionCfg

SCENE = "scene0000_00"
SIZE = (64, 48)
FIELDS = ("image", "depth", "labels", "intrinsics", "cam_to_world")
LOGGER = "gsnerf.data.frame_cache"


def assert_same_frame(cached: Frame, decoded: Frame) -> None:
    for name in FIELDS:
        got, expected = getattr(cached, name), getattr(decoded, name)
        if expected is None:
            assert got is None, name
            continue
        assert got.dtype == expected.dtype, name
        assert torch.equal(got, expected), name


def counting_reads(reader: SceneReader, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the frame ids the reader decodes from now on."""
    calls: list[int] = []
    decode = reader.read

    def read(frame_id: int) -> Frame:
        calls.append(frame_id)
        return decode(frame_id)

    monkeypatch.setattr(reader, "read", read)
    return calls


def cached_scannet(root: Path, cache: Path, mapping: str = "benchmark") -> CachedSceneReader:
    return CachedSceneReader(
        open_scene("scannet", root, SCENE, SIZE, mapping), cache, "scannet", mapping
    )


@pytest.mark.parametrize(
    ("kind", "scene_name", "with_labels"),
    [
        ("scannet", SCENE, True),
        ("scannet", SCENE, False),
        ("replica", "office_0/Sequence_1", True),
    ],
)
def test_cached_frames_equal_decoded_frames(
    tmp_path: Path, kind: str, scene_name: str, with_labels: bool
) -> None:
    root = tmp_path / "data"
    if kind == "scannet":
        write_scannet_scene(root, with_labels=with_labels)
    else:
        write_replica_scene(root, num_frames=4)
    decoded = open_scene(kind, root, scene_name, SIZE)
    cached = CachedSceneReader(
        open_scene(kind, root, scene_name, SIZE), tmp_path / "cache", kind, "benchmark"
    )
    assert isinstance(cached, SceneReader)
    assert cached.frame_ids == decoded.frame_ids and cached.has_labels == with_labels
    assert cached.class_names == decoded.class_names and cached.num_classes == decoded.num_classes
    assert cached.ignore_index == decoded.ignore_index and cached.image_size == SIZE
    assert torch.equal(cached.cam_to_world, decoded.cam_to_world)
    assert cached.dropped_frames == decoded.dropped_frames
    for frame_id in decoded.frame_ids:
        reference = decoded.read(frame_id)
        assert_same_frame(cached.read(frame_id), reference)  # decoded and written
        assert_same_frame(cached.read(frame_id), reference)  # served from the file
        path = tmp_path / "cache" / kind / scene_name / "64x48" / f"{frame_id}.pt"
        assert cached.frame_path(frame_id) == path
        stored = torch.load(path, weights_only=True)
        # Compact where exact: 8-bit colour, 16-bit millimetres, 8-bit class ids.
        assert stored["image"]["data"].dtype == torch.uint8
        assert stored["depth"]["data"].dtype == torch.uint16
        if with_labels:
            assert stored["labels"]["data"].dtype == torch.uint8
        else:
            assert stored["labels"] is None


def test_second_read_does_not_decode(scannet_root: Path, monkeypatch) -> None:
    cache = scannet_root / "cache"
    cached = cached_scannet(scannet_root, cache)
    calls = counting_reads(cached.wrapped, monkeypatch)
    for frame_id in cached.frame_ids * 2:
        cached.read(frame_id)
    assert calls == [0, 1, 3, 10]
    # A new process opening the same cache decodes nothing either.
    reopened = cached_scannet(scannet_root, cache)
    calls_after_reopen = counting_reads(reopened.wrapped, monkeypatch)
    reopened.read(3)
    assert calls_after_reopen == []


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_cache_file_is_reported_and_replaced(
    scannet_root: Path, monkeypatch, caplog, damage: str
) -> None:
    cached = cached_scannet(scannet_root, scannet_root / "cache")
    reference = cached.read(1)
    path = cached.frame_path(1)
    content = path.read_bytes()
    path.write_bytes(
        b"\x00garbage\xff" * 50 if damage == "garbage" else content[: len(content) // 2]
    )
    calls = counting_reads(cached.wrapped, monkeypatch)
    with caplog.at_level("WARNING", logger=LOGGER):
        assert_same_frame(cached.read(1), reference)
    assert calls == [1]
    assert any(str(path) in record.getMessage() for record in caplog.records)
    # The file was rewritten: read back without decoding.
    assert_same_frame(cached.read(1), reference)
    assert calls == [1]
    assert torch.load(path, weights_only=True)["image"]["data"].shape == (3, 48, 64)


def test_changed_source_image_is_decoded_again(scannet_root: Path, monkeypatch) -> None:
    cached = cached_scannet(scannet_root, scannet_root / "cache")
    before = {frame_id: cached.read(frame_id) for frame_id in cached.frame_ids}
    color = scannet_root / SCENE / "color" / "3.png"
    cv2.imwrite(str(color), color_pattern(77, (324, 242))[..., ::-1])
    later = color.stat().st_mtime_ns + 5_000_000_000
    os.utime(color, ns=(later, later))
    calls = counting_reads(cached.wrapped, monkeypatch)
    after = {frame_id: cached.read(frame_id) for frame_id in cached.frame_ids}
    # Only the changed frame is decoded again; it now shows the new colours.
    assert calls == [3]
    assert not torch.equal(after[3].image, before[3].image)
    assert_same_frame(after[3], open_scene("scannet", scannet_root, SCENE, SIZE).read(3))
    assert_same_frame(after[1], before[1])


def test_changed_intrinsics_or_label_mapping_invalidate_the_scene(
    scannet_root: Path, monkeypatch
) -> None:
    cache = scannet_root / "cache"
    first = cached_scannet(scannet_root, cache).read(0)
    paper = cached_scannet(scannet_root, cache, "gsnerf_paper")
    paper_calls = counting_reads(paper.wrapped, monkeypatch)
    decoded = open_scene("scannet", scannet_root, SCENE, SIZE, "gsnerf_paper").read(0)
    assert_same_frame(paper.read(0), decoded)
    assert paper_calls == [0]
    assert not torch.equal(decoded.labels, first.labels)
    # Twice the focal lengths in intrinsic_color.txt: every frame's intrinsics change.
    k_path = scannet_root / SCENE / "intrinsic" / "intrinsic_color.txt"
    k = np.loadtxt(k_path)
    k[0, 0] *= 2.0
    k[1, 1] *= 2.0
    np.savetxt(k_path, k, fmt="%f")
    reopened = cached_scannet(scannet_root, cache)
    calls = counting_reads(reopened.wrapped, monkeypatch)
    frame = reopened.read(0)
    assert calls == [0]
    torch.testing.assert_close(frame.intrinsics[:2, :2], 2.0 * first.intrinsics[:2, :2])


def test_missing_cache_folder_is_created(scannet_root: Path) -> None:
    cache = scannet_root / "not" / "created" / "yet"
    cached = cached_scannet(scannet_root, cache)
    assert (cache / "scannet" / SCENE / "64x48").is_dir()
    cached.read(0)
    assert cached.frame_path(0).is_file()


def test_failed_write_is_logged_and_the_frame_still_served(
    scannet_root: Path, monkeypatch, caplog
) -> None:
    cached = cached_scannet(scannet_root, scannet_root / "cache")

    def refuse(source: str, target: str) -> None:
        raise PermissionError(f"{target}: read-only file system")

    monkeypatch.setattr("gsnerf.data.frame_cache.os.replace", refuse)
    with caplog.at_level("WARNING", logger=LOGGER):
        frame = cached.read(10)
    assert_same_frame(frame, cached.wrapped.read(10))
    assert "cannot write frame cache file" in caplog.text
    # Neither the frame file nor a temporary file is left behind.
    assert list(cached.folder.iterdir()) == []


def test_open_split_wraps_scenes_and_workers_share_the_cache(scannet_root: Path) -> None:
    views = ViewSelectionCfg(num_source_views=2, num_mvs_neighbours=1)
    plain_cfg = DatasetCfg(
        kind="scannet",
        root=str(scannet_root),
        train_scenes=[SCENE],
        image_width=SIZE[0],
        image_height=SIZE[1],
        views=views,
    )
    cache = scannet_root / "cache"
    cached_cfg = dataclasses.replace(plain_cfg, frame_cache=str(cache))
    plain_scenes = open_split(plain_cfg, "train")
    cached_scenes = open_split(cached_cfg, "train")
    assert not isinstance(plain_scenes[0], CachedSceneReader)
    assert all(isinstance(scene, CachedSceneReader) for scene in cached_scenes)
    plain = MultiViewDataset(plain_scenes, plain_cfg, "train", seed=1, length=8)
    cached = MultiViewDataset(cached_scenes, cached_cfg, "train", seed=1, length=8)
    # Two worker processes decode and write overlapping frames of the same scene at once.
    loader = DataLoader(cached, batch_size=2, num_workers=2, collate_fn=collate_examples)
    for index, batch in enumerate(loader):
        expected = collate_examples([plain[2 * index], plain[2 * index + 1]])
        assert torch.equal(batch.sources.images, expected.sources.images)
        assert torch.equal(batch.sources.depths, expected.sources.depths)
        assert torch.equal(batch.target.labels, expected.target.labels)
    written = sorted(path.name for path in (cache / "scannet" / SCENE / "64x48").iterdir())
    assert written == ["0.pt", "1.pt", "10.pt", "3.pt"]


def test_changed_float_reader_setting_decodes_again(tmp_path: Path, monkeypatch) -> None:
    # Replica's field of view is a float attribute of the reader: 90 deg at 64 px wide gives
    # fx = 32 / tan(45 deg) = 32, 60 deg gives 32 / tan(30 deg) = 32 sqrt(3).
    root = tmp_path / "data"
    write_replica_scene(root, num_frames=3)
    name = "office_0/Sequence_1"
    cache = tmp_path / "cache"
    wide = CachedSceneReader(
        ReplicaScene(root, name, SIZE, horizontal_fov_deg=90.0), cache, "replica", "benchmark"
    )
    torch.testing.assert_close(wide.read(0).intrinsics[0, 0], torch.tensor(32.0))
    narrow = CachedSceneReader(
        ReplicaScene(root, name, SIZE, horizontal_fov_deg=60.0), cache, "replica", "benchmark"
    )
    calls = counting_reads(narrow.wrapped, monkeypatch)
    intrinsics = narrow.read(0).intrinsics
    assert calls == [0]
    focal = 32.0 * 3.0**0.5
    expected = torch.tensor([[focal, 0.0, 31.5], [0.0, focal, 23.5], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(intrinsics, expected)


def test_sub_millimetre_depth_is_cached_bit_for_bit(scannet_root: Path, monkeypatch) -> None:
    # A reader whose depth is not a whole number of millimetres (1.0004 m): 16-bit millimetres
    # would round it to 1.000 m, so the cache must keep it as float32.
    cached = cached_scannet(scannet_root, scannet_root / "cache")
    decode = cached.wrapped.read
    calls: list[int] = []

    def read(frame_id: int) -> Frame:
        calls.append(frame_id)
        frame = decode(frame_id)
        return dataclasses.replace(frame, depth=torch.full_like(frame.depth, 1.0004))

    monkeypatch.setattr(cached.wrapped, "read", read)
    reference = cached.wrapped.read(0)
    cached.read(0)
    from_file = cached.read(0)
    # Decoded once for the reference and once for the cache; the last read came from the file.
    assert calls == [0, 0]
    assert_same_frame(from_file, reference)
    assert from_file.depth[0, 0].item() != 1.0
