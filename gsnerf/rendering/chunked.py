"""Render many rays in fixed-size chunks and join the results (spec 5.1: 4096 rays per chunk)."""

from collections.abc import Callable
from dataclasses import fields

import torch
from jaxtyping import Int64
from torch import Tensor

from gsnerf.types import RenderOutput


def render_in_chunks(
    render: Callable[[Int64[Tensor, "b chunk 2"]], RenderOutput],
    pixels: Int64[Tensor, "b rays 2"],
    chunk_rays: int,
) -> RenderOutput:
    """``render`` over consecutive slices of ``chunk_rays`` pixels, joined along the ray axis.

    ``chunk_rays <= 0`` renders every pixel in one call. The result equals one call on all
    pixels whenever ``render`` treats rays independently. Example: 10 rays, chunks of 4 ->
    calls on rays 0-3, 4-7 and 8-9.
    """
    count = pixels.shape[1]
    if chunk_rays <= 0 or chunk_rays >= count:
        return render(pixels)
    parts = [render(pixels[:, start : start + chunk_rays]) for start in range(0, count, chunk_rays)]
    return RenderOutput(
        **{
            item.name: torch.cat([getattr(part, item.name) for part in parts], dim=1)
            for item in fields(RenderOutput)
        }
    )
