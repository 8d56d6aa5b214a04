"""Z-buffered depth reprojection against analytic depth of two fronto-parallel planes."""

import math

import torch

from gsnerf.geometry.camera import camera_rays, pixel_grid, scale_intrinsics
from gsnerf.geometry.splatting import reproject_depth, reproject_depth_batched

HEIGHT, WIDTH = 24, 32
# The near plane: a rectangle at world z = 2 over x in [-0.4, 0.3], y in [-0.3, 0.25].
NEAR_Z, NEAR_X, NEAR_Y = 2.0, (-0.4, 0.3), (-0.3, 0.25)
# The back plane fills everything at world z = 4.
BACK_Z = 4.0


def intrinsics(height: int = HEIGHT, width: int = WIDTH) -> torch.Tensor:
    return torch.tensor(
        [[1.2 * width, 0.0, (width - 1) / 2], [0.0, 1.2 * width, (height - 1) / 2], [0, 0, 1]]
    )


def pose(yaw_deg: float, pitch_deg: float, centre: tuple[float, float, float]) -> torch.Tensor:
    """Camera-to-world: rotation about y by ``yaw`` then about x by ``pitch``, at ``centre``."""
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    rot_y = torch.tensor(
        [[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]]
    )
    rot_x = torch.tensor(
        [[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]]
    )
    matrix = torch.eye(4)
    matrix[:3, :3] = rot_y @ rot_x
    matrix[:3, 3] = torch.tensor(centre)
    return matrix


def analytic_depth(
    k: torch.Tensor, cam_to_world: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-depth of the first plane hit by every pixel's ray, and whether it is the near plane."""
    grid = pixel_grid(height, width).reshape(-1, 2)
    origins, directions, z_per_distance = camera_rays(k, cam_to_world, grid)
    # Ray-plane intersection with world z = const: t = (const - o_z) / d_z.
    t_near = (NEAR_Z - origins[:, 2]) / directions[:, 2]
    hit = origins + t_near[:, None] * directions
    on_near = (
        (t_near > 0)
        & (hit[:, 0] >= NEAR_X[0])
        & (hit[:, 0] <= NEAR_X[1])
        & (hit[:, 1] >= NEAR_Y[0])
        & (hit[:, 1] <= NEAR_Y[1])
    )
    t_back = (BACK_Z - origins[:, 2]) / directions[:, 2]
    distance = torch.where(on_near, t_near, t_back)
    depth = distance * z_per_distance
    return depth.reshape(height, width), on_near.reshape(height, width)


def source_rig() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Four source cameras around the origin, slightly turned, with their analytic depths."""
    poses = torch.stack(
        [
            pose(3.0, -2.0, (-0.15, -0.1, 0.0)),
            pose(-3.0, -2.0, (0.15, -0.1, 0.0)),
            pose(2.0, 2.0, (-0.1, 0.12, 0.05)),
            pose(-2.0, 2.0, (0.1, 0.12, 0.05)),
        ]
    )
    k = intrinsics().expand(4, 3, 3)
    depths = torch.stack([analytic_depth(k[0], p, HEIGHT, WIDTH)[0] for p in poses])
    return depths, k, poses


def test_two_planes_with_occlusion_match_analytic_depth() -> None:
    depths, k, poses = source_rig()
    target_pose = pose(1.5, -1.0, (0.03, -0.02, 0.08))
    depth, valid = reproject_depth(depths, k, poses, intrinsics(), target_pose, HEIGHT, WIDTH)
    expected, on_near = analytic_depth(intrinsics(), target_pose, HEIGHT, WIDTH)

    assert valid.float().mean() > 0.9
    relative_error = (depth[valid] - expected[valid]).abs() / expected[valid]
    assert relative_error.median() < 0.005
    # Everywhere the target sees the near plane, the near plane wins the z-buffer.
    assert valid[on_near].all()
    assert (depth[on_near] < (NEAR_Z + BACK_Z) / 2).all()
    assert torch.allclose(depth[on_near], expected[on_near], rtol=0.01)
    assert (depth[~valid] == 0).all()


def test_points_behind_the_target_are_dropped() -> None:
    depths, k, poses = source_rig()
    # Target between the two planes, 1 m from the back plane: the near-plane points with
    # x in [0.08, 0.3] lie 1 m behind it and would project, mirrored, into its image with
    # depth -1 (winning any z-buffer) if kept.
    target_pose = pose(0.0, 0.0, (0.5, 0.0, 3.0))
    depth, valid = reproject_depth(depths, k, poses, intrinsics(), target_pose, HEIGHT, WIDTH)
    expected, _ = analytic_depth(intrinsics(), target_pose, HEIGHT, WIDTH)

    assert valid.any()
    assert (depth[valid] > 0).all()
    assert torch.allclose(depth[valid], expected[valid], rtol=0.01)


def test_identity_camera_reproduces_source_without_shift() -> None:
    generator = torch.Generator().manual_seed(0)
    # Random depths per pixel: a shift by any pixel would show.
    source = 1.0 + 4.0 * torch.rand(1, HEIGHT, WIDTH, generator=generator)
    k = intrinsics()

    depth, valid = reproject_depth(source, k[None], torch.eye(4)[None], k, torch.eye(4), 24, 32)
    assert valid.all()
    assert torch.equal(depth, source[0])

    # A general pose shared by source and target: the same up to float rounding.
    shared = pose(20.0, -10.0, (1.0, -2.0, 3.0))
    depth, valid = reproject_depth(source, k[None], shared[None], k, shared, HEIGHT, WIDTH)
    assert valid.all()
    assert torch.allclose(depth, source[0], rtol=1e-5)


def test_half_resolution_source_covers_full_resolution_target() -> None:
    # A fronto-parallel plane at z = 3 seen from a half-resolution source at the target pose:
    # its points land on half-pixel positions and their 2x2 footprints tile the target.
    k_full = intrinsics()
    k_half = scale_intrinsics(k_full, (WIDTH, HEIGHT), (WIDTH // 2, HEIGHT // 2))
    source = torch.full((1, HEIGHT // 2, WIDTH // 2), 3.0)
    depth, valid = reproject_depth(
        source, k_half[None], torch.eye(4)[None], k_full, torch.eye(4), HEIGHT, WIDTH
    )
    assert valid.all()
    assert torch.allclose(depth, torch.full_like(depth, 3.0))


def test_nearer_point_wins_a_shared_pixel() -> None:
    # Two single-pixel sources at the target pose, same pixel, depths 2 and 5: the z-buffer
    # keeps 2 whatever the view order.
    k = intrinsics()
    near_first = torch.zeros(2, HEIGHT, WIDTH)
    near_first[0, 5, 7], near_first[1, 5, 7] = 2.0, 5.0
    for source in (near_first, near_first.flip(0)):
        depth, valid = reproject_depth(
            source, k.expand(2, 3, 3), torch.eye(4).expand(2, 4, 4), k, torch.eye(4), 24, 32
        )
        assert depth[5, 7] == 2.0
        assert valid.sum() == 1


def test_batched_items_are_independent() -> None:
    depths, k, poses = source_rig()
    targets = torch.stack([pose(1.5, -1.0, (0.03, -0.02, 0.08)), pose(-1.0, 0.5, (0, 0, 0.1))])
    batched_depth, batched_valid = reproject_depth_batched(
        torch.stack([depths, depths.flip(0)]),
        torch.stack([k, k]),
        torch.stack([poses, poses.flip(0)]),
        intrinsics().expand(2, 3, 3),
        targets,
        HEIGHT,
        WIDTH,
    )
    for item, (item_depths, item_poses) in enumerate(
        [(depths, poses), (depths.flip(0), poses.flip(0))]
    ):
        depth, valid = reproject_depth(
            item_depths, k, item_poses, intrinsics(), targets[item], HEIGHT, WIDTH
        )
        assert torch.equal(batched_valid[item], valid)
        assert torch.allclose(batched_depth[item], depth)
