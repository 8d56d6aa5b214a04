"""Training losses of gsnerf (spec 3): configuration and the one entry point.

``compute_losses`` returns a dict of named terms, each already multiplied by its weights, and
their sum under ``"total"`` (spec 3.6):

- with GT depth (``depth_supervision="supervised"``):
  ``total = image + depth_source + depth_ray + semantic_ray + semantic_2d``, i.e.
  ``L = L_image + L_D + lambda (CE_ray + CE_2D)``;
- without (``"self_supervised"``):
  ``total = image + ssl_reconstruction + ssl_ssim + ssl_smoothness + depth_reprojection
  + depth_guide + semantic_ray + semantic_2d``, i.e.
  ``L = L_image + L_ssl + lambda (CE_ray + CE_2D)``.

A term is absent when its weight is 0 or its ground truth does not exist (no target labels ->
no ``semantic_ray``, no source labels -> no ``semantic_2d``, no guide distance -> no
``depth_guide``, no rays -> no ``depth_reprojection``). Every term is computed in float32 with
autocast switched off, so the losses can be called inside ``torch.autocast`` with bf16/fp16
model outputs.
"""

from dataclasses import dataclass, field
from enum import Enum

import torch
from jaxtyping import Bool, Float, Int64
from torch import Tensor

from gsnerf.losses.depth_self_supervised import (
    SelfSupervisedDepthCfg,
    ViewReduction,
    guide_depth_loss,
    self_supervised_depth_losses,
)
from gsnerf.losses.depth_supervised import (
    GtDownsample,
    SupervisedDepthCfg,
    ray_depth_loss,
    source_depth_loss,
)
from gsnerf.losses.photometric import image_loss
from gsnerf.losses.ray_reprojection import ray_reprojection_loss, reprojected_targets
from gsnerf.losses.semantic import class_weight_tensor, ray_semantic_loss, source_semantic_loss
from gsnerf.types import Example, RayBundle, RenderOutput, SourceGeometry, Views


class DepthSupervision(str, Enum):
    """Which depth losses train the geometry."""

    # GT source depth per cascade level and GT ray distance (spec 3.4).
    SUPERVISED = "supervised"
    # Multi-view photometric consistency, the rendered rays' reprojection and the pull toward
    # D_T, no GT depth (spec 3.5).
    SELF_SUPERVISED = "self_supervised"


@dataclass
class RayTargets:
    """Ground truth of the target view at the sampled ray pixels."""

    rgb: Float[Tensor, "b rays 3"]  # colour in [0, 1]
    labels: Int64[Tensor, "b rays"] | None  # class ids, ignore_index where unlabeled
    depth: Float[Tensor, "b rays"] | None  # GT distance along the unit ray, metres; 0 = invalid


@dataclass
class LossCfg:
    # Weight of the colour MSE L_image (spec 3.1, 3.6: 1.0).
    rgb_weight: float = 1.0
    # Weight lambda of both semantic CEs, on the rays and on the 2-D source logits (spec 3.6: 0.5).
    semantic_weight: float = 0.5
    # Per-class CE weights, one per class; null = all 1.0 (replaces the reference's background
    # weight, which on Replica hits blinds and camera, spec 7.2).
    class_weights: list[float] | None = None
    # Label value left out of both CEs; must equal the dataset's ignore index (spec 1.4).
    ignore_index: int = 255
    # Depth losses: "supervised" (GT depth, spec 3.4) or "self_supervised" (spec 3.5b-c).
    depth_supervision: str = DepthSupervision.SUPERVISED.value
    # Weights and options of the supervised depth losses (spec 3.4).
    supervised: SupervisedDepthCfg = field(default_factory=SupervisedDepthCfg)
    # Weights and options of the self-supervised depth losses (spec 3.5b-c).
    self_supervised: SelfSupervisedDepthCfg = field(default_factory=SelfSupervisedDepthCfg)


def _choice(enum: type[Enum], value: str, key: str) -> Enum:
    """``enum(value)``, or a ValueError naming the config key and the allowed values."""
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise ValueError(f"{key} must be one of {allowed}; got {value!r}") from None


def _supervised_terms(
    cfg: SupervisedDepthCfg,
    output: RenderOutput,
    targets: RayTargets,
    geometry: SourceGeometry,
    example: Example,
) -> dict[str, Float[Tensor, ""]]:
    gt_depth = example.sources.depths
    if gt_depth is None:
        raise ValueError(
            "compute_losses: loss.depth_supervision is 'supervised' but the ground-truth depth "
            "is missing (example.sources.depths is None); set "
            "loss.depth_supervision=self_supervised for data without depth"
        )
    terms = {}
    if cfg.source_weight != 0:
        terms["depth_source"] = cfg.source_weight * source_depth_loss(
            geometry.depths, gt_depth, cfg.level_weights, cfg.beta, GtDownsample(cfg.gt_downsample)
        )
    if cfg.ray_weight != 0:
        if targets.depth is None:
            raise ValueError(
                "compute_losses: loss.supervised.ray_weight is non-zero but the target rays have "
                "no ground-truth depth (targets.depth is None); set it to 0 or use "
                "loss.depth_supervision=self_supervised"
            )
        terms["depth_ray"] = cfg.ray_weight * ray_depth_loss(output.depth, targets.depth, cfg.beta)
    return terms


def _reprojection_term(
    cfg: SelfSupervisedDepthCfg,
    output: RenderOutput,
    targets: RayTargets,
    geometry: SourceGeometry,
    sources: Views,
    rays: RayBundle,
) -> Float[Tensor, ""]:
    """Spec 3.5a on the rendered points ``o + d dir`` (detached), unweighted."""
    distance = output.depth.detach().float()[..., None]
    points = rays.origins.float() + distance * rays.directions.float()
    pixels, z, trusted = reprojected_targets(
        points,
        output.rgb,
        targets.rgb,
        sources,
        cfg.reprojection_photo_threshold,
        cfg.reprojection_render_threshold,
        cfg.reprojection_texture_threshold,
        cfg.reprojection_patch,
    )
    # A ray that rendered no depth (empty opacity) has no point to reproject.
    trusted = trusted & (distance[..., 0] > 0)[:, None]
    image_size = tuple(sources.images.shape[-2:])
    return ray_reprojection_loss(
        geometry.depths, pixels, z, trusted, image_size, cfg.level_weights, cfg.reprojection_beta
    )


def compute_losses(
    cfg: LossCfg,
    output: RenderOutput,
    targets: RayTargets,
    geometry: SourceGeometry,
    example: Example,
    guide_distance: Float[Tensor, "b rays"] | None = None,
    guide_valid: Bool[Tensor, "b rays"] | None = None,
    rays: RayBundle | None = None,
) -> dict[str, Float[Tensor, ""]]:
    """Every weighted loss term of one training step and their sum ``"total"`` (module doc).

    ``guide_distance`` is D_T at each ray as a distance along the ray (``RayBundle.guide_depth``)
    and ``guide_valid`` its validity (``RayBundle.guide_valid``); they feed the self-supervised
    pull toward D_T (spec 3.5c) and are ignored in supervised mode, as are the target ``rays``,
    whose rendered points teach the source depths there (spec 3.5a).
    """
    # Every named choice is checked up front, so a typo fails at the first step in either mode.
    mode = _choice(DepthSupervision, cfg.depth_supervision, "loss.depth_supervision")
    _choice(GtDownsample, cfg.supervised.gt_downsample, "loss.supervised.gt_downsample")
    _choice(
        ViewReduction, cfg.self_supervised.view_reduction, "loss.self_supervised.view_reduction"
    )
    num_classes = output.semantic_logits.shape[-1]
    if 0 <= cfg.ignore_index < num_classes:
        raise ValueError(
            f"loss.ignore_index {cfg.ignore_index} is a real class of the {num_classes} classes; "
            "it must be the dataset's ignore label, outside 0..classes-1"
        )
    # Losses are reductions over many entries: keep them in float32 even inside autocast.
    with torch.autocast(device_type=output.rgb.device.type, enabled=False):
        terms: dict[str, Tensor] = {}
        if cfg.rgb_weight != 0:
            terms["image"] = cfg.rgb_weight * image_loss(output.rgb, targets.rgb)
        if cfg.semantic_weight != 0:
            class_weights = class_weight_tensor(cfg.class_weights, num_classes, output.rgb.device)
            if targets.labels is not None:
                terms["semantic_ray"] = cfg.semantic_weight * ray_semantic_loss(
                    output.semantic_logits, targets.labels, class_weights, cfg.ignore_index
                )
            if example.sources.labels is not None:
                terms["semantic_2d"] = cfg.semantic_weight * source_semantic_loss(
                    geometry.semantic_logits,
                    example.sources.labels,
                    class_weights,
                    cfg.ignore_index,
                )
        if mode is DepthSupervision.SUPERVISED:
            terms.update(_supervised_terms(cfg.supervised, output, targets, geometry, example))
        else:
            ssl = cfg.self_supervised
            if ssl.weight != 0:
                terms.update(
                    self_supervised_depth_losses(
                        ssl, geometry.depths, example.sources, example.source_neighbours
                    )
                )
            if ssl.reprojection_weight != 0 and rays is not None:
                terms["depth_reprojection"] = ssl.reprojection_weight * _reprojection_term(
                    ssl, output, targets, geometry, example.sources, rays
                )
            if ssl.guide_weight != 0 and guide_distance is not None:
                terms["depth_guide"] = ssl.guide_weight * guide_depth_loss(
                    output.depth, guide_distance, guide_valid, ssl.guide_beta
                )
        total = output.rgb.new_zeros((), dtype=torch.float32)
        for value in terms.values():
            total = total + value
        terms["total"] = total
    return terms
