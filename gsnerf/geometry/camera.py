"""Pinhole camera maths in OpenCV axes (x right, y down, z forward).

Conventions used everywhere in gsnerf:
- poses are camera-to-world 4x4 matrices ``[R | t]``; the camera centre is ``t``;
- intrinsics are in pixels with pixel *centres* at integer coordinates, so pixel (row, col)
  looks along ``K^-1 [col, row, 1]``; ScanNet, Replica and OpenCV calibrations use this;
- "depth" is z-depth (distance along the optical axis), "distance" is along a unit ray.
"""

import torch
from jaxtyping import Float
from torch import Tensor


def pixel_grid(
    height: int, width: int, device: torch.device | str | None = None
) -> Float[Tensor, "h w 2"]:
    """Pixel-centre coordinates ``(x, y) = (col, row)`` of an image, as float32.

    Example: ``pixel_grid(2, 3)[1, 2] == (2.0, 1.0)``.
    """
    rows = torch.arange(height, dtype=torch.float32, device=device)
    cols = torch.arange(width, dtype=torch.float32, device=device)
    grid_y, grid_x = torch.meshgrid(rows, cols, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1)


def scale_intrinsics(
    intrinsics: Float[Tensor, "*b 3 3"],
    from_size: tuple[int, int],
    to_size: tuple[int, int],
) -> Float[Tensor, "*b 3 3"]:
    """Intrinsics of an image resized from ``from_size`` to ``to_size`` (both ``(width, height)``).

    Each axis is scaled by its own factor ``s = to / from``. With pixel centres at integer
    coordinates, a resize maps pixel ``x`` to ``(x + 0.5) * s - 0.5`` (what ``cv2.resize`` and
    ``F.interpolate(align_corners=False)`` do), so ``f' = f * s`` and ``c' = (c + 0.5) * s - 0.5``.
    Example: Replica's ``cx = 319.5`` at width 640 becomes 159.5 at width 320, still the centre.
    """
    scale_x = to_size[0] / from_size[0]
    scale_y = to_size[1] / from_size[1]
    scaled = intrinsics.clone()
    scaled[..., 0, 0] = intrinsics[..., 0, 0] * scale_x
    scaled[..., 0, 1] = intrinsics[..., 0, 1] * scale_x
    scaled[..., 1, 1] = intrinsics[..., 1, 1] * scale_y
    scaled[..., 0, 2] = (intrinsics[..., 0, 2] + 0.5) * scale_x - 0.5
    scaled[..., 1, 2] = (intrinsics[..., 1, 2] + 0.5) * scale_y - 0.5
    return scaled


def invert_pose(cam_to_world: Float[Tensor, "*b 4 4"]) -> Float[Tensor, "*b 4 4"]:
    """World-to-camera of a rigid camera-to-world pose: ``[R^T | -R^T t]`` (exact, no LU)."""
    rotation = cam_to_world[..., :3, :3]
    translation = cam_to_world[..., :3, 3:]
    inverse = torch.zeros_like(cam_to_world)
    inverse[..., :3, :3] = rotation.transpose(-1, -2)
    inverse[..., :3, 3:] = -rotation.transpose(-1, -2) @ translation
    inverse[..., 3, 3] = 1.0
    return inverse


def camera_centers(cam_to_world: Float[Tensor, "*b 4 4"]) -> Float[Tensor, "*b 3"]:
    """Camera centres in world coordinates (the translation column of camera-to-world)."""
    return cam_to_world[..., :3, 3]


def transform_points(
    transform: Float[Tensor, "*b 4 4"], points: Float[Tensor, "*b n 3"]
) -> Float[Tensor, "*b n 3"]:
    """Apply a 4x4 rigid transform to points: ``R p + t``."""
    return points @ transform[..., :3, :3].transpose(-1, -2) + transform[..., None, :3, 3]


def unproject_depth(
    depth: Float[Tensor, "*b h w"],
    intrinsics: Float[Tensor, "*b 3 3"],
    cam_to_world: Float[Tensor, "*b 4 4"],
) -> Float[Tensor, "*b h w 3"]:
    """World points of every pixel of a z-depth map: ``X = R (z K^-1 [x, y, 1]) + t``."""
    height, width = depth.shape[-2:]
    grid = pixel_grid(height, width, device=depth.device).to(depth.dtype)
    homogeneous = torch.cat([grid, torch.ones_like(grid[..., :1])], dim=-1)
    # The full inverse keeps a non-zero skew K[0, 1] exact.
    inverse_k = torch.linalg.inv(intrinsics)
    directions = homogeneous @ inverse_k[..., None, :, :].transpose(-1, -2)
    points_cam = directions * depth[..., None]
    flat = points_cam.reshape(*points_cam.shape[:-3], height * width, 3)
    world = transform_points(cam_to_world, flat)
    return world.reshape(*points_cam.shape)


def project_points(
    points: Float[Tensor, "*b n 3"],
    intrinsics: Float[Tensor, "*b 3 3"],
    cam_to_world: Float[Tensor, "*b 4 4"],
    eps: float = 1e-8,
) -> tuple[Float[Tensor, "*b n 2"], Float[Tensor, "*b n"]]:
    """Pixel coordinates ``(x, y)`` and z-depth of world points seen by a camera.

    ``p = K (R^T (X - t))``, ``(x, y) = p_xy / p_z``. Only ``|z| < eps`` is clamped for the
    division; points behind the camera get mirrored pixels, so callers mask with ``depth > 0``.
    """
    points_cam = transform_points(invert_pose(cam_to_world), points)
    z = points_cam[..., 2]
    safe_z = torch.where(z.abs() < eps, torch.full_like(z, eps), z)
    pixels_h = points_cam @ intrinsics.transpose(-1, -2)
    pixels = pixels_h[..., :2] / safe_z[..., None]
    return pixels, z


def camera_rays(
    intrinsics: Float[Tensor, "*b 3 3"],
    cam_to_world: Float[Tensor, "*b 4 4"],
    pixels: Float[Tensor, "*b rays 2"],
) -> tuple[Float[Tensor, "*b rays 3"], Float[Tensor, "*b rays 3"], Float[Tensor, "*b rays"]]:
    """World rays through pixel coordinates ``(x, y)``.

    Returns ``(origins, unit_directions, z_per_distance)``. ``z_per_distance`` is the z-depth
    gained per metre travelled along the unit direction (the cosine to the optical axis), so a
    point at z-depth ``z`` lies at distance ``z / z_per_distance`` along the ray.
    """
    homogeneous = torch.cat([pixels, torch.ones_like(pixels[..., :1])], dim=-1)
    directions_cam = homogeneous @ torch.linalg.inv(intrinsics).transpose(-1, -2)
    norms = directions_cam.norm(dim=-1)
    directions_cam = directions_cam / norms[..., None]
    directions = directions_cam @ cam_to_world[..., :3, :3].transpose(-1, -2)
    origins = camera_centers(cam_to_world)[..., None, :].expand_as(directions)
    return origins, directions, 1.0 / norms
