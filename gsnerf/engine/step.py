"""What one training step draws and supervises: random target pixels and their ground truth."""

import torch
from jaxtyping import Int64

from gsnerf.losses import RayTargets
from gsnerf.types import RayBundle, Views


def sample_pixels(
    target: Views, count: int, generator: torch.Generator
) -> Int64[torch.Tensor, "b rays 2"]:
    """``count`` (row, col) pixels per target image, uniformly with replacement (spec 2.4)."""
    batch = target.images.shape[0]
    height, width = target.images.shape[-2:]
    rows = torch.randint(height, (batch, count), generator=generator)
    cols = torch.randint(width, (batch, count), generator=generator)
    return torch.stack([rows, cols], dim=-1)


def ray_targets(
    target: Views, pixels: Int64[torch.Tensor, "b rays 2"], rays: RayBundle
) -> RayTargets:
    """Ground truth of the target view at ``pixels``: colour, label and depth as ray distance.

    GT depth is z-depth; along a unit ray it is ``z / cos``, where ``cos`` is the ray's
    component along the camera's optical axis (the third column of the rotation).
    """
    batch = torch.arange(pixels.shape[0], device=pixels.device)[:, None]
    rows, cols = pixels[..., 0], pixels[..., 1]
    rgb = target.images[:, 0].permute(0, 2, 3, 1)[batch, rows, cols]
    labels = None if target.labels is None else target.labels[:, 0][batch, rows, cols]
    depth = None
    if target.depths is not None:
        z = target.depths[:, 0][batch, rows, cols]
        optical_axis = target.cam_to_world[:, 0, :3, 2]
        cosine = (rays.directions * optical_axis[:, None, :]).sum(-1).clamp_min(1e-6)
        depth = torch.where(z > 0, z / cosine, torch.zeros_like(z))
    return RayTargets(rgb=rgb, labels=labels, depth=depth)
