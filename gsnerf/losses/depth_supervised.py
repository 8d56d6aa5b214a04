"""Depth losses with ground-truth depth (spec 3.4).

``L_D = source_weight * sum_l level_weight_l * SL1_mean(D_hat_l, D_l^gt)
      + ray_weight * SL1_mean(d_hat, d^gt)``,
with SmoothL1 (``beta``) averaged over the *valid* pixels or rays only (GT > 0). The reference
divides the ray term by all rays, valid or not (spec 7.17); here a batch with few valid rays gets
the same per-ray strength as a fully valid one. A level, or a ray batch, without any valid GT
contributes exactly 0 with a zero gradient.

GT depth at the coarse cascade levels is the *minimum over the valid pixels* of each block
(``GtDownsample.MIN_POOL``, default) rather than the block's nearest pixel:

- ``F.interpolate(mode="nearest")`` (like ``cv2.INTER_NEAREST``) keeps each block's top-left
  pixel, ``(f - 1) / 2`` full-resolution pixels away from the centre that the scaled intrinsics
  give the coarse pixel: every depth edge moves up-left by 0.5 px at 1/2 and 1.5 px at 1/4
  resolution, and a block whose kept pixel is a hole (0) loses its supervision although its other
  pixels have depth;
- the valid-pixel minimum is symmetric in the block (no shift), uses any valid pixel, and is
  always the depth of a surface present in the block, never a mix of two (as a mean would be).
  Its only bias is toward the nearer surface in blocks that straddle a depth edge, i.e. a
  foreground dilation of at most one coarse pixel, on all sides alike.

``GtDownsample.NEAREST`` is kept to reproduce the reference-style resize.
"""

from dataclasses import dataclass, field
from enum import Enum

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Bool, Float
from torch import Tensor


class GtDownsample(str, Enum):
    """How full-resolution GT depth is reduced to a coarse cascade level."""

    # Minimum over the valid (> 0) pixels of each block; 0 where the block has none.
    MIN_POOL = "min_pool"
    # The block's top-left pixel (``F.interpolate`` nearest), as a nearest-neighbour resize does.
    NEAREST = "nearest"


@dataclass
class SupervisedDepthCfg:
    # Weight of the source-depth term summed over the cascade levels (spec 3.4: 1.0).
    source_weight: float = 1.0
    # Weight of each cascade level, coarse -> fine (spec 3.4: 2, 1, 0.5 fine -> coarse).
    level_weights: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    # SmoothL1 transition point beta, metres (spec 3: PyTorch default 1.0).
    beta: float = 1.0
    # Weight of the rendered ray depth against the GT distance along the ray (spec 3.4: 0.1).
    ray_weight: float = 0.1
    # GT reduction to coarse levels: "min_pool" (valid-pixel minimum) or "nearest" (module doc).
    gt_downsample: str = GtDownsample.MIN_POOL.value


def downsample_depth(
    depth: Float[Tensor, "n h w"], height: int, width: int, mode: GtDownsample
) -> Float[Tensor, "n h_out w_out"]:
    """GT depth (0 = invalid) reduced to ``height x width``; see the module doc for the modes.

    Example, one 2x2 block ``[[0, 3], [2, 5]]`` -> ``min_pool``: 2 (the 0 is a hole),
    ``nearest``: 0 (the top-left pixel, so the block is invalid).
    """
    if depth.shape[-2:] == (height, width):
        return depth
    if mode is GtDownsample.NEAREST:
        return F.interpolate(depth[:, None], size=(height, width), mode="nearest")[:, 0]
    # Holes become +inf so that the block minimum ignores them, and blocks of holes stay 0.
    holes_to_inf = torch.where(depth > 0, depth, torch.full_like(depth, float("inf")))
    pooled = -F.adaptive_max_pool2d(-holes_to_inf[:, None], (height, width))[:, 0]
    return torch.where(torch.isfinite(pooled), pooled, torch.zeros_like(pooled))


def masked_smooth_l1(
    predicted: Float[Tensor, "*shape"],
    target: Float[Tensor, "*shape"],
    valid: Bool[Tensor, "*shape"],
    beta: float,
) -> Float[Tensor, ""]:
    """SmoothL1 averaged over the ``valid`` entries only; 0 (zero gradient) if none is valid.

    Example, beta 1: predicted ``[1, 3, 9]``, target ``[1.5, 1, 0]``, valid ``[T, T, F]`` ->
    ``(0.5 * 0.5^2 + (2 - 0.5)) / 2 = 0.8125``.
    """
    per_entry = F.smooth_l1_loss(predicted.float(), target.float(), reduction="none", beta=beta)
    # A where (not a product) so that a non-finite prediction at an invalid entry cannot leak.
    kept = torch.where(valid, per_entry, torch.zeros_like(per_entry))
    return kept.sum() / valid.sum().clamp_min(1).to(kept.dtype)


def source_depth_loss(
    predicted: list[Float[Tensor, "b v _ _"]],
    gt_depth: Float[Tensor, "b v h w"],
    level_weights: list[float],
    beta: float,
    gt_downsample: GtDownsample,
) -> Float[Tensor, ""]:
    """``sum_l level_weights[l] * SL1_mean`` of each cascade level against the GT (spec 3.4).

    ``predicted`` and ``level_weights`` are ordered coarse -> fine; each level is compared with
    the GT reduced to its size, over the pixels where that GT is > 0.
    """
    if len(predicted) != len(level_weights):
        raise ValueError(
            f"source_depth_loss: the geo-reasoner gives {len(predicted)} depth levels but "
            f"loss.supervised.level_weights has {len(level_weights)} entries (coarse -> fine)"
        )
    flat_gt = rearrange(gt_depth.float(), "b v h w -> (b v) h w")
    total = flat_gt.new_zeros(())
    for level_depth, level_weight in zip(predicted, level_weights):
        flat_pred = rearrange(level_depth, "b v h w -> (b v) h w")
        level_gt = downsample_depth(flat_gt, *flat_pred.shape[-2:], mode=gt_downsample)
        total = total + level_weight * masked_smooth_l1(flat_pred, level_gt, level_gt > 0, beta)
    return total


def ray_depth_loss(
    predicted: Float[Tensor, "b rays"], gt_distance: Float[Tensor, "b rays"], beta: float
) -> Float[Tensor, ""]:
    """SmoothL1 of rendered ray depth against the GT distance, averaged over rays with GT > 0."""
    return masked_smooth_l1(predicted, gt_distance, gt_distance > 0, beta)
