"""The gathering's bilinear and trilinear reads in a C++ kernel, for CPU inference.

Every sample point reads each source view's maps bilinearly and each cascade level's
regularised volume trilinearly (:func:`gsnerf.model.feature_gather.grid_read`:
``F.grid_sample``, border padding, align_corners=False). torch's CPU kernel for volumes is a
scalar loop that recomputes the corners' positions and bounds for every channel;
``csrc/grid_read.cpp`` computes each point's corner offsets and weights once, with the border
clamp making every corner readable, and then sums all channels. One read of a tiny-model level
(8 views, 3840 points each, 4 channels) took 0.53-0.62 ms against 1.72-1.90 ms (one thread of
this project's CPU; benchmarks/README.md has the frame figures).

The numbers are ``grid_sample``'s up to float32 rounding of the corner weights (both are as
far from a float64 read). Conditions (:func:`cpu_grid_read_applies`): :data:`enabled`
(``eval.cpu_kernels``, the benchmark's ``cpu_kernels``), float32 CPU maps or volumes and grid,
no gradient wanted, at most :data:`MAX_CHANNELS` channels, and a library that builds for the
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
    run_ranges,
    split_range,
)

SOURCE = "grid_read.cpp"
# The C signatures: out, values, points, points per map, then the map's sizes (d, h, w or
# h, w), then the range of points [begin, end).
FUNCTIONS = {
    4: ("map_read", (POINTER,) * 3 + (INT64,) * 5),
    5: ("volume_read", (POINTER,) * 3 + (INT64,) * 6),
}
# Widest maps with a library of their own (one per channel count); the paper's have at most
# 8 volume channels, 32 image and 24 semantic feature channels per patch point.
MAX_CHANNELS = 64

# Set by gsnerf.model.fused_kernels.set_fused_kernels (evaluation, render.py, the benchmark).
enabled = False


def kernel_available(dims: int, channels: int) -> bool:
    """Whether the kernel for ``dims``-D values of ``channels`` channels builds; tried (and
    warned about) once per shape."""
    name, arguments = FUNCTIONS[dims]
    return native_function_builds(SOURCE, name, arguments, (("CHANNELS", channels),))


def cpu_grid_read_applies(values: Tensor, grid: Tensor) -> bool:
    """Whether :func:`cpu_grid_read` reads ``values`` at ``grid`` (module doc)."""
    if not (
        enabled
        and values.dim() in FUNCTIONS
        and values.device.type == grid.device.type == "cpu"
        and values.dtype == grid.dtype == torch.float32
        and values.shape[1] <= MAX_CHANNELS
        and not torch.is_grad_enabled()
    ):
        return False
    return kernel_available(values.dim(), values.shape[1])


def cpu_grid_read(
    values: Float[Tensor, "n c *size"], grid: Float[Tensor, "n *points dims"]
) -> Float[Tensor, "n c *points"]:
    """``F.grid_sample(values, grid, "bilinear", "border", align_corners=False)`` in the kernel,
    for maps ``(n, c, h, w)`` with ``grid`` ``(n, ho, wo, 2)`` or volumes ``(n, c, d, h, w)``
    with ``grid`` ``(n, do, ho, wo, 3)``."""
    batch, channels = values.shape[:2]
    points = grid.reshape(batch, -1, grid.shape[-1]).contiguous()
    per_map = points.shape[1]
    values = values.contiguous()
    out = values.new_empty(batch, channels, per_map)
    name, arguments = FUNCTIONS[values.dim()]
    kernel = native_function(SOURCE, name, arguments, (("CHANNELS", channels),))
    leading = (out.data_ptr(), values.data_ptr(), points.data_ptr(), per_map, *values.shape[2:])

    def run_points(begin: int, end: int) -> None:
        kernel(*leading, begin, end)

    run_ranges(run_points, split_range(batch * per_map, torch.get_num_threads()))
    return out.view(batch, channels, *grid.shape[1:-1])
