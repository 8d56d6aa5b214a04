"""What one training step draws and supervises: random target pixels, their ground truth, losses."""

import torch
from jaxtyping import Float, Int64
from torch import Tensor

from gsnerf.engine.device import autocast_context
from gsnerf.losses import LossCfg, RayTargets, compute_losses
from gsnerf.types import Example, RayBundle, Views


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


def training_losses(
    model: torch.nn.Module,
    example: Example,
    pixels: Int64[Tensor, "b rays 2"],
    loss_cfg: LossCfg,
    generator: torch.Generator,
    precision: str,
    device: torch.device,
) -> dict[str, Float[Tensor, ""]]:
    """Render ``pixels`` in training mode and every loss term of spec 3, ``"total"`` included.

    Only the forward pass runs under ``precision``'s autocast; the losses are computed from its
    outputs as they come.
    """
    with autocast_context(precision, device):
        result = model(example, pixels, training=True, generator=generator)
    targets = ray_targets(example.target, pixels, result.rays)
    return compute_losses(
        loss_cfg,
        result.render,
        targets,
        result.geometry,
        example,
        guide_distance=result.rays.guide_depth,
        guide_valid=result.rays.guide_valid,
        rays=result.rays,
    )
