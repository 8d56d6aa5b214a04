"""The gathering's trilinear volume reads in a C++ kernel, for CPU inference.

Every sample point reads each cascade level's regularised volume trilinearly
(:func:`gsnerf.model.feature_gather.sample_volume`: ``F.grid_sample``, border padding,
align_corners=False). torch's CPU kernel for volumes is a scalar loop that recomputes the
corners' positions and bounds for every channel; ``csrc/volume_read.cpp`` computes each
point's eight corner offsets and weights once, with the border clamp making every corner
readable, and then sums all channels. One read of a tiny-model level (8 views, 3840 points
each, 4 channels) took 0.52-0.71 ms against 1.64-1.94 ms (one thread of this project's CPU;
benchmarks/README.md has the frame figures). The 2-D reads stay the library's: its CPU kernel
for maps is vectorised, and a kernel like this one was no faster there. Where the whole
gathering runs in :mod:`gsnerf.model.cpu_view_gather` (which reads the volumes with the same
corner arithmetic, ``csrc/grid_read.h``), this read serves the remaining cases.

The numbers are ``grid_sample``'s up to float32 rounding of the corner weights (both are as
far from a float64 read). Conditions (:func:`cpu_volume_read_applies`): :data:`enabled`
(``eval.cpu_kernels``, the benchmark's ``cpu_kernels``), a float32 CPU volume and grid, no
gradient wanted, at most :data:`MAX_CHANNELS` channels, and a library that builds for the
channel count (without a C++ compiler, a warning and ``grid_sample``). Points are split among
``torch.get_num_threads()`` threads.
"""

import torch
from jaxtyping import Float
from torch import Tensor

from gsnerf.model.native_library import (
    INT64,
    POINTER,
    native_function,
    native_function_builds,
)

SOURCE = "volume_read.cpp"
# out, volumes, points, points per volume, depth, height, width, point count, threads.
ARGUMENTS = (POINTER,) * 3 + (INT64,) * 6
# Widest volumes with a library of their own (one per channel count); the paper's have 8.
MAX_CHANNELS = 64

# Set by gsnerf.model.fused_kernels.set_fused_kernels (evaluation, render.py, the benchmark).
enabled = False


def kernel_available(channels: int) -> bool:
    """Whether the kernel for ``channels`` builds; tried (and warned about) once per count."""
    return native_function_builds(SOURCE, "volume_read", ARGUMENTS, (("CHANNELS", channels),))


def cpu_volume_read_applies(values: Tensor, grid: Tensor) -> bool:
    """Whether :func:`cpu_volume_read` reads ``values`` at ``grid`` (module doc)."""
    if not (
        enabled
        and values.dim() == 5
        and values.device.type == grid.device.type == "cpu"
        and values.dtype == grid.dtype == torch.float32
        and values.shape[1] <= MAX_CHANNELS
        and not torch.is_grad_enabled()
    ):
        return False
    return kernel_available(values.shape[1])


def cpu_volume_read(
    values: Float[Tensor, "n c d h w"], grid: Float[Tensor, "n do ho wo 3"]
) -> Float[Tensor, "n c do ho wo"]:
    """``F.grid_sample(values, grid, "bilinear", "border", align_corners=False)`` in the kernel."""
    batch, channels, depth, height, width = values.shape
    points = grid.reshape(batch, -1, 3).contiguous()
    per_volume = points.shape[1]
    values = values.contiguous()
    out = values.new_empty(batch, channels, per_volume)
    kernel = native_function(SOURCE, "volume_read", ARGUMENTS, (("CHANNELS", channels),))
    pointers = (out.data_ptr(), values.data_ptr(), points.data_ptr())
    point_count = batch * per_volume
    kernel(*pointers, per_volume, depth, height, width, point_count, torch.get_num_threads())
    return out.view(batch, channels, *grid.shape[1:-1])
