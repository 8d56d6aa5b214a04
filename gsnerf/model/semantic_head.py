"""Semantic branch of the renderer: view tokens + semantic global token -> class logits (spec 2.7).

Per sample, V semantic view tokens ``ELU(Linear([patch features, in_frustum, visible]))`` and one
semantic global token from the mean and variance over the attended views of the patch features
go through their own masked transformer. An MLP reads the tokens chosen by ``tokens`` and gives
class logits per sample; the renderer then volume-renders them with the colour weights (the
paper), or reads the logits of the guide sample only (``rendering = guide_point``, the reference,
spec 2.7, 7.15).

Differences from the reference, on purpose:
- the head reads the global token and the *mean* of the attended view tokens instead of the
  flattened 9 x 32 tokens: flattening ties the weights to a fixed view count and slot order,
  while the source order is random (spec 1.6);
- no ReLU on the logits (spec 7.15): cross-entropy and argmax need the negative side too.
"""

from dataclasses import dataclass, field
from enum import Enum

import torch
from einops import rearrange
from jaxtyping import Bool, Float
from torch import Tensor, nn

from gsnerf.model import fused_semantic_logits
from gsnerf.model.cpu_token_heads import cpu_semantic_applies, cpu_semantic_logits
from gsnerf.model.transformer import ELU, TokenTransformer, TransformerCfg, masked_moments, mlp


class SemanticTokens(str, Enum):
    """Which transformed tokens the semantic MLP reads (spec 2.7 variants)."""

    # The semantic global token and the mean of the attended view tokens (the paper's default).
    VIEWS_AND_GLOBAL = "views_and_global"
    # The view tokens only; no global token enters the transformer.
    VIEWS = "views"
    # The global token only, after attending to the view tokens.
    GLOBAL_ONLY = "global_only"


class SemanticRendering(str, Enum):
    """How a ray's class logits come from its samples."""

    # Logits of every sample, alpha-composited with the colour weights (the paper).
    VOLUME = "volume"
    # Logits of the sample at the guide depth D_T only (the reference code, spec 2.7, 7.15).
    GUIDE_POINT = "guide_point"


@dataclass
class SemanticHeadCfg:
    # Semantic transformer, separate weights from the geometry one (spec 2.7: d 32, 4 layers).
    transformer: TransformerCfg = field(default_factory=TransformerCfg)
    # Tokens read by the class MLP: "views_and_global", "views" or "global_only" (spec 2.7).
    tokens: str = SemanticTokens.VIEWS_AND_GLOBAL.value
    # Ray logits: "volume" (composited per-sample logits) or "guide_point" (spec 2.7, 7.15).
    rendering: str = SemanticRendering.VOLUME.value
    # Hidden widths of the class MLP (spec 2.7: 288, 144 on the flattened tokens).
    hidden: list[int] = field(default_factory=lambda: [64, 64])

    def __post_init__(self) -> None:
        for name, choices in (("tokens", SemanticTokens), ("rendering", SemanticRendering)):
            value = getattr(self, name)
            if value not in {choice.value for choice in choices}:
                raise ValueError(
                    f"SemanticHeadCfg.{name}: unknown value {value!r}, expected one of "
                    f"{[choice.value for choice in choices]}"
                )


class SemanticHead(nn.Module):
    """Gathered semantic features of samples -> class logits per sample (module doc)."""

    def __init__(self, cfg: SemanticHeadCfg, feature_channels: int, num_classes: int) -> None:
        super().__init__()
        self.tokens = SemanticTokens(cfg.tokens)
        width = cfg.transformer.width
        self.view_embed = nn.Sequential(nn.Linear(feature_channels + 2, width), ELU())
        if self.tokens is not SemanticTokens.VIEWS:
            self.global_embed = nn.Sequential(
                nn.Linear(2 * feature_channels, width), ELU(), nn.Linear(width, width), ELU()
            )
        self.transformer = TokenTransformer(cfg.transformer)
        read_width = 2 * width if self.tokens is SemanticTokens.VIEWS_AND_GLOBAL else width
        self.classifier = mlp([read_width, *cfg.hidden, num_classes])

    def forward(
        self,
        features: Float[Tensor, "b rays samples v c_patch"],
        in_frustum: Bool[Tensor, "b rays samples v"],
        visible: Bool[Tensor, "b rays samples v"],
        view_mask: Bool[Tensor, "b rays samples v"],
    ) -> Float[Tensor, "b rays samples classes"]:
        if cpu_semantic_applies(self, features):
            # The same numbers from one kernel on a CPU in inference (its module doc).
            return cpu_semantic_logits(self, features, in_frustum, visible, view_mask)
        if fused_semantic_logits.fused_semantic_logits_applies(self, features):
            # The same from one Triton kernel on CUDA in inference (its module doc).
            return fused_semantic_logits.fused_semantic_logits(
                self, features, in_frustum, visible, view_mask
            )
        batch, rays = view_mask.shape[:2]
        flags = torch.stack([in_frustum, visible], dim=-1).to(features.dtype)
        view_tokens = rearrange(
            self.view_embed(torch.cat([features, flags], dim=-1)), "b r s v c -> (b r s) v c"
        )
        flat_mask = rearrange(view_mask, "b r s v -> (b r s) v")
        if self.tokens is SemanticTokens.VIEWS:
            tokens = self.transformer(view_tokens, flat_mask)
            view_out, global_out = tokens, None
        else:
            flat_features = rearrange(features, "b r s v c -> (b r s) v c")
            global_token = self.global_embed(masked_moments(flat_features, flat_mask))
            tokens = torch.cat([global_token[:, None], view_tokens], dim=1)
            key_mask = torch.cat([torch.ones_like(flat_mask[:, :1]), flat_mask], dim=1)
            tokens = self.transformer(tokens, key_mask)
            view_out, global_out = tokens[:, 1:], tokens[:, 0]

        if self.tokens is SemanticTokens.GLOBAL_ONLY:
            read = global_out
        else:
            weights = flat_mask.to(view_out.dtype)[..., None]
            view_mean = (weights * view_out).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
            read = view_mean if global_out is None else torch.cat([global_out, view_mean], dim=-1)
        logits = self.classifier(read)
        return rearrange(logits, "(b r s) k -> b r s k", b=batch, r=rays)
