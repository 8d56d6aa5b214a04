"""The semantic head in one Triton kernel, for CUDA inference: the CUDA counterpart of
:func:`gsnerf.model.cpu_token_heads.cpu_semantic_logits`, built like the radiance head's
(:mod:`gsnerf.model.fused_radiance_views`; both call :mod:`gsnerf.model.head_tiles`).

Per sample, :class:`gsnerf.model.semantic_head.SemanticHead` (its default ``views_and_global``
tokens) embeds each view's patch features and mask flags, builds the global token from the
mean and variance of the attended views' patch features, runs the semantic transformer and
reads the class logits from the global token and the mean of the attended view tokens. Here one
kernel does it on 32 token rows (3 samples of 9 tokens) in registers. The patch features
(``9 c_sem`` channels, 180 for ScanNet's 20 classes) are read 32 columns at a time: each block
adds its part to the view embedding and to the global MLP's first layer (its mean and
variance), so no tile wider than 32 columns is held.

The numbers are the PyTorch head's up to rounding: products in the compute dtype (bf16 under
autocast) with float32 sums and float32 in between, logits in float32. Conditions
(:func:`fused_semantic_logits_applies`): ``enabled`` (``eval.fused_heads``, the benchmark's
``fused_heads``), Triton, CUDA tensors, no gradient wanted, float32 features, the default
tokens, a transformer the transformer kernel takes, a class MLP of two hidden layers whose
widths are powers of two of at least 16, at most 64 classes. Called as the operator
``gsnerf::fused_semantic_logits``. Not yet timed on a GPU: off by default.
"""

import math
from typing import no_type_check

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from gsnerf.model import fused_blocks, fused_transformer
from gsnerf.model.attention_kernel import as_triton_operator

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

# Token rows per program (3 samples of 9 tokens), warps, columns of the feature blocks.
ROWS = 32
NUM_WARPS = 4
BLOCK = 32
MAX_CLASSES = 64

# The module's switch (set_fused_kernels, with fused_radiance_views's).
enabled = False


if triton is not None:

    @triton.jit
    @no_type_check  # keeps jaxtyping's import hook off the kernel (attention_kernel.py)
    def _semantic_kernel(
        features_ptr, in_frustum_ptr, visible_ptr, mask_ptr,
        view_w, view_b, global_w1, global_b1, global_w2, global_b2,
        qkv_w, out_w, norm1_w, norm1_b, ffn1_w, ffn1_b, ffn2_w, ffn2_b, norm2_w, norm2_b,
        class_w1, class_b1, class_w2, class_b2, class_w3, class_b3, logits_out,
        samples, layers, eps, scale,
        VIEWS: tl.constexpr, FEATURES: tl.constexpr, CLASSES: tl.constexpr,
        WIDTH: tl.constexpr, FFN_WIDTH: tl.constexpr, HEADS: tl.constexpr,
        HIDDEN1: tl.constexpr, HIDDEN2: tl.constexpr, CLASS_TILE: tl.constexpr,
        BLOCK: tl.constexpr, ROWS: tl.constexpr, PRECISION: tl.constexpr,
    ):  # fmt: skip
        """Samples ``[3 i, 3 i + 3)`` (``ROWS // (VIEWS + 1)``), program ``i``, rows as in
        the radiance kernel. Features ``(samples, VIEWS, FEATURES)`` float32, flags ``(samples,
        VIEWS)`` uint8; logits ``(samples, CLASSES)`` float32."""
        # torch.compile launches with Python floats typed fp64: float32 once, here.
        eps = tl.cast(eps, tl.float32)
        scale = tl.cast(scale, tl.float32)
        dtype: tl.constexpr = view_w.dtype.element_ty
        TOKENS: tl.constexpr = VIEWS + 1
        local, sample, is_global, is_view, sample_view, attended = _sample_rows(
            mask_ptr, samples, VIEWS, ROWS
        )
        joins = tl.where(_same_set(local, TOKENS) & attended[None, :], 1.0, 0.0)
        count = tl.maximum(tl.sum(joins, axis=1), 1.0)[:, None]
        rows_in = is_view[:, None]
        channel = tl.arange(0, WIDTH)
        stride = FEATURES + 2

        # The flags [in frustum, visible], then the patch features block by block: each block
        # adds its part to the view embedding and to the global MLP's first layer.
        cols = tl.arange(0, 16)[None, :]
        flags = _mask_flags(in_frustum_ptr, visible_ptr, sample_view, is_view, cols, 0)
        view_tokens = _linear(
            flags.to(dtype), view_w + FEATURES, stride, 2, tl.arange(0, 16), channel, PRECISION
        )
        hidden = tl.zeros((ROWS, WIDTH), tl.float32)
        block_cols = tl.arange(0, BLOCK)
        for start in range(0, FEATURES, BLOCK):
            left = FEATURES - start
            block = tl.load(
                features_ptr + sample_view[:, None] * FEATURES + start + block_cols[None, :],
                mask=rows_in & (block_cols < left)[None, :],
                other=0.0,
            )
            view_tokens += _linear(
                block.to(dtype), view_w + start, stride, left, block_cols, channel, PRECISION
            )
            hidden += _moment_products(
                block, joins, count, rows_in, block_cols, left, global_w1 + start,
                2 * FEATURES, FEATURES, channel, dtype, PRECISION,
            )  # fmt: skip
        x = _transformed_tokens(
            view_tokens, hidden, is_global, attended, local, view_b, global_b1, global_w2,
            global_b2, qkv_w, out_w, norm1_w, norm1_b, ffn1_w, ffn1_b, ffn2_w, ffn2_b, norm2_w,
            norm2_b, layers, eps, scale, dtype, TOKENS, ROWS, WIDTH, FFN_WIDTH, HEADS, PRECISION,
        )  # fmt: skip

        # The class MLP on [global token, mean of the attended view tokens] of each sample.
        view_mean = tl.dot(joins, x, input_precision=PRECISION) / count
        first = tl.arange(0, HIDDEN1)
        second = tl.arange(0, HIDDEN2)
        read = _linear(x.to(dtype), class_w1, 2 * WIDTH, WIDTH, channel, first, PRECISION)
        read += _linear(
            view_mean.to(dtype), class_w1 + WIDTH, 2 * WIDTH, WIDTH, channel, first, PRECISION
        )
        read = _elu(read + _bias(class_b1, first))
        read = _linear(read.to(dtype), class_w2, HIDDEN1, HIDDEN1, first, second, PRECISION)
        read = _elu(read + _bias(class_b2, second))
        classes = tl.arange(0, CLASS_TILE)
        # The last layer's rows past CLASSES are zeros (a masked load), not read.
        weight = tl.load(
            class_w3 + classes[None, :] * HIDDEN2 + second[:, None],
            mask=(classes < CLASSES)[None, :],
            other=0.0,
        )
        logits = tl.dot(read.to(dtype), weight.to(dtype), input_precision=PRECISION)
        logits += tl.load(class_b3 + classes, mask=classes < CLASSES, other=0.0)[None, :]
        tl.store(
            logits_out + sample[:, None] * CLASSES + classes[None, :],
            logits,
            mask=is_global[:, None] & (classes < CLASSES)[None, :],
        )


def head_weights(head: nn.Module, dtype: torch.dtype) -> list[Tensor]:
    """The kernel's parameters of a :class:`SemanticHead`, in its order: product weights in
    ``dtype``, biases in float32, the transformer's as :func:`fused_transformer.stacked_weights`
    gives them."""
    parts = []
    for layer in (head.view_embed[0], head.global_embed[0], head.global_embed[2]):
        parts += [layer.weight.to(dtype), layer.bias.float()]
    parts += fused_transformer.stacked_weights(head.transformer.blocks, dtype)
    for layer in (head.classifier[0], head.classifier[2], head.classifier[4]):
        parts += [layer.weight.to(dtype), layer.bias.float()]
    return [tensor.contiguous() for tensor in parts]


def launch_semantic_logits(
    features: Tensor,
    flags: Tensor,
    weights: list[Tensor],
    heads: int,
    eps: float,
    launcher: object | None = None,
) -> Tensor:
    """Run the kernel on ``(samples, views, channels)`` float32 features and ``flags`` ``(3,
    samples, views)`` uint8 (in frustum, visible, attended); ``weights``: :func:`head_weights`.
    Returns ``(samples, classes)`` float32 logits. ``launcher``: as
    :func:`fused_transformer.launch_fused_transformer`'s."""
    samples, views, channels = features.shape
    width = weights[2].shape[0]
    classes = weights[-2].shape[0]
    logits = torch.empty(samples, classes, dtype=torch.float32, device=features.device)
    full_float32 = weights[0].dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32
    used_rows = (ROWS // (views + 1)) * (views + 1)
    launcher = launcher or torch.library.wrap_triton(_semantic_kernel)
    launcher[(triton.cdiv(samples * (views + 1), used_rows),)](
        features.contiguous(),
        *flags.contiguous(),
        *weights,
        logits,
        samples,
        weights[6].shape[0],
        eps,
        math.log2(math.e) / math.sqrt(width // heads),
        VIEWS=views,
        FEATURES=channels,
        CLASSES=classes,
        WIDTH=width,
        FFN_WIDTH=weights[10].shape[1],
        HEADS=heads,
        HIDDEN1=weights[-6].shape[0],
        HIDDEN2=weights[-4].shape[0],
        CLASS_TILE=max(16, 1 << (classes - 1).bit_length()),
        BLOCK=BLOCK,
        ROWS=ROWS,
        PRECISION="ieee" if full_float32 else "tf32",
        num_warps=fused_transformer.FULL_FLOAT32_NUM_WARPS if full_float32 else NUM_WARPS,
    )
    return logits


def _fused_semantic_logits(
    features: Tensor, flags: Tensor, weights: list[Tensor], heads: int, eps: float
) -> Tensor:
    return launch_semantic_logits(features, flags, weights, heads, eps)


# The kernel as a torch operator, with launch_semantic_logits's arguments and result.
fused_semantic_logits_operator = as_triton_operator("fused_semantic_logits", _fused_semantic_logits)


def kernel_fits(head: nn.Module, features: Tensor) -> bool:
    """Whether the kernel computes this head's logits on any device (module doc)."""
    if getattr(head, "tokens", None) is None or head.tokens.value != "views_and_global":
        return False
    layers = [layer for layer in head.classifier if isinstance(layer, nn.Linear)]
    return (
        fused_transformer.kernel_fits(head.transformer.blocks, features.shape[-2] + 1)
        and len(layers) == 3
        and all(
            layer.out_features >= 16 and layer.out_features & (layer.out_features - 1) == 0
            for layer in layers[:2]
        )
        and layers[2].out_features <= MAX_CLASSES
        and features.dtype == torch.float32
    )


def fused_semantic_logits_applies(head: nn.Module, features: Tensor) -> bool:
    """Whether :func:`fused_semantic_logits` runs this head (module doc)."""
    return (
        enabled
        and triton is not None
        and features.is_cuda
        and not torch.is_grad_enabled()
        and kernel_fits(head, features)
    )


def fused_semantic_logits(
    head: nn.Module,
    features: Float[Tensor, "b rays samples v c_patch"],
    in_frustum: Bool[Tensor, "b rays samples v"],
    visible: Bool[Tensor, "b rays samples v"],
    view_mask: Bool[Tensor, "b rays samples v"],
) -> Float[Tensor, "b rays samples classes"]:
    """:class:`SemanticHead`'s logits in the kernel; products in autocast's dtype (or
    float32). On CPU tensors it runs in Triton's interpreter (``TRITON_INTERPRET=1``)."""
    batch, rays, samples, views = view_mask.shape
    flags = torch.stack([in_frustum, visible, view_mask]).to(torch.uint8)
    blocks = head.transformer.blocks
    logits = fused_semantic_logits_operator(
        features.reshape(batch * rays * samples, views, -1),
        flags.reshape(3, batch * rays * samples, views),
        head_weights(head, fused_blocks.compute_dtype(features)),
        blocks[0].heads,
        blocks[0].attention_norm.eps,
    )
    return logits.reshape(batch, rays, samples, -1)
