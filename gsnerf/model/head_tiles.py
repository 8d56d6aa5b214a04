"""Tile functions of the heads' Triton kernels (:mod:`gsnerf.model.fused_radiance_views`,
:mod:`gsnerf.model.fused_semantic_logits`): products with masked weights, the ELU, the rows of
whole samples, the mask flags, the per-sample moments and the token stage around the
transformer. A tile holds ``ROWS`` token rows, whole samples of ``VIEWS + 1`` tokens with the
global token first; the kernels import these by name (Triton resolves them in the caller's
globals).
"""

from typing import no_type_check

try:
    import triton
    import triton.language as tl

    from gsnerf.model.fused_transformer import _blocks
except ImportError:  # A CPU-only torch comes without Triton; nothing here is used then.
    triton = None


if triton is not None:

    @triton.jit
    @no_type_check  # keeps jaxtyping's import hook off the kernel (attention_kernel.py)
    def _linear(x, weight_ptr, row_stride, fan_in, inputs, outputs, PRECISION: tl.constexpr):
        """``x W^T`` of a ``(rows, len(inputs))`` tile and the first ``fan_in`` columns of a
        row-major weight with rows ``row_stride`` apart; columns past ``fan_in`` count as 0."""
        transposed = tl.load(
            weight_ptr + outputs[None, :] * row_stride + inputs[:, None],
            mask=(inputs < fan_in)[:, None],
            other=0.0,
        )
        return tl.dot(x, transposed.to(x.dtype), input_precision=PRECISION)

    @triton.jit
    @no_type_check
    def _moment_products(
        values, joins, count, rows_in, cols, used, weight_ptr, row_stride, variance_offset,
        outputs, dtype: tl.constexpr, PRECISION: tl.constexpr,
    ):  # fmt: skip
        """``mean W_m^T + variance W_v^T`` for the mean and variance over each row's sample's
        attended views of the first ``used`` columns of ``values``; ``W_v`` starts
        ``variance_offset`` columns after ``W_m`` in the weight."""
        mean = tl.dot(joins, values, input_precision=PRECISION) / count
        product = _linear(mean.to(dtype), weight_ptr, row_stride, used, cols, outputs, PRECISION)
        deviation = tl.where(rows_in & (cols < used)[None, :], values - mean, 0.0)
        variance = tl.dot(joins, deviation * deviation, input_precision=PRECISION) / count
        product += _linear(
            variance.to(dtype), weight_ptr + variance_offset, row_stride, used, cols, outputs,
            PRECISION,
        )  # fmt: skip
        return product

    @triton.jit
    @no_type_check
    def _same_set(local, TOKENS: tl.constexpr):
        """Whether rows i and j of the tile are tokens of one sample (a set of TOKENS rows); a
        function, recomputed where needed, rather than a (rows, rows) tile kept in registers."""
        return (local // TOKENS)[:, None] == (local // TOKENS)[None, :]

    @triton.jit
    @no_type_check
    def _elu(x):
        # exp of the negative part only: no overflow where the positive branch is taken.
        return tl.where(x > 0.0, x, tl.exp(tl.minimum(x, 0.0)) - 1.0)

    @triton.jit
    @no_type_check
    def _bias(bias_ptr, outputs):
        return tl.load(bias_ptr + outputs).to(tl.float32)[None, :]

    @triton.jit
    @no_type_check
    def _sample_rows(mask_ptr, samples, VIEWS: tl.constexpr, ROWS: tl.constexpr):
        """The program's rows: whole samples of ``VIEWS + 1`` tokens, the global token first.
        Returns each row's index in the tile, sample, whether it is a global token and a view
        token, its ``(sample, view)`` index and whether that view is attended (``mask_ptr``)."""
        TOKENS: tl.constexpr = VIEWS + 1
        used_rows: tl.constexpr = (ROWS // TOKENS) * TOKENS
        local = tl.arange(0, ROWS)
        row = tl.program_id(0).to(tl.int64) * used_rows + local
        valid = (local < used_rows) & (row < samples * TOKENS)
        sample = row // TOKENS
        token = row % TOKENS
        is_view = valid & (token > 0)
        sample_view = sample * VIEWS + token - 1
        attended = is_view & (tl.load(mask_ptr + sample_view, mask=is_view, other=0) != 0)
        return local, sample, valid & (token == 0), is_view, sample_view, attended

    @triton.jit
    @no_type_check
    def _mask_flags(in_frustum_ptr, visible_ptr, sample_view, is_view, cols, FIRST: tl.constexpr):
        """A tile with each view row's [in frustum, visible] flags at columns ``FIRST`` and
        ``FIRST + 1`` of ``cols`` (a ``(1, columns)`` range), zeros elsewhere."""
        frustum = tl.load(in_frustum_ptr + sample_view, mask=is_view, other=0).to(tl.float32)
        visible = tl.load(visible_ptr + sample_view, mask=is_view, other=0).to(tl.float32)
        flags = tl.where(cols == FIRST, frustum[:, None], 0.0)
        return flags + tl.where(cols == FIRST + 1, visible[:, None], 0.0)

    @triton.jit
    @no_type_check
    def _transformed_tokens(
        view_tokens, hidden, is_global, attended, local, view_b, global_b1, global_w2,
        global_b2, qkv_w, out_w, norm1_w, norm1_b, ffn1_w, ffn1_b, ffn2_w, ffn2_b, norm2_w,
        norm2_b, layers, eps, scale, dtype: tl.constexpr, TOKENS: tl.constexpr,
        ROWS: tl.constexpr, WIDTH: tl.constexpr, FFN_WIDTH: tl.constexpr, HEADS: tl.constexpr,
        PRECISION: tl.constexpr,
    ):  # fmt: skip
        """The tokens after the transformer, from the view embeddings' and the global MLP's
        first layer's products before their biases: each token attends to its sample's global
        token and attended views."""
        channel = tl.arange(0, WIDTH)
        view_tokens = _elu(view_tokens + _bias(view_b, channel))
        hidden = _elu(hidden + _bias(global_b1, channel))
        global_tokens = _linear(
            hidden.to(dtype), global_w2, WIDTH, WIDTH, channel, channel, PRECISION
        )
        global_tokens = _elu(global_tokens + _bias(global_b2, channel))
        x = tl.where(is_global[:, None], global_tokens, view_tokens)
        attends = _same_set(local, TOKENS) & (is_global | attended)[None, :]
        return _blocks(
            x, attends, qkv_w, out_w, norm1_w, norm1_b, ffn1_w, ffn1_b, ffn2_w, ffn2_b, norm2_w,
            norm2_b, layers, eps, scale, dtype, ROWS, WIDTH, FFN_WIDTH, HEADS, PRECISION,
        )  # fmt: skip
