"""The cost volumes' depth-logit convolution in a C++ kernel on a CPU, with gradients.

Each cost volume's U-Net ends in a 3x3x3 convolution to a single channel, the depth logits
(:class:`gsnerf.model.cost_volume.CostRegularizer`). oneDNN takes as long for that one output
channel as for sixteen: about 13 GFLOP/s, 10.7 ms of an uncached 8-view tiny-model encoding for
the finest level's [8, 8, 8, 64, 80] volume (one thread), and its backward pass as long again.
``csrc/logit_conv.cpp`` keeps, for a block of an output row (8 cells of 8 channels), a sum per
cell and channel in registers across the 27 taps, so that every tap is an element-wise
multiply-add of the channels-last input row, and sums the channels once per cell. That
volume's logits take 2.0 against 11.6-12.0 ms, the gradients of a training step's [4, 8, 8,
64, 80] volume 3.2 against 7.0-7.3 ms; an uncached 8-view encoding 142 against 159 ms on one
thread (93 against 110 on two), a quickstart training step of 512 rays with 4 views 369
against 383 ms (226 against 236), alternating runs with the other CPU kernels on.

The numbers are the library's up to float32 rounding (tests against float64 convolutions).
Conditions (:func:`cpu_logit_conv_applies`): :data:`enabled` (``eval.cpu_kernels`` and the
benchmark's ``cpu_kernels`` for inference, ``train.cpu_kernels`` for training), a float32 CPU
volume in the dense channels-last layout (the layout of the CPU's cost volumes), a
convolution of that shape (one output channel, 3x3x3, stride 1, padding 1, no bias), at most
:data:`MAX_CHANNELS` input channels, and a library that builds for the channel count (without a
C++ compiler, a warning and the library's convolution). Eager and compiled code call it as the
operators ``gsnerf::cpu_logit_conv_forward`` and ``..._backward``; rows of the volume, and for
the weight's gradient the batch's items, are split among ``torch.get_num_threads()`` threads.
"""

import torch
from torch import Tensor, nn

from gsnerf.model.native_library import (
    INT64,
    POINTER,
    native_function,
    native_functions_build,
)

SOURCE = "logit_conv.cpp"
# out, in, weight, depth, height, width, rows, threads.
FORWARD_ARGUMENTS = (POINTER,) * 3 + (INT64,) * 5
# grad in, weight parts, grad out, in, weight, depth, height, width, items, threads.
BACKWARD_ARGUMENTS = (POINTER,) * 5 + (INT64,) * 5
# Widest input with a library of its own (one per channel count); the U-Nets' reach 64.
MAX_CHANNELS = 64

# Set by gsnerf.model.fused_kernels.set_fused_kernels (evaluation, render.py, the benchmark,
# training).
enabled = False


@torch.compiler.assume_constant_result
def kernel_available(channels: int) -> bool:
    """Whether the kernel for ``channels`` builds; tried (and warned about) once per count. A
    constant to ``torch.compile``: it runs while tracing, not in the compiled graph."""
    signatures = {"logit_conv": FORWARD_ARGUMENTS, "logit_conv_backward": BACKWARD_ARGUMENTS}
    return native_functions_build(SOURCE, signatures, _defines(channels))


def _defines(channels: int) -> tuple:
    return (("CHANNELS", channels),)


def cpu_logit_conv_applies(volume: Tensor, conv: nn.Conv3d) -> bool:
    """Whether :func:`cpu_logit_conv` computes ``conv(volume)`` (module doc)."""
    if not (
        enabled
        and volume.dim() == 5
        and volume.device.type == "cpu"
        and volume.dtype == conv.weight.dtype == torch.float32
        and conv.out_channels == 1
        and conv.bias is None
        and conv.kernel_size == (3, 3, 3)
        and conv.stride == (1, 1, 1)
        and conv.padding == (1, 1, 1)
        and conv.dilation == (1, 1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and volume.shape[1] <= MAX_CHANNELS
        and volume.is_contiguous(memory_format=torch.channels_last_3d)
    ):
        return False
    return kernel_available(volume.shape[1])


def _check_shapes(volume: Tensor, weight: Tensor) -> None:
    channels = volume.shape[1]
    if weight.shape != (1, channels, 3, 3, 3):
        raise ValueError(
            f"cpu_logit_conv: a weight of shape (1, {channels}, 3, 3, 3) for a volume of "
            f"{channels} channels, got {tuple(weight.shape)}"
        )


@torch.library.custom_op("gsnerf::cpu_logit_conv_forward", mutates_args=())
def logit_conv_forward(volume: Tensor, weight: Tensor) -> Tensor:
    """The ``(n, 1, d, h, w)`` logits of a ``(n, c, d, h, w)`` volume."""
    _check_shapes(volume, weight)
    batch, channels, depth, height, width = volume.shape
    # The kernel reads a dense channels-last volume and a [c][27] weight.
    volume = volume.contiguous(memory_format=torch.channels_last_3d)
    weight = weight.contiguous()
    out = volume.new_empty(batch, 1, depth, height, width)
    kernel = native_function(SOURCE, "logit_conv", FORWARD_ARGUMENTS, _defines(channels))
    rows = batch * depth * height
    kernel(
        out.data_ptr(),
        volume.data_ptr(),
        weight.data_ptr(),
        depth,
        height,
        width,
        rows,
        torch.get_num_threads(),
    )
    return out


@logit_conv_forward.register_fake
def _forward_shape(volume: Tensor, weight: Tensor) -> Tensor:
    batch, _, depth, height, width = volume.shape
    return volume.new_empty(batch, 1, depth, height, width)


@torch.library.custom_op("gsnerf::cpu_logit_conv_backward", mutates_args=())
def logit_conv_backward(grad_out: Tensor, volume: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of the volume (channels-last) and of the weight."""
    _check_shapes(volume, weight)
    batch, channels, depth, height, width = volume.shape
    volume = volume.contiguous(memory_format=torch.channels_last_3d)
    grad_out, weight = grad_out.contiguous(), weight.contiguous()
    grad_in = torch.empty_like(volume, memory_format=torch.channels_last_3d)
    weight_parts = volume.new_empty(batch, *weight.shape)
    kernel = native_function(SOURCE, "logit_conv_backward", BACKWARD_ARGUMENTS, _defines(channels))
    pointers = (grad_in, weight_parts, grad_out, volume, weight)
    kernel(
        *(tensor.data_ptr() for tensor in pointers),
        depth,
        height,
        width,
        batch,
        torch.get_num_threads(),
    )
    return grad_in, weight_parts.sum(0)


@logit_conv_backward.register_fake
def _backward_shapes(grad_out: Tensor, volume: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    return torch.empty_like(volume, memory_format=torch.channels_last_3d), torch.empty_like(weight)


def _save_for_backward(ctx, inputs: tuple, output: Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_out: Tensor) -> tuple[Tensor, Tensor]:
    volume, weight = ctx.saved_tensors
    return logit_conv_backward(grad_out, volume, weight)


logit_conv_forward.register_autograd(_backward, setup_context=_save_for_backward)


def cpu_logit_conv(volume: Tensor, weight: Tensor) -> Tensor:
    """``conv3d(volume, weight, padding=1)`` for a ``(1, c, 3, 3, 3)`` weight, with gradients:
    the ``(n, 1, d, h, w)`` logits of a ``(n, c, d, h, w)`` volume."""
    return logit_conv_forward(volume, weight)
