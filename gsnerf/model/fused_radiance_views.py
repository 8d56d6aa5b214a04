"""The radiance head's view stage in one Triton kernel, for CUDA inference: the CUDA
counterpart of :func:`gsnerf.model.cpu_token_heads.cpu_radiance_views`.

:meth:`gsnerf.model.radiance_head.RadianceHead.view_stage` builds per sample the view tokens
(an embedding of each view's features and mask flags) and the global token (an MLP on the
mean and variance over the attended views), runs the view transformer, then the blending MLP,
a softmax over the attended views and the blend of their colours. With the transformer in one
kernel (:mod:`gsnerf.model.fused_transformer`) the rest still ran as separate passes over
``(samples, views, channels)`` tensors: in an H100 bf16 paper frame the heads took 18.7 ms, of
which the two transformer kernels about 10.5 (benchmarks/README.md). Here one kernel does the
whole stage on 64 token rows of whole sets (7 samples of 9 tokens) in registers, as the
transformer kernel does, reading each input once and writing only the global tokens, the
blending weights and the colours:

- the moments of a sample's attended views, and the blended colour, are products of the tile
  with a block-diagonal ``(rows, rows)`` matrix that joins the rows of one sample (float32
  products); the softmax over a sample's views takes the maximum and sum along that matrix's
  rows;
- the embeddings and MLPs are ``tl.dot`` products in the compute dtype (bf16 under autocast),
  float32 sums, float32 in between (the PyTorch path rounds each product's output to bf16 under
  autocast), ELU as ``exp(x) - 1``.

Conditions (:func:`fused_radiance_views_applies`): ``enabled`` (``eval.fused_heads``, the
benchmark's ``fused_heads``), Triton, CUDA tensors, no gradient wanted, a view transformer the
transformer kernel takes, the head's MLPs as built by :class:`RadianceHead` with hidden widths
that are powers of two of at least 16, at most 62 feature channels and 16 angle channels.
Called as the operator ``gsnerf::fused_radiance_views``. Not yet timed on a GPU: off by default.
"""

import math
from typing import no_type_check

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from gsnerf.model import fused_blocks, fused_transformer
from gsnerf.model.attention_kernel import as_triton_operator
from gsnerf.model.feature_gather import GatheredFeatures

try:
    import triton
    import triton.language as tl

    # The kernel calls these by name: Triton resolves them in this module's globals.
    from gsnerf.model.head_tiles import (
        _bias,
        _elu,
        _linear,
        _mask_flags,
        _moment_products,
        _same_set,
        _sample_rows,
        _transformed_tokens,
    )
except ImportError:  # A CPU-only torch comes without Triton; the kernel is then never used.
    triton = None

# Token rows per program (whole sets: 3 samples of 9 tokens) and warps per program.
ROWS = 32
NUM_WARPS = 4
# Widest tiles of per-view inputs: volume features, image features with the colour and the two
# mask flags, angle encodings (more columns would need registers the kernel lacks).
MAX_TILE = 32

# The module's switch (set_fused_kernels): True makes CUDA inference use the kernel.
enabled = False


if triton is not None:

    @triton.jit
    @no_type_check  # keeps jaxtyping's import hook off the kernel (attention_kernel.py)
    def _radiance_views_kernel(
        volume_ptr, image_ptr, colours_ptr, angle_ptr, in_frustum_ptr, visible_ptr, mask_ptr,
        view_w, view_b, global_w1, global_b1, global_w2, global_b2,
        qkv_w, out_w, norm1_w, norm1_b, ffn1_w, ffn1_b, ffn2_w, ffn2_b, norm2_w, norm2_b,
        blend_w1, blend_b1, blend_w2, blend_b2, blend_w3, blend_b3,
        tokens_out, weights_out, rgb_out,
        samples, layers, eps, scale,
        VIEWS: tl.constexpr, VOLUME: tl.constexpr, IMAGE: tl.constexpr, ANGLE: tl.constexpr,
        WIDTH: tl.constexpr, FFN_WIDTH: tl.constexpr, HEADS: tl.constexpr,
        HIDDEN1: tl.constexpr, HIDDEN2: tl.constexpr, VOLUME_TILE: tl.constexpr,
        REST_TILE: tl.constexpr, ANGLE_TILE: tl.constexpr, ROWS: tl.constexpr,
        PRECISION: tl.constexpr,
    ):  # fmt: skip
        """Samples ``[7 i, 7 i + 7)`` (``ROWS // (VIEWS + 1)`` of them), program ``i``: row ``r``
        of the tile is token ``r % (VIEWS + 1)`` of its sample, the global token first. Inputs
        ``(samples, VIEWS, channels)`` float32 and ``(samples, VIEWS)`` uint8 flags; outputs
        ``(samples, WIDTH)`` tokens, ``(samples, VIEWS)`` weights, ``(samples, 3)`` colours."""
        # torch.compile launches with Python floats typed fp64: float32 once, here.
        eps = tl.cast(eps, tl.float32)
        scale = tl.cast(scale, tl.float32)
        dtype: tl.constexpr = view_w.dtype.element_ty
        TOKENS: tl.constexpr = VIEWS + 1
        FEATURES: tl.constexpr = VOLUME + IMAGE + 3
        local, sample, is_global, is_view, sample_view, attended = _sample_rows(
            mask_ptr, samples, VIEWS, ROWS
        )
        # The attended views of row i's sample.
        joins = tl.where(_same_set(local, TOKENS) & attended[None, :], 1.0, 0.0)

        # Each view row's inputs in two tiles: its volume features, and [image features,
        # colour, in frustum, visible] (one tile of all would need registers the kernel lacks).
        at = sample_view[:, None]
        rows_in = is_view[:, None]
        volume_cols = tl.arange(0, VOLUME_TILE)
        volume = tl.load(
            volume_ptr + at * VOLUME + volume_cols[None, :],
            mask=rows_in & (volume_cols < VOLUME)[None, :],
            other=0.0,
        )
        rest_cols = tl.arange(0, REST_TILE)
        cols = rest_cols[None, :]
        rest = tl.load(image_ptr + at * IMAGE + cols, mask=rows_in & (cols < IMAGE), other=0.0)
        in_colour = rows_in & (cols >= IMAGE) & (cols < IMAGE + 3)
        rest += tl.load(colours_ptr + at * 3 + cols - IMAGE, mask=in_colour, other=0.0)
        flags = _mask_flags(in_frustum_ptr, visible_ptr, sample_view, is_view, cols, IMAGE + 3)

        channel = tl.arange(0, WIDTH)
        stride = FEATURES + 2
        view_tokens = _linear(
            volume.to(dtype), view_w, stride, VOLUME, volume_cols, channel, PRECISION
        )
        view_tokens += _linear(
            (rest + flags).to(dtype), view_w + VOLUME, stride, IMAGE + 5, rest_cols, channel,
            PRECISION,
        )  # fmt: skip

        # Mean and population variance over the attended views (masked_moments), every row
        # getting its sample's, through products with the joining matrix; the global MLP's
        # first layer reads [mean, variance] of [volume, image, colour] in four parts.
        count = tl.maximum(tl.sum(joins, axis=1), 1.0)[:, None]
        hidden = _moment_products(
            volume, joins, count, rows_in, volume_cols, VOLUME, global_w1, 2 * FEATURES,
            FEATURES, channel, dtype, PRECISION,
        )  # fmt: skip
        hidden += _moment_products(
            rest, joins, count, rows_in, rest_cols, IMAGE + 3, global_w1 + VOLUME, 2 * FEATURES,
            FEATURES, channel, dtype, PRECISION,
        )  # fmt: skip
        x = _transformed_tokens(
            view_tokens, hidden, is_global, attended, local, view_b, global_b1, global_w2,
            global_b2, qkv_w, out_w, norm1_w, norm1_b, ffn1_w, ffn1_b, ffn2_w, ffn2_b, norm2_w,
            norm2_b, layers, eps, scale, dtype, TOKENS, ROWS, WIDTH, FFN_WIDTH, HEADS, PRECISION,
        )  # fmt: skip
        tokens_at = tokens_out + sample[:, None] * WIDTH + channel[None, :]
        tl.store(tokens_at, x.to(tokens_out.dtype.element_ty), mask=is_global[:, None])

        # Blending logits of the view rows: the MLP on [token, angle encoding].
        angle_cols = tl.arange(0, ANGLE_TILE)
        angle = tl.load(
            angle_ptr + at * ANGLE + angle_cols[None, :],
            mask=rows_in & (angle_cols < ANGLE)[None, :],
            other=0.0,
        )
        first = tl.arange(0, HIDDEN1)
        second = tl.arange(0, HIDDEN2)
        blended = _linear(x.to(dtype), blend_w1, WIDTH + ANGLE, WIDTH, channel, first, PRECISION)
        blended += _linear(
            angle.to(dtype), blend_w1 + WIDTH, WIDTH + ANGLE, ANGLE, angle_cols, first, PRECISION
        )
        blended = _elu(blended + _bias(blend_b1, first))
        blended = _linear(blended.to(dtype), blend_w2, HIDDEN1, HIDDEN1, first, second, PRECISION)
        blended = _elu(blended + _bias(blend_b2, second))
        last = tl.load(blend_w3 + second).to(tl.float32)
        logits = tl.sum(blended * last[None, :], axis=1) + tl.load(blend_b3).to(tl.float32)

        # Softmax over each sample's attended views; every row gets its sample's maximum and
        # sum, so a view row normalises its own weight and a global row blends the colours.
        scores = tl.where(_same_set(local, TOKENS) & attended[None, :], logits[None, :], -1.0e30)
        highest = tl.max(scores, axis=1)
        exponentials = tl.exp(scores - highest[:, None])
        total = tl.sum(exponentials, axis=1)
        weights = tl.where(attended, tl.exp(logits - highest) / total, 0.0)
        tl.store(weights_out + sample_view, weights, mask=is_view)
        rgb_cols = tl.arange(0, 16)[None, :]
        colours = tl.load(colours_ptr + at * 3 + rgb_cols, mask=rows_in & (rgb_cols < 3), other=0.0)
        rgb = tl.dot(exponentials, colours, input_precision=PRECISION) / total[:, None]
        tl.store(
            rgb_out + sample[:, None] * 3 + rgb_cols, rgb, mask=is_global[:, None] & (rgb_cols < 3)
        )


def head_weights(head: nn.Module, dtype: torch.dtype) -> list[Tensor]:
    """The kernel's parameters of a :class:`RadianceHead`, in its order: product weights in
    ``dtype``, biases in float32, the transformer's as :func:`fused_transformer.stacked_weights`
    gives them; the blending MLP's last layer (a dot product per row) all float32."""
    parts = []
    for layer in (head.view_embed[0], head.global_embed[0], head.global_embed[2]):
        parts += [layer.weight.to(dtype), layer.bias.float()]
    parts += fused_transformer.stacked_weights(head.view_transformer.blocks, dtype)
    for layer in (head.blend[0], head.blend[2]):
        parts += [layer.weight.to(dtype), layer.bias.float()]
    parts += [head.blend[4].weight.float(), head.blend[4].bias.float()]
    return [tensor.contiguous() for tensor in parts]


def launch_radiance_views(
    volume: Tensor,
    image: Tensor,
    colours: Tensor,
    angle: Tensor,
    flags: Tensor,
    weights: list[Tensor],
    heads: int,
    eps: float,
    launcher: object | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run the kernel on ``(samples, views, channels)`` float32 inputs and ``flags`` ``(3,
    samples, views)`` uint8 (in frustum, visible, attended); ``weights``: :func:`head_weights`.
    Returns the global tokens ``(samples, width)`` in the weights' dtype, the blending weights
    ``(samples, views)`` and the colours ``(samples, 3)``, float32. ``launcher``: as
    :func:`fused_transformer.launch_fused_transformer`'s."""
    samples, views, _ = volume.shape
    width = weights[2].shape[0]
    tokens = torch.empty(samples, width, dtype=weights[0].dtype, device=volume.device)
    blend_weights = torch.empty(samples, views, dtype=torch.float32, device=volume.device)
    rgb = torch.empty(samples, 3, dtype=torch.float32, device=volume.device)
    full_float32 = weights[0].dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32
    layers = weights[6].shape[0]
    used_rows = (ROWS // (views + 1)) * (views + 1)
    launcher = launcher or torch.library.wrap_triton(_radiance_views_kernel)
    launcher[(triton.cdiv(samples * (views + 1), used_rows),)](
        *[part.contiguous() for part in (volume, image, colours, angle)],
        *flags.contiguous(),
        *weights,
        tokens,
        blend_weights,
        rgb,
        samples,
        layers,
        eps,
        math.log2(math.e) / math.sqrt(width // heads),
        VIEWS=views,
        VOLUME=volume.shape[2],
        IMAGE=image.shape[2],
        ANGLE=angle.shape[2],
        WIDTH=width,
        FFN_WIDTH=weights[10].shape[1],
        HEADS=heads,
        HIDDEN1=weights[-6].shape[0],
        HIDDEN2=weights[-4].shape[0],
        VOLUME_TILE=_tile(volume.shape[2]),
        REST_TILE=_tile(image.shape[2] + 5),
        ANGLE_TILE=_tile(angle.shape[2]),
        ROWS=ROWS,
        PRECISION="ieee" if full_float32 else "tf32",
        num_warps=fused_transformer.FULL_FLOAT32_NUM_WARPS if full_float32 else NUM_WARPS,
    )
    return tokens, blend_weights, rgb


def _fused_radiance_views(
    volume: Tensor,
    image: Tensor,
    colours: Tensor,
    angle: Tensor,
    flags: Tensor,
    weights: list[Tensor],
    heads: int,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    return launch_radiance_views(volume, image, colours, angle, flags, weights, heads, eps)


# The kernel as a torch operator, with launch_radiance_views's arguments and results.
fused_radiance_views_operator = as_triton_operator("fused_radiance_views", _fused_radiance_views)


def _tile(channels: int) -> int:
    """The tile width for ``channels`` columns: a power of two, at least 16 (tl.dot)."""
    return max(16, 1 << (channels - 1).bit_length())


def _tile_width(width: int) -> bool:
    return width >= 16 and width & (width - 1) == 0


def kernel_fits(head: nn.Module, gathered: GatheredFeatures) -> bool:
    """Whether the kernel computes this head's view stage on any device (module doc)."""
    blocks = head.view_transformer.blocks
    views = gathered.volume.shape[-2]
    blend = [layer for layer in head.blend if isinstance(layer, nn.Linear)]
    parts = (gathered.volume, gathered.image, gathered.colours, gathered.angle)
    return (
        fused_transformer.kernel_fits(blocks, views + 1)
        and len(blend) == 3
        and blend[2].out_features == 1
        and all(_tile_width(layer.out_features) for layer in blend[:2])
        and len(head.global_embed) == 4
        and gathered.volume.shape[-1] <= MAX_TILE
        and gathered.image.shape[-1] + 5 <= MAX_TILE
        and gathered.angle.shape[-1] <= MAX_TILE
        and all(part.dtype == torch.float32 for part in parts)
    )


def fused_radiance_views_applies(head: nn.Module, gathered: GatheredFeatures) -> bool:
    """Whether :func:`fused_radiance_views` runs this head's view stage (module doc)."""
    return (
        enabled
        and triton is not None
        and gathered.volume.is_cuda
        and not torch.is_grad_enabled()
        and kernel_fits(head, gathered)
    )


def fused_radiance_views(
    head: nn.Module, gathered: GatheredFeatures, view_mask: Bool[Tensor, "b rays samples v"]
) -> tuple[
    Float[Tensor, "b rays samples c"],
    Float[Tensor, "b rays samples v"],
    Float[Tensor, "b rays samples 3"],
]:
    """:meth:`RadianceHead.view_stage`'s global tokens, blending weights and blended colours
    in the kernel; products in autocast's dtype (or float32). On CPU tensors it runs in
    Triton's interpreter (``TRITON_INTERPRET=1``: the tests)."""
    batch, rays, samples, views = view_mask.shape
    dtype = fused_blocks.compute_dtype(gathered.volume)
    flat = (batch * rays * samples, views, -1)
    flags = torch.stack([gathered.in_frustum, gathered.visible, view_mask]).to(torch.uint8)
    blocks = head.view_transformer.blocks
    tokens, blend_weights, rgb = fused_radiance_views_operator(
        gathered.volume.reshape(flat),
        gathered.image.reshape(flat),
        gathered.colours.reshape(flat),
        gathered.angle.reshape(flat),
        flags.reshape(3, *flat[:2]),
        head_weights(head, dtype),
        blocks[0].heads,
        blocks[0].attention_norm.eps,
    )
    shape = (batch, rays, samples)
    return tokens.reshape(*shape, -1), blend_weights.reshape(*shape, views), rgb.reshape(*shape, 3)
