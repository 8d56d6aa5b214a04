"""Pinhole camera maths against hand-computed pixels, rays and round trips."""

import math

import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gsnerf.geometry.camera import (
    camera_centers,
    camera_rays,
    invert_pose,
    pixel_grid,
    project_points,
    scale_intrinsics,
    transform_points,
    unproject_depth,
)

F64 = torch.float64


def intrinsics(fx: float, fy: float, cx: float, cy: float) -> torch.Tensor:
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=F64)


def pose(rotation: torch.Tensor, centre: tuple[float, float, float]) -> torch.Tensor:
    matrix = torch.eye(4, dtype=F64)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = torch.tensor(centre, dtype=F64)
    return matrix


def quaternion_to_rotation(w: float, x: float, y: float, z: float) -> torch.Tensor:
    """Rotation matrix of a unit quaternion (Hamilton convention)."""
    return torch.tensor(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ],
        dtype=F64,
    )


# Camera looking along world +x: its x axis is world -z, its y axis world +y (down).
LOOK_ALONG_X = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]], dtype=F64)

unit = st.floats(-1.0, 1.0, allow_nan=False)
coordinate = st.floats(-5.0, 5.0, allow_nan=False)


@st.composite
def rigid_poses(draw: st.DrawFn) -> torch.Tensor:
    """Camera-to-world poses from normalised random quaternions and random centres."""
    quaternion = [draw(unit) for _ in range(4)]
    norm = math.sqrt(sum(q * q for q in quaternion))
    assume(norm > 0.1)
    rotation = quaternion_to_rotation(*(q / norm for q in quaternion))
    return pose(rotation, (draw(coordinate), draw(coordinate), draw(coordinate)))


@st.composite
def pinhole_intrinsics(draw: st.DrawFn) -> torch.Tensor:
    return intrinsics(
        draw(st.floats(50.0, 500.0)),
        draw(st.floats(50.0, 500.0)),
        draw(st.floats(0.0, 5.0)),
        draw(st.floats(0.0, 4.0)),
    )


def test_pixel_grid_holds_column_then_row() -> None:
    grid = pixel_grid(2, 3)
    assert grid.shape == (2, 3, 2)
    assert grid[1, 2].tolist() == [2.0, 1.0]
    assert grid[0, 0].tolist() == [0.0, 0.0]


def test_rays_of_identity_camera() -> None:
    k = intrinsics(2.0, 4.0, 1.0, 1.5)
    # Pixel (cx + fx, cy) looks along (1, 0, 1); (cx, cy - fy) along (0, -1, 1).
    pixels = torch.tensor([[[1.0, 1.5], [3.0, 1.5], [1.0, -2.5]]], dtype=F64)
    origins, directions, z_per_distance = camera_rays(
        k[None], torch.eye(4, dtype=F64)[None], pixels
    )
    r = 1.0 / math.sqrt(2.0)
    expected = torch.tensor([[[0.0, 0.0, 1.0], [r, 0.0, r], [0.0, -r, r]]], dtype=F64)
    torch.testing.assert_close(directions, expected)
    torch.testing.assert_close(z_per_distance, torch.tensor([[1.0, r, r]], dtype=F64))
    torch.testing.assert_close(origins, torch.zeros(1, 3, 3, dtype=F64))


def test_rays_of_a_turned_and_moved_camera() -> None:
    k = intrinsics(2.0, 2.0, 1.0, 1.0)
    c2w = pose(LOOK_ALONG_X, (1.0, 2.0, 3.0))
    pixels = torch.tensor([[1.0, 1.0], [3.0, 1.0]], dtype=F64)
    origins, directions, _ = camera_rays(k, c2w, pixels)
    r = 1.0 / math.sqrt(2.0)
    # Camera (1, 0, 1) / sqrt 2 is world (-z + x) / sqrt 2.
    expected = torch.tensor([[1.0, 0.0, 0.0], [r, 0.0, -r]], dtype=F64)
    torch.testing.assert_close(directions, expected)
    torch.testing.assert_close(origins, torch.tensor([[1.0, 2.0, 3.0]] * 2, dtype=F64))


def test_point_projects_to_hand_computed_pixel() -> None:
    k = intrinsics(100.0, 200.0, 50.0, 40.0)
    # Camera-frame point (0.5, -0.2, 2): x = 100 * 0.5 / 2 + 50, y = 200 * -0.2 / 2 + 40.
    points = torch.tensor([[1.5, 1.8, 5.0]], dtype=F64)
    pixels, depth = project_points(points, k, pose(torch.eye(3, dtype=F64), (1.0, 2.0, 3.0)))
    torch.testing.assert_close(pixels, torch.tensor([[75.0, 20.0]], dtype=F64))
    torch.testing.assert_close(depth, torch.tensor([2.0], dtype=F64))


def test_turned_camera_projects_to_hand_computed_pixel() -> None:
    k = intrinsics(100.0, 100.0, 50.0, 40.0)
    c2w = pose(LOOK_ALONG_X, (1.0, 2.0, 3.0))
    # Offset (4, 0.5, -1) from the centre is camera (1, 0.5, 4): x = 25 + 50, y = 12.5 + 40.
    points = torch.tensor([[5.0, 2.5, 2.0]], dtype=F64)
    pixels, depth = project_points(points, k, c2w)
    torch.testing.assert_close(pixels, torch.tensor([[75.0, 52.5]], dtype=F64))
    torch.testing.assert_close(depth, torch.tensor([4.0], dtype=F64))


def test_fronto_parallel_plane_shifts_by_f_tx_over_d() -> None:
    fx, depth, tx = 80.0, 2.5, 0.3
    k = intrinsics(fx, 60.0, 3.5, 2.5)
    plane = torch.full((4, 6), depth, dtype=F64)
    points = unproject_depth(plane, k, torch.eye(4, dtype=F64)).reshape(-1, 3)
    moved = pose(torch.eye(3, dtype=F64), (tx, 0.0, 0.0))
    pixels, z = project_points(points, k, moved)
    grid = pixel_grid(4, 6).to(F64).reshape(-1, 2)
    # Moving the camera right by tx moves the image left by fx * tx / d = 9.6 pixels.
    torch.testing.assert_close(pixels[:, 0], grid[:, 0] - fx * tx / depth)
    torch.testing.assert_close(pixels[:, 1], grid[:, 1])
    torch.testing.assert_close(z, torch.full_like(z, depth))


@settings(max_examples=40, deadline=None)
@given(
    c2w=rigid_poses(),
    k=pinhole_intrinsics(),
    depths=st.lists(st.floats(0.1, 10.0), min_size=12, max_size=12),
)
def test_unproject_then_project_round_trip(
    c2w: torch.Tensor, k: torch.Tensor, depths: list[float]
) -> None:
    depth = torch.tensor(depths, dtype=F64).reshape(3, 4)
    points = unproject_depth(depth, k, c2w)
    pixels, z = project_points(points.reshape(-1, 3), k, c2w)
    torch.testing.assert_close(pixels, pixel_grid(3, 4).to(F64).reshape(-1, 2))
    torch.testing.assert_close(z, depth.reshape(-1))


@settings(max_examples=20, deadline=None)
@given(c2w=rigid_poses(), other=rigid_poses(), k=pinhole_intrinsics())
def test_batched_round_trip_matches_per_view(
    c2w: torch.Tensor, other: torch.Tensor, k: torch.Tensor
) -> None:
    poses = torch.stack([c2w, other])
    ks = torch.stack([k, k * torch.tensor([[2.0], [1.0], [1.0]], dtype=F64)])
    depth = torch.linspace(0.5, 4.0, 12, dtype=F64).reshape(1, 3, 4).expand(2, 3, 4)
    points = unproject_depth(depth, ks, poses)
    for view in range(2):
        single = unproject_depth(depth[view], ks[view], poses[view])
        torch.testing.assert_close(points[view], single)
    pixels, _ = project_points(points.reshape(2, -1, 3), ks, poses)
    torch.testing.assert_close(pixels, pixel_grid(3, 4).to(F64).reshape(1, -1, 2).expand(2, -1, -1))


@settings(max_examples=40, deadline=None)
@given(c2w=rigid_poses())
def test_invert_pose_matches_linalg_inv(c2w: torch.Tensor) -> None:
    torch.testing.assert_close(invert_pose(c2w), torch.linalg.inv(c2w))
    torch.testing.assert_close(camera_centers(c2w), c2w[:3, 3])


def test_transform_points_applies_rotation_then_translation() -> None:
    transform = pose(LOOK_ALONG_X, (1.0, 2.0, 3.0))
    points = torch.tensor([[1.0, 0.5, 4.0]], dtype=F64)
    expected = torch.tensor([[5.0, 2.5, 2.0]], dtype=F64)
    torch.testing.assert_close(transform_points(transform, points), expected)


def test_scale_intrinsics_replica_to_half_size() -> None:
    replica = intrinsics(320.0, 320.0, 319.5, 239.5)
    scaled = scale_intrinsics(replica, (640, 480), (320, 240))
    torch.testing.assert_close(scaled, intrinsics(160.0, 160.0, 159.5, 119.5))


def test_scale_intrinsics_keeps_batch_axes() -> None:
    batch = intrinsics(320.0, 300.0, 319.5, 239.5).expand(2, 3, 3, 3)
    scaled = scale_intrinsics(batch, (640, 480), (80, 240))
    assert scaled.shape == (2, 3, 3, 3)
    torch.testing.assert_close(scaled[1, 2], intrinsics(40.0, 150.0, 39.5, 119.5))


@settings(max_examples=40, deadline=None)
@given(
    k=pinhole_intrinsics(),
    from_size=st.tuples(st.integers(8, 640), st.integers(8, 480)),
    to_size=st.tuples(st.integers(8, 640), st.integers(8, 480)),
    point=st.tuples(coordinate, coordinate, st.floats(0.1, 10.0)),
)
def test_scaled_intrinsics_agree_with_resized_pixels(
    k: torch.Tensor,
    from_size: tuple[int, int],
    to_size: tuple[int, int],
    point: tuple[float, float, float],
) -> None:
    identity = torch.eye(4, dtype=F64)
    world = torch.tensor([point], dtype=F64)
    before, _ = project_points(world, k, identity)
    after, _ = project_points(world, scale_intrinsics(k, from_size, to_size), identity)
    scale = torch.tensor(to_size, dtype=F64) / torch.tensor(from_size, dtype=F64)
    # A resize with pixel centres at integer coordinates maps x to (x + 0.5) * s - 0.5.
    torch.testing.assert_close(after, (before + 0.5) * scale - 0.5)


@settings(max_examples=40, deadline=None)
@given(c2w=rigid_poses(), k=pinhole_intrinsics(), depth=st.floats(0.1, 10.0))
def test_ray_reaches_the_unprojected_point(
    c2w: torch.Tensor, k: torch.Tensor, depth: float
) -> None:
    depth_map = torch.full((3, 4), depth, dtype=F64)
    points = unproject_depth(depth_map, k, c2w).reshape(-1, 3)
    pixels = pixel_grid(3, 4).to(F64).reshape(-1, 2)
    origins, directions, z_per_distance = camera_rays(k, c2w, pixels)
    torch.testing.assert_close(directions.norm(dim=-1), torch.ones(12, dtype=F64))
    along = origins + directions * (depth / z_per_distance)[:, None]
    torch.testing.assert_close(along, points)


@settings(max_examples=20, deadline=None)
@given(c2w=rigid_poses(), k=pinhole_intrinsics())
def test_principal_point_looks_along_the_optical_axis(c2w: torch.Tensor, k: torch.Tensor) -> None:
    principal = k[:2, 2].reshape(1, 2)
    _, directions, z_per_distance = camera_rays(k, c2w, principal)
    torch.testing.assert_close(directions[0], c2w[:3, 2])
    torch.testing.assert_close(z_per_distance, torch.ones(1, dtype=F64))


def test_round_trip_with_skewed_intrinsics() -> None:
    k = intrinsics(100.0, 100.0, 2.0, 1.5)
    k[0, 1] = 5.0
    depth = torch.full((3, 4), 2.0, dtype=F64)
    points = unproject_depth(depth, k, torch.eye(4, dtype=F64))
    pixels, _ = project_points(points.reshape(-1, 3), k, torch.eye(4, dtype=F64))
    torch.testing.assert_close(pixels, pixel_grid(3, 4).to(F64).reshape(-1, 2))


def test_scaled_skewed_intrinsics_agree_with_resized_pixels() -> None:
    # Skew is x per unit of y/z: it scales with the x axis, like fx.
    k = intrinsics(100.0, 80.0, 31.5, 23.5)
    k[0, 1] = 10.0
    world = torch.tensor([[0.3, -0.4, 2.0], [-1.0, 0.7, 3.5]], dtype=F64)
    identity = torch.eye(4, dtype=F64)
    before, _ = project_points(world, k, identity)
    after, _ = project_points(world, scale_intrinsics(k, (64, 48), (32, 12)), identity)
    scale = torch.tensor([0.5, 0.25], dtype=F64)
    torch.testing.assert_close(after, (before + 0.5) * scale - 0.5)


def test_a_point_behind_the_camera_gets_the_mirrored_pixel_and_negative_depth() -> None:
    # Camera (1, 0, -2): x = 100 * 1 / -2 + 0 = -50; the z-depth keeps its sign for masking.
    pixels, depth = project_points(
        torch.tensor([[1.0, 0.0, -2.0]], dtype=F64),
        intrinsics(100.0, 100.0, 0.0, 0.0),
        torch.eye(4, dtype=F64),
    )
    torch.testing.assert_close(pixels, torch.tensor([[-50.0, 0.0]], dtype=F64))
    torch.testing.assert_close(depth, torch.tensor([-2.0], dtype=F64))
