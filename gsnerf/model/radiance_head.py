"""Geometry / colour branch of the renderer: density and colour blending per sample (spec 2.6).

Per sample, V view tokens ``ELU(Linear([volume, image, rgb, in_frustum, visible]))`` and one
global token from the mean and variance over the visible views of ``[volume, image, rgb]`` go
through a masked view transformer. Then

- density: the global tokens of a ray, plus an encoding of each sample's position between near
  and far, exchange information along the ray (attention across its samples), and an MLP with a
  softplus gives ``sigma >= 0``. The reference's 1-D conv auto-encoder along the ray needs the
  sample count to be a multiple of 8 (spec 7.14, 9); attention works for any N >= 1;
- colour: an MLP on each view token and the view-angle encoding gives a logit, a softmax over the
  attended views gives blending weights, and the colour is the blend of the source colours.

The source colours also enter the tokens: their variance across views is the photo-consistency
cue of image-based rendering, which the reference only gets through the RGB skip of its features.
Softplus rather than the reference's ReLU: a ray whose pre-activations are all negative would
otherwise get zero density and zero gradient at every sample.
"""

import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Bool, Float
from torch import Tensor, nn

from gsnerf.model import fused_radiance_views
from gsnerf.model.cpu_token_heads import cpu_radiance_applies, cpu_radiance_views
from gsnerf.model.feature_gather import GatheredFeatures
from gsnerf.model.transformer import ELU, TokenTransformer, TransformerCfg, masked_moments, mlp


class RayMixer(str, Enum):
    """How the samples of one ray exchange information before the density MLP."""

    # Self-attention blocks across the samples of the ray, with a position encoding.
    ATTENTION = "attention"
    # None: each sample's density depends on its own tokens only.
    NONE = "none"


@dataclass
class RadianceHeadCfg:
    # View-token transformer of the geometry branch (spec 2.6: d 32, 4 heads, 4 layers).
    transformer: TransformerCfg = field(default_factory=TransformerCfg)
    # Mixing along the ray before the density MLP: "attention" or "none" (module doc; replaces
    # the reference's 1-D conv auto-encoder, spec 2.6, 9).
    ray_mixer: str = RayMixer.ATTENTION.value
    # Attention blocks across the samples of a ray, for ray_mixer = "attention".
    ray_mixer_layers: int = 1
    # Frequencies pi 2^0 .. pi 2^(F-1) of the encoding of a sample's position in [near, far].
    position_frequencies: int = 6
    # Hidden widths of the density MLP (spec 2.6: 32, 16).
    density_hidden: list[int] = field(default_factory=lambda: [32, 16])
    # Hidden widths of the colour-blending MLP (spec 2.6: 32, 16).
    blend_hidden: list[int] = field(default_factory=lambda: [32, 16])

    def __post_init__(self) -> None:
        if self.ray_mixer not in {mixer.value for mixer in RayMixer}:
            raise ValueError(
                f"RadianceHeadCfg.ray_mixer: unknown value {self.ray_mixer!r}, expected one of "
                f"{[mixer.value for mixer in RayMixer]}"
            )
        if self.ray_mixer_layers < 1 or self.position_frequencies < 0:
            raise ValueError(
                "RadianceHeadCfg: ray_mixer_layers must be >= 1 and position_frequencies >= 0"
            )


@dataclass
class RadianceOutput:
    density: Float[Tensor, "b rays samples"]  # sigma >= 0, per metre
    rgb: Float[Tensor, "b rays samples 3"]  # blend of the source colours
    blend_weights: Float[Tensor, "b rays samples v"]  # softmax over the attended views


def position_encoding(
    positions: Float[Tensor, "*batch"], frequencies: int
) -> Float[Tensor, "*batch c"]:
    """``[u, sin(pi 2^k u), cos(pi 2^k u)]`` for k < F. Example: u = 0.5, F = 1 -> (0.5, 1, 0)."""
    scales = math.pi * 2.0 ** torch.arange(
        frequencies, device=positions.device, dtype=positions.dtype
    )
    scaled = positions[..., None] * scales
    return torch.cat([positions[..., None], scaled.sin(), scaled.cos()], dim=-1)


class RadianceHead(nn.Module):
    """Gathered features of every sample -> density and blended colour (module doc)."""

    def __init__(
        self, cfg: RadianceHeadCfg, volume_channels: int, image_channels: int, angle_channels: int
    ) -> None:
        super().__init__()
        self.cfg = cfg
        width = cfg.transformer.width
        feature_channels = volume_channels + image_channels + 3
        # Two mask flags per view token: in frustum, not occluded (the reference's tokens carry
        # the one mask m_v, spec 2.6; the occlusion flag lets a token say why it is unreliable).
        self.view_embed = nn.Sequential(nn.Linear(feature_channels + 2, width), ELU())
        # Moments of every token feature; the reference's global token sees those of its 8 FPN
        # channels only (16 inputs, spec 2.6).
        self.global_embed = nn.Sequential(
            nn.Linear(2 * feature_channels, width), ELU(), nn.Linear(width, width), ELU()
        )
        self.view_transformer = TokenTransformer(cfg.transformer)
        if RayMixer(cfg.ray_mixer) is RayMixer.ATTENTION:
            self.position_embed = nn.Linear(1 + 2 * cfg.position_frequencies, width)
            self.ray_transformer = TokenTransformer(
                dataclasses.replace(cfg.transformer, layers=cfg.ray_mixer_layers)
            )
        self.density = mlp([width, *cfg.density_hidden, 1])
        self.blend = mlp([width + angle_channels, *cfg.blend_hidden, 1])

    def view_stage(
        self, gathered: GatheredFeatures, view_mask: Bool[Tensor, "b rays samples v"]
    ) -> tuple[
        Float[Tensor, "b rays samples c"],
        Float[Tensor, "b rays samples v"],
        Float[Tensor, "b rays samples 3"],
    ]:
        """Per sample: the global token after the view transformer, the blending weights and
        the blended colour (in inference one kernel can compute the same: C++ on a CPU,
        :mod:`gsnerf.model.cpu_token_heads`, Triton on CUDA,
        :mod:`gsnerf.model.fused_radiance_views`)."""
        batch, rays = view_mask.shape[:2]
        features = torch.cat([gathered.volume, gathered.image, gathered.colours], dim=-1)
        flags = torch.stack([gathered.in_frustum, gathered.visible], dim=-1).to(features.dtype)
        view_tokens = self.view_embed(torch.cat([features, flags], dim=-1))

        flat_mask = rearrange(view_mask, "b r s v -> (b r s) v")
        moments = masked_moments(rearrange(features, "b r s v c -> (b r s) v c"), flat_mask)
        # The global token sits in slot 0 and is always attended to (spec 2.6).
        tokens = torch.cat(
            [
                self.global_embed(moments)[:, None],
                rearrange(view_tokens, "b r s v c -> (b r s) v c"),
            ],
            dim=1,
        )
        key_mask = torch.cat([torch.ones_like(flat_mask[:, :1]), flat_mask], dim=1)
        tokens = self.view_transformer(tokens, key_mask)

        unfold = {"b": batch, "r": rays}
        view_out = rearrange(tokens[:, 1:], "(b r s) v c -> b r s v c", **unfold)
        logits = self.blend(torch.cat([view_out, gathered.angle.to(view_out.dtype)], dim=-1))
        logits = logits[..., 0].masked_fill(~view_mask, -torch.inf)
        blend_weights = logits.softmax(dim=-1)
        rgb = (blend_weights[..., None] * gathered.colours.to(blend_weights.dtype)).sum(dim=-2)
        ray_tokens = rearrange(tokens[:, 0], "(b r s) c -> b r s c", **unfold)
        return ray_tokens, blend_weights, rgb

    def forward(
        self,
        gathered: GatheredFeatures,
        view_mask: Bool[Tensor, "b rays samples v"],
        positions: Float[Tensor, "b rays samples"],
    ) -> RadianceOutput:
        """``view_mask`` from :func:`attention_view_mask`; ``positions`` in [0, 1], near to far."""
        batch, rays = view_mask.shape[:2]
        if cpu_radiance_applies(self, gathered):
            ray_tokens, blend_weights, rgb = cpu_radiance_views(self, gathered, view_mask)
        elif fused_radiance_views.fused_radiance_views_applies(self, gathered):
            ray_tokens, blend_weights, rgb = fused_radiance_views.fused_radiance_views(
                self, gathered, view_mask
            )
        else:
            ray_tokens, blend_weights, rgb = self.view_stage(gathered, view_mask)
        ray_tokens = rearrange(ray_tokens, "b r s c -> (b r) s c")
        if RayMixer(self.cfg.ray_mixer) is RayMixer.ATTENTION:
            encoding = position_encoding(positions, self.cfg.position_frequencies)
            ray_tokens = ray_tokens + self.position_embed(
                rearrange(encoding.to(ray_tokens.dtype), "b r s c -> (b r) s c")
            )
            ray_tokens = self.ray_transformer(ray_tokens)
        density = F.softplus(self.density(ray_tokens)[..., 0])
        return RadianceOutput(
            density=rearrange(density, "(b r) s -> b r s", b=batch, r=rays),
            rgb=rgb,
            blend_weights=blend_weights,
        )
