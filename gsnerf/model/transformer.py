"""Masked self-attention over a small set of tokens: the views of a sample, or the samples of a ray.

Each block is the reference's "EncoderLayer" (spec 2.6): multi-head attention with bias-free
projections and scaled dot products, masked over the *keys*, then a residual and LayerNorm, then
a ReLU feed-forward layer, a residual and LayerNorm (post-norm, no dropout). A key whose mask is
False gets no attention from any query, so its token cannot change any other token; every row of
the mask needs at least one True key, or that row's softmax is undefined.

Blocks have two formulations with the same result. The sets-first one keeps the tokens as
``(n, t, c)`` and calls ``F.scaled_dot_product_attention``. The *token-major* one keeps them as
rows ``(t n, c)`` (all sets' first tokens, then all second tokens, ...) and writes the attention
as products and sums over an ``(h, c, t, n)`` layout (:func:`sets_last_attention`). The sets are
tiny (9 tokens of 8 channels per head): the library kernel spends its time on per-set overhead,
and a loop with the channels or tokens innermost runs on vectors of 8 or 9 lanes. With the n
sets innermost every step is one full-width vector operation over many sets, and the query, key
and value come out of one matrix product already in that layout (``W (rows)^T``), so no
transpose is needed between layers.

Which one runs (:func:`runs_token_major`): token-major in code traced by ``torch.compile``,
which fuses it into one loop nest, and in eager inference for sets of at most
``EAGER_TOKEN_MAJOR_MAX_TOKENS`` tokens; the library kernel otherwise (training, long rays),
or on a CPU, where it applies, a C++ kernel of the sets-first attention with gradients
(:mod:`gsnerf.model.cpu_set_attention`, five times the library's speed in training).
Measured on a CPU, one thread, 36864 tokens: eager inference took 9.4 ms token-major against
32 ms with the library kernel for sets of 9 tokens (11 vs 23 ms for 4, 21 vs 42 ms for 14), but
18 vs 10 ms for 16 and 100 vs 23 ms for 64; forward and backward took as long either way for 9
tokens and grew to 1.3 s against 81 ms for 64, as autograd keeps every unrolled term. Compiled,
the attention took 3.4 ms per block for 3840 sets of 9 tokens. On an H200 the CUDA kernels fare
worse still on such sets (the memory-efficient one works in 64x64 tiles): the 4-block paper
transformer on a frame's 307200 sets of 9 tokens took 176 ms with the library kernel
(memory-efficient attention) against 68 ms token-major in fp32, 292 against 70 ms in bf16
(cuDNN attention), and 25 ms (fp32) or 20 ms (bf16) compiled. Training on CUDA calls the
library with its plain math backend for such short sets (:func:`math_attention_only`).
Where the fused-transformer switch is on, inference runs whole transformers in one kernel
instead: Triton on CUDA (:mod:`gsnerf.model.fused_transformer`), C++ on a CPU
(:mod:`gsnerf.model.cpu_transformer`, 2-4 times the compiled token-major blocks' speed).
"""

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Bool, Float
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from gsnerf.model import fused_blocks, fused_transformer
from gsnerf.model.attention_kernel import fused_attention_applies, fused_sets_last_attention
from gsnerf.model.cpu_set_attention import cpu_set_attention, cpu_set_attention_applies
from gsnerf.model.cpu_transformer import cpu_transformer, cpu_transformer_applies


@dataclass
class TransformerCfg:
    # Token width d (spec 2.6: 32).
    width: int = 32
    # Attention heads; must divide width (spec 2.6: 4, so 8 channels per head).
    heads: int = 4
    # Stacked blocks (spec 2.6, 2.7: 4 for the geometry and 4 for the semantic transformer).
    layers: int = 4
    # Hidden width of each block's feed-forward layer (spec 2.6: 32).
    ffn_width: int = 32
    # LayerNorm epsilon (spec 2.6: 1e-6).
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(
                f"TransformerCfg: heads ({self.heads}) must divide width ({self.width})"
            )
        if self.layers < 0:
            raise ValueError(f"TransformerCfg.layers must be >= 0, got {self.layers}")


@torch.library.custom_op("gsnerf::key_bias", mutates_args=())
def key_bias(key_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """``(t, n)`` additive attention bias of an ``(n, t)`` key mask: 0 attended, -inf not.

    An operator of its own, so that compiled code computes it once per transformer and its
    blocks read the result: left to the compiler, the bias was recomputed inside every block's
    score loop from the transposed boolean mask, which made the attention of the view
    transformer take twice as long (6.5 against 3.4 ms per block, 3840 sets, one CPU thread).
    """
    bias = torch.zeros(key_mask.t().shape, dtype=dtype, device=key_mask.device)
    return bias.masked_fill(~key_mask.t(), -torch.inf)


@key_bias.register_fake
def _key_bias_shape(key_mask: Tensor, dtype: torch.dtype) -> Tensor:
    return key_mask.new_empty(key_mask.t().shape, dtype=dtype)


def _scaled_scores(
    query: Float[Tensor, "h c t n"], key: Float[Tensor, "h c t n"], factor: float
) -> Float[Tensor, "h t t n"]:
    """``factor q . k / sqrt(c)`` of every query and key token of every set and head."""
    scale = query.shape[1] ** -0.5 * factor
    if torch.compiler.is_compiling():
        # A reduction over the channels, which the compiler fuses into one loop.
        return (query[:, :, :, None] * key[:, :, None]).sum(dim=1) * scale
    # Eager code materialises what it computes: c passes over (h, t, t, n) instead of one
    # (h, c, t, t, n) product eight times larger.
    query = query * scale
    scores = query[:, 0, :, None] * key[:, 0, None]
    for channel in range(1, query.shape[1]):
        scores = scores.addcmul(query[:, channel, :, None], key[:, channel, None])
    return scores


def sets_last_attention(
    query: Float[Tensor, "h c t n"],
    key: Float[Tensor, "h c t n"],
    value: Float[Tensor, "h c t n"],
    bias: Float[Tensor, "t n"] | None,
) -> Float[Tensor, "h c t n"]:
    """``softmax(q k^T / sqrt(c) + bias) v`` per head and set, sets innermost.

    ``bias`` from :func:`key_bias` (or None: every key attended). The numbers of
    ``F.scaled_dot_product_attention`` with the key mask on the same tokens, in the layout of
    the token-major blocks (module doc). The sum over the t keys is unrolled into t element-wise
    terms: as a reduction over so few elements, the compiler's CPU code parallelised it and,
    with two threads, spent ten times the single-thread time synchronising; in eager code each
    term is one pass over ``(h, c, t, n)``. The exponentials are normalised once per output
    instead of once per term (one division where the softmax needs t). On CUDA, without
    gradients and once enabled (``eval.fused_attention``), one fused Triton kernel computes the
    same numbers (:mod:`gsnerf.model.attention_kernel`).
    """
    if fused_attention_applies(query):
        return fused_sets_last_attention(query, key, value, bias)
    tokens = key.shape[2]
    # Eager code takes the exponentials in base 2 on scores scaled by log2(e), the same
    # numbers: torch's exp2 took a third of the time of its exp on a CPU (0.37 against 1.1 ms
    # for the 1.3 million scores of 4096 sets). Compiled code keeps exp, whose generated
    # kernel is the faster one (a frame took 376 ms with exp2 against 330 ms with exp).
    base_2 = not torch.compiler.is_compiling()
    scores = _scaled_scores(query, key, math.log2(math.e) if base_2 else 1.0)
    if bias is not None:
        scores = scores + bias[None, None]
    # exp(s - max s): the softmax's numerators, at most 1, so their sums cannot overflow.
    shifted = scores - scores.amax(dim=2, keepdim=True)
    numerators = shifted.exp2() if base_2 else shifted.exp()
    attended = numerators[:, None, :, 0] * value[:, :, None, 0]
    for token in range(1, tokens):
        attended = attended.addcmul(numerators[:, None, :, token], value[:, :, None, token])
    return attended / numerators.sum(dim=2)[:, None]


class MaskedAttentionBlock(nn.Module):
    """Post-norm self-attention + feed-forward block with a key mask (module doc)."""

    def __init__(self, cfg: TransformerCfg) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width, bias=False)
        self.out = nn.Linear(cfg.width, cfg.width, bias=False)
        self.attention_norm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.width, cfg.ffn_width), nn.ReLU(), nn.Linear(cfg.ffn_width, cfg.width)
        )
        self.ffn_norm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)

    def forward(
        self, tokens: Float[Tensor, "n t c"], key_mask: Bool[Tensor, "n t"] | None = None
    ) -> Float[Tensor, "n t c"]:
        qkv = self.qkv(tokens)
        if cpu_set_attention_applies(qkv, self.heads):
            attended = cpu_set_attention(qkv, key_mask, self.heads)
        else:
            query, key, value = rearrange(
                qkv, "n t (three h c) -> three n h t c", three=3, h=self.heads
            )
            mask = None if key_mask is None else key_mask[:, None, None, :]
            only_math = math_attention_only(tokens.device, tokens.shape[1])
            with sdpa_kernel(SDPBackend.MATH) if only_math else contextlib.nullcontext():
                attended = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
            attended = rearrange(attended, "n h t c -> n t (h c)")
        tokens = self.attention_norm(tokens + self.out(attended))
        return self.ffn_norm(tokens + self.ffn(tokens))

    def forward_token_major(
        self, rows: Float[Tensor, "tn c"], bias: Float[Tensor, "t n"] | None, tokens: int
    ) -> Float[Tensor, "tn c"]:
        """The block on token-major rows (module doc); the same numbers as :meth:`forward`.

        ``bias``: :func:`key_bias` of the key mask, or None for no mask.
        """
        # (W rows^T) puts the n sets innermost: (3 h c, t n), split without copying.
        query, key, value = rearrange(
            torch.mm(self.qkv.weight, rows.t()),
            "(three h c) (t n) -> three h c t n",
            three=3,
            h=self.heads,
            t=tokens,
        )
        attended = sets_last_attention(query, key, value, bias)
        # (h c, t n)^T is the (t n, h c) input of the output projection, as a transposed view.
        projected = torch.mm(rearrange(attended, "h c t n -> (h c) (t n)").t(), self.out.weight.t())
        rows = self.attention_norm(rows + projected)
        return self.ffn_norm(rows + self.ffn(rows))


# Longest sets that eager inference runs token-major (module doc).
EAGER_TOKEN_MAJOR_MAX_TOKENS = 15


def math_attention_only(device: torch.device, tokens: int) -> bool:
    """Whether the library attention must use its plain math backend (sets of ``tokens``).

    CUDA's fused kernels lose on short sets (the memory-efficient one works in 64x64 tiles): on
    sets of 9 tokens it took 2.3 times and cuDNN's 3.7 times as long as the math backend
    (H200, 307200 sets, fp32 and bf16), and cuDNN's backward pass failed on them (torch 2.11,
    bf16 training). Longer sets and CPUs keep the library's choice.
    """
    return device.type == "cuda" and tokens <= EAGER_TOKEN_MAJOR_MAX_TOKENS


def runs_token_major(tokens: Float[Tensor, "n t c"]) -> bool:
    """Whether a transformer takes the token-major formulation for these tokens (module doc)."""
    if torch.compiler.is_compiling():
        return True
    return not torch.is_grad_enabled() and tokens.shape[1] <= EAGER_TOKEN_MAJOR_MAX_TOKENS


class TokenTransformer(nn.Module):
    """``cfg.layers`` masked attention blocks sharing one key mask (one True key per row)."""

    def __init__(self, cfg: TransformerCfg) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MaskedAttentionBlock(cfg) for _ in range(cfg.layers))

    def forward(
        self, tokens: Float[Tensor, "n t c"], key_mask: Bool[Tensor, "n t"] | None = None
    ) -> Float[Tensor, "n t c"]:
        if fused_transformer.fused_transformer_applies(self.blocks, tokens):
            dtype = fused_blocks.compute_dtype(tokens)
            return fused_transformer.fused_transformer(self.blocks, tokens, key_mask, dtype)
        if cpu_transformer_applies(self.blocks, tokens):
            return cpu_transformer(self.blocks, tokens, key_mask)
        if fused_blocks.fused_blocks_apply(self.blocks, tokens):
            dtype = fused_blocks.compute_dtype(tokens)
            bias = None if key_mask is None else key_bias(key_mask, dtype)
            return fused_blocks.fused_token_major_blocks(self.blocks, tokens, bias)
        if runs_token_major(tokens):
            count = tokens.shape[1]
            rows = rearrange(tokens, "n t c -> (t n) c")
            bias = None if key_mask is None else key_bias(key_mask, rows.dtype)
            for block in self.blocks:
                rows = block.forward_token_major(rows, bias, count)
            return rearrange(rows, "(t n) c -> n t c", t=count)
        for block in self.blocks:
            tokens = block(tokens, key_mask)
        return tokens


class ELU(nn.Module):
    """``nn.ELU()`` (alpha 1) whose compiled CPU code computes ``exp(x) - 1``, not ``expm1``.

    The same function up to float32 rounding (at most 6e-8 apart). torch's CPU ``expm1`` runs
    one value at a time: 8.4 ms per million float32 values against 0.8 ms for ``exp`` (one
    thread of this project's CPU, eager or compiled). The library's eager ELU skips it for
    vectors without a negative input, but compiled code computes it for every value; with
    ``exp`` a compiled cached frame of the tiny model took 317 instead of 328 ms (trained
    weights; 333 against 344 ms with random ones). Eager code, and CUDA, keep the library's
    ELU: eagerly the four passes below took longer than its one (651 against 619 ms).
    """

    def forward(self, values: Tensor) -> Tensor:
        if torch.compiler.is_compiling() and values.device.type == "cpu":
            # In float32: in bf16, exp(x) - 1 would lose every small negative x to exp(x) = 1.
            wide = values.float()
            positive = wide > 0
            # exp of 0 where x > 0: the branch where() discards cannot overflow, so its gradient
            # cannot turn into inf * 0 = NaN; at x = 0 the gradient is exp(0) = 1, as ELU's.
            negative = torch.where(positive, torch.zeros_like(wide), wide)
            return torch.where(positive, wide, torch.exp(negative) - 1).to(values.dtype)
        return F.elu(values)


def mlp(widths: list[int]) -> nn.Sequential:
    """Linear layers through ``widths`` with ELU between them and no output activation.

    PyTorch's default initialisation: weights and biases uniform in +-1/sqrt(fan_in) (the
    reference sets each bias to the constant 1/sqrt(fan_in), spec 2.6)."""
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        if index > 0:
            layers.append(ELU())
        layers.append(nn.Linear(fan_in, fan_out))
    return nn.Sequential(*layers)


def masked_moments(
    values: Float[Tensor, "n v c"], mask: Bool[Tensor, "n v"]
) -> Float[Tensor, "n 2*c"]:
    """``[mean, variance]`` over the views of ``mask``, population variance (spec 2.6, 2.7).

    The reference takes both over all views, so a view that cannot see the sample still moves
    the global token; here only the views the tokens attend to count (at least one per row).
    Example: values (1, 3, 100), mask (1, 1, 0) -> mean 2, variance 1.
    """
    weights = mask.to(values.dtype)[..., None]
    count = weights.sum(dim=1).clamp_min(1.0)
    mean = (weights * values).sum(dim=1) / count
    variance = (weights * (values - mean[:, None]) ** 2).sum(dim=1) / count
    return torch.cat([mean, variance], dim=-1)
