"""Which frames serve as source views: pose distances, test pools, training draws, MVS neighbours.

Everything here is a pure function of camera-to-world poses (torch tensors or numpy arrays, OpenCV
axes) and python frame ids. The distance between two views is

    ``|c_a - c_b| + direction_weight * (1 - cos(angle between their optical axes))``

with ``c = t(cam_to_world)`` the camera centre and the optical axis the third column of the
rotation (z forward). The reference ranks views by ``-R^T t`` of camera-to-world poses (spec 1.6,
7.3), which is the world origin in camera coordinates, not the camera centre: a bug we
deliberately do not copy.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int64
from torch import Tensor

Pose = Float[Tensor, "4 4"] | Float[np.ndarray, "4 4"]
Poses = Float[Tensor, "n 4 4"] | Float[np.ndarray, "n 4 4"]


@dataclass
class ViewSelectionCfg:
    # Source views per example, K (spec 1.6: nb_views = 8).
    num_source_views: int = 8
    # MVS neighbours of each source view in the cost volume, self excluded (spec 1.6 item 5: 3).
    num_mvs_neighbours: int = 3
    # Training pool is the k or ceil(factor * k) nearest frames, chosen 50/50 (spec 1.6: 12 / 8).
    train_pool_factor: float = 1.5
    # Metres of distance added per unit of (1 - cos) between optical axes; 0 = camera centres
    # only, the clean variant named in spec 1.6.
    direction_weight: float = 0.0
    # Test source pool takes every pool_stride-th valid frame (spec 1.5: 5).
    pool_stride: int = 5
    # Test pool and queries come from the first pool_limit valid frames (spec 1.5: 700).
    pool_limit: int = 700
    # First test query is this position among the valid frames (spec 1.5: 2).
    query_offset: int = 2
    # Test queries take every query_stride-th valid frame (spec 1.5: 20).
    query_stride: int = 20
    # At most this many test queries per scene (spec 1.5: 10).
    max_queries: int = 10


def pairwise_view_distances(
    poses_a: Float[Tensor, "m 4 4"], poses_b: Float[Tensor, "n 4 4"], direction_weight: float
) -> Float[Tensor, "m n"]:
    """Distance of every view of ``poses_a`` to every view of ``poses_b`` (module docstring).

    Example: identity and a camera at (3, 4, 0) turned 90 degrees about y, weight 2:
    ``5 + 2 * (1 - 0) = 7``.
    """
    if direction_weight < 0:
        raise ValueError(f"direction_weight must be >= 0 metres, got {direction_weight}")
    centres_a = poses_a[:, :3, 3]
    centres_b = poses_b[:, :3, 3]
    distances = (centres_a[:, None, :] - centres_b[None, :, :]).norm(dim=-1)
    if direction_weight == 0:
        return distances
    # Normalised so that slightly non-orthonormal dataset rotations still give a cosine.
    axes_a = torch.nn.functional.normalize(poses_a[:, :3, 2], dim=-1)
    axes_b = torch.nn.functional.normalize(poses_b[:, :3, 2], dim=-1)
    cosines = (axes_a @ axes_b.T).clamp(-1.0, 1.0)
    return distances + direction_weight * (1.0 - cosines)


def view_distances(
    target_cam_to_world: Pose, pool_cam_to_world: Poses, direction_weight: float
) -> Float[Tensor, " n"]:
    """Distance of the target view to each pool view, in metres (module docstring)."""
    target = torch.as_tensor(target_cam_to_world)
    pool = torch.as_tensor(pool_cam_to_world).to(target.dtype)
    return pairwise_view_distances(target[None], pool, direction_weight)[0]


def _sorted_by_distance(distances: Float[Tensor, " n"]) -> Int64[Tensor, " n"]:
    # A stable sort keeps equal distances in index order, so ties break deterministically.
    return torch.sort(distances, stable=True).indices


def nearest_views(
    target_cam_to_world: Pose, pool_cam_to_world: Poses, k: int, direction_weight: float
) -> Int64[Tensor, " k"]:
    """Indices into the pool of the ``k`` views nearest to the target, nearest first.

    Ties are broken by the lower pool index. Spec 1.6, test and validation selection.
    """
    pool_size = len(pool_cam_to_world)
    if k < 1 or k > pool_size:
        raise ValueError(f"nearest_views: cannot take k={k} views from a pool of {pool_size} views")
    distances = view_distances(target_cam_to_world, pool_cam_to_world, direction_weight)
    return _sorted_by_distance(distances)[:k]


def split_test_frames(
    frame_ids: list[int],
    pool_stride: int = 5,
    pool_limit: int = 700,
    query_offset: int = 2,
    query_stride: int = 20,
    max_queries: int = 10,
) -> tuple[list[int], list[int]]:
    """Source pool and query frames of one test scene (spec 1.5).

    ``pool = frame_ids[0:pool_limit:pool_stride]`` and
    ``queries = frame_ids[query_offset:pool_limit:query_stride][:max_queries]``. With 900 frames
    ``0..899``: pool ``0, 5, ..., 695`` (140 frames), queries ``2, 22, ..., 182``.
    """
    for name, value in (("pool_stride", pool_stride), ("query_stride", query_stride)):
        if value < 1:
            raise ValueError(f"split_test_frames: {name} must be >= 1, got {value}")
    for name, value in (("pool_limit", pool_limit), ("max_queries", max_queries)):
        if value < 1:
            raise ValueError(f"split_test_frames: {name} must be >= 1, got {value}")
    if query_offset < 0:
        raise ValueError(f"split_test_frames: query_offset must be >= 0, got {query_offset}")
    ids = list(frame_ids)
    queries = ids[query_offset:pool_limit:query_stride][:max_queries]
    # A query never serves as its own source (spec 1.5). The default offsets already keep them
    # apart; other settings could overlap, so queries are removed from the pool explicitly.
    query_set = set(queries)
    pool = [frame_id for frame_id in ids[0:pool_limit:pool_stride] if frame_id not in query_set]
    if not queries or not pool:
        raise ValueError(
            f"split_test_frames: {len(ids)} frames give {len(pool)} pool frames and {len(queries)} "
            f"queries (pool_stride={pool_stride}, pool_limit={pool_limit}, "
            f"query_offset={query_offset}, query_stride={query_stride}); both must be non-empty"
        )
    return pool, queries


def training_pool_size(k: int, pool_factor: float, num_candidates: int) -> tuple[int, int]:
    """The two candidate-pool sizes of a training draw: ``k`` and ``ceil(pool_factor * k)``.

    Both are capped at ``num_candidates``. Example: ``k=8, pool_factor=1.5`` gives ``(8, 12)``.
    """
    if pool_factor < 1.0:
        raise ValueError(f"pool_factor must be >= 1, got {pool_factor}")
    # Rounded first so that 1.1 * 10 gives 11, not 12, despite binary floating point.
    large = math.ceil(round(pool_factor * k, 6))
    return min(k, num_candidates), min(large, num_candidates)


def select_training_sources(
    target_index: int,
    cam_to_world: Poses,
    k: int,
    *,
    pool_factor: float = 1.5,
    direction_weight: float = 0.0,
    generator: torch.Generator,
) -> Int64[Tensor, " k"]:
    """Indices of ``k`` source frames for a training target, in random order (spec 1.6).

    The candidates are all frames but the target, sorted by distance to it. The pool is the
    nearest ``k`` or ``ceil(pool_factor * k)`` of them (equal odds); ``k`` of the pool are drawn
    without replacement. Every random number comes from ``generator``.
    """
    num_frames = len(cam_to_world)
    if not 0 <= target_index < num_frames:
        raise IndexError(f"target_index {target_index} is outside the {num_frames} frames")
    if k < 1 or k > num_frames - 1:
        raise ValueError(
            f"select_training_sources: cannot take k={k} sources from the {num_frames - 1} "
            f"frames other than the target"
        )
    poses = torch.as_tensor(cam_to_world)
    distances = view_distances(poses[target_index], poses, direction_weight)
    order = _sorted_by_distance(distances)
    # The reference keeps the target among the candidates 2 % of the time (spec 1.6 item 3);
    # here it is never its own source.
    candidates = order[order != target_index]
    sizes = training_pool_size(k, pool_factor, len(candidates))
    pool_size = sizes[int(torch.randint(2, (1,), generator=generator))]
    picks = torch.randperm(pool_size, generator=generator)[:k]
    return candidates[picks]


def mvs_neighbours(
    cam_to_world: Poses, num_neighbours: int, direction_weight: float
) -> Int64[Tensor, "v neighbours"]:
    """For each view, the indices of its ``num_neighbours`` nearest other views, nearest first.

    Spec 1.6 item 5 (``closest_idxs``) without its first entry, the view itself. Ties are broken
    by the lower index. Example: cameras at x = 0, 1, 3 give ``[[1, 2], [0, 2], [1, 0]]``.
    """
    poses = torch.as_tensor(cam_to_world)
    num_views = len(poses)
    if num_neighbours < 0 or num_neighbours > num_views - 1:
        raise ValueError(
            f"mvs_neighbours: cannot take {num_neighbours} neighbours per view from "
            f"{num_views} views ({num_views - 1} others each)"
        )
    distances = pairwise_view_distances(poses, poses, direction_weight)
    # A view is never its own neighbour, even when another view shares its pose.
    distances = distances.fill_diagonal_(math.inf)
    order = torch.sort(distances, dim=-1, stable=True).indices
    return order[:, :num_neighbours]
