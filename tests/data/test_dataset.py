"""MultiViewDataset on a ScanNet-layout fixture whose camera centres lie on a line.

Frame k of the fixture sits at k * (0.1, 0.02, -0.05), so the distance between frames j and k
is proportional to |j - k| and the nearest-view orders below can be written down by hand.
"""

import dataclasses
import logging
from pathlib import Path

import pytest
import torch
from scene_files import write_scannet_scene

from gsnerf.data import open_scene
from gsnerf.data.dataset import (
    DatasetCfg,
    MultiViewDataset,
    collate_examples,
    open_split,
    scene_names,
)
from gsnerf.data.view_selection import ViewSelectionCfg, select_training_sources

SIZE = (32, 24)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("scannet")
    write_scannet_scene(
        root,
        frame_ids=tuple(range(30)),
        color_size=(64, 48),
        depth_size=(32, 24),
        invalid_pose_ids=(),
    )
    return open_scene("scannet", root, "scene0000_00", SIZE)


def _cfg(**overrides) -> DatasetCfg:
    views = ViewSelectionCfg(num_source_views=3, num_mvs_neighbours=2)
    return dataclasses.replace(DatasetCfg(kind="scannet", views=views), **overrides)


def test_test_items_follow_the_protocol(scene) -> None:
    dataset = MultiViewDataset([scene], _cfg(), "test")
    # Pool 0, 5, ..., 25; queries 2 and 22 (spec 1.5 with 30 frames).
    assert len(dataset) == 2
    first, second = dataset[0], dataset[1]
    assert first.target.frame_ids.tolist() == [2]
    assert first.sources.frame_ids.tolist() == [0, 5, 10]
    assert second.target.frame_ids.tolist() == [22]
    assert second.sources.frame_ids.tolist() == [20, 25, 15]
    # Neighbours of the sources [20, 25, 15]: 20 -> (25 or 15, tie broken by index), 25 -> 20.
    assert first.source_neighbours.shape == (3, 2)
    assert second.source_neighbours[1].tolist() == [0, 2]


def test_examples_have_the_contract_shapes(scene) -> None:
    example = MultiViewDataset([scene], _cfg(), "test")[0]
    assert example.sources.images.shape == (3, 3, 24, 32)
    assert example.sources.depths.shape == (3, 24, 32)
    assert example.sources.labels.dtype == torch.int64
    assert example.target.images.shape == (1, 3, 24, 32)
    assert example.sources.near.tolist() == pytest.approx([0.1] * 3)
    torch.testing.assert_close(example.target.images[0], scene.read(2).image)
    batch = collate_examples([example, example])
    assert batch.sources.images.shape == (2, 3, 3, 24, 32)
    assert batch.source_neighbours.shape == (2, 3, 2)
    assert batch.scenes == ["scene0000_00", "scene0000_00"]


def test_training_items_are_reproducible_and_exclude_the_target(scene) -> None:
    dataset = MultiViewDataset([scene], _cfg(), "train", seed=3, length=50)
    again = MultiViewDataset([scene], _cfg(), "train", seed=3, length=50)
    other_seed = MultiViewDataset([scene], _cfg(), "train", seed=4, length=50)
    targets = []
    for index in range(20):
        item = dataset[index]
        target = int(item.target.frame_ids[0])
        sources = item.sources.frame_ids.tolist()
        assert target not in sources
        # Sources come from the ceil(1.5 * 3) = 5 nearest other frames; equally distant frames
        # on both sides of the target may tie, so either is allowed.
        fifth = sorted(abs(k - target) for k in range(30) if k != target)[4]
        assert all(abs(s - target) <= fifth for s in sources)
        assert torch.equal(again[index].sources.frame_ids, item.sources.frame_ids)
        targets.append(target)
    assert len(set(targets)) > 5
    differing = [
        index
        for index in range(20)
        if other_seed[index].target.frame_ids.tolist() != [targets[index]]
    ]
    assert differing


def test_source_pool_training_never_uses_a_test_query(scene) -> None:
    dataset = MultiViewDataset([scene], _cfg(train_frames="source_pool"), "train", length=30)
    for index in range(30):
        item = dataset[index]
        used = item.sources.frame_ids.tolist() + item.target.frame_ids.tolist()
        assert all(frame % 5 == 0 for frame in used), used


def test_depth_range_jitter_stays_in_its_bounds(scene) -> None:
    cfg = _cfg(depth_range_jitter_prob=1.0, near=0.1, far=10.0)
    dataset = MultiViewDataset([scene], cfg, "train", length=10)
    for index in range(10):
        item = dataset[index]
        near, far = float(item.sources.near[0]), float(item.sources.far[0])
        assert 0.095 <= near <= 0.1 and 10.0 <= far <= 10.5
        assert torch.all(item.target.near == near)


def test_too_few_frames_is_a_clear_error(scene) -> None:
    views = ViewSelectionCfg(num_source_views=40)
    with pytest.raises(ValueError, match="scene0000_00 has 30 valid frames"):
        MultiViewDataset([scene], _cfg(views=views), "test")


def test_split_file_is_read_and_its_absence_named(tmp_path: Path) -> None:
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "train.txt").write_text("a\n\nb\n")
    assert scene_names(DatasetCfg(root=str(tmp_path)), "train") == ["a", "b"]
    with pytest.raises(FileNotFoundError, match="test.txt"):
        scene_names(DatasetCfg(root=str(tmp_path)), "test")


@pytest.mark.parametrize("split", ["train", "test"])
def test_empty_scene_list_is_an_error_even_with_a_split_file(tmp_path: Path, split: str) -> None:
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / f"{split}.txt").write_text("a\nb\n")
    cfg = DatasetCfg(root=str(tmp_path), **{f"{split}_scenes": []})
    with pytest.raises(ValueError, match=f"dataset.{split}_scenes is an empty list; list"):
        scene_names(cfg, split)
    # Null (the default) still means the split file.
    assert scene_names(DatasetCfg(root=str(tmp_path)), split) == ["a", "b"]


def test_binary_split_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "train.txt").write_bytes(b"scene0000_00\n\xff\xfe")
    with pytest.raises(ValueError) as error:
        scene_names(DatasetCfg(root=str(tmp_path)), "train")
    split_file = tmp_path / "splits" / "train.txt"
    expected = f"{split_file}: not a text file of scene names (byte 13 is not UTF-8)"
    assert str(error.value) == expected


def test_test_scene_too_short_for_the_pool_names_scene_and_counts(scene) -> None:
    # 30 valid frames, every 5th -> pool 0, 5, ..., 25: 6 frames for 7 source views.
    views = ViewSelectionCfg(num_source_views=7, num_mvs_neighbours=2)
    with pytest.raises(ValueError) as error:
        MultiViewDataset([scene], _cfg(views=views), "test")
    assert str(error.value).startswith(
        "test scene scene0000_00: its source pool has 6 frames (pool_stride 5 over the first 30 "
        "of its 30 valid frames, test queries excluded), fewer than the 7 source views needed"
    )


def test_test_protocol_without_queries_names_the_scene(scene) -> None:
    views = ViewSelectionCfg(num_source_views=3, num_mvs_neighbours=2, query_offset=40)
    with pytest.raises(ValueError, match="^scene scene0000_00: split_test_frames: 30 frames give"):
        MultiViewDataset([scene], _cfg(views=views), "test")


def test_split_with_and_without_label_maps_warns_naming_the_unlabeled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_scannet_scene(tmp_path, "scene0000_00", invalid_pose_ids=())
    write_scannet_scene(tmp_path, "scene0001_00", invalid_pose_ids=(), with_labels=False)
    write_scannet_scene(tmp_path, "scene0002_00", invalid_pose_ids=())
    cfg = DatasetCfg(kind="scannet", root=str(tmp_path), image_width=32, image_height=24)
    mixed = dataclasses.replace(cfg, train_scenes=["scene0000_00", "scene0001_00", "scene0002_00"])
    open_split(mixed, "train")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "train split: 1 of 3 scenes have no label maps, so no semantic loss or metric on them: "
        "scene0001_00"
    ]
    # All labelled, or none: nothing to warn about.
    caplog.clear()
    open_split(dataclasses.replace(cfg, test_scenes=["scene0000_00", "scene0002_00"]), "test")
    open_split(dataclasses.replace(cfg, test_scenes=["scene0001_00"]), "test")
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_test_sources_are_nearest_by_pose_when_frame_ids_skip_numbers(tmp_path: Path) -> None:
    # Frames 1-3 have -inf poses and are dropped: the 34 valid frames are 0, 4, 5, ..., 36, so
    # position p holds frame p + 3 (p >= 1). Pool = positions 0, 5, ..., 30 = frames 0, 8, 13,
    # 18, 23, 28, 33; queries = positions 2 and 22 = frames 5 and 25. Centres lie on a line,
    # frame k at k * (0.1, 0.02, -0.05), so distances go as |k - query|:
    # query 5 -> 8 (3), 0 (5), 13 (8); query 25 -> 23 (2), 28 (3), 18 (7).
    write_scannet_scene(
        tmp_path,
        frame_ids=tuple(range(37)),
        color_size=(64, 48),
        depth_size=(32, 24),
        invalid_pose_ids=(1, 2, 3),
        with_labels=False,
    )
    skipping = open_scene("scannet", tmp_path, "scene0000_00", SIZE)
    dataset = MultiViewDataset([skipping], _cfg(), "test")
    assert len(dataset) == 2
    first, second = dataset[0], dataset[1]
    assert first.target.frame_ids.tolist() == [5]
    assert first.sources.frame_ids.tolist() == [8, 0, 13]
    assert second.target.frame_ids.tolist() == [25]
    assert second.sources.frame_ids.tolist() == [23, 28, 18]
    # Each source carries the pose of its own frame id.
    torch.testing.assert_close(
        first.sources.cam_to_world[:, :3, 3],
        torch.tensor([[0.8, 0.16, -0.4], [0.0, 0.0, 0.0], [1.3, 0.26, -0.65]]),
    )


def test_collate_keeps_each_examples_near_and_far(scene) -> None:
    close = MultiViewDataset([scene], _cfg(near=0.2, far=5.0), "test")[0]
    wide = MultiViewDataset([scene], _cfg(near=0.5, far=8.0), "test")[0]
    batch = collate_examples([close, wide])
    torch.testing.assert_close(batch.sources.near, torch.tensor([[0.2] * 3, [0.5] * 3]))
    torch.testing.assert_close(batch.sources.far, torch.tensor([[5.0] * 3, [8.0] * 3]))
    torch.testing.assert_close(batch.target.near, torch.tensor([[0.2], [0.5]]))
    torch.testing.assert_close(batch.target.far, torch.tensor([[5.0], [8.0]]))


def test_depth_range_jitter_uses_its_own_draw_for_near_and_far(scene) -> None:
    # Replay the generator of each item as MultiViewDataset._training_choice consumes it:
    # scene, target, source pool and picks, then three uniforms u0 (jitter or not), u1, u2.
    # With jitter probability 1: near = 0.1 * (0.95 + 0.05 u1), far = 10 * (1 + 0.05 u2).
    cfg = _cfg(depth_range_jitter_prob=1.0, near=0.1, far=10.0)
    seed = 5
    dataset = MultiViewDataset([scene], cfg, "train", seed=seed, length=10)
    for index in range(10):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
        assert int(torch.randint(1, (1,), generator=generator)) == 0
        target = int(torch.randint(30, (1,), generator=generator))
        sources = select_training_sources(
            target, scene.cam_to_world, 3, pool_factor=1.5, generator=generator
        )
        _, u1, u2 = torch.rand(3, generator=generator).tolist()
        item = dataset[index]
        # The replay is in step with the dataset: same target and sources.
        assert item.target.frame_ids.tolist() == [target]
        assert item.sources.frame_ids.tolist() == sources.tolist()
        assert item.sources.near.tolist() == pytest.approx([0.1 * (0.95 + 0.05 * u1)] * 3)
        assert item.sources.far.tolist() == pytest.approx([10.0 * (1.0 + 0.05 * u2)] * 3)
