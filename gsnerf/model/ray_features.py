"""What the heads read for a chunk of target rays: samples, projections, gathered features.

The step between the guide depth D_T and the heads, with no weights of its own: rays through
the target pixels, depth-guided samples on them (spec 2.4), their projections into every source
view and the features, colours, masks and view angles read there (spec 2.5), and the semantic
patch features the semantic head reads, of every sample (semantic rendering ``volume``) or of
the guide sample only (``guide_point``, spec 2.7). In inference it is grid reads plus many
element-wise passes over ``(rays, samples, views, channels)`` tensors, which a compiler can
fuse: :class:`gsnerf.model.gsnerf.GSNeRF` calls it through its ``gather`` method, which
``compile_heads(model, mode, parts=["gather", ...])`` replaces with a compiled one. In CPU
inference the projection and the radiance head's inputs come from one C++ pass instead
(:mod:`gsnerf.model.cpu_view_gather`), where it applies, and in CUDA inference from one Triton
kernel (:mod:`gsnerf.model.fused_view_gather`) where that is switched on.
"""

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int64
from torch import Tensor

from gsnerf.model import cpu_view_gather, fused_view_gather
from gsnerf.model.feature_gather import (
    GatherCfg,
    GatheredFeatures,
    attention_view_mask,
    gather_features,
    gather_semantic_features,
    project_to_sources,
    select_samples,
)
from gsnerf.model.sampler import SamplerCfg, build_rays, sample_along_rays
from gsnerf.model.semantic_head import SemanticRendering
from gsnerf.types import Example, GuideDepth, RayBundle, RaySamples, SourceGeometry


@dataclass
class SemanticInputs:
    """The semantic head's inputs; ``s`` is the sample count, or 1 for the guide sample only."""

    features: Float[Tensor, "b rays s v c_patch"]  # p x p patch features per view
    in_frustum: Bool[Tensor, "b rays s v"]
    visible: Bool[Tensor, "b rays s v"]
    view_mask: Bool[Tensor, "b rays s v"]  # views the tokens attend to


@dataclass
class RayFeatures:
    """Everything between the guide depth and the heads for one chunk of rays."""

    rays: RayBundle
    samples: RaySamples
    gathered: GatheredFeatures  # the radiance head's per-view inputs of every sample
    view_mask: Bool[Tensor, "b rays samples v"]
    positions: Float[Tensor, "b rays samples"]  # of the samples in [0, 1], near to far
    semantic: SemanticInputs


def gather_ray_features(
    example: Example,
    geometry: SourceGeometry,
    pixels: Int64[Tensor, "b rays 2"],
    guide: GuideDepth,
    sampler_cfg: SamplerCfg,
    gather_cfg: GatherCfg,
    semantic_rendering: SemanticRendering,
    training: bool,
    generator: torch.Generator | None = None,
) -> RayFeatures:
    """Rays, samples and every head input of the target pixels ``(row, col)`` (module doc)."""
    target = example.target
    rays = build_rays(
        target.intrinsics[:, 0],
        target.cam_to_world[:, 0],
        pixels,
        guide,
        target.near[:, 0],
        target.far[:, 0],
    )
    samples = sample_along_rays(rays, sampler_cfg, training, generator)
    points = rays.origins[:, :, None] + samples.depths[..., None] * rays.directions[:, :, None]
    arguments = (points, rays.directions, example.sources, geometry, gather_cfg)
    # One-pass kernels where they apply: C++ on a CPU, Triton on CUDA.
    if cpu_view_gather.cpu_view_gather_applies(points, example.sources, geometry, gather_cfg):
        projection, gathered = cpu_view_gather.gather_views(*arguments)
    elif fused_view_gather.fused_view_gather_applies(points, example.sources, geometry, gather_cfg):
        projection, gathered = fused_view_gather.gather_views(*arguments)
    else:
        projection = project_to_sources(points, example.sources)
        gathered = gather_features(
            projection, points, rays.directions, example.sources, geometry, gather_cfg
        )
    view_mask = attention_view_mask(gathered.in_frustum, gathered.visible)
    span = (rays.far - rays.near).clamp_min(torch.finfo(rays.far.dtype).eps)
    positions = (samples.depths - rays.near[..., None]) / span[..., None]

    if semantic_rendering is SemanticRendering.VOLUME:
        semantic = SemanticInputs(
            features=gather_semantic_features(projection, geometry.semantic_features, gather_cfg),
            in_frustum=gathered.in_frustum,
            visible=gathered.visible,
            view_mask=view_mask,
        )
    else:
        # Only the guide sample is read (spec 2.7), so only its features are gathered (2.5).
        batch, count, _, num_views = view_mask.shape
        index = samples.guide_index[:, :, None]
        by_view = index[..., None].expand(batch, count, 1, num_views)
        semantic = SemanticInputs(
            features=gather_semantic_features(
                select_samples(projection, index), geometry.semantic_features, gather_cfg
            ),
            in_frustum=gathered.in_frustum.gather(2, by_view),
            visible=gathered.visible.gather(2, by_view),
            view_mask=view_mask.gather(2, by_view),
        )
    return RayFeatures(
        rays=rays,
        samples=samples,
        gathered=gathered,
        view_mask=view_mask,
        positions=positions,
        semantic=semantic,
    )
