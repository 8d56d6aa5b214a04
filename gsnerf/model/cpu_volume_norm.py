"""The cost volumes' GroupNorm + LeakyReLU pairs in one C++ kernel, for CPU inference.

Every 3-D convolution of the cost volumes' U-Nets is followed by a GroupNorm and a LeakyReLU
(:func:`gsnerf.model.cost_volume.conv3d_norm_act`), on channels-last volumes on a CPU. torch's
CPU GroupNorm is about twice as slow on that layout as on the contiguous one (a
[8, 8, 8, 64, 80] volume: 2.6 against 1.1 ms, one thread), and the LeakyReLU reads and writes
the volume once more. ``csrc/volume_norm.cpp`` reads each item's volume twice for its
statistics (mean, then centred squares) and once more to write the activated output, one
vector of channels per cell.

The numbers are the library's up to float32 rounding (its statistics summed in double).
Conditions (:func:`cpu_volume_norm_applies`): :data:`enabled` (``eval.cpu_kernels``, the
benchmark's ``cpu_kernels``), a float32 CPU volume whose channels are contiguous per cell (a
channels-last volume, or a channel slice of one), no gradient wanted, at most
:data:`MAX_CHANNELS` channels, and a library that builds for the channel count (without a C++
compiler, a warning and the library's modules). Eager and compiled code call it as the
operator ``gsnerf::cpu_volume_norm_act``; a batch's items are split among
``torch.get_num_threads()`` threads.
"""

import ctypes

import torch
from torch import Tensor

from gsnerf.model.native_library import (
    INT64,
    POINTER,
    native_function,
    native_function_builds,
    run_ranges,
    split_range,
)

SOURCE = "volume_norm.cpp"
# out, in, weight, bias, positions, in stride, channels per group, eps, slope, begin, end.
ARGUMENTS = (POINTER,) * 4 + (INT64,) * 3 + (ctypes.c_float,) * 2 + (INT64,) * 2
# Widest volumes with a library of their own (one per channel count); the U-Nets' reach 64.
MAX_CHANNELS = 64

# Set by gsnerf.model.fused_kernels.set_fused_kernels (evaluation, render.py, the benchmark).
enabled = False


@torch.compiler.assume_constant_result
def kernel_available(channels: int) -> bool:
    """Whether the kernel for ``channels`` builds; tried (and warned about) once per count. A
    constant to ``torch.compile``: it runs while tracing, not in the compiled graph."""
    return native_function_builds(SOURCE, "volume_norm_act", ARGUMENTS, (("CHANNELS", channels),))


def cell_stride(volume: Tensor) -> int | None:
    """Floats between consecutive cells of a ``(n, c, d, h, w)`` volume whose channels are
    contiguous per cell and whose cells are evenly strided (a channels-last volume, or a
    channel slice of one: the layout the kernel reads); None for any other layout. Example: a
    channel slice ``[:, 8:]`` of a 12-channel channels-last volume gives 12."""
    batch, channels, *spatial = volume.shape
    strides = volume.stride()
    if channels > 1 and strides[1] != 1:
        return None
    cell, cells = None, 1  # the cell stride once found, the cells of the later axes
    # Axes of size 1 may carry any stride; the others fix and then confirm the cell stride.
    for size, stride in zip(reversed(spatial), reversed(strides[2:])):
        if size > 1:
            if cell is None:
                cell, remainder = divmod(stride, cells)
                if remainder:
                    return None
            elif stride != cells * cell:
                return None
        cells *= size
    cell = channels if cell is None else cell
    if cell < channels or (batch > 1 and strides[0] != cells * cell):
        return None
    return cell


def cpu_volume_norm_applies(volume: Tensor, norm: torch.nn.GroupNorm) -> bool:
    """Whether :func:`cpu_volume_norm_act` normalises ``volume`` for ``norm`` (module doc)."""
    if not (
        enabled
        and volume.dim() == 5
        and volume.device.type == "cpu"
        and volume.dtype == torch.float32
        and norm.affine
        and volume.shape[1] <= MAX_CHANNELS
        and not torch.is_grad_enabled()
        and cell_stride(volume) is not None
    ):
        return False
    return kernel_available(volume.shape[1])


@torch.library.custom_op("gsnerf::cpu_volume_norm_act", mutates_args=())
def cpu_volume_norm_act(
    volume: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float, slope: float
) -> Tensor:
    """``leaky_relu(group_norm(volume, groups, weight, bias, eps), slope)`` of a ``(n, c, d, h,
    w)`` volume whose channels are contiguous per cell (:func:`cell_stride`); returns a
    channels-last volume. Plain ``Tensor`` annotations: an operator's schema takes no others.
    """
    batch, channels, depth, height, width = volume.shape
    stride = cell_stride(volume)
    if channels % groups or stride is None:
        raise ValueError(
            f"cpu_volume_norm_act: {channels} channels in {groups} groups, strides "
            f"{volume.stride()}: needs whole groups and each cell's channels contiguous"
        )
    out = torch.empty_like(volume, memory_format=torch.channels_last_3d)
    kernel = native_function(SOURCE, "volume_norm_act", ARGUMENTS, (("CHANNELS", channels),))
    weight, bias = weight.detach().float().contiguous(), bias.detach().float().contiguous()
    pointers = (out.data_ptr(), volume.data_ptr(), weight.data_ptr(), bias.data_ptr())
    sizes = (depth * height * width, stride, channels // groups, eps, slope)

    def run_items(begin: int, end: int) -> None:
        kernel(*pointers, *sizes, begin, end)

    run_ranges(run_items, split_range(batch, torch.get_num_threads()))
    return out


@cpu_volume_norm_act.register_fake
def _cpu_volume_norm_act_shape(
    volume: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float, slope: float
) -> Tensor:
    return torch.empty_like(volume, memory_format=torch.channels_last_3d)
