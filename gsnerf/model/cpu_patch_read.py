"""The semantic branch's 3x3 patch reads in a C++ kernel, for CPU inference.

Each sample's semantic features are read bilinearly at its projection and at one pixel's
offset in each direction (:func:`gsnerf.model.feature_gather.gather_semantic_features`, spec
2.5): nine ``grid_sample`` points per projection. The nine share their fractional offsets and
lie in a 4x4 window of pixels, so ``csrc/patch_read.cpp`` reads each channel's window once,
interpolates along x and then along y; near the border, where the clamp gives the points
different offsets, it reads them one by one. The 20-channel patches of one tiny-model chunk (8
views, 960 projections each) took 1.21 ms against 2.56 ms with ``grid_sample`` (one thread of
this project's CPU; benchmarks/README.md has the frame figures).

The numbers are ``grid_sample``'s up to float32 rounding (the patch's positions are the
centre's plus whole pixels, the interpolation separable). Conditions
(:func:`cpu_patch_read_applies`): :data:`enabled` (``eval.cpu_kernels``, the benchmark's
``cpu_kernels``), a float32 CPU map and grid, no gradient wanted, at most
:data:`MAX_CHANNELS` channels, and a library that builds for the channel count (without a C++
compiler, a warning and ``grid_sample``). Eager and compiled code call it as the operator
``gsnerf::cpu_patch_read``; points are split among ``torch.get_num_threads()`` threads.
"""

import torch
from torch import Tensor

from gsnerf.model.native_library import (
    INT64,
    POINTER,
    native_function,
    native_function_builds,
)

SOURCE = "patch_read.cpp"
# out, maps, points, points per map, views, height, width, point count, threads.
ARGUMENTS = (POINTER,) * 3 + (INT64,) * 6
# Points per patch: 3 x 3, rows major.
PATCH_POINTS = 9
# Widest maps with a library of their own (one per channel count).
MAX_CHANNELS = 64

# Set by gsnerf.model.fused_kernels.set_fused_kernels (evaluation, render.py, the benchmark).
enabled = False


@torch.compiler.assume_constant_result
def kernel_available(channels: int) -> bool:
    """Whether the kernel for ``channels`` builds; tried (and warned about) once per count. A
    constant to ``torch.compile``: it runs while tracing, not in the compiled graph."""
    return native_function_builds(SOURCE, "patch_read", ARGUMENTS, (("CHANNELS", channels),))


def cpu_patch_read_applies(maps: Tensor, grid: Tensor) -> bool:
    """Whether :func:`cpu_patch_read` reads ``maps`` at ``grid`` (module doc)."""
    if not (
        enabled
        and maps.dim() == grid.dim() == 4
        and grid.shape[-1] == 2
        and maps.device.type == grid.device.type == "cpu"
        and maps.dtype == grid.dtype == torch.float32
        and maps.shape[1] <= MAX_CHANNELS
        and not torch.is_grad_enabled()
    ):
        return False
    return kernel_available(maps.shape[1])


@torch.library.custom_op("gsnerf::cpu_patch_read", mutates_args=())
def cpu_patch_read(maps: Tensor, grid: Tensor, views: int) -> Tensor:
    """``grid_sample(maps, ...)`` (bilinear, border, align_corners=False) at every point of
    ``grid`` and at one pixel's offset in each direction. ``maps`` ``(b * views, c, h, w)``,
    ``grid`` ``(b * views, rows, points, 2)``; returns ``(b, rows, points, views, 9 * c)``: the
    3 x 3 patch of each point rows major, each patch point's ``c`` channels together (the
    semantic head's layout). Plain ``Tensor`` annotations: an operator's schema takes no others.
    """
    batch_views, channels, height, width = maps.shape
    if views < 1 or batch_views % views:
        raise ValueError(f"cpu_patch_read: {batch_views} maps are not a batch of {views} views")
    _, rows, per_row, _ = grid.shape
    points = grid.reshape(batch_views, -1, 2).contiguous()
    maps = maps.contiguous()
    shape = (batch_views // views, rows, per_row, views, PATCH_POINTS * channels)
    out = maps.new_empty(shape)
    kernel = native_function(SOURCE, "patch_read", ARGUMENTS, (("CHANNELS", channels),))
    pointers = (out.data_ptr(), maps.data_ptr(), points.data_ptr())
    point_count = batch_views * rows * per_row
    kernel(*pointers, rows * per_row, views, height, width, point_count, torch.get_num_threads())
    return out


@cpu_patch_read.register_fake
def _cpu_patch_read_shape(maps: Tensor, grid: Tensor, views: int) -> Tensor:
    channels, (rows, per_row) = maps.shape[1], grid.shape[1:3]
    return maps.new_empty((maps.shape[0] // views, rows, per_row, views, PATCH_POINTS * channels))
