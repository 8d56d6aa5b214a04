"""Scenes and sample points for the tests of the one-pass view gathering
(gsnerf/model/view_gather.py): its C++ and Triton kernels against the PyTorch functions."""

import dataclasses

import torch
from small_models import small_gsnerf_cfg

from gsnerf.evaluation.benchmark_scene import plane_example
from gsnerf.model.gsnerf import GSNeRF
from gsnerf.types import SourceGeometry, Views

HEIGHT, WIDTH = 16, 24


def joined_batches(first: object, second: object) -> object:
    """Two batches of one (tensors, lists of them, dataclasses of them) as one batch of two."""
    if isinstance(first, torch.Tensor):
        return torch.cat([first, second])
    if isinstance(first, list):
        return [joined_batches(a, b) for a, b in zip(first, second, strict=True)]
    if dataclasses.is_dataclass(first):
        fields = [field.name for field in dataclasses.fields(first)]
        return type(first)(
            **{name: joined_batches(getattr(first, name), getattr(second, name)) for name in fields}
        )
    return first


def encoded_scene(
    seed: int, views: int, volume_channels: int, device: str = "cpu"
) -> tuple[Views, SourceGeometry, Views]:
    """Sources, their encoding by a small model with random weights, and the target view."""
    torch.manual_seed(seed)
    cfg = small_gsnerf_cfg()
    cfg.geo_reasoner.cost_volume.volume_channels = volume_channels
    model = GSNeRF(cfg, num_classes=5).eval().to(device)
    example = plane_example(views, HEIGHT, WIDTH, 5, seed=seed).to(device)
    with torch.no_grad():
        geometry = model.encode_sources(example)
    return example.sources, geometry, example.target


def sample_points(target: Views, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points on target rays at depths from 0.1 to 6 m (the plane is 2.5 m away), some behind
    or beside source cameras; and the unit ray directions. ``(b, 40, 5, 3)``, ``(b, 40, 3)``, on
    the target's device (drawn on the CPU)."""
    generator = torch.Generator().manual_seed(seed)
    batch, device = target.images.shape[0], target.images.device
    target = target.to("cpu")
    directions = torch.randn(batch, 40, 3, generator=generator) * 0.4
    directions[..., 2] = 1.0
    rotation = target.cam_to_world[:, 0, :3, :3]
    directions = torch.einsum("bij,brj->bri", rotation, directions)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    distances = torch.rand(batch, 40, 5, generator=generator) * 5.9 + 0.1
    origins = target.cam_to_world[:, 0, :3, 3]
    points = origins[:, None, None] + distances[..., None] * directions[:, :, None]
    return points.to(device), directions.to(device)
