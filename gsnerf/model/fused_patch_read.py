"""The semantic branch's patch reads in one Triton kernel, for CUDA inference: the CUDA
counterpart of :mod:`gsnerf.model.cpu_patch_read`.

Each sample's semantic features are read bilinearly at its projection and around it, ``p x p``
points ``spacing`` full-resolution pixels apart (:func:`gsnerf.model.feature_gather.
gather_semantic_features`, spec 2.5). In PyTorch that is the offset grid, one ``grid_sample``
and a transpose into the semantic head's ``(b, rays, samples, v, p^2 c)`` layout; compiled,
inductor's kernel for it took 5.4 ms of an H100 bf16 paper frame (the largest of the gathering
stage's 12 ms, benchmarks/README.md). Here each program takes :data:`BLOCK` projections of one
source view and writes every patch point's channels straight into that layout. Maps may be
float32 or 16-bit; reads and arithmetic are float32, as ``grid_sample`` on the float32
conversion the PyTorch path makes. The numbers are that path's up to float32 rounding.

Conditions (:func:`fused_patch_read_applies`): ``enabled`` (set with the gathering kernel's
switch: ``eval.fused_gather``, the benchmark's ``fused_gather``), Triton, a CUDA map and grid,
no gradient wanted, a float32 grid, at most :data:`MAX_CHANNELS` channels. Called as the
operator ``gsnerf::fused_patch_read``, so that compiled gathering calls it within its graph.
Not yet timed on a GPU: off by default.
"""

from typing import no_type_check

import torch
from torch import Tensor

from gsnerf.model.attention_kernel import as_triton_operator

try:
    import triton
    import triton.language as tl

    # The kernel calls these by name: Triton resolves them in this module's globals.
    from gsnerf.model.triton_grid_read import corners, read_channels
except ImportError:  # A CPU-only torch comes without Triton; the kernel is then never used.
    triton = None

# Projections per program (one source view each) and warps per program.
BLOCK = 64
NUM_WARPS = 4
# Widest maps: a tile of that many channels per projection.
MAX_CHANNELS = 64

# The module's switch (set_fused_kernels, with fused_view_gather's).
enabled = False


if triton is not None:

    @triton.jit
    @no_type_check  # keeps jaxtyping's import hook off the kernel (attention_kernel.py)
    def _patch_read_kernel(
        out_ptr, maps_ptr, grid_ptr, per_map, views, height, width, image_height, image_width,
        spacing, CHANNELS: tl.constexpr, TILE: tl.constexpr, PATCH: tl.constexpr,
        BLOCK: tl.constexpr,
    ):  # fmt: skip
        """Projections ``[BLOCK i, BLOCK (i + 1))`` of map ``n = b views + v``, program ``(i,
        n)``. ``maps`` ``(n, CHANNELS, height, width)``, ``grid`` ``(n, per_map, 2)``, ``out``
        ``(b, per_map, views, PATCH^2 CHANNELS)``; one pixel is ``2 / image_width`` (x) or ``2 /
        image_height`` (y) of the normalised coordinates."""
        # Inductor passes Python floats to user kernels as fp64 (fused_transformer.py).
        spacing = tl.cast(spacing, tl.float32)
        n = tl.program_id(1).to(tl.int64)
        point = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = point < per_map
        grid_x = tl.load(grid_ptr + (n * per_map + point) * 2, mask=mask, other=0.0)
        grid_y = tl.load(grid_ptr + (n * per_map + point) * 2 + 1, mask=mask, other=0.0)
        channels = tl.arange(0, TILE)
        tile_mask = mask[:, None] & (channels < CHANNELS)[None, :]
        plane = height * width
        maps = maps_ptr + n * CHANNELS * plane + channels[None, :] * plane
        out_row = ((n // views) * per_map + point) * views + n % views
        out = out_ptr + (out_row * (PATCH * PATCH * CHANNELS))[:, None] + channels[None, :]
        for k in tl.static_range(PATCH * PATCH):
            # Rows major, then columns; the offset as the PyTorch path rounds it.
            x = grid_x + (k % PATCH - PATCH // 2) * 2.0 / image_width * spacing
            y = grid_y + (k // PATCH - PATCH // 2) * 2.0 / image_height * spacing
            base, step_x, step_y, fraction_x, fraction_y = corners(x, y, height, width)
            values = read_channels(maps, base, step_x, step_y, fraction_x, fraction_y, tile_mask)
            tl.store(out + k * CHANNELS, values, mask=tile_mask)


def launch_patch_read(
    maps: Tensor,
    grid: Tensor,
    views: int,
    patch: int,
    spacing: float,
    image_size: list[int],
    launcher: object | None = None,
) -> Tensor:
    """The kernel's patches of ``maps`` ``(b views, c, h, w)`` at ``grid`` ``(b views, rows,
    points, 2)``: ``(b, rows, points, views, patch^2 c)``, float32. ``image_size``: the
    full-resolution ``(height, width)`` whose pixels the spacing counts. ``launcher``:
    ``wrap_triton`` of the kernel (unset), or a stand-in that records the launch
    (:mod:`gsnerf.evaluation.kernel_report`)."""
    batch_views, channels, height, width = maps.shape
    if views < 1 or batch_views % views:
        raise ValueError(f"fused_patch_read: {batch_views} maps are not a batch of {views} views")
    _, rows, per_row, _ = grid.shape
    out = torch.empty(
        (batch_views // views, rows, per_row, views, patch * patch * channels),
        dtype=torch.float32,
        device=maps.device,
    )
    per_map = rows * per_row
    launcher = launcher or torch.library.wrap_triton(_patch_read_kernel)
    launcher[(triton.cdiv(per_map, BLOCK), batch_views)](
        out,
        maps.contiguous(),
        grid.contiguous(),
        per_map,
        views,
        height,
        width,
        image_size[0],
        image_size[1],
        spacing,
        CHANNELS=channels,
        TILE=triton.next_power_of_2(channels),
        PATCH=patch,
        BLOCK=BLOCK,
        num_warps=NUM_WARPS,
    )
    return out


def _fused_patch_read(
    maps: Tensor, grid: Tensor, views: int, patch: int, spacing: float, image_size: list[int]
) -> Tensor:
    return launch_patch_read(maps, grid, views, patch, spacing, image_size)


# The kernel as a torch operator, with launch_patch_read's arguments and result.
fused_patch_read = as_triton_operator("fused_patch_read", _fused_patch_read)


def kernel_fits(maps: Tensor, grid: Tensor) -> bool:
    """Whether the kernel takes these inputs on any device: a 4-D float32 or 16-bit map of at
    most :data:`MAX_CHANNELS` channels, a 4-D float32 grid of (x, y) pairs."""
    return (
        maps.dim() == grid.dim() == 4
        and grid.shape[-1] == 2
        and maps.shape[0] == grid.shape[0]
        and grid.dtype == torch.float32
        and maps.dtype in (torch.float32, torch.bfloat16, torch.float16)
        and maps.shape[1] <= MAX_CHANNELS
    )


def fused_patch_read_applies(maps: Tensor, grid: Tensor) -> bool:
    """Whether :func:`fused_patch_read` reads ``maps`` at ``grid`` (module doc)."""
    return (
        enabled
        and triton is not None
        and not torch.is_grad_enabled()
        and maps.is_cuda
        and grid.is_cuda
        and kernel_fits(maps, grid)
    )
