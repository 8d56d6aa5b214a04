"""Masked self-attention over a small set of tokens: the views of a sample, or the samples of a ray.

Each block is the reference's "EncoderLayer" (spec 2.6): multi-head attention with bias-free
projections and scaled dot products, masked over the *keys*, then a residual and LayerNorm, then
a ReLU feed-forward layer, a residual and LayerNorm (post-norm, no dropout). A key whose mask is
False gets no attention from any query, so its token cannot change any other token; every row of
the mask needs at least one True key, or that row's softmax is undefined.

The attention itself has two formulations with the same result: eager code calls
``F.scaled_dot_product_attention``; code traced by ``torch.compile`` uses
:func:`broadcast_attention`, products and sums that the compiler fuses into one loop nest. The
sets are tiny (9 tokens of 8 channels per head), so the library kernel spends its time on
per-set overhead: on a CPU, compiled broadcast attention over 3840 sets of 9 tokens took 15 ms
against 32 ms for the kernel (one thread; the kernel is the faster of the two in eager code).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Bool, Float
from torch import Tensor, nn


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


def broadcast_attention(
    query: Float[Tensor, "n h t c"],
    key: Float[Tensor, "n h t c"],
    value: Float[Tensor, "n h t c"],
    key_mask: Bool[Tensor, "n t"] | None,
) -> Float[Tensor, "n h t c"]:
    """``softmax(q k^T / sqrt(c), masked over keys) v`` as broadcast products and sums.

    The same numbers as ``F.scaled_dot_product_attention`` with ``attn_mask`` = the key mask,
    in a form ``torch.compile`` fuses (module doc). The sum over the t keys is unrolled into t
    element-wise terms: as a reduction over so few elements the compiler's CPU code
    parallelised its innermost loop and, with two threads, spent ten times the single-thread
    time synchronising; unrolled, both thread counts run at full speed. (Unrolling the sum over
    the channels too was slower on one thread.) Only compiled code calls it: in eager code every
    term is a separate pass over memory.
    """
    channels, tokens = query.shape[-1], key.shape[-2]
    scores = (query[:, :, :, None, :] * key[:, :, None, :, :]).sum(dim=-1) * channels**-0.5
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], -torch.inf)
    weights = scores.softmax(dim=-1)
    attended = weights[..., 0, None] * value[:, :, None, 0]
    for token in range(1, tokens):
        attended = attended + weights[..., token, None] * value[:, :, None, token]
    return attended


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
        query, key, value = rearrange(
            self.qkv(tokens), "n t (three h c) -> three n h t c", three=3, h=self.heads
        )
        if torch.compiler.is_compiling():
            attended = broadcast_attention(query, key, value, key_mask)
        else:
            mask = None if key_mask is None else key_mask[:, None, None, :]
            attended = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        tokens = self.attention_norm(tokens + self.out(rearrange(attended, "n h t c -> n t (h c)")))
        return self.ffn_norm(tokens + self.ffn(tokens))


class TokenTransformer(nn.Module):
    """``cfg.layers`` masked attention blocks sharing one key mask (one True key per row)."""

    def __init__(self, cfg: TransformerCfg) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MaskedAttentionBlock(cfg) for _ in range(cfg.layers))

    def forward(
        self, tokens: Float[Tensor, "n t c"], key_mask: Bool[Tensor, "n t"] | None = None
    ) -> Float[Tensor, "n t c"]:
        for block in self.blocks:
            tokens = block(tokens, key_mask)
        return tokens


def mlp(widths: list[int]) -> nn.Sequential:
    """Linear layers through ``widths`` with ELU between them and no output activation."""
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        if index > 0:
            layers.append(nn.ELU())
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
