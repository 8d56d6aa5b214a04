"""Plane-sweep warp: source-view features resampled onto a reference camera's depth hypotheses.

For reference pixel ``x = (u, v, 1)`` and z-depth hypothesis ``d`` (spec 2.2):

    X_ref = d K_ref^-1 x                      (point in the reference camera)
    X_src = R X_ref + t                       (R, t: reference-to-source rigid transform)
    p     = K_src X_src = d (K_src R K_ref^-1) x + K_src t
    (u', v') = (p_x / p_z, p_y / p_z)         (source pixel; p_z is the source z-depth)

and the source features are sampled bilinearly at ``(u', v')`` with zero padding. Pixel centres
sit at integer coordinates, so ``grid_sample(align_corners=True)`` with ``x_n = 2 u' / (w - 1) - 1``
reads pixel ``u'`` exactly.

Precision: the 3x3 and 3x1 transforms are composed in float64, where rotations and world
translations of several metres lose no digits; the per-pixel, per-hypothesis products then run in
float32 (or the features' dtype if wider). That step is one multiply-add and one division per
coordinate, whose float32 rounding is ~1e-7 relative, i.e. ~1e-4 px at 320 px, far below what
bilinear sampling resolves. The reference does all of it in float64 (spec 2.2), which costs
twice the memory of the largest tensor of the warp for no visible gain.
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Bool, Float
from torch import Tensor

from gsnerf.geometry.camera import invert_pose, pixel_grid


def reference_to_source_pixels(
    src_intrinsics: Float[Tensor, "b 3 3"],
    src_cam_to_world: Float[Tensor, "b 4 4"],
    ref_intrinsics: Float[Tensor, "b 3 3"],
    ref_cam_to_world: Float[Tensor, "b 4 4"],
) -> tuple[Float[Tensor, "b 3 3"], Float[Tensor, "b 3 1"]]:
    """``(M, t)`` in float64 with ``p = d M x + t`` for reference pixel ``x = (u, v, 1)`` at
    z-depth ``d`` (module doc): ``M = K_src R K_ref^-1``, ``t = K_src t_ref_to_src``."""
    ref_to_src = invert_pose(src_cam_to_world.double()) @ ref_cam_to_world.double()
    src_k = src_intrinsics.double()
    rotation = src_k @ ref_to_src[:, :3, :3] @ torch.linalg.inv(ref_intrinsics.double())
    return rotation, src_k @ ref_to_src[:, :3, 3:]


def pair_projections(
    ref_intrinsics: Float[Tensor, "b 3 3"],
    ref_cam_to_world: Float[Tensor, "b 4 4"],
    neighbour_intrinsics: Float[Tensor, "b n 3 3"],
    neighbour_cam_to_world: Float[Tensor, "b n 4 4"],
) -> Float[Tensor, "bn 12"]:
    """Every (reference, neighbour) pair's ``(M, t)`` of :func:`reference_to_source_pixels`,
    flattened over ``(b, n)`` (neighbour fastest) as the warp kernels read them: the nine
    entries of ``M`` row by row, then the three of ``t``, in float32."""
    num_neighbours = neighbour_intrinsics.shape[1]
    rotation, translation = reference_to_source_pixels(
        rearrange(neighbour_intrinsics, "b n i j -> (b n) i j"),
        rearrange(neighbour_cam_to_world, "b n i j -> (b n) i j"),
        ref_intrinsics.repeat_interleave(num_neighbours, dim=0),
        ref_cam_to_world.repeat_interleave(num_neighbours, dim=0),
    )
    return torch.cat([rotation.flatten(1), translation.flatten(1)], dim=1).float()


def plane_sweep_warp(
    src_features: Float[Tensor, "b c h w"],
    src_intrinsics: Float[Tensor, "b 3 3"],
    src_cam_to_world: Float[Tensor, "b 4 4"],
    ref_intrinsics: Float[Tensor, "b 3 3"],
    ref_cam_to_world: Float[Tensor, "b 4 4"],
    depth_hypotheses: Float[Tensor, "b d h w"],
) -> tuple[Float[Tensor, "b c d h w"], Bool[Tensor, "b d h w"]]:
    """Warp source features onto the reference pixel grid, one slice per depth hypothesis.

    Intrinsics are at the feature maps' resolution (scale them with ``scale_intrinsics``);
    source and reference maps share that resolution. Returns ``(warped, valid)``: ``valid`` is
    True where the point lies in front of the source camera and on its image
    (within the pixel area ``[-0.5, w - 0.5] x [-0.5, h - 0.5]``). Points behind
    the source camera (``p_z <= 0``) sample zeros instead of their mirrored projection, and all
    coordinates are clamped to a 2-pixel margin outside the image, so no NaN or inf reaches
    ``grid_sample`` and the result equals unclamped zero-padded sampling.

    Example: identical cameras give ``warped[:, :, k] == src_features`` for every ``k``; a source
    camera moved by ``t_x`` along +x sees the reference pixel ``u`` at ``u - f t_x / d``.
    """
    height, width = src_features.shape[-2:]
    if height < 2 or width < 2:
        raise ValueError(
            f"plane_sweep_warp: src_features must be at least 2x2 pixels, got {height}x{width}"
        )
    compute_dtype = torch.promote_types(src_features.dtype, torch.float32)
    # Clamped coordinates are parked 2 px outside the image: bilinear sampling with zero padding
    # returns exactly zero at or beyond one pixel outside, so clamping changes no value.
    margin = 2.0

    rotation, translation = reference_to_source_pixels(
        src_intrinsics, src_cam_to_world, ref_intrinsics, ref_cam_to_world
    )
    pixels = pixel_grid(height, width, device=src_features.device).to(compute_dtype)
    pixels_h = torch.cat([pixels, torch.ones_like(pixels[..., :1])], dim=-1)
    rays = torch.einsum("bij,hwj->bihw", rotation.to(compute_dtype), pixels_h)
    # p = d * (K_src R K_ref^-1 x) + K_src t, for every hypothesis d: [b, 3, d, h, w].
    points = rays[:, :, None] * depth_hypotheses[:, None].to(compute_dtype)
    points = points + translation.to(compute_dtype)[..., None, None]

    z = points[:, 2]
    in_front = z > 0
    safe_z = torch.where(in_front, z, torch.ones_like(z))
    outside = -margin
    u = torch.where(in_front, points[:, 0] / safe_z, torch.full_like(z, outside))
    v = torch.where(in_front, points[:, 1] / safe_z, torch.full_like(z, outside))
    # The image's pixel area spans [-0.5, w - 0.5] around the integer pixel centres.
    valid = in_front & (u >= -0.5) & (u <= width - 0.5) & (v >= -0.5) & (v <= height - 0.5)

    u = u.clamp(outside, width - 1 + margin)
    v = v.clamp(outside, height - 1 + margin)
    grid = torch.stack([2.0 * u / (width - 1) - 1.0, 2.0 * v / (height - 1) - 1.0], dim=-1)
    sampled = F.grid_sample(
        src_features.to(compute_dtype),
        rearrange(grid, "b d h w xy -> b (d h) w xy"),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )
    warped = rearrange(sampled, "b c (d h) w -> b c d h w", h=height).to(src_features.dtype)
    return warped, valid
