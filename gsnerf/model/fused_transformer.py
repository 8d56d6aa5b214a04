"""A whole token transformer in one fused CUDA kernel (Triton), inference only.

The heads' view and semantic transformers run 4 blocks over the 9 tokens (8 views and a global
token) of every sample: about 2.8 million tokens of 32 channels per 320x240 frame of the paper
model, and 62 ms of an H100 frame with everything compiled (benchmarks/README.md). Their
arithmetic is small (about 0.5 MFLOP per sample and transformer) and so is the data (177 MB
of bf16 tokens), so their time is that of moving intermediates: compiled, each block is about
eight kernels, each of which reads and writes every token.

Here each program loads ``ROWS`` consecutive token rows of the ``(n, t, c)`` tokens, whole
sets only (7 sets of 9 tokens in 64 rows, 16 rays of 4 samples), runs every block on them in
registers, and writes the result: one read and one write of the tokens per transformer. The
products go to the tensor cores through ``tl.dot``:

- ``q k v``, output, and feed-forward products: the ``(ROWS, c)`` tile times the transposed
  weight;
- attention: per head, the query tile with the other heads' channels zeroed, times the
  transposed key tile: a ``(ROWS, ROWS)`` score tile in which a query keeps only the attended
  keys of its own set (others get -1e30, so their exponentials are 0), a softmax along the
  rows, then the weights times the value tile with the other heads' channels zeroed, summed
  over heads. This computes 7 sets' worth of scores for each set and 4 heads' worth of
  products per head, which the tensor cores absorb, instead of short per-set loops on 8- or
  9-element vectors.

Post-norm blocks as :class:`gsnerf.model.transformer.MaskedAttentionBlock`: residual and
LayerNorm after the attention and after the ReLU feed-forward layer, LayerNorm in float32.
Products take the tokens' dtype (bf16 under autocast) with float32 sums; float32 tokens
multiply in TF32 when torch allows it for matrix products, else in full float32.

Conditions (:func:`fused_transformer_applies`): ``enabled`` (``eval.fused_transformer``, the
benchmark's ``fused_transformer``), Triton, a CUDA tensor, no gradient wanted, sets of at most
``MAX_TOKENS`` tokens, token and feed-forward widths that are powers of two of at least 16
(``tl.dot``; the paper's are 32 and 32). Checked on a CPU in Triton's interpreter (float32
and float16) and compiled for sm_90 by ``python scripts/kernel_report.py``; on an H100 it
took the heads of a bf16 paper frame from 62 to 19 ms with the same evaluation metrics
(benchmarks/README.md), so evaluation, render.py and the benchmark switch it on for CUDA.
"""

import math
from typing import no_type_check

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from gsnerf.model.attention_kernel import as_triton_operator
from gsnerf.model.fused_blocks import dot_tile_widths

try:
    import triton
    import triton.language as tl
except ImportError:  # A CPU-only torch comes without Triton; the kernel is then never used.
    triton = None

# Token rows per program (whole sets: ROWS // t of them) and warps per program. Compiled for
# sm_90 (python scripts/kernel_report.py), the paper's bf16 transformers take 161 registers per
# thread with 4 warps (137 with 8, but then one program fits an SM's registers instead of
# three); float32 products in full precision (no tensor cores) need 255 registers and spill
# with 4 warps, and spill nothing with 8.
ROWS = 64
NUM_WARPS = 4
FULL_FLOAT32_NUM_WARPS = 8

# Longest sets the kernel takes: at least two sets per tile, so that a tile wastes at most a
# third of its rows.
MAX_TOKENS = ROWS // 2

# The module's switch (set_fused_kernels): True makes CUDA inference use the fused transformer,
# and CPU inference the C++ one (gsnerf/model/cpu_transformer.py); EvalCfg and the benchmark
# set it, on by default.
enabled = False


if triton is not None:

    @triton.jit
    @no_type_check  # keeps jaxtyping's import hook off the kernel (attention_kernel.py)
    def _product(x, weight_ptr, inputs, outputs, IN: tl.constexpr, PRECISION: tl.constexpr):
        """``x W^T`` of a ``(rows, IN)`` tile and a row-major ``(out, IN)`` weight, float32."""
        # Element (i, o) of W^T is W[o, i].
        transposed = tl.load(weight_ptr + outputs[None, :] * IN + inputs[:, None])
        return tl.dot(x, transposed.to(x.dtype), input_precision=PRECISION)

    @triton.jit
    @no_type_check
    def _layer_norm_rows(x, weight_ptr, bias_ptr, channel, eps, WIDTH: tl.constexpr):
        """LayerNorm of every row of a float32 ``(rows, WIDTH)`` tile."""
        mean = tl.sum(x, axis=1) / WIDTH
        centred = x - mean[:, None]
        variance = tl.sum(centred * centred, axis=1) / WIDTH
        normalised = centred * tl.rsqrt(variance + eps)[:, None]
        weight = tl.load(weight_ptr + channel).to(tl.float32)
        bias = tl.load(bias_ptr + channel).to(tl.float32)
        return normalised * weight[None, :] + bias[None, :]

    @triton.jit
    @no_type_check
    def _blocks(
        x, attends, qkv_weight_ptr, out_weight_ptr, norm1_weight_ptr, norm1_bias_ptr,
        ffn1_weight_ptr, ffn1_bias_ptr, ffn2_weight_ptr, ffn2_bias_ptr, norm2_weight_ptr,
        norm2_bias_ptr, layers, eps, scale, dtype: tl.constexpr, ROWS: tl.constexpr,
        WIDTH: tl.constexpr, FFN_WIDTH: tl.constexpr, HEADS: tl.constexpr,
        PRECISION: tl.constexpr,
    ):  # fmt: skip
        """``layers`` post-norm blocks on a float32 ``(ROWS, WIDTH)`` tile of tokens, in which
        row ``i`` attends to row ``j`` where ``attends[i, j]``; products in ``dtype``."""
        channel = tl.arange(0, WIDTH)
        hidden = tl.arange(0, FFN_WIDTH)
        head_of_channel = channel // (WIDTH // HEADS)
        for layer in range(layers):
            square = layer * WIDTH * WIDTH
            xd = x.to(dtype)
            qkv_ptr = qkv_weight_ptr + 3 * square
            # scale holds log2(e) / sqrt(head channels): exp2 of the scores is exp of the true.
            query = _product(xd, qkv_ptr, channel, channel, WIDTH, PRECISION) * scale
            key = _product(xd, qkv_ptr + WIDTH * WIDTH, channel, channel, WIDTH, PRECISION)
            value = _product(xd, qkv_ptr + 2 * WIDTH * WIDTH, channel, channel, WIDTH, PRECISION)
            key_t = tl.trans(key.to(dtype))
            attended = tl.zeros((ROWS, WIDTH), tl.float32)
            for head in range(HEADS):
                in_head = (head_of_channel == head)[None, :]
                head_query = tl.where(in_head, query, 0.0).to(dtype)
                scores = tl.dot(head_query, key_t, input_precision=PRECISION)
                scores = tl.where(attends, scores, -1.0e30)
                weights = tl.exp2(scores - tl.max(scores, axis=1)[:, None])
                total = tl.sum(weights, axis=1)
                head_value = tl.where(in_head, value, 0.0).to(dtype)
                mixed = tl.dot(weights.to(dtype), head_value, input_precision=PRECISION)
                attended += mixed / total[:, None]
            projected = _product(
                attended.to(dtype), out_weight_ptr + square, channel, channel, WIDTH, PRECISION
            )
            x = _layer_norm_rows(
                x + projected,
                norm1_weight_ptr + layer * WIDTH,
                norm1_bias_ptr + layer * WIDTH,
                channel,
                eps,
                WIDTH,
            )
            ffn1_ptr = ffn1_weight_ptr + layer * FFN_WIDTH * WIDTH
            inner = _product(x.to(dtype), ffn1_ptr, channel, hidden, WIDTH, PRECISION)
            inner_bias = tl.load(ffn1_bias_ptr + layer * FFN_WIDTH + hidden).to(tl.float32)
            inner = tl.maximum(inner + inner_bias[None, :], 0.0)
            ffn2_ptr = ffn2_weight_ptr + layer * WIDTH * FFN_WIDTH
            outer = _product(inner.to(dtype), ffn2_ptr, hidden, channel, FFN_WIDTH, PRECISION)
            outer_bias = tl.load(ffn2_bias_ptr + layer * WIDTH + channel).to(tl.float32)
            x = _layer_norm_rows(
                x + outer + outer_bias[None, :],
                norm2_weight_ptr + layer * WIDTH,
                norm2_bias_ptr + layer * WIDTH,
                channel,
                eps,
                WIDTH,
            )
        return x

    @triton.jit
    @no_type_check
    def _transformer_kernel(
        tokens_ptr,
        mask_ptr,
        qkv_weight_ptr,
        out_weight_ptr,
        norm1_weight_ptr,
        norm1_bias_ptr,
        ffn1_weight_ptr,
        ffn1_bias_ptr,
        ffn2_weight_ptr,
        ffn2_bias_ptr,
        norm2_weight_ptr,
        norm2_bias_ptr,
        out_ptr,
        total_rows,
        layers,
        eps,
        scale,
        HAS_MASK: tl.constexpr,
        TOKENS: tl.constexpr,
        WIDTH: tl.constexpr,
        FFN_WIDTH: tl.constexpr,
        HEADS: tl.constexpr,
        ROWS: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        # torch.compile launches with Python floats typed fp64: float32 once, here.
        eps = tl.cast(eps, tl.float32)
        scale = tl.cast(scale, tl.float32)
        dtype: tl.constexpr = tokens_ptr.dtype.element_ty
        used_rows: tl.constexpr = (ROWS // TOKENS) * TOKENS
        local = tl.arange(0, ROWS)
        row = tl.program_id(0).to(tl.int64) * used_rows + local
        valid = (local < used_rows) & (row < total_rows)
        channel = tl.arange(0, WIDTH)
        tile = row[:, None] * WIDTH + channel[None, :]
        x = tl.load(tokens_ptr + tile, mask=valid[:, None], other=0.0).to(tl.float32)
        # A query attends to the attended keys of its own set; row r of the (n, t) tokens and
        # element r of the (n, t) key mask are the same token.
        key_ok = valid
        if HAS_MASK:
            key_ok = key_ok & (tl.load(mask_ptr + row, mask=valid, other=0) != 0)
        set_of_row = local // TOKENS
        attends = (set_of_row[:, None] == set_of_row[None, :]) & key_ok[None, :]
        x = _blocks(
            x, attends, qkv_weight_ptr, out_weight_ptr, norm1_weight_ptr, norm1_bias_ptr,
            ffn1_weight_ptr, ffn1_bias_ptr, ffn2_weight_ptr, ffn2_bias_ptr, norm2_weight_ptr,
            norm2_bias_ptr, layers, eps, scale, dtype, ROWS, WIDTH, FFN_WIDTH, HEADS, PRECISION,
        )  # fmt: skip
        tl.store(out_ptr + tile, x.to(out_ptr.dtype.element_ty), mask=valid[:, None])


def stacked_weights(blocks: nn.ModuleList, dtype: torch.dtype) -> list[Tensor]:
    """The kernel's parameters of all ``blocks``, each stacked over the blocks, in its order.

    ``q k v`` and output products, first LayerNorm (weight, bias), feed-forward layers (weight,
    bias each), second LayerNorm; product weights in ``dtype``, the rest in float32.
    """

    def stack(get: object, in_dtype: torch.dtype = torch.float32) -> Tensor:
        return torch.stack([get(block) for block in blocks]).to(in_dtype).contiguous()

    return [
        stack(lambda block: block.qkv.weight, dtype),
        stack(lambda block: block.out.weight, dtype),
        stack(lambda block: block.attention_norm.weight),
        stack(lambda block: block.attention_norm.bias),
        stack(lambda block: block.ffn[0].weight, dtype),
        stack(lambda block: block.ffn[0].bias),
        stack(lambda block: block.ffn[2].weight, dtype),
        stack(lambda block: block.ffn[2].bias),
        stack(lambda block: block.ffn_norm.weight),
        stack(lambda block: block.ffn_norm.bias),
    ]


def launch_fused_transformer(
    tokens: Float[Tensor, "n t c"],
    key_mask: Bool[Tensor, "n t"] | None,
    weights: list[Tensor],
    heads: int,
    eps: float,
    launcher: object | None = None,
) -> Float[Tensor, "n t c"]:
    """Run the kernel on ``tokens`` (their dtype is the products'); the transformed tokens.

    ``weights``: :func:`stacked_weights`. ``launcher``: ``wrap_triton`` of the kernel (unset;
    compiled code can then call it), or a stand-in that records the launch
    (:mod:`gsnerf.evaluation.kernel_report`).
    """
    sets, count, width = tokens.shape
    tokens = tokens.contiguous()
    out = torch.empty_like(tokens)
    mask = tokens if key_mask is None else key_mask.to(torch.uint8).contiguous()
    full_float32 = tokens.dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32
    used_rows = (ROWS // count) * count
    launcher = launcher or torch.library.wrap_triton(_transformer_kernel)
    launcher[(triton.cdiv(sets * count, used_rows),)](
        tokens,
        mask,
        *weights,
        out,
        sets * count,
        weights[0].shape[0],
        eps,
        math.log2(math.e) / math.sqrt(width // heads),
        HAS_MASK=key_mask is not None,
        TOKENS=count,
        WIDTH=width,
        FFN_WIDTH=weights[4].shape[1],
        HEADS=heads,
        ROWS=ROWS,
        PRECISION="ieee" if full_float32 else "tf32",
        num_warps=FULL_FLOAT32_NUM_WARPS if full_float32 else NUM_WARPS,
    )
    return out


def _fused_transformer(
    tokens: Tensor, key_mask: Tensor | None, weights: list[Tensor], heads: int, eps: float
) -> Tensor:
    return launch_fused_transformer(tokens, key_mask, weights, heads, eps)


# The kernel as a torch operator, with launch_fused_transformer's arguments and result.
fused_transformer_operator = as_triton_operator("fused_transformer", _fused_transformer)


def kernel_fits(blocks: nn.ModuleList, tokens_per_set: int) -> bool:
    """Whether the kernel takes these blocks and sets: tile widths, short sets (module doc),
    at least one whole set per tile of ``ROWS`` rows (a kernel sweep may narrow the tile)."""
    short = tokens_per_set <= min(MAX_TOKENS, ROWS)
    return len(blocks) > 0 and short and dot_tile_widths(blocks)


def fused_transformer_applies(blocks: nn.ModuleList, tokens: Tensor) -> bool:
    """Whether :func:`fused_transformer` serves these blocks and tokens (module doc)."""
    return (
        enabled
        and triton is not None
        and tokens.is_cuda
        and not torch.is_grad_enabled()
        and kernel_fits(blocks, tokens.shape[1])
    )


def fused_transformer(
    blocks: nn.ModuleList,
    tokens: Float[Tensor, "n t c"],
    key_mask: Bool[Tensor, "n t"] | None,
    dtype: torch.dtype,
) -> Float[Tensor, "n t c"]:
    """``blocks`` applied to ``tokens`` in one kernel; the numbers of the plain blocks.

    Products in ``dtype`` (the autocast dtype, or the tokens'), and so is the result. Called
    as a torch operator, so that compiled heads call it within their graph (on CPU tensors
    it runs in Triton's interpreter, ``TRITON_INTERPRET=1``: the tests).
    """
    first = blocks[0]
    weights = stacked_weights(blocks, dtype)
    eps = first.attention_norm.eps
    return fused_transformer_operator(tokens.to(dtype), key_mask, weights, first.heads, eps)
