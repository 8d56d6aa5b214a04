"""A whole token transformer in one pass of a C++ kernel, for CPU inference.

The heads' view and semantic transformers run their blocks on sets of 9 tokens of 32 channels:
products with K = 32, which MKL runs at 40-60 % of its dense rate on this project's CPU, and an
attention over 9 keys, which compiled code runs as separate loops that each read and write all
tokens. ``csrc/token_transformer.cpp`` instead takes 16 sets at a time (one vector of 16 float32
lanes per token channel), runs every block on them while they sit in the first-level cache,
and writes them back once. On one thread of this project's CPU, 4096 sets of 9 tokens through
the tiny model's two blocks took 16.5 ms against 28-32 ms compiled and 45-58 ms eager
(benchmarks/README.md has the frame figures).

The numbers are the blocks' (:class:`gsnerf.model.transformer.MaskedAttentionBlock`) up to
float32 rounding: the same products and LayerNorms, the softmax's exponential from a polynomial
with about 1e-7 relative error. Sets are split among ``torch.get_num_threads()`` of torch's own
OpenMP threads (``csrc/parallel.h``).

Conditions (:func:`cpu_transformer_applies`): ``fused_transformer.enabled`` (``eval.
fused_transformer``, the benchmark's ``fused_transformer``: one kernel per transformer, Triton
on CUDA, this one on a CPU), a float32 CPU tensor, no gradient wanted, 1 to ``MAX_TOKENS``
tokens per set, widths of at most ``MAX_WIDTH``, and a library built for the shape
(:mod:`gsnerf.model.native_library`; without a C++ compiler, a warning and the PyTorch blocks).
Eager and compiled code call it as the operator ``gsnerf::cpu_token_transformer``. In the heads'
inference the view and semantic transformers run inside a larger kernel with the same blocks
(``csrc/token_blocks.h``), which also embeds the tokens and reads them
(:mod:`gsnerf.model.cpu_token_heads`); this one runs the ray transformer.
"""

import ctypes
import functools
import logging

import torch
from einops import rearrange
from jaxtyping import Bool, Float
from torch import Tensor, nn

from gsnerf.model import fused_transformer
from gsnerf.model.native_library import NativeBuildError, load_native_library

log = logging.getLogger(__name__)

SOURCE = "token_transformer.cpp"
# Sets per vector in the kernel (its LANES): thread ranges start at multiples of it.
LANES = 16
# Longest sets and widest tokens or feed-forward layers: the kernel keeps a few (width, tokens)
# tiles of vectors on its stack, 32 KB each at 32 channels and 16 tokens.
MAX_TOKENS = 16
MAX_WIDTH = 64


@functools.lru_cache(maxsize=None)
def _kernel(width: int, heads: int, ffn_width: int, tokens: int) -> ctypes._CFuncPtr:
    library = load_native_library(
        SOURCE, {"WIDTH": width, "HEADS": heads, "FFN": ffn_width, "TOKENS": tokens}
    )
    function = library.token_transformer
    pointer, count = ctypes.c_void_p, ctypes.c_int64
    # out, in, keep, sets, threads, weights, blocks, eps (the C++ signature).
    function.argtypes = [pointer] * 3 + [count] * 2 + [pointer, ctypes.c_int, ctypes.c_float]
    function.restype = None
    return function


@functools.lru_cache(maxsize=None)
def _builds(width: int, heads: int, ffn_width: int, tokens: int) -> bool:
    """Tried once per shape: a failed build is neither repeated on every call nor warned about
    more than once."""
    try:
        _kernel(width, heads, ffn_width, tokens)
    except (NativeBuildError, OSError) as error:
        log.warning("CPU transformer kernel unavailable, using PyTorch blocks: %s", error)
        return False
    return True


@torch.compiler.assume_constant_result
def kernel_available(width: int, heads: int, ffn_width: int, tokens: int) -> bool:
    """Whether the kernel for this shape builds (a warning if it does not).

    A constant to ``torch.compile``: it runs while tracing, not inside the compiled graph
    (a cached function of its own, which the compiler would trace into).
    """
    return _builds(width, heads, ffn_width, tokens)


@torch.library.custom_op("gsnerf::cpu_token_transformer", mutates_args=())
def cpu_token_transformer(
    columns: Tensor,
    keep: Tensor | None,
    weights: Tensor,
    blocks: int,
    heads: int,
    ffn_width: int,
    eps: float,
) -> Tensor:
    """The kernel on channel-major tokens ``(c, t, n)``; ``keep`` ``(t, n)`` 1.0 where a key is
    attended, 0.0 where not (None: all); ``weights`` from :func:`packed_weights`."""
    width, tokens, sets = columns.shape
    kernel = _kernel(width, heads, ffn_width, tokens)
    columns = columns.contiguous()
    keep = None if keep is None else keep.contiguous()
    out = columns.new_empty(columns.shape)
    keep_pointer = None if keep is None else keep.data_ptr()
    arguments = (weights.data_ptr(), blocks, eps)
    threads = torch.get_num_threads()
    kernel(out.data_ptr(), columns.data_ptr(), keep_pointer, sets, threads, *arguments)
    return out


@cpu_token_transformer.register_fake
def _cpu_token_transformer_shape(columns: Tensor, *_: object) -> Tensor:
    return columns.new_empty(columns.shape)


def packed_weights(blocks: nn.ModuleList) -> Float[Tensor, " floats"]:
    """Every block's parameters in the kernel's order (its ``struct Block``), one flat tensor."""
    parts = []
    for block in blocks:
        first, second = block.ffn[0], block.ffn[2]
        parts += [block.qkv.weight, block.out.weight]
        parts += [block.attention_norm.weight, block.attention_norm.bias]
        parts += [first.weight, first.bias, second.weight, second.bias]
        parts += [block.ffn_norm.weight, block.ffn_norm.bias]
    return torch.cat([part.detach().reshape(-1).float() for part in parts])


def blocks_fit(blocks: nn.ModuleList, tokens: int) -> bool:
    """Blocks the kernel computes exactly: plain ReLU feed-forward layers, one epsilon."""
    if not len(blocks) or not 1 <= tokens <= MAX_TOKENS:
        return False
    first = blocks[0]
    norms = [norm for block in blocks for norm in (block.attention_norm, block.ffn_norm)]
    return (
        all(isinstance(block.ffn[1], nn.ReLU) and len(block.ffn) == 3 for block in blocks)
        and len({norm.eps for norm in norms}) == 1
        and first.qkv.in_features <= MAX_WIDTH
        and first.ffn[0].out_features <= MAX_WIDTH
    )


def cpu_transformer_applies(blocks: nn.ModuleList, tokens: Tensor) -> bool:
    """Whether :func:`cpu_transformer` runs these blocks on ``tokens`` (module doc)."""
    if not (
        fused_transformer.enabled
        and tokens.device.type == "cpu"
        and tokens.dtype == torch.float32
        and not torch.is_grad_enabled()
        and blocks_fit(blocks, tokens.shape[1])
    ):
        return False
    first = blocks[0]
    return kernel_available(
        first.qkv.in_features, first.heads, first.ffn[0].out_features, tokens.shape[1]
    )


def cpu_transformer(
    blocks: nn.ModuleList, tokens: Float[Tensor, "n t c"], key_mask: Bool[Tensor, "n t"] | None
) -> Float[Tensor, "n t c"]:
    """The blocks on ``tokens`` in the kernel; the numbers of running them one by one."""
    first = blocks[0]
    # Made contiguous here, not in the operator: compiled code then writes these layouts
    # directly from the kernels that produce the tokens and the mask.
    keep = None if key_mask is None else key_mask.t().to(tokens.dtype).contiguous()
    columns = cpu_token_transformer(
        rearrange(tokens, "n t c -> c t n").contiguous(),
        keep,
        packed_weights(blocks),
        len(blocks),
        first.heads,
        first.ffn[0].out_features,
        first.attention_norm.eps,
    )
    return rearrange(columns, "c t n -> n t c")
