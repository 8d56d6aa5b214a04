"""The cost volumes' small-channel 3-D convolutions in one Triton kernel, on CUDA.

The 3-D U-Nets of the Semantic Geo-Reasoner (:class:`gsnerf.model.cost_volume.CostRegularizer`)
convolve volumes of 8 to 64 channels with 3x3x3 kernels. cuDNN does that badly: in an H100 bf16
paper frame its convolutions took 17.6 ms (about 11 TFLOP/s by a count of the layers, a
hundredth of the tensor cores' rate) plus 6.7 ms of layout conversions around its channels-last
kernels, over half of the cost volumes' 45 ms (benchmarks/README.md). With so few channels a
convolution is neither compute nor memory bound: it is a gather of 27 neighbours.

Here each program takes :data:`BLOCK` output voxels of one volume, in the channels-last layout
(``N D H W C``), and for each of the 27 taps reads the voxels' input channels (zero outside the
volume, the padding of 1) and multiplies them with the tap's ``c_in x c_out`` kernel on the
tensor cores, accumulating in float32. Three forms share it (``MODE``): stride 1, stride 2 (the
U-Net's downsampling) and the transposed stride-2 convolution with ``output_padding=1`` (its
upsampling; output voxel ``o`` takes input ``i = (o + 1 - k) / 2`` where that is whole).
Volumes stay channels-last through the U-Net, so no layout conversion is left. The GroupNorm
after each convolution keeps the library's (two-pass) statistics: sums of the values and their
squares, which the kernel could add up on the way, lose the variance to cancellation where a
channel's mean is large against its spread (with such sums a tiny-model training step's
gradients were up to 9e-3 of their scale off the plain step's; with the library's norm, 2e-5),
and the norm's pass reads the output once more, a fraction of a convolution's 27 reads.

Operands are multiplied in the product dtype (bf16 under autocast, as cuDNN's convolution
would; float32 in TF32 or IEEE precision as ``torch.backends.cudnn.allow_tf32`` says), with
float32 sums, and the result is stored in that dtype.

Conditions (:func:`fused_volume_conv_applies`): ``enabled`` (``eval.fused_volumes``,
``train.fused_volumes``, the benchmark's ``fused_volumes``), Triton, a CUDA volume, a 3x3x3
convolution of one of the three forms without bias, groups or dilation, at most
:data:`MAX_CHANNELS` channels in and out. Called as the operator ``gsnerf::fused_volume_conv``,
so that compiled cost volumes call it within their graph; its backward, for training steps, is
:mod:`gsnerf.model.fused_volume_conv_grad`. Not yet timed on a GPU: off by default.
"""

from typing import no_type_check

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gsnerf.model.attention_kernel import as_triton_operator

try:
    import triton
    import triton.language as tl
except ImportError:  # A CPU-only torch comes without Triton; the kernel is then never used.
    triton = None

# Output voxels per program, and warps per program.
BLOCK = 128
NUM_WARPS = 4
# Widest volumes, in and out: the U-Net's widths are 8 to 64 (spec 2.2).
MAX_CHANNELS = 64
# tl.dot multiplies tiles of at least 16 rows and columns: narrower channels are zero-padded.
MIN_TILE = 16

# The kernel's three forms.
STRIDE_1, STRIDE_2, TRANSPOSED_2 = 0, 1, 2

# The module's switch (set_fused_kernels).
enabled = False


if triton is not None:

    @triton.jit
    @no_type_check  # keeps jaxtyping's import hook off the kernel (attention_kernel.py)
    def _input_index(out_index, tap, in_size, MODE: tl.constexpr):
        """Along one axis: the input coordinate that kernel tap ``tap`` (0, 1, 2) of output
        coordinate ``out_index`` reads, and whether it lies in the volume (padding 1)."""
        if MODE == 2:
            # Transposed, stride 2: o = 2 i - 1 + k.
            twice = out_index + 1 - tap
            index = twice // 2
            inside = (twice >= 0) & (twice % 2 == 0) & (index < in_size)
        else:
            index = out_index * (MODE + 1) - 1 + tap
            inside = (index >= 0) & (index < in_size)
        return index, inside

    @triton.jit
    @no_type_check
    def _voxel_coordinates(voxel, out_height, out_width):
        """``(z, y, x)`` of flat voxel indices within a volume of ``out_height x out_width``
        planes."""
        x = voxel % out_width
        y = (voxel // out_width) % out_height
        return voxel // (out_width * out_height), y, x

    @triton.jit
    @no_type_check
    def _tap_inputs(
        volume_ptr, b, out_z, out_y, out_x, mask, tap, in_depth, in_height, in_width,
        IN_CHANNELS: tl.constexpr, IN_TILE: tl.constexpr, MODE: tl.constexpr,
    ):  # fmt: skip
        """``(BLOCK, IN_TILE)``: the input channels kernel tap ``tap`` (0 to 26, ``z`` major)
        reads for output voxels ``(out_z, out_y, out_x)`` of volume ``b``; 0 outside the volume
        (the padding), beyond ``IN_CHANNELS`` and where ``mask`` is False."""
        z, inside_z = _input_index(out_z, tap // 9, in_depth, MODE)
        y, inside_y = _input_index(out_y, tap // 3 % 3, in_height, MODE)
        x, inside_x = _input_index(out_x, tap % 3, in_width, MODE)
        inside = mask & inside_z & inside_y & inside_x
        row = ((b * in_depth + z) * in_height + y) * in_width + x
        channel = tl.arange(0, IN_TILE)
        source = volume_ptr + (row * IN_CHANNELS)[:, None] + channel[None, :]
        return tl.load(source, mask=inside[:, None] & (channel < IN_CHANNELS)[None, :], other=0)

    @triton.jit
    @no_type_check
    def _volume_conv_kernel(
        out_ptr, volume_ptr, weight_ptr, in_depth, in_height, in_width, out_depth,
        out_height, out_width, IN_CHANNELS: tl.constexpr, OUT_CHANNELS: tl.constexpr,
        IN_TILE: tl.constexpr, OUT_TILE: tl.constexpr, MODE: tl.constexpr,
        PRECISION: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """Output voxels ``[BLOCK i, BLOCK (i + 1))`` of volume ``b``, program ``(i, b)``.
        ``volume`` ``(b, in_depth, in_height, in_width, IN_CHANNELS)``, ``weight`` ``(27,
        IN_TILE, OUT_TILE)`` (zero-padded, in the product's dtype), ``out`` ``(b, out_depth,
        out_height, out_width, OUT_CHANNELS)``."""
        b = tl.program_id(1).to(tl.int64)
        voxel = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        per_volume = out_depth * out_height * out_width
        mask = voxel < per_volume
        out_z, out_y, out_x = _voxel_coordinates(voxel, out_height, out_width)
        in_channel = tl.arange(0, IN_TILE)
        out_channel = tl.arange(0, OUT_TILE)
        weights = weight_ptr + in_channel[:, None] * OUT_TILE + out_channel[None, :]
        accumulated = tl.zeros((BLOCK, OUT_TILE), dtype=tl.float32)
        # A loop, not unrolled: unrolled, the wide (64-channel) forms spilled on sm_90, and so
        # they did with a loop per axis.
        for tap in range(27):
            values = _tap_inputs(
                volume_ptr, b, out_z, out_y, out_x, mask, tap, in_depth, in_height, in_width,
                IN_CHANNELS, IN_TILE, MODE,
            )  # fmt: skip
            kernel = tl.load(weights + tap * IN_TILE * OUT_TILE)
            accumulated = tl.dot(
                values.to(kernel.dtype), kernel, accumulated, input_precision=PRECISION
            )
        result = accumulated.to(out_ptr.dtype.element_ty)
        out_mask = mask[:, None] & (out_channel < OUT_CHANNELS)[None, :]
        out = out_ptr + ((b * per_volume + voxel) * OUT_CHANNELS)[:, None] + out_channel[None, :]
        tl.store(out, result, mask=out_mask)


def output_size(size: int, mode: int) -> int:
    """Output extent of an axis of ``size`` input voxels in form ``mode`` (kernel 3, padding
    1; the transposed form with output padding 1)."""
    if mode == TRANSPOSED_2:
        return 2 * size
    if mode == STRIDE_2:
        return (size - 1) // 2 + 1
    return size


def tile_width(channels: int) -> int:
    """The kernel's tile width for ``channels`` channels: a power of two, at least 16."""
    return max(MIN_TILE, 1 << (channels - 1).bit_length())


def tap_kernels(weight: Tensor, mode: int, dtype: torch.dtype) -> Tensor:
    """``weight`` as the kernel reads it: ``(27, in tile, out tile)`` in ``dtype``, zero-padded.

    ``nn.Conv3d`` stores ``(c_out, c_in, 3, 3, 3)``, ``nn.ConvTranspose3d`` ``(c_in, c_out, 3,
    3, 3)``; both multiply input channel by output channel at each tap ``(kz, ky, kx)``.
    """
    if mode == TRANSPOSED_2:
        in_channels, out_channels = weight.shape[:2]
        per_tap = weight.permute(2, 3, 4, 0, 1)
    else:
        out_channels, in_channels = weight.shape[:2]
        per_tap = weight.permute(2, 3, 4, 1, 0)
    per_tap = per_tap.reshape(27, in_channels, out_channels).to(dtype)
    return F.pad(
        per_tap,
        (0, tile_width(out_channels) - out_channels, 0, tile_width(in_channels) - in_channels),
    ).contiguous()


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot``'s precision for operands of ``dtype``: float32 in TF32 where cuDNN's
    convolutions may use it (``torch.backends.cudnn.allow_tf32``), else exact products."""
    tf32 = dtype == torch.float32 and torch.backends.cudnn.allow_tf32
    return "tf32" if tf32 else "ieee"


def launch_volume_conv(
    volume: Tensor,
    weight: Tensor,
    mode: int,
    dtype: torch.dtype,
    launcher: object | None = None,
) -> Tensor:
    """The convolution of ``volume`` ``(b, c_in, d, h, w)`` with ``weight`` in form ``mode``
    (:data:`STRIDE_1`, :data:`STRIDE_2` or :data:`TRANSPOSED_2`), multiplied in ``dtype``.

    Returns the output ``(b, c_out, d', h', w')`` in ``dtype``, channels-last. ``launcher``:
    ``wrap_triton`` of the kernel (unset), or a stand-in that records the launch
    (:mod:`gsnerf.evaluation.kernel_report`).
    """
    batch, in_channels, depth, height, width = volume.shape
    transposed = mode == TRANSPOSED_2
    kernel_in, out_channels = weight.shape[:2] if transposed else weight.shape[1::-1]
    if kernel_in != in_channels:
        raise ValueError(
            f"fused_volume_conv: kernels {tuple(weight.shape)} for a {in_channels}-channel volume"
        )
    kernels = tap_kernels(weight, mode, dtype)
    out_size = [output_size(size, mode) for size in (depth, height, width)]
    out = torch.empty((batch, *out_size, out_channels), dtype=dtype, device=volume.device)
    launcher = launcher or torch.library.wrap_triton(_volume_conv_kernel)
    launcher[(triton.cdiv(out_size[0] * out_size[1] * out_size[2], BLOCK), batch)](
        out,
        volume.permute(0, 2, 3, 4, 1).contiguous(),
        kernels,
        depth,
        height,
        width,
        *out_size,
        IN_CHANNELS=in_channels,
        OUT_CHANNELS=out_channels,
        IN_TILE=kernels.shape[1],
        OUT_TILE=kernels.shape[2],
        MODE=mode,
        PRECISION=dot_precision(dtype),
        BLOCK=BLOCK,
        num_warps=NUM_WARPS,
    )
    return out.permute(0, 4, 1, 2, 3)


def _fused_volume_conv(volume: Tensor, weight: Tensor, mode: int, dtype: torch.dtype) -> Tensor:
    return launch_volume_conv(volume, weight, mode, dtype)


# The kernel as a torch operator, with launch_volume_conv's arguments and result.
fused_volume_conv = as_triton_operator("fused_volume_conv", _fused_volume_conv)


def conv_mode(conv: nn.Module) -> int | None:
    """The kernel's form for ``conv``, or None where it has none: a 3x3x3 ``nn.Conv3d`` of
    stride 1 or 2, or the U-Net's transposed one, padding 1, no bias, groups or dilation."""
    if not isinstance(conv, nn.Conv3d | nn.ConvTranspose3d):
        return None
    plain = (
        conv.kernel_size == (3, 3, 3)
        and conv.padding == (1, 1, 1)
        and conv.dilation == (1, 1, 1)
        and conv.groups == 1
        and conv.bias is None
        and conv.padding_mode == "zeros"
        and max(conv.in_channels, conv.out_channels) <= MAX_CHANNELS
    )
    if not plain:
        return None
    if isinstance(conv, nn.ConvTranspose3d):
        transposed = conv.stride == (2, 2, 2) and conv.output_padding == (1, 1, 1)
        return TRANSPOSED_2 if transposed else None
    return {(1, 1, 1): STRIDE_1, (2, 2, 2): STRIDE_2}.get(conv.stride)


def fused_volume_conv_applies(volume: Tensor, conv: nn.Module) -> bool:
    """Whether :func:`fused_volume_conv` serves ``conv`` on ``volume`` (module doc)."""
    return (
        enabled
        and triton is not None
        and volume.is_cuda
        and volume.dim() == 5
        and volume.dtype in (torch.float32, torch.bfloat16, torch.float16)
        and conv_mode(conv) is not None
    )


def serves(device: torch.device) -> bool:
    """Whether the kernel is to serve the convolutions of volumes on ``device`` (switch,
    Triton, CUDA), before any volume is at hand."""
    return enabled and triton is not None and device.type == "cuda"


def product_dtype(volume: Tensor) -> torch.dtype:
    """The dtype a convolution of ``volume`` multiplies in: autocast's where it is on."""
    device = volume.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return volume.dtype


def convolve(volume: Tensor, conv: nn.Module) -> Tensor:
    """``conv(volume)`` by the kernel (its form must exist: :func:`conv_mode`)."""
    dtype = product_dtype(volume)
    return fused_volume_conv(volume, conv.weight, conv_mode(conv), dtype)


# Registers the kernel's backward on the operator (the module imports this one's names).
from gsnerf.model import fused_volume_conv_grad  # noqa: E402, F401
