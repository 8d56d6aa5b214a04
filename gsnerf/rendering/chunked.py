"""Render many rays in chunks and join the results (spec 5.1: 4096 rays per chunk)."""

import math
from collections.abc import Callable
from dataclasses import fields

import torch
from jaxtyping import Int64
from torch import Tensor

from gsnerf.types import RenderOutput


def concatenate_renders(parts: list[RenderOutput]) -> RenderOutput:
    """The renders of consecutive ray slices joined along the ray axis, in order."""
    if len(parts) == 1:
        return parts[0]
    return RenderOutput(
        **{
            item.name: torch.cat([getattr(part, item.name) for part in parts], dim=1)
            for item in fields(RenderOutput)
        }
    )


def first_rays(render: RenderOutput, count: int) -> RenderOutput:
    """The first ``count`` rays of ``render``, every field sliced along the ray axis."""
    return RenderOutput(
        **{item.name: getattr(render, item.name)[:, :count] for item in fields(RenderOutput)}
    )


def render_in_chunks(
    render: Callable[[Int64[Tensor, "b chunk 2"]], RenderOutput],
    pixels: Int64[Tensor, "b rays 2"],
    chunk_rays: int,
    equal_chunks: bool = False,
) -> RenderOutput:
    """``render`` over consecutive slices of at most ``chunk_rays`` pixels, joined along rays.

    ``chunk_rays <= 0`` renders every pixel in one call. The result equals one call on all
    pixels whenever ``render`` treats rays independently. Example: 10 rays, chunks of 4 ->
    calls on rays 0-3, 4-7 and 8-9.

    With ``equal_chunks`` every call has the same size: the fewest chunks of at most
    ``chunk_rays`` rays, ``ceil(rays / chunks)`` each, the last one filled up with copies of its
    last pixel whose renders are dropped (fewer copies than chunks). Example: 10 rays, chunks of
    4 -> three calls of 4 rays: 0-3, 4-7 and 8-9 + 9 + 9. Code compiled for static shapes
    (:mod:`gsnerf.model.compiled_heads`) then compiles once per image size.
    """
    count = pixels.shape[1]
    if chunk_rays <= 0 or chunk_rays >= count:
        return render(pixels)
    if equal_chunks:
        chunk_rays = math.ceil(count / math.ceil(count / chunk_rays))
    parts = []
    for start in range(0, count, chunk_rays):
        chunk = pixels[:, start : start + chunk_rays]
        missing = chunk_rays - chunk.shape[1]
        if equal_chunks and missing > 0:
            filler = chunk[:, -1:].expand(-1, missing, -1)
            parts.append(first_rays(render(torch.cat([chunk, filler], dim=1)), chunk.shape[1]))
        else:
            parts.append(render(chunk))
    return concatenate_renders(parts)


def chunk_rays_for_memory(bytes_per_ray: float, free_bytes: int, memory_fraction: float) -> int:
    """Rays per chunk that fill ``memory_fraction`` of ``free_bytes``: ``floor(f F / m)``, >= 1.

    Example: 2 KiB per ray, 1 GiB free, fraction 0.5 -> 262144 rays.
    """
    if bytes_per_ray <= 0:
        raise ValueError(f"chunk_rays_for_memory: bytes_per_ray must be > 0, got {bytes_per_ray}")
    if not 0 < memory_fraction <= 1:
        raise ValueError(
            f"chunk_rays_for_memory: memory_fraction must lie in (0, 1], got {memory_fraction}"
        )
    return max(1, int(memory_fraction * max(free_bytes, 0.0) // bytes_per_ray))
