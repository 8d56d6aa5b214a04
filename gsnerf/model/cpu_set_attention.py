"""The transformer blocks' attention in a C++ kernel on a CPU, with gradients, for training.

The heads' transformers attend within sets of a few tokens (a sample's views and global token,
a ray's samples; :mod:`gsnerf.model.transformer`). Inference runs whole transformers in one
kernel (:mod:`gsnerf.model.cpu_transformer`), but training calls the library's
``scaled_dot_product_attention``, whose CPU kernels (flash or math) spend their time on
per-set overhead: forward and backward of a quickstart step's view transformer (2048 sets of 5
tokens, 4 heads of 8 channels) took 15.5 ms per block whichever backend, out of about 41 ms of
attention in a 375 ms step. ``csrc/set_attention.cpp`` does each set whole in the first-level
cache: scores, masked softmax and weighted values, keeping the probabilities for the backward
pass, which computes the query, key and value gradients in one pass per set. That transformer
block's attention took 3.4 against 16.5 ms forward and backward; a quickstart training step
(512 rays, 4 views, the other CPU kernels on) 322 against 355 ms on one thread, 200 against
226 ms on two (alternating runs).

The numbers are the library's up to float32 rounding (tests against float64 attention).
Conditions (:func:`cpu_set_attention_applies`): :data:`enabled` (``train.cpu_kernels`` for
training, ``eval.cpu_kernels`` and the benchmark's ``cpu_kernels``), a float32 CPU input, at
most :data:`MAX_TOKENS` tokens per set, and a library that builds for the head shape (without
a C++ compiler, a warning and the library's attention). It reads the blocks' fused query, key
and value product as it is and writes the output projection's input layout, so neither needs
a copy. Eager code calls it as the operators ``gsnerf::cpu_set_attention_forward`` and
``..._backward``; sets are split among ``torch.get_num_threads()`` threads.
"""

import ctypes

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from gsnerf.model.native_library import (
    INT64,
    POINTER,
    native_function,
    native_functions_build,
)

SOURCE = "set_attention.cpp"
# out, probabilities, qkv, key mask, sets, tokens, scale, threads.
FORWARD_ARGUMENTS = (POINTER,) * 4 + (INT64,) * 2 + (ctypes.c_float, INT64)
# grad qkv, grad out, qkv, probabilities, sets, tokens, scale, threads.
BACKWARD_ARGUMENTS = (POINTER,) * 4 + (INT64,) * 2 + (ctypes.c_float, INT64)
# Longest sets (the kernel's MAX_TOKENS): a query's scores are kept on the stack.
MAX_TOKENS = 64

# Set by gsnerf.model.fused_kernels.set_fused_kernels (evaluation, render.py, the benchmark,
# training).
enabled = False


@torch.compiler.assume_constant_result
def kernel_available(heads: int, head_channels: int) -> bool:
    """Whether the kernel builds for this head shape; tried (and warned about) once per shape.
    A constant to ``torch.compile``: it runs while tracing, not in the compiled graph."""
    signatures = {"set_attention": FORWARD_ARGUMENTS, "set_attention_backward": BACKWARD_ARGUMENTS}
    return native_functions_build(SOURCE, signatures, _defines(heads, head_channels))


def _defines(heads: int, head_channels: int) -> tuple:
    return (("HEADS", heads), ("HEAD_CHANNELS", head_channels))


def cpu_set_attention_applies(qkv: Tensor, heads: int) -> bool:
    """Whether :func:`cpu_set_attention` computes the attention of ``qkv`` (module doc)."""
    if not (
        enabled
        and qkv.dim() == 3
        and qkv.device.type == "cpu"
        and qkv.dtype == torch.float32
        and qkv.shape[1] <= MAX_TOKENS
        and qkv.shape[2] % (3 * heads) == 0
    ):
        return False
    return kernel_available(heads, qkv.shape[2] // (3 * heads))


def _head_shape(qkv: Tensor, heads: int) -> tuple[int, int]:
    if qkv.shape[2] % (3 * heads) or qkv.shape[1] > MAX_TOKENS:
        raise ValueError(
            f"cpu_set_attention: query, key and value of shape {tuple(qkv.shape)} for {heads} "
            f"heads: needs 3 x heads x channels per token and at most {MAX_TOKENS} tokens"
        )
    return heads, qkv.shape[2] // (3 * heads)


@torch.library.custom_op("gsnerf::cpu_set_attention_forward", mutates_args=())
def set_attention_forward(qkv: Tensor, key_mask: Tensor, heads: int) -> tuple[Tensor, Tensor]:
    """The attended values ``(n, t, heads * c)`` and the probabilities ``(n, heads, t, t)``."""
    heads, head_channels = _head_shape(qkv, heads)
    sets, tokens, _ = qkv.shape
    qkv = qkv.contiguous()
    mask = key_mask.to(torch.uint8).contiguous()
    out = qkv.new_empty(sets, tokens, heads * head_channels)
    probabilities = qkv.new_empty(sets, heads, tokens, tokens)
    kernel = native_function(
        SOURCE, "set_attention", FORWARD_ARGUMENTS, _defines(heads, head_channels)
    )
    pointers = (out, probabilities, qkv, mask)
    kernel(
        *(tensor.data_ptr() for tensor in pointers),
        sets,
        tokens,
        head_channels**-0.5,
        torch.get_num_threads(),
    )
    return out, probabilities


@set_attention_forward.register_fake
def _forward_shapes(qkv: Tensor, key_mask: Tensor, heads: int) -> tuple[Tensor, Tensor]:
    sets, tokens, row = qkv.shape
    return qkv.new_empty(sets, tokens, row // 3), qkv.new_empty(sets, heads, tokens, tokens)


@torch.library.custom_op("gsnerf::cpu_set_attention_backward", mutates_args=())
def set_attention_backward(
    grad_out: Tensor, qkv: Tensor, probabilities: Tensor, heads: int
) -> Tensor:
    """The gradient of the query, key and value, in ``qkv``'s layout."""
    heads, head_channels = _head_shape(qkv, heads)
    sets, tokens, _ = qkv.shape
    grad_out, qkv = grad_out.contiguous(), qkv.contiguous()
    grad_qkv = torch.empty_like(qkv)
    kernel = native_function(
        SOURCE, "set_attention_backward", BACKWARD_ARGUMENTS, _defines(heads, head_channels)
    )
    pointers = (grad_qkv, grad_out, qkv, probabilities.contiguous())
    kernel(
        *(tensor.data_ptr() for tensor in pointers),
        sets,
        tokens,
        head_channels**-0.5,
        torch.get_num_threads(),
    )
    return grad_qkv


@set_attention_backward.register_fake
def _backward_shape(grad_out: Tensor, qkv: Tensor, *rest: object) -> Tensor:
    return torch.empty_like(qkv)


def _save_for_backward(ctx, inputs: tuple, output: tuple) -> None:
    qkv, _, heads = inputs
    # The probabilities serve the backward pass only: no gradient for them, none of zeros.
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(qkv, output[1])
    ctx.heads = heads


def _backward(ctx, grad_out: Tensor, _grad_probabilities: Tensor | None) -> tuple:
    qkv, probabilities = ctx.saved_tensors
    return set_attention_backward(grad_out, qkv, probabilities, ctx.heads), None, None


set_attention_forward.register_autograd(_backward, setup_context=_save_for_backward)


def cpu_set_attention(
    qkv: Float[Tensor, "n t three_hc"], key_mask: Bool[Tensor, "n t"] | None, heads: int
) -> Float[Tensor, "n t hc"]:
    """Masked attention of every set's tokens, from the fused ``(n, t, 3 * heads * c)`` query,
    key and value product (query, then key, then value; heads within each), with gradients.
    ``key_mask``: True for the keys that take part (None: all); every set needs one."""
    if key_mask is None:
        key_mask = torch.ones(qkv.shape[:2], dtype=torch.bool, device=qkv.device)
    return set_attention_forward(qkv, key_mask, heads)[0]
