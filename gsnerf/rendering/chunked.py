"""Render many rays in chunks of a fixed size, a sample budget or the free CUDA memory."""

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


def rays_for_samples(samples_per_chunk: int, samples_per_ray: int) -> int:
    """Rays per chunk of ``samples_per_chunk`` samples, at least one; 0 (no chunks) for 0.

    Example: 4096 samples, 4 per ray -> 1024 rays; 100 samples, 128 per ray -> 1 ray.
    """
    if samples_per_chunk <= 0:
        return 0
    return max(1, samples_per_chunk // samples_per_ray)


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


def render_memory_sized(
    render: Callable[[Int64[Tensor, "b chunk 2"]], RenderOutput],
    pixels: Int64[Tensor, "b rays 2"],
    probe_rays: int,
    memory_fraction: float,
    max_mb: float,
    equal_chunks: bool,
) -> RenderOutput:
    """``render`` on a probe of ``probe_rays`` pixels, then on chunks sized from its CUDA peak.

    The probe's peak memory per ray, times the chunk size, must fit in ``memory_fraction`` of
    the free memory (the CUDA driver's free memory plus what PyTorch's allocator holds unused)
    and, unless ``max_mb`` is 0, in ``max_mb``. With ``equal_chunks`` (compiled heads) the size
    is rounded down to a power of two: the free memory differs a little from frame to frame, and
    every new chunk shape would compile the heads again. Resets CUDA's peak memory statistics.
    """
    device = pixels.device
    probe = min(probe_rays, pixels.shape[1])
    torch.cuda.synchronize(device)
    allocated = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    first = render(pixels[:, :probe])
    if probe == pixels.shape[1]:
        return first
    # At least one byte per ray, so a probe that allocated nothing still gives a finite size.
    bytes_per_ray = max((torch.cuda.max_memory_allocated(device) - allocated) / probe, 1.0)
    free = torch.cuda.mem_get_info(device)[0]
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    chunk = chunk_rays_for_memory(bytes_per_ray, free, memory_fraction)
    if max_mb > 0:
        chunk = min(chunk, chunk_rays_for_memory(bytes_per_ray, int(max_mb * 2**20), 1.0))
    if equal_chunks:
        chunk = 2 ** (chunk.bit_length() - 1)
    return concatenate_renders(
        [first, render_in_chunks(render, pixels[:, probe:], chunk, equal_chunks)]
    )
