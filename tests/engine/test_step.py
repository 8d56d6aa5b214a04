"""What a training step draws and supervises: uniform target pixels, GT depth along the rays."""

import math

import torch

from gsnerf.engine.step import ray_targets, sample_pixels
from gsnerf.geometry.camera import camera_rays, unproject_depth
from gsnerf.types import RayBundle, Views

HEIGHT, WIDTH = 3, 5


def _target(depth: torch.Tensor, intrinsics: torch.Tensor, cam_to_world: torch.Tensor) -> Views:
    return Views(
        images=torch.rand(1, 1, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0)),
        intrinsics=intrinsics[None, None],
        cam_to_world=cam_to_world[None, None],
        near=torch.full((1, 1), 0.1),
        far=torch.full((1, 1), 10.0),
        depths=depth[None, None],
        labels=None,
        frame_ids=torch.zeros(1, 1, dtype=torch.int64),
    )


def test_pixels_cover_the_whole_image_uniformly() -> None:
    target = _target(torch.ones(HEIGHT, WIDTH), torch.eye(3), torch.eye(4))
    pixels = sample_pixels(target, 15_000, torch.Generator().manual_seed(1))
    assert pixels.shape == (1, 15_000, 2)
    counts = torch.zeros(HEIGHT, WIDTH)
    counts.index_put_((pixels[0, :, 0], pixels[0, :, 1]), torch.ones(15_000), accumulate=True)
    # 1000 draws expected per pixel (the last row and column included); the binomial standard
    # deviation is about 31, so 15 % is five of them.
    assert counts.min() > 850 and counts.max() < 1150, counts


def test_ground_truth_depth_is_the_distance_along_each_ray() -> None:
    # A camera turned 30 degrees about y, then 20 about x, looking at a slanted surface.
    yaw, pitch = math.radians(30.0), math.radians(20.0)
    turn_y = torch.tensor(
        [[math.cos(yaw), 0.0, math.sin(yaw)], [0.0, 1.0, 0.0], [-math.sin(yaw), 0.0, math.cos(yaw)]]
    )
    turn_x = torch.tensor(
        [
            [1.0, 0.0, 0.0],
            [0.0, math.cos(pitch), -math.sin(pitch)],
            [0.0, math.sin(pitch), math.cos(pitch)],
        ]
    )
    cam_to_world = torch.eye(4)
    cam_to_world[:3, :3] = turn_y @ turn_x
    cam_to_world[:3, 3] = torch.tensor([0.5, -1.0, 2.0])
    intrinsics = torch.tensor([[2.0, 0.0, 2.0], [0.0, 2.0, 1.0], [0.0, 0.0, 1.0]])
    z_depth = 1.0 + 0.25 * torch.arange(HEIGHT * WIDTH, dtype=torch.float32).view(HEIGHT, WIDTH)
    z_depth[0, 0] = 0.0  # no GT there
    target = _target(z_depth, intrinsics, cam_to_world)

    rows, cols = torch.meshgrid(torch.arange(HEIGHT), torch.arange(WIDTH), indexing="ij")
    pixels = torch.stack([rows.flatten(), cols.flatten()], dim=-1)[None]
    xy = pixels.flip(-1).float()
    origins, directions, _ = camera_rays(intrinsics[None], cam_to_world[None], xy)
    count = pixels.shape[1]
    rays = RayBundle(
        origins=origins,
        directions=directions,
        near=torch.full((1, count), 0.1),
        far=torch.full((1, count), 10.0),
        pixels=pixels,
        guide_depth=torch.zeros(1, count),
        guide_valid=torch.zeros(1, count, dtype=torch.bool),
    )
    depth = ray_targets(target, pixels, rays).depth[0]

    # Truth: the distance from the camera centre to the unprojected point of each pixel.
    points = unproject_depth(z_depth, intrinsics, cam_to_world).reshape(-1, 3)
    distance = (points - cam_to_world[:3, 3]).norm(dim=-1)
    expected = torch.where(z_depth.flatten() > 0, distance, torch.zeros_like(distance))
    torch.testing.assert_close(depth, expected)
    # Off the optical axis the distance exceeds the z-depth.
    assert (depth[1:] > z_depth.flatten()[1:]).all()
