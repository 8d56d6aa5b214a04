"""The backward pass of the Triton volume convolution (:mod:`gsnerf.model.fused_volume_conv`),
so that training steps can use it too.

The gradient of the convolution's input is a convolution of the output's gradient, which the
same kernel computes in another of its forms:

* stride 1: a stride-1 convolution with the kernels flipped and input and output channels
  swapped (``x[i]`` reaches ``y[i + 1 - k]`` through tap ``k``);
* stride 2: the transposed stride-2 form with the same kernels (``x[2 o - 1 + k]`` reaches
  ``y[o]``), whose output of twice the size is the input's size where that is even, as the
  U-Net's volumes are (padded to multiples of 8; an odd size takes the library's transposed
  convolution);
* transposed: the stride-2 form with the same kernels.

The gradient of the kernels sums, over every output voxel, the outer product of the input
channels a tap reads and the output's gradient: :func:`_weight_grad_kernel`, one program per
run of :data:`VOXELS_PER_PROGRAM` voxels and tap, adding its ``c_in x c_out`` product (tensor
cores, float32 sums) to the result with atomic adds (in an order that varies: not bitwise
reproducible, like cuDNN's default backward).

Operands are multiplied in the forward's dtype (bf16 under autocast, as cuDNN's backward of an
autocast convolution would), sums are float32, and each gradient comes back in its tensor's
dtype. Registered with :func:`torch.library.register_autograd` on ``gsnerf::fused_volume_conv``
when this module is imported (:mod:`gsnerf.model.fused_volume_conv` imports it), so that eager
and compiled steps (``train.compile``) both differentiate it.
"""

from typing import no_type_check

import torch
import torch.nn.functional as F
from torch import Tensor

from gsnerf.model import fused_volume_conv
from gsnerf.model.attention_kernel import as_triton_operator
from gsnerf.model.fused_volume_conv import STRIDE_1, STRIDE_2, TRANSPOSED_2, tile_width

try:
    import triton
    import triton.language as tl

    # The kernel calls these by name: Triton resolves them in this module's globals.
    from gsnerf.model.fused_volume_conv import _tap_inputs, _voxel_coordinates
except ImportError:  # A CPU-only torch comes without Triton; the kernel is then never used.
    triton = None

# Output voxels per tile and per program of the kernels' gradient, and warps per program; twice
# the warps where a tile is 32 channels wide or more (with 4, the 64-channel forms spilled on
# sm_90).
BLOCK = 128
VOXELS_PER_PROGRAM = 4096
NUM_WARPS = 4
WIDE_NUM_WARPS = 8


if triton is not None:

    @triton.jit
    @no_type_check  # keeps jaxtyping's import hook off the kernel (attention_kernel.py)
    def _weight_grad_kernel(
        grad_weight_ptr, volume_ptr, grad_ptr, in_depth, in_height, in_width, out_depth,
        out_height, out_width, per_program, IN_CHANNELS: tl.constexpr,
        OUT_CHANNELS: tl.constexpr, IN_TILE: tl.constexpr, OUT_TILE: tl.constexpr,
        MODE: tl.constexpr, PRECISION: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """Tap ``t`` over output voxels ``[per_program i, per_program (i + 1))`` of volume
        ``b``, program ``(i, t, b)``. ``volume`` as the forward's, ``grad`` ``(b, out_depth,
        out_height, out_width, OUT_CHANNELS)`` in the product's dtype, ``grad_weight`` ``(27,
        IN_TILE, OUT_TILE)`` float32, to which the program adds its sum."""
        tap = tl.program_id(1)
        b = tl.program_id(2).to(tl.int64)
        per_volume = out_depth * out_height * out_width
        start = tl.program_id(0) * per_program
        end = tl.minimum(start + per_program, per_volume)
        in_channel = tl.arange(0, IN_TILE)
        out_channel = tl.arange(0, OUT_TILE)
        out_channel_mask = (out_channel < OUT_CHANNELS)[None, :]
        accumulated = tl.zeros((IN_TILE, OUT_TILE), dtype=tl.float32)
        for first in range(start, end, BLOCK):
            voxel = first + tl.arange(0, BLOCK)
            mask = voxel < end
            out_z, out_y, out_x = _voxel_coordinates(voxel, out_height, out_width)
            values = _tap_inputs(
                volume_ptr, b, out_z, out_y, out_x, mask, tap, in_depth, in_height, in_width,
                IN_CHANNELS, IN_TILE, MODE,
            )  # fmt: skip
            grads = grad_ptr + ((b * per_volume + voxel) * OUT_CHANNELS)[:, None]
            grad = tl.load(
                grads + out_channel[None, :], mask=mask[:, None] & out_channel_mask, other=0
            )
            accumulated = tl.dot(
                tl.trans(values.to(grad.dtype)), grad, accumulated, input_precision=PRECISION
            )
        tile = in_channel[:, None] * OUT_TILE + out_channel[None, :]
        tl.atomic_add(grad_weight_ptr + tap * IN_TILE * OUT_TILE + tile, accumulated)


def launch_weight_grad(
    volume: Tensor,
    grad: Tensor,
    mode: int,
    launcher: object | None = None,
) -> Tensor:
    """The gradient of form ``mode``'s kernels for input ``volume`` ``(b, c_in, d, h, w)`` and
    output gradient ``grad`` ``(b, c_out, d', h', w')`` (in the product's dtype): ``(27, in
    tile, out tile)`` float32, :func:`fused_volume_conv.tap_kernels`'s layout. ``launcher``:
    ``wrap_triton`` of the kernel (unset), or a stand-in that records the launch."""
    batch, in_channels, depth, height, width = volume.shape
    out_channels, out_size = grad.shape[1], grad.shape[2:]
    in_tile, out_tile = tile_width(in_channels), tile_width(out_channels)
    grad_weight = torch.zeros((27, in_tile, out_tile), dtype=torch.float32, device=grad.device)
    per_volume = out_size[0] * out_size[1] * out_size[2]
    launcher = launcher or torch.library.wrap_triton(_weight_grad_kernel)
    launcher[(triton.cdiv(per_volume, VOXELS_PER_PROGRAM), 27, batch)](
        grad_weight,
        volume.permute(0, 2, 3, 4, 1).contiguous(),
        grad.permute(0, 2, 3, 4, 1).contiguous(),
        depth,
        height,
        width,
        *out_size,
        VOXELS_PER_PROGRAM,
        IN_CHANNELS=in_channels,
        OUT_CHANNELS=out_channels,
        IN_TILE=in_tile,
        OUT_TILE=out_tile,
        MODE=mode,
        PRECISION=fused_volume_conv.dot_precision(grad.dtype),
        BLOCK=BLOCK,
        num_warps=WIDE_NUM_WARPS if max(in_tile, out_tile) >= 32 else NUM_WARPS,
    )
    return grad_weight


def _fused_volume_conv_weight_grad(volume: Tensor, grad: Tensor, mode: int) -> Tensor:
    return launch_weight_grad(volume, grad, mode)


# The kernel as a torch operator, with launch_weight_grad's arguments and result.
fused_volume_conv_weight_grad = as_triton_operator(
    "fused_volume_conv_weight_grad", _fused_volume_conv_weight_grad
)


def module_layout(per_tap: Tensor, weight: Tensor, mode: int) -> Tensor:
    """``(27, in tile, out tile)`` kernels back in ``weight``'s layout, shape and dtype (the
    inverse of :func:`fused_volume_conv.tap_kernels`)."""
    if mode == TRANSPOSED_2:
        in_channels, out_channels = weight.shape[:2]
        order = (3, 4, 0, 1, 2)
    else:
        out_channels, in_channels = weight.shape[:2]
        order = (4, 3, 0, 1, 2)
    per_tap = per_tap[:, :in_channels, :out_channels].reshape(3, 3, 3, in_channels, out_channels)
    return per_tap.permute(order).to(weight.dtype).contiguous()


def input_grad(grad: Tensor, weight: Tensor, mode: int, volume: Tensor) -> Tensor:
    """The gradient of the convolution's input ``volume`` for output gradient ``grad`` (in the
    product's dtype), by the forward kernel in the form the module doc gives."""
    if mode == STRIDE_1:
        kernels, form = weight.transpose(0, 1).flip(2, 3, 4), STRIDE_1
    elif mode == STRIDE_2:
        padding = [1 - size % 2 for size in volume.shape[2:]]
        if padding != [1, 1, 1]:
            # An odd size: the transposed form with output padding 0 on that axis, which the
            # kernel has not (the U-Net's volumes are even).
            kernels = weight.to(grad.dtype)
            result = F.conv_transpose3d(grad, kernels, stride=2, padding=1, output_padding=padding)
            return result.to(volume.dtype)
        kernels, form = weight, TRANSPOSED_2
    else:
        kernels, form = weight, STRIDE_2
    result = fused_volume_conv.fused_volume_conv(grad, kernels, form, grad.dtype)
    return result.to(volume.dtype)


def _setup_context(ctx: object, inputs: tuple, output: Tensor) -> None:
    volume, weight, mode, dtype = inputs
    ctx.save_for_backward(volume, weight)
    ctx.mode, ctx.dtype = mode, dtype


def _backward(ctx: object, grad_out: Tensor) -> tuple:
    volume, weight = ctx.saved_tensors
    grad = grad_out.to(ctx.dtype)
    grad_volume = grad_weight = None
    if ctx.needs_input_grad[0]:
        grad_volume = input_grad(grad, weight, ctx.mode, volume)
    if ctx.needs_input_grad[1]:
        per_tap = fused_volume_conv_weight_grad(volume, grad, ctx.mode)
        grad_weight = module_layout(per_tap, weight, ctx.mode)
    return grad_volume, grad_weight, None, None


if triton is not None:
    fused_volume_conv.fused_volume_conv.register_autograd(_backward, setup_context=_setup_context)
