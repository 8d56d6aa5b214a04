"""Depth losses without ground-truth depth (spec 3.5b-c): multi-view photometric consistency.

For every source view as reference, every MVS neighbour of it (``Example.source_neighbours``) is
inverse-warped into the reference with the reference's predicted z-depth at each cascade level:
``x_nb = K_nb T_nb<-ref (D_ref(x) K_ref^-1 x)``, then bilinearly sampled. Per level ``l``::

    L_ssl,l = reconstruction_weight * L_RC + ssim_weight * L_SSIM + smoothness_weight * L_smooth
    L_RC     = mean over the pixels valid in some neighbour of the per-pixel
               min over valid neighbours of
               (1 - a) SL1(I_nb->ref - I_ref) + a (SL1(d_x ...) + SL1(d_y ...))   (a = 0.5)
    L_SSIM   = mean over neighbours and pixels whose whole window is valid of
               clamp((1 - SSIM) / 2, 0, 1)
    L_smooth = mean |d D~| exp(-mean_c |d I|) in x and y, with D~ = D / mean(D)

and ``L_ssl = weight * sum_l level_weights[l] * L_ssl,l``, summed (or averaged) over the
reference views. A warped pixel is valid when it lands inside the neighbour image in front of it.

Differences from the reference (RC-MVSNet's loss as used by GSNeRF, spec 7.25): each reference
is compared with its MVS neighbours (3 by default), not with all 7 other views; images reach a
level by area averaging, not nearest; the minimum over neighbours is a real per-pixel minimum (the
reference's top-k over scalar per-view losses is degenerate); SSIM uses every neighbour, not the
first two; the smoothness acts on mean-normalised depth, so it cannot be lowered by shrinking the
depth; averages run over valid pixels. The code is device-agnostic (the reference calls .cuda()).
The GeoNeRF ray-reprojection term of spec 3.5a, which trains the same depths from the rendered
rays, is :mod:`gsnerf.losses.ray_reprojection`.

Separately, :func:`guide_depth_loss` pulls the rendered ray depth toward the guide depth D_T
(spec 3.5c), averaged over the rays that have a guide.
"""

from dataclasses import dataclass, field
from enum import Enum

import kornia
import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from jaxtyping import Bool, Float, Int64
from torch import Tensor

from gsnerf.geometry.camera import project_points, scale_intrinsics, unproject_depth
from gsnerf.losses.depth_supervised import masked_smooth_l1
from gsnerf.types import Views


class ViewReduction(str, Enum):
    """How the per-reference-view losses of a level are combined."""

    # Sum over the source views used as reference, as the reference code does (spec 3.5b).
    SUM = "sum"
    # Mean over them: the strength no longer grows with the number of source views.
    MEAN = "mean"


@dataclass
class SelfSupervisedDepthCfg:
    # Overall weight of the multi-view loss L_ssl (spec 3.5b: 0.1).
    weight: float = 0.1
    # Weight of the photometric reconstruction L_RC inside L_ssl (spec 3.5b: 12, RC-MVSNet).
    reconstruction_weight: float = 12.0
    # Weight of the SSIM term inside L_ssl (spec 3.5b: 6).
    ssim_weight: float = 6.0
    # Weight of the edge-aware depth smoothness inside L_ssl (spec 3.5b: 0.18).
    smoothness_weight: float = 0.18
    # Weight of each cascade level, coarse -> fine (spec 3.5b stage weights: 2, 1, 0.5 fine ->
    # coarse).
    level_weights: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    # Share a of the image-gradient term in L_RC; 1 - a goes to colour (spec 3.5b: 0.5).
    gradient_weight: float = 0.5
    # SmoothL1 beta of L_RC, in colour units of [0, 1] images (spec 3.5b: PyTorch default 1.0).
    reconstruction_beta: float = 1.0
    # SSIM window size, pixels, odd; Gaussian window of sigma 1.5 (kornia; reference 3x3 box).
    ssim_window: int = 3
    # Combination of the reference views: "sum" (spec 3.5b) or "mean".
    view_reduction: str = ViewReduction.SUM.value
    # Weight of the rendered ray depth pulled toward the guide depth D_T (spec 3.5c: 0.05).
    guide_weight: float = 0.05
    # SmoothL1 beta of that guide term, metres (spec 3.5c: 1.0).
    guide_beta: float = 1.0
    # Weight of the source depths taught by the rendered rays' points (spec 3.5a: 0.1; the
    # losses' ray_reprojection module). 0 leaves the term out.
    reprojection_weight: float = 0.1
    # Largest mean absolute RGB difference between the source colour at a ray's reprojected
    # point and the target's colour, and between the rendered and the target's colour, for the
    # pair to be trusted (spec 3.5a: 0.02 each, colours in [0, 1]).
    reprojection_photo_threshold: float = 0.02
    reprojection_render_threshold: float = 0.02
    # Smallest grey-value standard deviation in the source's window around the reprojected
    # point (spec 3.5a: 0.05 in a 5 x 5 window).
    reprojection_texture_threshold: float = 0.05
    reprojection_patch: int = 5
    # SmoothL1 beta of that term, metres (spec 3.5a: 1.0); its level weights are level_weights.
    reprojection_beta: float = 1.0


def warp_to_reference(
    neighbour_images: Float[Tensor, "n c h w"],
    reference_depth: Float[Tensor, "n h w"],
    reference_intrinsics: Float[Tensor, "n 3 3"],
    reference_pose: Float[Tensor, "n 4 4"],
    neighbour_intrinsics: Float[Tensor, "n 3 3"],
    neighbour_pose: Float[Tensor, "n 4 4"],
) -> tuple[Float[Tensor, "n c h w"], Bool[Tensor, "n h w"]]:
    """Neighbour images resampled on the reference pixel grid through the reference depth.

    Returns the warped images (0 where invalid) and the validity: reference depth > 0, point in
    front of the neighbour and inside its image (pixel centres at integer coordinates).
    Example: identical cameras -> the neighbour image itself, valid everywhere.
    """
    height, width = reference_depth.shape[-2:]
    points = unproject_depth(reference_depth, reference_intrinsics, reference_pose)
    pixels, z = project_points(
        rearrange(points, "n h w xyz -> n (h w) xyz"), neighbour_intrinsics, neighbour_pose
    )
    pixels = rearrange(pixels, "n (h w) xy -> n h w xy", h=height)
    z = rearrange(z, "n (h w) -> n h w", h=height)
    x, y = pixels[..., 0], pixels[..., 1]
    valid = (reference_depth > 0) & (z > 0) & (x >= 0) & (x <= width - 1)
    valid = valid & (y >= 0) & (y <= height - 1)
    # Normalised for align_corners=True; clamped so that far-off points stay finite (masked).
    scale = pixels.new_tensor([max(width - 1, 1), max(height - 1, 1)])
    grid = (2.0 * pixels / scale - 1.0).clamp(-2.0, 2.0)
    warped = F.grid_sample(
        neighbour_images, grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return warped * valid[:, None].to(warped.dtype), valid


def _gradients(
    images: Float[Tensor, "*n c h w"],
) -> tuple[Float[Tensor, "*n c h w"], Float[Tensor, "*n c h w"]]:
    """Forward differences in x and y, zero-padded at the last column / row."""
    grad_x = F.pad(images[..., :, 1:] - images[..., :, :-1], (0, 1))
    grad_y = F.pad(images[..., 1:, :] - images[..., :-1, :], (0, 0, 0, 1))
    return grad_x, grad_y


def reconstruction_loss(
    warped: Float[Tensor, "b v k c h w"],
    valid: Bool[Tensor, "b v k h w"],
    reference: Float[Tensor, "b v c h w"],
    gradient_weight: float,
    beta: float,
) -> Float[Tensor, "b v"]:
    """L_RC per reference view: per-pixel minimum over the valid neighbours of the colour and
    image-gradient SmoothL1, averaged over the pixels valid in at least one neighbour.

    Both images are masked by the neighbour's validity before differencing, so a gradient that
    crosses the validity border compares the same masked pixels in both. Example: a warped
    neighbour equal to the reference on its valid pixels -> 0.
    """
    mask = valid[:, :, :, None].to(warped.dtype)
    masked_reference = reference[:, :, None] * mask
    masked_warped = warped * mask
    colour = F.smooth_l1_loss(masked_warped, masked_reference, reduction="none", beta=beta)
    warped_dx, warped_dy = _gradients(masked_warped)
    reference_dx, reference_dy = _gradients(masked_reference)
    grad = F.smooth_l1_loss(warped_dx, reference_dx, reduction="none", beta=beta)
    grad = grad + F.smooth_l1_loss(warped_dy, reference_dy, reduction="none", beta=beta)
    per_pixel = (1.0 - gradient_weight) * colour.mean(3) + gradient_weight * grad.mean(3)
    masked = torch.where(valid, per_pixel, torch.full_like(per_pixel, float("inf")))
    best = masked.min(dim=2).values
    any_valid = valid.any(dim=2)
    best = torch.where(any_valid, best, torch.zeros_like(best))
    return best.sum((-2, -1)) / any_valid.sum((-2, -1)).clamp_min(1).to(best.dtype)


def ssim_loss(
    warped: Float[Tensor, "b v k c h w"],
    valid: Bool[Tensor, "b v k h w"],
    reference: Float[Tensor, "b v c h w"],
    window: int,
) -> Float[Tensor, "b v"]:
    """Mean of ``clamp((1 - SSIM) / 2, 0, 1)`` per reference view over all neighbours, on the
    pixels whose whole SSIM window is valid (kornia's Gaussian-window SSIM map).

    Example: a warped neighbour equal to the reference -> 0 (up to kornia's eps).
    """
    num_views, num_neighbours = valid.shape[1], valid.shape[2]
    flat_warped = rearrange(warped, "b v k c h w -> (b v k) c h w")
    flat_reference = repeat(reference, "b v c h w -> (b v k) c h w", k=num_neighbours)
    similarity = kornia.metrics.ssim(flat_warped, flat_reference, window, max_val=1.0)
    dissimilarity = ((1.0 - similarity) / 2.0).clamp(0.0, 1.0).mean(1)
    # Erosion by the window: a pixel counts only if no invalid pixel enters its SSIM window.
    flat_valid = rearrange(valid, "b v k h w -> (b v k) 1 h w").to(dissimilarity.dtype)
    eroded = -F.max_pool2d(-flat_valid, window, stride=1, padding=window // 2)
    eroded = rearrange(eroded, "(b v k) 1 h w -> b v k h w", v=num_views, k=num_neighbours)
    dissimilarity = rearrange(
        dissimilarity, "(b v k) h w -> b v k h w", v=num_views, k=num_neighbours
    )
    kept = torch.where(eroded > 0, dissimilarity, torch.zeros_like(dissimilarity))
    return kept.sum((2, 3, 4)) / eroded.sum((2, 3, 4)).clamp_min(1.0)


def smoothness_loss(
    depth: Float[Tensor, "b v h w"], images: Float[Tensor, "b v c h w"]
) -> Float[Tensor, "b v"]:
    """Edge-aware smoothness ``mean |d_x D~| e^{-mean_c |d_x I|} + mean |d_y D~| e^{-...}`` per
    view, on the mean-normalised depth ``D~ = D / mean(D)`` (kornia's
    ``inverse_depth_smoothness_loss`` form, per view). Example: a constant depth -> 0.
    """
    mean_depth = depth.mean((-2, -1), keepdim=True).clamp_min(torch.finfo(depth.dtype).tiny)
    normalised = depth / mean_depth
    depth_dx = normalised[..., :, 1:] - normalised[..., :, :-1]
    depth_dy = normalised[..., 1:, :] - normalised[..., :-1, :]
    image_dx = (images[..., :, 1:] - images[..., :, :-1]).abs().mean(2)
    image_dy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean(2)
    smooth_x = (depth_dx * torch.exp(-image_dx)).abs().mean((-2, -1))
    smooth_y = (depth_dy * torch.exp(-image_dy)).abs().mean((-2, -1))
    return smooth_x + smooth_y


def _level_terms(
    cfg: SelfSupervisedDepthCfg,
    depth: Float[Tensor, "b v h_l w_l"],
    sources: Views,
    neighbours: Int64[Tensor, "b v k"],
) -> tuple[Float[Tensor, "b v"], Float[Tensor, "b v"], Float[Tensor, "b v"]]:
    """L_RC, L_SSIM and L_smooth of every reference view at one cascade level."""
    full_height, full_width = sources.images.shape[-2:]
    height, width = depth.shape[-2:]
    images = sources.images.float()
    if (height, width) != (full_height, full_width):
        flat = rearrange(images, "b v c h w -> (b v) c h w")
        flat = F.interpolate(flat, size=(height, width), mode="area")
        images = rearrange(flat, "(b v) c h w -> b v c h w", v=depth.shape[1])
    intrinsics = scale_intrinsics(
        sources.intrinsics.float(), (full_width, full_height), (width, height)
    )
    poses = sources.cam_to_world.float()
    batch_index = torch.arange(depth.shape[0], device=depth.device)[:, None, None]
    num_neighbours = neighbours.shape[-1]

    # Flat (reference, neighbour) pairs: the reference's tensor repeated, the neighbour's gathered.
    def per_pair(tensor: Float[Tensor, "b v *rest"]) -> Float[Tensor, " pairs *rest"]:
        return repeat(tensor, "b v ... -> (b v k) ...", k=num_neighbours)

    def of_neighbours(tensor: Float[Tensor, "b v *rest"]) -> Float[Tensor, " pairs *rest"]:
        return rearrange(tensor[batch_index, neighbours], "b v k ... -> (b v k) ...")

    warped, valid = warp_to_reference(
        of_neighbours(images),
        per_pair(depth),
        per_pair(intrinsics),
        per_pair(poses),
        of_neighbours(intrinsics),
        of_neighbours(poses),
    )
    shape = {"v": depth.shape[1], "k": num_neighbours}
    warped = rearrange(warped, "(b v k) c h w -> b v k c h w", **shape)
    valid = rearrange(valid, "(b v k) h w -> b v k h w", **shape)
    reconstruction = reconstruction_loss(
        warped, valid, images, cfg.gradient_weight, cfg.reconstruction_beta
    )
    ssim = ssim_loss(warped, valid, images, cfg.ssim_window)
    return reconstruction, ssim, smoothness_loss(depth, images)


def self_supervised_depth_losses(
    cfg: SelfSupervisedDepthCfg,
    depths: list[Float[Tensor, "b v _ _"]],
    sources: Views,
    neighbours: Int64[Tensor, "b v k"],
) -> dict[str, Float[Tensor, ""]]:
    """Weighted contributions ``ssl_reconstruction``, ``ssl_ssim`` and ``ssl_smoothness``.

    ``depths`` are the geo-reasoner's per-level z-depth maps, coarse -> fine; ``sources`` gives
    the full-resolution images, intrinsics and poses. Each entry is
    ``weight * inner_weight * sum_l level_weights[l] * reduce_views(term_l)``, batch-averaged.
    """
    if len(depths) != len(cfg.level_weights):
        raise ValueError(
            f"self_supervised_depth_losses: the geo-reasoner gives {len(depths)} depth levels "
            f"but loss.self_supervised.level_weights has {len(cfg.level_weights)} (coarse -> fine)"
        )
    reduction = ViewReduction(cfg.view_reduction)
    sums = [depths[0].new_zeros((), dtype=torch.float32) for _ in range(3)]
    for level_depth, level_weight in zip(depths, cfg.level_weights):
        terms = _level_terms(cfg, level_depth.float(), sources, neighbours)
        for index, per_view in enumerate(terms):
            reduced = per_view.sum(1) if reduction is ViewReduction.SUM else per_view.mean(1)
            sums[index] = sums[index] + level_weight * reduced.mean()
    inner = (cfg.reconstruction_weight, cfg.ssim_weight, cfg.smoothness_weight)
    names = ("ssl_reconstruction", "ssl_ssim", "ssl_smoothness")
    return {name: cfg.weight * w * total for name, w, total in zip(names, inner, sums)}


def guide_depth_loss(
    rendered: Float[Tensor, "b rays"],
    guide_distance: Float[Tensor, "b rays"],
    guide_valid: Bool[Tensor, "b rays"] | None,
    beta: float,
) -> Float[Tensor, ""]:
    """SmoothL1 of the rendered ray depth toward the (detached) guide distance D_T (spec 3.5c),
    averaged over the rays whose guide is valid and > 0 (the reference divides by all rays)."""
    valid = guide_distance > 0
    if guide_valid is not None:
        valid = valid & guide_valid
    return masked_smooth_l1(rendered, guide_distance.detach(), valid, beta)
