"""Z-buffered reprojection of source depth maps into a target camera (paper Algorithm 1, D_T).

Every source pixel ``(x, y)`` with z-depth ``d > 0`` is lifted and moved into the target camera,

    X_tgt = T_src->tgt (d K_src^-1 [x, y, 1]),   T_src->tgt = (c2w_tgt)^-1 c2w_src
    (u, v) = (K_tgt X_tgt)_xy / z,               z = X_tgt,z

then kept only if ``z > 0`` (in front of the target camera) and splatted with a z-buffer: each
target pixel holds the *smallest* ``z`` of the points that cover it. A point covers the pixels
whose centres lie less than ``footprint_radius`` pixels from ``(u, v)`` along both axes; with the
default radius 1 these are the 2x2 pixels ``floor/ceil`` of ``u`` and ``v`` (one pixel when
``(u, v)`` falls on a pixel centre). So a surface seen up to 2x larger than in the sources still
covers every pixel, and a farther surface cannot show through the gaps between its points.

The reference (spec 2.3, 7.10) keeps the last point written per pixel (no z-buffer), keeps points
behind the camera, and shifts the result by one pixel; none of that is copied here.

Example: with identical source and target cameras, every point lands on its own pixel centre and
the output equals the source depth map, pixel for pixel.
"""

import math

import torch
from einops import rearrange
from jaxtyping import Bool, Float, Int64
from torch import Tensor

from gsnerf.geometry.camera import invert_pose, project_points, unproject_depth


def _footprint(
    coordinates: Float[Tensor, "b n"], radius: float, tolerance: float, size: int
) -> tuple[Int64[Tensor, "b k n"], Bool[Tensor, "b k n"]]:
    """Pixel indices along one axis covered by points at ``coordinates``, and which are used.

    A pixel ``p`` is covered when ``|p - coordinate| < radius - tolerance`` and ``0 <= p < size``.
    Example: radius 1, coordinate 4.5 -> pixels 4 and 5; coordinate 4.0 -> pixel 4 only. The
    points are the last axis: element-wise passes then run along them, not along the k = 2
    candidates (with k innermost, the [b, n, 2, 2] index and mask passes below took 5-6 times
    as long).
    """
    candidates = 2 * math.ceil(radius)
    steps = torch.arange(candidates, device=coordinates.device, dtype=coordinates.dtype)
    first = torch.ceil(coordinates - radius + tolerance)
    pixels = first[:, None] + steps[:, None]
    covered = (pixels < coordinates[:, None] + radius - tolerance) & (pixels >= 0)
    covered = covered & (pixels <= size - 1)
    # Uncovered entries (possibly huge or NaN coordinates) become 0 before the integer cast.
    pixels = torch.where(covered, pixels, torch.zeros_like(pixels)).long()
    return pixels, covered


def reproject_depth_batched(
    src_depths: Float[Tensor, "b v h_src w_src"],
    src_intrinsics: Float[Tensor, "b v 3 3"],
    src_cam_to_world: Float[Tensor, "b v 4 4"],
    tgt_intrinsics: Float[Tensor, "b 3 3"],
    tgt_cam_to_world: Float[Tensor, "b 4 4"],
    height: int,
    width: int,
    footprint_radius: float = 1.0,
    snap_tolerance: float = 1e-3,
) -> tuple[Float[Tensor, "b h w"], Bool[Tensor, "b h w"]]:
    """Target-view z-depth from V source depth maps, per batch item (see the module doc).

    Args:
        src_depths: source z-depth maps in metres, 0 (or any value <= 0) where unknown. They may
            be smaller than the target; ``src_intrinsics`` are at their own resolution.
        height, width: target image size; ``tgt_intrinsics`` are at that resolution.
        footprint_radius: half-size, in target pixels, of the square a point covers.
        snap_tolerance: pixels; a projection this close to a pixel centre counts as on it, so
            rounding noise of a round trip does not widen its footprint to a neighbour.

    Returns:
        ``(depth, valid)``: the nearest z-depth per target pixel, 0 where no point landed, and
        ``valid`` True where one did.
    """
    if height < 1 or width < 1:
        raise ValueError(f"reproject_depth: target size must be positive, got {height}x{width}")
    if footprint_radius <= snap_tolerance:
        raise ValueError(
            f"reproject_depth: footprint_radius ({footprint_radius}) must exceed snap_tolerance "
            f"({snap_tolerance})"
        )
    batch = src_depths.shape[0]
    dtype = src_depths.dtype
    # Source-to-target transforms composed in float64 so that world translations of several
    # metres lose no digits; points then go from each source camera straight to the target one.
    world_to_target = invert_pose(tgt_cam_to_world.double())[:, None]
    source_to_target = (world_to_target @ src_cam_to_world.double()).to(dtype)
    points = unproject_depth(src_depths, src_intrinsics, source_to_target)
    points = rearrange(points, "b v h w xyz -> b (v h w) xyz")
    identity = torch.eye(4, device=src_depths.device, dtype=dtype).expand(batch, 4, 4)
    pixels, z = project_points(points, tgt_intrinsics, identity)

    depths_flat = rearrange(src_depths, "b v h w -> b (v h w)")
    usable = (depths_flat > 0) & torch.isfinite(depths_flat) & (z > 0)
    cols, cols_covered = _footprint(pixels[..., 0], footprint_radius, snap_tolerance, width)
    rows, rows_covered = _footprint(pixels[..., 1], footprint_radius, snap_tolerance, height)
    # Every (row, col) pair of the footprint, as a [b, k_row, k_col, n] grid.
    keep = usable[:, None, None] & rows_covered[:, :, None] & cols_covered[:, None, :]
    target_index = rows[:, :, None] * width + cols[:, None, :]
    batch_offset = torch.arange(batch, device=src_depths.device) * (height * width)
    target_index = target_index + batch_offset[:, None, None, None]
    # Dropped entries go to one extra bin past the end, so the scatter has a fixed size.
    trash = batch * height * width
    target_index = torch.where(keep, target_index, torch.full_like(target_index, trash))
    values = torch.where(keep, z[:, None, None], torch.full_like(keep, math.inf, dtype=dtype))

    # Z-buffer: the nearest surface wins each pixel.
    buffer = torch.full((trash + 1,), math.inf, device=src_depths.device, dtype=dtype)
    buffer = buffer.scatter_reduce(
        0, target_index.flatten(), values.flatten(), reduce="amin", include_self=True
    )
    nearest = rearrange(buffer[:trash], "(b h w) -> b h w", b=batch, h=height, w=width)
    valid = torch.isfinite(nearest)
    depth = torch.where(valid, nearest, torch.zeros_like(nearest))
    return depth, valid


def reproject_depth(
    src_depths: Float[Tensor, "v h_src w_src"],
    src_intrinsics: Float[Tensor, "v 3 3"],
    src_cam_to_world: Float[Tensor, "v 4 4"],
    tgt_intrinsics: Float[Tensor, "3 3"],
    tgt_cam_to_world: Float[Tensor, "4 4"],
    height: int,
    width: int,
    footprint_radius: float = 1.0,
    snap_tolerance: float = 1e-3,
) -> tuple[Float[Tensor, "h w"], Bool[Tensor, "h w"]]:
    """One target view: :func:`reproject_depth_batched` on a batch of one."""
    depth, valid = reproject_depth_batched(
        src_depths[None],
        src_intrinsics[None],
        src_cam_to_world[None],
        tgt_intrinsics[None],
        tgt_cam_to_world[None],
        height,
        width,
        footprint_radius=footprint_radius,
        snap_tolerance=snap_tolerance,
    )
    return depth[0], valid[0]
