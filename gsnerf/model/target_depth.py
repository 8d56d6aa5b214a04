"""Target-view guide depth D_T (paper Algorithm 1, spec 2.3): splat, fill holes, smooth.

1. The source depth maps are reprojected into the target camera with a z-buffer
   (:func:`gsnerf.geometry.splatting.reproject_depth_batched`).
2. Holes are filled iteratively: each pass gives every invalid pixel with at least one valid
   neighbour in a ``(2r+1)^2`` window a depth taken from those neighbours, so after ``n`` passes
   holes are filled up to ``n r`` pixels from valid depth; farther pixels stay invalid and the
   sampler falls back to uniform samples there. After z-buffering, most holes are
   *disocclusions*: surfaces the target sees that the foreground hid from every source. They
   belong to the background, so the default takes the *farthest* valid neighbour (the usual
   choice in depth-image-based rendering); the *median* is the robust alternative for scattered
   holes.
3. An edge-preserving bilateral filter on the depth itself, normalised by the valid mask so that
   invalid pixels (depth 0) never pull a valid one toward 0.

The reference densifies with an inverse-distance 7x7 window and leaves the remaining holes at 0,
which then clamp to the near plane (spec 2.3, 7.10); here they are flagged invalid instead.
Everything runs in float32 with autocast disabled: under fp16, depths of several metres keep only
about three significant digits.
"""

from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from kornia.filters import joint_bilateral_blur
from torch import Tensor

from gsnerf.geometry.splatting import reproject_depth_batched
from gsnerf.model import fused_guide_depth
from gsnerf.types import GuideDepth


class HoleFill(str, Enum):
    """Which depth an invalid pixel takes from its valid neighbours."""

    # The largest (background) depth among the valid neighbours.
    FARTHEST = "farthest"
    # The median of the valid neighbours (the lower middle value for an even count).
    MEDIAN = "median"


class Smoothing(str, Enum):
    """Edge-preserving smoothing applied after hole filling."""

    # Bilateral filter on the depth, normalised by the valid mask.
    BILATERAL = "bilateral"
    # No smoothing.
    NONE = "none"


@dataclass
class TargetDepthCfg:
    # Half-size of the square each splatted point covers, target pixels (1 = its 2x2 neighbours).
    footprint_radius: float = 1.0
    # Distance to a pixel centre below which a projection counts as on it, pixels.
    snap_tolerance: float = 1e-3
    # Hole-filling rule: "farthest" (background, for disocclusions) or "median" (module doc).
    hole_fill: str = HoleFill.FARTHEST.value
    # Half-size r of the hole-filling window, pixels (window 2r+1; spec 2.3 densifies over 7x7).
    fill_radius: int = 1
    # Hole-filling passes; holes are filled up to fill_radius * fill_iterations pixels deep.
    fill_iterations: int = 8
    # Smoothing after hole filling: "bilateral" or "none".
    smoothing: str = Smoothing.BILATERAL.value
    # Bilateral kernel size, pixels, odd (spec 2.3: 3; borders replicate here, the reference
    # reflects them).
    kernel_size: int = 5
    # Bilateral range sigma, metres; spec 2.3 uses 1.0, which blends the two sides of sub-metre
    # depth steps (weight exp(-0.125) at 0.5 m), so a smaller value keeps object edges sharp.
    sigma_color: float = 0.1
    # Bilateral spatial sigma, pixels (spec 2.3: 2).
    sigma_space: float = 2.0

    def __post_init__(self) -> None:
        for name, choices in (("hole_fill", HoleFill), ("smoothing", Smoothing)):
            value = getattr(self, name)
            if value not in {choice.value for choice in choices}:
                raise ValueError(
                    f"TargetDepthCfg.{name}: unknown value {value!r}, expected one of "
                    f"{[choice.value for choice in choices]}"
                )
        if self.fill_radius < 1 or self.fill_iterations < 0:
            raise ValueError(
                f"TargetDepthCfg: fill_radius must be >= 1 and fill_iterations >= 0, got "
                f"{self.fill_radius} and {self.fill_iterations}"
            )
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"TargetDepthCfg.kernel_size must be odd, got {self.kernel_size}")
        if self.sigma_color <= 0 or self.sigma_space <= 0:
            raise ValueError("TargetDepthCfg: sigma_color and sigma_space must be positive")


def fill_holes(
    depth: Float[Tensor, "b h w"],
    valid: Bool[Tensor, "b h w"],
    rule: HoleFill,
    radius: int,
    iterations: int,
) -> tuple[Float[Tensor, "b h w"], Bool[Tensor, "b h w"]]:
    """Fill invalid pixels from valid neighbours, ``iterations`` passes of a ``2r+1`` window.

    Example (r = 1, one pass): row ``[2, 0, 3]`` with the middle invalid -> ``[2, 3, 3]``
    (farthest) or ``[2, 2, 3]`` (median, the lower middle of {2, 3}).
    """
    height, width = depth.shape[-2:]
    size = 2 * radius + 1
    for _ in range(iterations):
        if rule is HoleFill.FARTHEST:
            # Invalid pixels hold 0 and valid depths are > 0, so the window maximum ignores them.
            masked = torch.where(valid, depth, torch.zeros_like(depth))
            candidate = F.max_pool2d(masked[:, None], size, stride=1, padding=radius)[:, 0]
            found = candidate > 0
        else:
            masked = torch.where(valid, depth, torch.full_like(depth, torch.nan))
            windows = F.unfold(masked[:, None], size, padding=radius)
            # Unfold pads with 0, which is not a depth: treat the padding as missing too.
            windows = torch.where(windows > 0, windows, torch.full_like(windows, torch.nan))
            candidate = windows.nanmedian(dim=1).values.reshape(-1, height, width)
            found = ~torch.isnan(candidate)
        newly = ~valid & found
        depth = torch.where(newly, candidate, depth)
        valid = valid | newly
    return depth, valid


def smooth_depth(
    depth: Float[Tensor, "b h w"],
    valid: Bool[Tensor, "b h w"],
    kernel_size: int,
    sigma_color: float,
    sigma_space: float,
) -> Float[Tensor, "b h w"]:
    """Bilateral filter of ``depth`` guided by itself, over valid pixels only; 0 where invalid.

    ``out(p) = sum_q k(p, q) m(q) d(q) / sum_q k(p, q) m(q)`` with
    ``k = exp(-|p - q|^2 / (2 sigma_space^2)) exp(-(d(p) - d(q))^2 / (2 sigma_color^2))`` and
    ``m`` the valid mask. Example: a pixel of depth 2 with an invalid neighbour (0) keeps 2 for
    any ``sigma_color``, where an unmasked blur would pull it toward 0.
    """
    mask = valid.to(depth.dtype)
    masked = depth * mask
    stacked = torch.stack([masked, mask], dim=1)
    filtered = joint_bilateral_blur(
        stacked,
        masked[:, None],
        (kernel_size, kernel_size),
        sigma_color,
        (sigma_space, sigma_space),
        border_type="replicate",
    )
    # The kernel's own normalisation cancels in the ratio; the valid centre keeps it above 0.
    numerator, denominator = filtered[:, 0], filtered[:, 1]
    smoothed = numerator / denominator.clamp_min(torch.finfo(depth.dtype).tiny)
    return torch.where(valid, smoothed, torch.zeros_like(smoothed))


def estimate_guide_depth(
    src_depths: Float[Tensor, "b v h_src w_src"],
    src_intrinsics: Float[Tensor, "b v 3 3"],
    src_cam_to_world: Float[Tensor, "b v 4 4"],
    tgt_intrinsics: Float[Tensor, "b 3 3"],
    tgt_cam_to_world: Float[Tensor, "b 4 4"],
    height: int,
    width: int,
    cfg: TargetDepthCfg,
) -> GuideDepth:
    """D_T at the target resolution ``height x width`` from the source depth maps (module doc).

    Source intrinsics are at the source maps' resolution, target intrinsics at the target's.
    Gradients flow to ``src_depths``; detach them first if the samples should not train them.
    On CUDA, Triton kernels can compute the same (:mod:`gsnerf.model.fused_guide_depth`).
    """
    if fused_guide_depth.fused_guide_depth_applies(src_depths, cfg.hole_fill):
        return fused_guide_depth.fused_estimate_guide_depth(
            src_depths,
            src_intrinsics,
            src_cam_to_world,
            tgt_intrinsics,
            tgt_cam_to_world,
            height,
            width,
            cfg,
        )
    with torch.autocast(device_type=src_depths.device.type, enabled=False):
        depth, valid = reproject_depth_batched(
            src_depths.float(),
            src_intrinsics.float(),
            src_cam_to_world.float(),
            tgt_intrinsics.float(),
            tgt_cam_to_world.float(),
            height,
            width,
            footprint_radius=cfg.footprint_radius,
            snap_tolerance=cfg.snap_tolerance,
        )
        depth, valid = fill_holes(
            depth, valid, HoleFill(cfg.hole_fill), cfg.fill_radius, cfg.fill_iterations
        )
        if Smoothing(cfg.smoothing) is Smoothing.BILATERAL:
            depth = smooth_depth(depth, valid, cfg.kernel_size, cfg.sigma_color, cfg.sigma_space)
    return GuideDepth(depth=depth, valid=valid)
