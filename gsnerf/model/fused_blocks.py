"""Fused CUDA kernels (Triton) for whole token-major transformer blocks, inference only.

A :class:`gsnerf.model.transformer.TokenTransformer` block in its token-major form is a
``q k v`` product, the attention, an output product, a residual + LayerNorm, a two-layer ReLU
feed-forward layer and a second residual + LayerNorm, over about 2.8 million tokens of 32
channels per 320x240 frame of the paper model. Each of those steps reads and writes every
token; in compiled code they are about eight kernels per block (matrix products through the
library, the rest fused by inductor), and the heads took 62 ms of an H100 frame.

Here a block is two kernels. The attention is :mod:`gsnerf.model.attention_kernel`'s. The
*block tail* kernel takes a tile of tokens (channels x tokens, tokens innermost), applies the
output product, both residuals and LayerNorms and the feed-forward layer in registers
(``tl.dot`` for the 32x32 products) and writes the block's output tokens and, when another
block follows, that block's ``q k v`` (its first product), so that every token is read and
written once per kernel. The tokens stay in the ``(c, t n)`` layout throughout, which is the
one the attention kernel reads and writes.

Conditions (:func:`fused_blocks_apply`): ``enabled`` (``eval.fused_blocks``, the benchmark's
``fused_blocks``), Triton, a CUDA tensor, no gradient wanted, sets of at most
:data:`gsnerf.model.attention_kernel.MAX_TOKENS` tokens, and token and feed-forward widths that
are powers of two of at least 16 (``tl.dot``; the paper's are 32 and 32). Products take the
tokens' dtype (bf16 under autocast, as the library's matrix products would) and accumulate in
float32; LayerNorm runs in float32. Its CUDA tests pass on an H100; not yet timed within a frame,
so off by default.
"""

from typing import no_type_check

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn

from gsnerf.model import attention_kernel

try:
    import triton
    import triton.language as tl
except ImportError:  # A CPU-only torch comes without Triton; the kernels are then never used.
    triton = None

# Tokens per program of the block-tail kernel, and its warps.
BLOCK_TOKENS = 64
NUM_WARPS = 4

# Off by default (not yet timed in a frame); True makes CUDA inference use the fused blocks.
enabled = False


if triton is not None:

    @triton.jit
    @no_type_check  # keeps jaxtyping's import hook off the kernel (attention_kernel.py)
    def _layer_norm(x, weight_ptr, bias_ptr, channel, eps, WIDTH: tl.constexpr):
        """LayerNorm over axis 0 of a float32 ``(WIDTH, tokens)`` tile."""
        mean = tl.sum(x, axis=0) / WIDTH
        centred = x - mean[None, :]
        variance = tl.sum(centred * centred, axis=0) / WIDTH
        normalised = centred * tl.rsqrt(variance + eps)[None, :]
        weight = tl.load(weight_ptr + channel).to(tl.float32)
        bias = tl.load(bias_ptr + channel).to(tl.float32)
        return normalised * weight[:, None] + bias[:, None]

    @triton.jit
    @no_type_check
    def _block_tail_kernel(
        attended_ptr,
        tokens_ptr,
        out_weight_ptr,
        norm1_weight_ptr,
        norm1_bias_ptr,
        ffn1_weight_ptr,
        ffn1_bias_ptr,
        ffn2_weight_ptr,
        ffn2_bias_ptr,
        norm2_weight_ptr,
        norm2_bias_ptr,
        next_qkv_weight_ptr,
        out_ptr,
        next_qkv_ptr,
        count,
        eps,
        HAS_NEXT: tl.constexpr,
        WIDTH: tl.constexpr,
        FFN_WIDTH: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        # torch.compile launches with Python floats typed fp64: float32 once, here.
        eps = tl.cast(eps, tl.float32)
        dtype = tokens_ptr.dtype.element_ty
        token = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        channel = tl.arange(0, WIDTH)
        hidden = tl.arange(0, FFN_WIDTH)
        # (c, t n) tensors, tokens innermost: element (c, r) at c count + r.
        tile = channel[:, None].to(tl.int64) * count + token[None, :]
        in_range = (token < count)[None, :]
        attended = tl.load(attended_ptr + tile, mask=in_range, other=0.0)
        residual = tl.load(tokens_ptr + tile, mask=in_range, other=0.0).to(tl.float32)
        # Weights (out, in), row-major: W x^T is the layer applied to every token of the tile.
        square = channel[:, None] * WIDTH + channel[None, :]
        projected = tl.dot(tl.load(out_weight_ptr + square).to(dtype), attended.to(dtype))
        x = _layer_norm(residual + projected, norm1_weight_ptr, norm1_bias_ptr, channel, eps, WIDTH)
        up = hidden[:, None] * WIDTH + channel[None, :]
        ffn1_weight = tl.load(ffn1_weight_ptr + up).to(dtype)
        ffn1_bias = tl.load(ffn1_bias_ptr + hidden).to(tl.float32)
        inner = tl.maximum(tl.dot(ffn1_weight, x.to(dtype)) + ffn1_bias[:, None], 0.0)
        down = channel[:, None] * FFN_WIDTH + hidden[None, :]
        ffn2_weight = tl.load(ffn2_weight_ptr + down).to(dtype)
        ffn2_bias = tl.load(ffn2_bias_ptr + channel).to(tl.float32)
        x = x + tl.dot(ffn2_weight, inner.to(dtype)) + ffn2_bias[:, None]
        x = _layer_norm(x, norm2_weight_ptr, norm2_bias_ptr, channel, eps, WIDTH)
        x_out = x.to(dtype)
        tl.store(out_ptr + tile, x_out, mask=in_range)
        if HAS_NEXT:
            # The next block's (3 c, t n) q k v product, a third at a time (powers of two).
            for part in tl.static_range(3):
                weight = tl.load(next_qkv_weight_ptr + part * WIDTH * WIDTH + square).to(dtype)
                qkv = tl.dot(weight, x_out)
                offsets = part * WIDTH * tl.cast(count, tl.int64) + tile
                tl.store(next_qkv_ptr + offsets, qkv.to(dtype), mask=in_range)


def launch_block_tail(
    attended: Float[Tensor, "c r"],
    tokens: Float[Tensor, "c r"],
    weights: list[Tensor],
    next_qkv_weight: Float[Tensor, "qkv_rows c"] | None,
    eps: float,
    launcher: object | None = None,
) -> tuple[Float[Tensor, "c r"], Float[Tensor, "qkv_rows r"]]:
    """Run the block-tail kernel; the block's output tokens and the next block's ``q k v``.

    ``weights``: :func:`block_weights` of the block; ``next_qkv_weight``: the next block's
    ``q k v`` weight, or None after the last block (the second result is then empty). The
    product weights must have the tokens' dtype. ``launcher``: ``wrap_triton`` of the kernel
    (unset; compiled code can then call it), or a stand-in that records the launch
    (:mod:`gsnerf.evaluation.kernel_report`).
    """
    width, count = tokens.shape
    out = torch.empty_like(tokens)
    has_next = next_qkv_weight is not None
    next_qkv = tokens.new_empty((3 * width, count) if has_next else (0, count))
    launcher = launcher or torch.library.wrap_triton(_block_tail_kernel)
    launcher[(triton.cdiv(count, BLOCK_TOKENS),)](
        attended.contiguous(),
        tokens.contiguous(),
        *weights,
        next_qkv_weight if has_next else weights[0],
        out,
        next_qkv,
        count,
        eps,
        HAS_NEXT=has_next,
        WIDTH=width,
        FFN_WIDTH=weights[3].shape[0],
        BLOCK=BLOCK_TOKENS,
        num_warps=NUM_WARPS,
    )
    return out, next_qkv


def block_weights(block: nn.Module, dtype: torch.dtype) -> list[Tensor]:
    """The block-tail kernel's parameters of a :class:`MaskedAttentionBlock`, in its order.

    Output product, first LayerNorm (weight, bias), feed-forward layers (weight, bias each),
    second LayerNorm; the product weights in ``dtype``, the rest as they are.
    """
    ffn_in, ffn_out = block.ffn[0], block.ffn[2]
    return [
        block.out.weight.to(dtype),
        block.attention_norm.weight,
        block.attention_norm.bias,
        ffn_in.weight.to(dtype),
        ffn_in.bias,
        ffn_out.weight.to(dtype),
        ffn_out.bias,
        block.ffn_norm.weight,
        block.ffn_norm.bias,
    ]


def _fused_block_tail(
    attended: Tensor,
    tokens: Tensor,
    weights: list[Tensor],
    next_qkv_weight: Tensor | None,
    eps: float,
) -> tuple[Tensor, Tensor]:
    return launch_block_tail(attended, tokens, weights, next_qkv_weight, eps)


# The block-tail kernel as a torch operator, with launch_block_tail's arguments and results.
fused_block_tail = attention_kernel.as_triton_operator("fused_block_tail", _fused_block_tail)


def dot_tile_widths(blocks: nn.ModuleList) -> bool:
    """Whether the blocks' token and feed-forward widths are powers of two of at least 16, as
    ``tl.dot`` needs. Example: 32 and 32 (the paper) -> True; 24 -> False."""
    widths = (blocks[0].qkv.in_features, blocks[0].ffn[0].out_features)
    return all(width >= 16 and width & (width - 1) == 0 for width in widths)


def kernels_fit(blocks: nn.ModuleList, tokens_per_set: int) -> bool:
    """Whether the kernels take these blocks and sets: tile widths, short sets (module doc)."""
    return (
        len(blocks) > 0
        and tokens_per_set <= attention_kernel.MAX_TOKENS
        and dot_tile_widths(blocks)
    )


def fused_blocks_apply(blocks: nn.ModuleList, tokens: Tensor) -> bool:
    """Whether :func:`fused_token_major_blocks` serves these blocks and tokens (module doc)."""
    return (
        enabled
        and triton is not None
        and tokens.is_cuda
        and not torch.is_grad_enabled()
        and kernels_fit(blocks, tokens.shape[1])
    )


def compute_dtype(tokens: Tensor) -> torch.dtype:
    """The dtype of the blocks' products: autocast's on the tokens' device, else the tokens'."""
    if torch.is_autocast_enabled(tokens.device.type):
        return torch.get_autocast_dtype(tokens.device.type)
    return tokens.dtype


def fused_token_major_blocks(
    blocks: nn.ModuleList,
    tokens: Float[Tensor, "n t c"],
    bias: Float[Tensor, "t n"] | None,
) -> Float[Tensor, "n t c"]:
    """``blocks`` applied to ``tokens`` with the fused kernels; the numbers of the plain blocks.

    ``bias``: :func:`gsnerf.model.transformer.key_bias` of the key mask in
    :func:`compute_dtype`, or None for no mask.

    Tokens between blocks are kept in the products' dtype (:func:`compute_dtype`), and so is
    the result. The kernels are called as torch operators, so that compiled heads call them
    within their graph (on CPU tensors they run in Triton's interpreter, ``TRITON_INTERPRET=1``:
    the tests).
    """
    sets, count, width = tokens.shape
    heads = blocks[0].heads
    dtype = compute_dtype(tokens)
    columns = rearrange(tokens, "n t c -> c (t n)").to(dtype).contiguous()
    qkv = torch.mm(blocks[0].qkv.weight.to(dtype), columns)
    for index, block in enumerate(blocks):
        query, key, value = rearrange(
            qkv, "(three h c) (t n) -> three h c t n", three=3, h=heads, t=count
        )
        attended = attention_kernel.fused_sets_last_attention(query, key, value, bias)
        attended = rearrange(attended, "h c t n -> (h c) (t n)")
        weights = block_weights(block, dtype)
        is_last = index + 1 == len(blocks)
        next_weight = None if is_last else blocks[index + 1].qkv.weight.to(dtype)
        eps = block.attention_norm.eps
        columns, qkv = fused_block_tail(attended, columns, weights, next_weight, eps)
    return rearrange(columns, "c (t n) -> n t c", t=count, n=sets, c=width)
