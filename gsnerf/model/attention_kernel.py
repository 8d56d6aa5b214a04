"""Fused CUDA kernel (Triton) for the attention of the token-major blocks, sets innermost.

:func:`gsnerf.model.transformer.sets_last_attention` written as one kernel: each program takes
``BLOCK`` sets of one head, holds their keys and values ``(t, c, BLOCK)`` in registers, and
for every query token computes the scores, the masked softmax and the weighted sum of the
values without writing anything but the result. Inductor's code for the same attention wrote
the ``(h, t, t, n)`` scores and their exponentials to memory in separate kernels: on an H100
those kernels were the largest entries of a compiled bf16 frame after the 3-D convolutions
(15 ms for the scores, 7 ms for the exponentials, 5 ms for their maxima, per 320x240 frame).

Token and channel counts are padded to powers of two inside the kernel (Triton's block shapes);
the padded keys get ``-inf`` scores, so they take no weight. Every set needs one attended key
(the key bias is 0 there), as for the library kernel. Inputs and output are ``(h, c, t, n)``
contiguous, in float32, bfloat16 or float16; the sums run in float32.

Inference only: the operator has no backward. :func:`fused_attention_applies` says when the
transformer uses it (a CUDA tensor, Triton importable, no gradient wanted, sets of at most
``MAX_TOKENS`` tokens); ``enabled`` turns it off, for comparisons (the benchmark's
``fused_attention=false``).
"""

import math

import torch
from jaxtyping import Float
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # A CPU-only torch comes without Triton; the kernel is then never used.
    triton = None

# Sets per program, and warps per program: 64 sets x 16 tokens x 8 channels of keys and of
# values are 64 registers each per thread with 4 warps.
BLOCK_SETS = 64
NUM_WARPS = 4

# Longest sets the kernel takes: it holds all keys and values of a program's sets in
# registers, which longer sets (the ray transformer at N = 128) would spill to memory.
MAX_TOKENS = 16

# False: the token-major blocks keep their plain formulation on CUDA too.
enabled = True


if triton is not None:

    @triton.jit
    def _attention_kernel(
        query_ptr,
        key_ptr,
        value_ptr,
        bias_ptr,
        out_ptr,
        sets,
        scale,
        HAS_BIAS: tl.constexpr,
        TOKENS: tl.constexpr,
        TOKENS_POW2: tl.constexpr,
        CHANNELS: tl.constexpr,
        CHANNELS_POW2: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        block = tl.program_id(0)
        head = tl.program_id(1)
        set_index = block * BLOCK + tl.arange(0, BLOCK)
        token = tl.arange(0, TOKENS_POW2)
        channel = tl.arange(0, CHANNELS_POW2)
        in_sets = set_index < sets
        # (h, c, t, n) contiguous: element (head, c, t, n) at ((head C + c) T + t) sets + n.
        head_start = head * CHANNELS * TOKENS * sets
        channel_offset = channel * TOKENS * sets
        key_offsets = (
            head_start
            + token[:, None, None] * sets
            + channel_offset[None, :, None]
            + set_index[None, None, :]
        )
        key_mask = (
            (token[:, None, None] < TOKENS)
            & (channel[None, :, None] < CHANNELS)
            & in_sets[None, None, :]
        )
        keys = tl.load(key_ptr + key_offsets, mask=key_mask, other=0.0).to(tl.float32)
        values = tl.load(value_ptr + key_offsets, mask=key_mask, other=0.0).to(tl.float32)
        # Additive bias per key, in base 2 like the scores; padded tokens get -inf.
        token_rows = token[:, None] < TOKENS
        if HAS_BIAS:
            bias_mask = token_rows & in_sets[None, :]
            bias_offsets = token[:, None] * sets + set_index[None, :]
            bias = tl.load(bias_ptr + bias_offsets, mask=bias_mask, other=0.0).to(tl.float32)
            bias = bias * 1.4426950408889634
        else:
            bias = tl.zeros((TOKENS_POW2, BLOCK), dtype=tl.float32)
        bias = tl.where(token_rows, bias, float("-inf"))
        query_mask = (channel[:, None] < CHANNELS) & in_sets[None, :]
        for query_token in range(TOKENS):
            offsets = head_start + query_token * sets + channel_offset[:, None] + set_index[None, :]
            query = tl.load(query_ptr + offsets, mask=query_mask, other=0.0).to(tl.float32)
            # scale already holds log2(e) / sqrt(c): exp2 of these scores is exp of the true ones.
            scores = tl.sum(query[None, :, :] * keys, axis=1) * scale + bias
            numerators = tl.exp2(scores - tl.max(scores, axis=0)[None, :])
            attended = tl.sum(numerators[:, None, :] * values, axis=0)
            attended = attended / tl.sum(numerators, axis=0)[None, :]
            tl.store(out_ptr + offsets, attended.to(out_ptr.dtype.element_ty), mask=query_mask)


def _next_power_of_two(value: int) -> int:
    return 1 << max(0, value - 1).bit_length()


def launch_attention_kernel(
    launcher: object,
    query: Float[Tensor, "h c t n"],
    key: Float[Tensor, "h c t n"],
    value: Float[Tensor, "h c t n"],
    bias: Float[Tensor, "t n"] | None,
) -> Float[Tensor, "h c t n"]:
    """Run the kernel through ``launcher`` (the kernel, or ``wrap_triton`` of it); the result.

    A separate function so that tests can run it in Triton's interpreter on CPU tensors
    (``TRITON_INTERPRET=1``) with the kernel itself as the launcher.
    """
    heads, channels, tokens, sets = query.shape
    query, key, value = query.contiguous(), key.contiguous(), value.contiguous()
    out = torch.empty_like(query)
    grid = (triton.cdiv(sets, BLOCK_SETS), heads)
    launcher[grid](
        query,
        key,
        value,
        query if bias is None else bias.contiguous(),
        out,
        sets,
        math.log2(math.e) / math.sqrt(channels),
        HAS_BIAS=bias is not None,
        TOKENS=tokens,
        TOKENS_POW2=_next_power_of_two(tokens),
        CHANNELS=channels,
        CHANNELS_POW2=_next_power_of_two(channels),
        BLOCK=BLOCK_SETS,
        num_warps=NUM_WARPS,
    )
    return out


if triton is not None:

    @torch.library.triton_op("gsnerf::fused_sets_last_attention", mutates_args=())
    def fused_sets_last_attention(
        query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None
    ) -> Tensor:
        """The kernel as a torch operator, so that ``torch.compile`` calls it in its graph."""
        return launch_attention_kernel(
            torch.library.wrap_triton(_attention_kernel), query, key, value, bias
        )

else:

    def fused_sets_last_attention(
        query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None
    ) -> Tensor:
        raise RuntimeError("the fused attention kernel needs Triton, which is not installed")


def fused_attention_applies(query: Tensor) -> bool:
    """Whether :func:`fused_sets_last_attention` serves this attention (module doc)."""
    return (
        enabled
        and triton is not None
        and query.is_cuda
        and query.shape[2] <= MAX_TOKENS
        and not (torch.is_grad_enabled() and query.requires_grad)
    )
