"""The cost volumes' GroupNorm + LeakyReLU pairs in one C++ kernel on a CPU, with gradients.

Every 3-D convolution of the cost volumes' U-Nets is followed by a GroupNorm and a LeakyReLU
(:class:`gsnerf.model.cost_volume.ConvNormAct`), on channels-last volumes on a CPU. torch's
CPU GroupNorm is about twice as slow on that layout as on the contiguous one (a
[8, 8, 8, 64, 80] volume: 2.6 against 1.1 ms, one thread), its backward pass more so, and the
LeakyReLU reads and writes the volume once more each way. ``csrc/volume_norm.cpp`` reads each
item's volume twice for its statistics (mean, then centred squares, summed in double) and once
more to write the activated output; its backward pass reads the input and the output gradient
twice (the sums of the gradient, then the input gradient), recomputing the normalised values
from the saved statistics. An uncached 8-view tiny-model encoding took 136 against 164 ms, a
training step of 512 rays with 4 views 419 against 456 ms (alternating, one thread).

The numbers are the library's up to float32 rounding, and closer to a float64 evaluation than
the library's (tests). Conditions (:func:`cpu_volume_norm_applies`): :data:`enabled`
(``eval.cpu_kernels`` and the benchmark's ``cpu_kernels`` for inference, ``train.cpu_kernels``
for training), a float32 CPU volume whose channels are contiguous per cell (a channels-last
volume, or a channel slice of one), at most :data:`MAX_CHANNELS` channels, and a library that
builds for the channel count (without a C++ compiler, a warning and the library's modules).
Eager and compiled code call it as the operators ``gsnerf::cpu_volume_norm_act_forward`` and
``..._backward``; a batch's items are split among ``torch.get_num_threads()`` threads.
"""

import ctypes

import torch
from torch import Tensor

from gsnerf.model.native_library import (
    INT64,
    POINTER,
    native_function,
    native_functions_build,
)

SOURCE = "volume_norm.cpp"
# out, statistics, in, weight, bias, positions, in stride, channels per group, eps, slope,
# items, threads.
FORWARD_ARGUMENTS = (POINTER,) * 5 + (INT64,) * 3 + (ctypes.c_float,) * 2 + (INT64,) * 2
# grad in, weight parts, bias parts, grad out, in, statistics, weight, bias, positions,
# channels per group, slope, items, threads.
BACKWARD_ARGUMENTS = (POINTER,) * 8 + (INT64,) * 2 + (ctypes.c_float,) + (INT64,) * 2
# Widest volumes with a library of their own (one per channel count); the U-Nets' reach 64.
MAX_CHANNELS = 64

# Set by gsnerf.model.fused_kernels.set_fused_kernels (evaluation, render.py, the benchmark,
# training).
enabled = False


@torch.compiler.assume_constant_result
def kernel_available(channels: int) -> bool:
    """Whether the kernel for ``channels`` builds; tried (and warned about) once per count. A
    constant to ``torch.compile``: it runs while tracing, not in the compiled graph."""
    signatures = {
        "volume_norm_act": FORWARD_ARGUMENTS,
        "volume_norm_act_backward": BACKWARD_ARGUMENTS,
    }
    return native_functions_build(SOURCE, signatures, _defines(channels))


def _defines(channels: int) -> tuple:
    return (("CHANNELS", channels),)


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
        and volume.dtype == norm.weight.dtype == torch.float32
        and norm.affine
        and volume.shape[1] <= MAX_CHANNELS
        and cell_stride(volume) is not None
    ):
        return False
    return kernel_available(volume.shape[1])


def _checked_cell_stride(volume: Tensor, groups: int) -> int:
    stride = cell_stride(volume)
    if volume.shape[1] % groups or stride is None:
        raise ValueError(
            f"cpu_volume_norm_act: {volume.shape[1]} channels in {groups} groups, strides "
            f"{volume.stride()}: needs whole groups and each cell's channels contiguous"
        )
    return stride


@torch.library.custom_op("gsnerf::cpu_volume_norm_act_forward", mutates_args=())
def volume_norm_act_forward(
    volume: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float, slope: float
) -> tuple[Tensor, Tensor]:
    """The activated volume (channels-last) and the statistics ``(n, 2, c)`` (each channel's
    group mean and inverse standard deviation) that the backward pass reads."""
    batch, channels, depth, height, width = volume.shape
    stride = _checked_cell_stride(volume, groups)
    out = torch.empty_like(volume, memory_format=torch.channels_last_3d)
    statistics = volume.new_empty(batch, 2, channels)
    kernel = native_function(SOURCE, "volume_norm_act", FORWARD_ARGUMENTS, _defines(channels))
    weight, bias = weight.float().contiguous(), bias.float().contiguous()
    pointers = (out, statistics, volume, weight, bias)
    sizes = (depth * height * width, stride, channels // groups, eps, slope)
    kernel(*(tensor.data_ptr() for tensor in pointers), *sizes, batch, torch.get_num_threads())
    return out, statistics


@volume_norm_act_forward.register_fake
def _forward_shapes(volume: Tensor, weight: Tensor, *rest: object) -> tuple[Tensor, Tensor]:
    out = torch.empty_like(volume, memory_format=torch.channels_last_3d)
    return out, volume.new_empty(volume.shape[0], 2, volume.shape[1])


@torch.library.custom_op("gsnerf::cpu_volume_norm_act_backward", mutates_args=())
def volume_norm_act_backward(
    grad_out: Tensor,
    volume: Tensor,
    statistics: Tensor,
    weight: Tensor,
    bias: Tensor,
    groups: int,
    slope: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of the input volume (channels-last), the weight and the bias."""
    batch, channels, depth, height, width = volume.shape
    # The kernel reads dense channels-last volumes (a channel slice is copied into one).
    grad_out, volume = (
        tensor.contiguous(memory_format=torch.channels_last_3d) for tensor in (grad_out, volume)
    )
    grad_in = torch.empty_like(volume, memory_format=torch.channels_last_3d)
    weight_parts, bias_parts = volume.new_empty(2, batch, channels).unbind(0)
    kernel = native_function(
        SOURCE, "volume_norm_act_backward", BACKWARD_ARGUMENTS, _defines(channels)
    )
    weight, bias = weight.float().contiguous(), bias.float().contiguous()
    pointers = (grad_in, weight_parts, bias_parts, grad_out, volume, statistics, weight, bias)
    sizes = (depth * height * width, channels // groups, slope)
    kernel(*(tensor.data_ptr() for tensor in pointers), *sizes, batch, torch.get_num_threads())
    return grad_in, weight_parts.sum(0), bias_parts.sum(0)


@volume_norm_act_backward.register_fake
def _backward_shapes(grad_out: Tensor, volume: Tensor, statistics: Tensor, weight: Tensor, *rest):
    grad_in = torch.empty_like(volume, memory_format=torch.channels_last_3d)
    return grad_in, torch.empty_like(weight), torch.empty_like(weight)


def _save_for_backward(ctx, inputs: tuple, output: tuple) -> None:
    volume, weight, bias, groups, _, slope = inputs
    # The statistics serve the backward pass only: no gradient for them, none made of zeros.
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(volume, output[1], weight, bias)
    ctx.groups, ctx.slope = groups, slope


def _backward(ctx, grad_out: Tensor, _grad_statistics: Tensor | None) -> tuple:
    volume, statistics, weight, bias = ctx.saved_tensors
    grads = volume_norm_act_backward(
        grad_out, volume, statistics, weight, bias, ctx.groups, ctx.slope
    )
    return (*grads, None, None, None)


volume_norm_act_forward.register_autograd(_backward, setup_context=_save_for_backward)


def cpu_volume_norm_act(
    volume: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float, slope: float
) -> Tensor:
    """``leaky_relu(group_norm(volume, groups, weight, bias, eps), slope)`` of a ``(n, c, d, h,
    w)`` volume whose channels are contiguous per cell (:func:`cell_stride`), with gradients;
    returns a channels-last volume."""
    return volume_norm_act_forward(volume, weight, bias, groups, eps, slope)[0]
