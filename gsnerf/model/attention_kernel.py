"""Fused CUDA kernel (Triton) for the attention of the token-major blocks, sets innermost.

:func:`gsnerf.model.transformer.sets_last_attention` written as one kernel. Each program takes
``BLOCK`` sets of one head; for every query token it walks over the key tokens one at a time
with an online softmax (running maximum, running sum, running weighted sum of the values), so
what it holds is one ``(c, BLOCK)`` tile of the query, of the current key and value, and of the
running sum; it writes nothing but the result. The tiles are read along the sets, which lie
contiguous in the ``(h, c, t, n)`` layout, so every load is coalesced; a set's keys and values
are read once per query token, from the cache after the first time.

Inductor's code for the same attention writes the ``(h, t, t, n)`` scores and their
exponentials to memory in separate kernels: on an H100 those kernels took 15 ms (scores),
7 ms (exponentials) and 5 ms (maxima) of a compiled bf16 320x240 frame. An earlier kernel that
held all keys and values of 64 sets as ``(16, 8, 64)`` tiles (tokens padded to 16) took 65 ms
per transformer there (benchmarks/README.md), which is why this one keeps only 2-D tiles and
loops over the tokens without padding them. Both token loops are run-time loops, not unrolled:
unrolled (t^2 = 81 copies of the body for sets of 9), the kernel used all 255 registers and
spilled to local memory (172 bytes stored and 652 loaded per thread, sm_90, bf16, 64 sets per
program), and each variant took about 13 s to compile; as loops it uses 80 registers, spills
nothing and compiles in 0.6 s (``python scripts/kernel_report.py``, which compiles for a GPU
without one). The timings below are of the unrolled kernel.

Inputs and output are ``(h, c, t, n)`` (any strides along h, c and t; n contiguous), in
float32, bfloat16 or float16; the sums run in float32. The key bias is that of
:func:`gsnerf.model.transformer.key_bias` (0 attended, -inf not); every set needs one attended
key, as for the library kernel. Inference only: the operator has no backward.
:func:`fused_attention_applies` says when the transformer uses it (a CUDA tensor, Triton
importable, no gradient wanted, sets of at most ``MAX_TOKENS`` tokens) once ``enabled`` is
set (``eval.fused_attention``, the benchmark's ``fused_attention``).
"""

import math
from collections.abc import Callable
from typing import no_type_check

import torch
from jaxtyping import Float
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # A CPU-only torch comes without Triton; the kernel is then never used.
    triton = None

# Sets per program and warps per program (the defaults of launch_attention_kernel). On an H100,
# bf16, 307200 sets of 9 tokens, 4 heads of 8 channels, with a key mask, one call took 2.63 ms
# with 64 sets and one warp, 2.79 / 2.81 ms with 32 / 128 sets and one warp, 2.95 ms with 64
# and two warps, 4.94 ms with 128 and four, 8.69 ms with 256 and eight: more warps per program
# only add synchronisation (a set's channels may sit in different warps). Inductor's kernels
# for the same attention took 3.40 ms. These are timings of the unrolled kernel, which spilled
# registers in every configuration (module doc); the loop kernel is still to be timed.
BLOCK_SETS = 64
NUM_WARPS = 1

# Longest sets the kernel takes: it reads a set's keys and values once per query token (t^2
# reads per set), so long sets (the ray transformer at N = 128) are left to the library.
MAX_TOKENS = 16

# Off by default: faster than inductor's kernels alone (above), but not yet timed within a
# whole frame. True (eval.fused_attention, the benchmark's fused_attention) makes CUDA inference
# use it.
enabled = False


if triton is not None:
    # no_type_check: jaxtyping's import hook (the test suite's) leaves the kernel alone; a
    # checking wrapper would hide the module's globals (``tl``) from Triton's compiler.
    @triton.jit
    @no_type_check
    def _attention_kernel(
        query_ptr,
        key_ptr,
        value_ptr,
        bias_ptr,
        out_ptr,
        sets,
        head_stride,
        channel_stride,
        token_stride,
        scale,
        HAS_BIAS: tl.constexpr,
        TOKENS: tl.constexpr,
        CHANNELS: tl.constexpr,
        CHANNELS_POW2: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        # torch.compile launches with Python floats typed fp64: float32 once, here.
        scale = tl.cast(scale, tl.float32)
        block = tl.program_id(0)
        head = tl.program_id(1).to(tl.int64)
        set_index = block * BLOCK + tl.arange(0, BLOCK)
        channel = tl.arange(0, CHANNELS_POW2)
        in_sets = set_index < sets
        tile_mask = (channel[:, None] < CHANNELS) & in_sets[None, :]
        # Element (head, c, t, n) of a (h, c, t, n) tensor with n contiguous.
        tile = head * head_stride + channel[:, None] * channel_stride + set_index[None, :]
        out_tile = head * CHANNELS * TOKENS * sets + channel[:, None] * TOKENS * sets
        out_tile = out_tile + set_index[None, :]
        for query_token in range(TOKENS):
            query = tl.load(
                query_ptr + tile + query_token * token_stride, mask=tile_mask, other=0.0
            )
            # scale holds log2(e) / sqrt(c): exp2 of these scores is exp of the true ones.
            query = query.to(tl.float32) * scale
            # A finite start: a first key that is masked out (-inf) must not give inf - inf.
            running_max = tl.full((BLOCK,), -1.0e30, tl.float32)
            running_sum = tl.zeros((BLOCK,), tl.float32)
            attended = tl.zeros((CHANNELS_POW2, BLOCK), tl.float32)
            for key_token in range(TOKENS):
                offsets = tile + key_token * token_stride
                key = tl.load(key_ptr + offsets, mask=tile_mask, other=0.0).to(tl.float32)
                score = tl.sum(query * key, axis=0)
                if HAS_BIAS:
                    bias = tl.load(bias_ptr + key_token * sets + set_index, mask=in_sets, other=0.0)
                    score = score + bias.to(tl.float32) * 1.4426950408889634
                new_max = tl.maximum(running_max, score)
                correction = tl.exp2(running_max - new_max)
                weight = tl.exp2(score - new_max)
                running_sum = running_sum * correction + weight
                value = tl.load(value_ptr + offsets, mask=tile_mask, other=0.0).to(tl.float32)
                attended = attended * correction[None, :] + weight[None, :] * value
                running_max = new_max
            result = attended / running_sum[None, :]
            tl.store(
                out_ptr + out_tile + query_token * sets,
                result.to(out_ptr.dtype.element_ty),
                mask=tile_mask,
            )


def _next_power_of_two(value: int) -> int:
    return 1 << max(0, value - 1).bit_length()


def launch_attention_kernel(
    launcher: object,
    query: Float[Tensor, "h c t n"],
    key: Float[Tensor, "h c t n"],
    value: Float[Tensor, "h c t n"],
    bias: Float[Tensor, "t n"] | None,
    block: int = BLOCK_SETS,
    num_warps: int = NUM_WARPS,
) -> Float[Tensor, "h c t n"]:
    """Run the kernel through ``launcher`` (the kernel, or ``wrap_triton`` of it); the result.

    A separate function so that tests can run it in Triton's interpreter on CPU tensors
    (``TRITON_INTERPRET=1``) with the kernel itself as the launcher. The query, key and value
    share their strides (slices of one ``(3, h, c, t, n)`` product, or contiguous copies).
    """
    heads, channels, tokens, sets = query.shape
    if not (query.stride() == key.stride() == value.stride()) or query.stride(3) != 1:
        query, key, value = query.contiguous(), key.contiguous(), value.contiguous()
    out = torch.empty(query.shape, dtype=query.dtype, device=query.device)
    grid = (triton.cdiv(sets, block), heads)
    launcher[grid](
        query,
        key,
        value,
        query if bias is None else bias.contiguous(),
        out,
        sets,
        query.stride(0),
        query.stride(1),
        query.stride(2),
        math.log2(math.e) / math.sqrt(channels),
        HAS_BIAS=bias is not None,
        TOKENS=tokens,
        CHANNELS=channels,
        CHANNELS_POW2=_next_power_of_two(channels),
        BLOCK=block,
        num_warps=num_warps,
    )
    return out


def as_triton_operator(name: str, function: Callable[..., object]) -> Callable[..., object]:
    """``function`` registered as the torch operator ``gsnerf::<name>`` (``triton_op``).

    ``torch.compile`` then calls it, and the Triton kernels it launches through ``wrap_triton``,
    within its graph. Without Triton: a function that raises (the kernels' conditions, such as
    :func:`fused_attention_applies`, never choose it then).
    """
    if triton is None:

        def unavailable(*args: object, **kwargs: object) -> object:
            raise RuntimeError(f"gsnerf::{name} needs Triton, which is not installed")

        return unavailable
    return torch.library.triton_op(f"gsnerf::{name}", mutates_args=())(function)


def _fused_sets_last_attention(
    query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None
) -> Tensor:
    return launch_attention_kernel(
        torch.library.wrap_triton(_attention_kernel), query, key, value, bias
    )


# The kernel as a torch operator, with launch_attention_kernel's arguments and result.
fused_sets_last_attention = as_triton_operator(
    "fused_sets_last_attention", _fused_sets_last_attention
)


def fused_attention_applies(query: Tensor) -> bool:
    """Whether :func:`fused_sets_last_attention` serves this attention (module doc)."""
    return (
        enabled
        and triton is not None
        and query.is_cuda
        and query.shape[2] <= MAX_TOKENS
        and not (torch.is_grad_enabled() and query.requires_grad)
    )
