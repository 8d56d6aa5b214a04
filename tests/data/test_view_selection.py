"""Source-view selection on hand-made camera sets whose nearest order can be read off."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from gsnerf.data import view_selection as vs


def rotation_about_y(degrees: float) -> torch.Tensor:
    angle = math.radians(degrees)
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=torch.float64)


def pose(centre: tuple[float, float, float], yaw_degrees: float = 0.0) -> torch.Tensor:
    """Camera-to-world pose with the given centre, turned about the world y axis."""
    matrix = torch.eye(4, dtype=torch.float64)
    matrix[:3, :3] = rotation_about_y(yaw_degrees)
    matrix[:3, 3] = torch.tensor(centre, dtype=torch.float64)
    return matrix


def cameras_on_x(positions: list[float]) -> torch.Tensor:
    return torch.stack([pose((x, 0.0, 0.0)) for x in positions])


def test_distances_are_between_camera_centres() -> None:
    pool = torch.stack([pose((3.0, 4.0, 0.0), 30.0), pose((0.0, 0.0, -2.0)), pose((1.0, 0.0, 0.0))])
    distances = vs.view_distances(pose((0.0, 0.0, 0.0)), pool, direction_weight=0.0)
    torch.testing.assert_close(distances, torch.tensor([5.0, 2.0, 1.0], dtype=torch.float64))


def test_turning_in_place_costs_nothing_without_direction_weight() -> None:
    # The reference's -R^T t would put these two cameras 2 * |t| * sin(45 deg) = 2.83 m apart.
    target = pose((2.0, 0.0, 0.0))
    turned = pose((2.0, 0.0, 0.0), 90.0)[None]
    assert vs.view_distances(target, turned, direction_weight=0.0).item() == 0.0


@pytest.mark.parametrize(("yaw", "expected"), [(90.0, 0.5), (180.0, 1.0), (60.0, 0.25)])
def test_direction_weight_adds_one_minus_cosine(yaw: float, expected: float) -> None:
    distance = vs.view_distances(pose((0.0, 0.0, 0.0)), pose((0.0, 0.0, 0.0), yaw)[None], 0.5)
    torch.testing.assert_close(distance, torch.tensor([expected], dtype=torch.float64))


def test_pairwise_docstring_example() -> None:
    distances = vs.pairwise_view_distances(
        pose((0.0, 0.0, 0.0))[None], pose((3.0, 4.0, 0.0), 90.0)[None], direction_weight=2.0
    )
    torch.testing.assert_close(distances, torch.tensor([[7.0]], dtype=torch.float64))


def test_negative_direction_weight_is_rejected() -> None:
    with pytest.raises(ValueError, match="direction_weight"):
        vs.view_distances(pose((0.0, 0.0, 0.0)), cameras_on_x([1.0]), -1.0)


def test_nearest_views_on_a_line() -> None:
    pool = cameras_on_x([5.0, 1.0, -2.0, 3.0, 0.5])
    nearest = vs.nearest_views(pose((0.0, 0.0, 0.0)), pool, 5, direction_weight=0.0)
    assert nearest.dtype == torch.int64
    assert nearest.tolist() == [4, 1, 2, 3, 0]
    assert vs.nearest_views(pose((0.0, 0.0, 0.0)), pool, 3, 0.0).tolist() == [4, 1, 2]


def test_nearest_views_breaks_ties_by_index() -> None:
    pool = cameras_on_x([2.0, -1.0, 1.0, -1.0, 4.0])
    assert vs.nearest_views(pose((0.0, 0.0, 0.0)), pool, 4, 0.0).tolist() == [1, 2, 3, 0]


def test_direction_weight_changes_the_nearest_view() -> None:
    # View 0 shares the target's centre but looks sideways; view 1 is 0.5 m away, same heading.
    pool = torch.stack([pose((0.0, 0.0, 0.0), 90.0), pose((0.5, 0.0, 0.0))])
    target = pose((0.0, 0.0, 0.0))
    assert vs.nearest_views(target, pool, 2, direction_weight=0.0).tolist() == [0, 1]
    assert vs.nearest_views(target, pool, 2, direction_weight=1.0).tolist() == [1, 0]


def test_nearest_views_accepts_numpy_poses() -> None:
    pool = cameras_on_x([5.0, 1.0, -2.0])
    from_numpy = vs.nearest_views(np.eye(4), pool.numpy(), 3, 0.0)
    assert from_numpy.tolist() == [1, 2, 0]


def test_nearest_views_needs_k_pool_views() -> None:
    with pytest.raises(ValueError, match=r"k=5.*3 views"):
        vs.nearest_views(pose((0.0, 0.0, 0.0)), cameras_on_x([1.0, 2.0, 3.0]), 5, 0.0)


def default_split(frame_ids: list[int]) -> tuple[list[int], list[int]]:
    cfg = vs.ViewSelectionCfg()
    return vs.split_test_frames(
        frame_ids,
        pool_stride=cfg.pool_stride,
        pool_limit=cfg.pool_limit,
        query_offset=cfg.query_offset,
        query_stride=cfg.query_stride,
        max_queries=cfg.max_queries,
    )


def test_split_of_900_frames_follows_spec_1_5() -> None:
    pool, queries = default_split(list(range(900)))
    assert pool == list(range(0, 700, 5))
    assert len(pool) == 140
    assert queries == [2, 22, 42, 62, 82, 102, 122, 142, 162, 182]


def test_split_of_60_frames() -> None:
    pool, queries = default_split(list(range(60)))
    assert pool == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55]
    assert queries == [2, 22, 42]


def test_split_slices_positions_not_frame_numbers() -> None:
    # Frame 1 was dropped (e.g. an invalid pose), so position 5 holds frame 6.
    frame_ids = [0] + list(range(2, 100))
    pool, queries = vs.split_test_frames(frame_ids)
    assert pool[:3] == [0, 6, 11]
    assert queries == [3, 23, 43, 63, 83]


def test_split_removes_queries_from_the_pool() -> None:
    pool, queries = vs.split_test_frames(
        list(range(20)), pool_stride=2, pool_limit=20, query_offset=2, query_stride=4
    )
    assert queries == [2, 6, 10, 14, 18]
    assert pool == [0, 4, 8, 12, 16]


@pytest.mark.parametrize("field", ["pool_stride", "query_stride", "pool_limit", "max_queries"])
def test_split_rejects_non_positive_settings(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        vs.split_test_frames(list(range(100)), **{field: 0})


def test_split_without_queries_is_an_error() -> None:
    with pytest.raises(ValueError, match="2 frames"):
        vs.split_test_frames([0, 1])


def test_training_pool_sizes() -> None:
    assert vs.training_pool_size(8, 1.5, 100) == (8, 12)
    assert vs.training_pool_size(10, 1.1, 100) == (10, 11)
    assert vs.training_pool_size(8, 1.5, 10) == (8, 10)
    with pytest.raises(ValueError, match="pool_factor"):
        vs.training_pool_size(8, 0.5, 100)


def draw(seed: int, target: int = 10, k: int = 4, positions: int = 30) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    chosen = vs.select_training_sources(
        target, cameras_on_x([float(x) for x in range(positions)]), k, generator=generator
    )
    return chosen.tolist()


def test_training_selection_is_reproducible_from_the_generator_alone() -> None:
    torch.manual_seed(1)
    first = draw(seed=7)
    torch.manual_seed(2)
    assert draw(seed=7) == first


def test_training_selection_draws_k_of_the_nearest_ceil_1_5_k() -> None:
    # Target at x = 10; by distance: 9, 11 (tie, lower index first), 8, 12, then 7, 13.
    nearest_four = {8, 9, 11, 12}
    nearest_six = nearest_four | {7, 13}
    draws = [draw(seed) for seed in range(200)]
    for chosen in draws:
        assert len(chosen) == 4 == len(set(chosen))
        assert 10 not in chosen
        assert set(chosen) <= nearest_six
    assert set().union(*draws) == nearest_six
    # Pool 4 (odds 1/2) always gives the nearest four; pool 6 gives them 1/15 of the time.
    share_nearest_four = sum(set(chosen) == nearest_four for chosen in draws) / len(draws)
    assert 0.4 < share_nearest_four < 0.67
    assert any(chosen != sorted(chosen, key=lambda i: abs(i - 10)) for chosen in draws)


def test_training_selection_caps_the_pool_at_the_candidates() -> None:
    for seed in range(20):
        chosen = draw(seed, target=0, k=4, positions=5)
        assert sorted(chosen) == [1, 2, 3, 4]


def test_training_selection_needs_k_other_frames() -> None:
    with pytest.raises(ValueError, match=r"k=5.*4 frames"):
        draw(0, target=0, k=5, positions=5)
    with pytest.raises(IndexError, match="target_index 5"):
        draw(0, target=5, k=2, positions=5)


def test_mvs_neighbours_docstring_example() -> None:
    neighbours = vs.mvs_neighbours(cameras_on_x([0.0, 1.0, 3.0]), 2, direction_weight=0.0)
    assert neighbours.dtype == torch.int64
    assert neighbours.tolist() == [[1, 2], [0, 2], [1, 0]]


def test_mvs_neighbours_never_contain_self() -> None:
    # Views 0 and 2 share a pose: each is the other's nearest, neither is its own.
    poses = torch.stack(
        [
            pose((0.0, 0.0, 0.0)),
            pose((1.0, 0.0, 0.0), 20.0),
            pose((0.0, 0.0, 0.0)),
            pose((0.0, 2.0, 0.0), -40.0),
        ]
    )
    neighbours = vs.mvs_neighbours(poses, 3, direction_weight=0.3)
    assert neighbours[0, 0].item() == 2 and neighbours[2, 0].item() == 0
    for view, row in enumerate(neighbours.tolist()):
        assert view not in row
        assert sorted(row) == sorted(set(range(4)) - {view})


def test_mvs_neighbours_needs_enough_views() -> None:
    with pytest.raises(ValueError, match="3 neighbours per view from 3 views"):
        vs.mvs_neighbours(cameras_on_x([0.0, 1.0, 3.0]), 3, 0.0)


def test_config_defaults_follow_the_spec() -> None:
    cfg = vs.ViewSelectionCfg()
    assert dataclasses.astuple(cfg) == (8, 3, 1.5, 0.0, 5, 700, 2, 20, 10)


def test_training_target_is_never_its_own_source_when_another_frame_shares_its_pose() -> None:
    # Frames 2 and 5 share a pose; the target is the later one, so the stable sort puts frame 2
    # first and the target second, both at distance 0. Only frames 0..4 may be drawn.
    poses = cameras_on_x([0.0, 1.0, 2.0, 3.0, 4.0, 2.0])
    for seed in range(100):
        generator = torch.Generator().manual_seed(seed)
        chosen = vs.select_training_sources(5, poses, 3, generator=generator).tolist()
        assert 5 not in chosen, (seed, chosen)
        assert set(chosen) <= {0, 1, 2, 3, 4}


def rotation_about_x(degrees: float) -> torch.Tensor:
    angle = math.radians(degrees)
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], dtype=torch.float64)


def test_direction_term_uses_the_optical_axis_column_of_a_pitched_and_yawed_camera() -> None:
    # Target pitched 30 deg about x: axis (0, -sin 30, cos 30). The other camera is pitched 30
    # deg, then yawed 60 deg about y: axis (sin 60 cos 30, -sin 30, cos 60 cos 30). Their cosine
    # is sin^2 30 + cos 60 cos^2 30 = 1/4 + 3/8, so the distance is 1 - 5/8 = 3/8. The third
    # rows of the rotations would give cos 60 = 1/2 instead (distance 1/2).
    target = torch.eye(4, dtype=torch.float64)
    target[:3, :3] = rotation_about_x(30.0)
    turned = torch.eye(4, dtype=torch.float64)
    turned[:3, :3] = rotation_about_y(60.0) @ rotation_about_x(30.0)
    distance = vs.view_distances(target, turned[None], direction_weight=1.0)
    torch.testing.assert_close(distance, torch.tensor([3.0 / 8.0], dtype=torch.float64))
