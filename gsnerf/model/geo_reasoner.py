"""Semantic Geo-Reasoner: feature net + cascaded cost volumes -> SourceGeometry (spec 2.1-2.2).

Every source view is the reference of its own cost volume, with its MVS neighbours as the
warped sources. All views of the batch are processed at once: ``b`` and ``v`` are folded into
one batch axis, and the neighbours are gathered from that axis. The cascade runs coarse to fine:

- level 0 (1/4 resolution): ``n_0`` hypotheses ``near + k * (far - near) / n_0``, the same for
  every pixel of a view, so they cover ``[near, far)``;
- level l > 0 (1/2, then full resolution): the previous depth, detached and upsampled, minus
  ``n_l / 2`` intervals gives the first hypothesis (floored at ``min_depth``), then ``n_l``
  hypotheses with spacing ``interval_l = base * ratio_l``, ``base = (far - near) / n_0 / ratio_0``.

Example (ScanNet, near 0.1 m, far 10 m, paper config): intervals 0.206, 0.103, 0.052 m; the
1/2-resolution window is ``[d - 1.65, d + 1.55]`` m, the full-resolution one
``[d - 0.21, d + 0.15]`` m.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float, Int64
from torch import Tensor, nn

from gsnerf.geometry.camera import scale_intrinsics
from gsnerf.model.cost_volume import CostVolumeCfg, CostVolumeLevel
from gsnerf.model.feature_net import FeatureNet, FeatureNetCfg
from gsnerf.types import SourceGeometry, Views


@dataclass
class GeoReasonerCfg:
    # 2-D feature / semantic network: MVS pyramid, semantic features and logits (spec 2.1).
    feature_net: FeatureNetCfg = field(default_factory=FeatureNetCfg)
    # Correlation groups and 3-D regulariser, one regulariser per cascade level (spec 2.2).
    cost_volume: CostVolumeCfg = field(default_factory=CostVolumeCfg)
    # Depth hypotheses per level at 1/4, 1/2, full resolution, coarse -> fine (spec 2.2: 48, 32, 8).
    n_depths: list[int] = field(default_factory=lambda: [48, 32, 8])
    # Hypothesis spacing per level in base intervals, coarse -> fine (spec 2.2: 4, 2, 1).
    interval_ratios: list[float] = field(default_factory=lambda: [4.0, 2.0, 1.0])
    # Floor of the first hypothesis of the finer levels, metres (spec 2.2, 7.12: 1e-3).
    min_depth: float = 1e-3


class SemanticGeoReasoner(nn.Module):
    """Source views -> per-level depths, depth ranges, volume features and 2-D semantics."""

    def __init__(self, cfg: GeoReasonerCfg, num_classes: int) -> None:
        super().__init__()
        levels = len(cfg.feature_net.pyramid_widths)
        for name in ("n_depths", "interval_ratios"):
            if len(getattr(cfg, name)) != levels:
                raise ValueError(
                    f"geo_reasoner.{name}: needs one entry per cascade level ({levels}, coarse "
                    f"-> fine), got {getattr(cfg, name)}"
                )
        if min(cfg.n_depths) < 2:
            raise ValueError(f"geo_reasoner.n_depths: at least 2 per level, got {cfg.n_depths}")
        self.cfg = cfg
        self.feature_net = FeatureNet(cfg.feature_net, num_classes)
        self.cost_volumes = nn.ModuleList(
            CostVolumeLevel(width, cfg.cost_volume) for width in cfg.feature_net.pyramid_widths
        )
        # Each cascade level halves the resolution of the next finer one.
        self.size_multiple = 2 ** (levels - 1)

    @property
    def volume_channels(self) -> int:
        return self.cfg.cost_volume.volume_channels

    @property
    def image_channels(self) -> int:
        return self.feature_net.image_channels

    @property
    def semantic_channels(self) -> int:
        return self.feature_net.semantic_channels

    def check_inputs(self, sources: Views, source_neighbours: Int64[Tensor, "b v n"]) -> None:
        """Raise a clear error for image sizes or neighbour lists the cascade cannot use."""
        num_views, height, width = sources.images.shape[1], *sources.images.shape[-2:]
        if height % self.size_multiple or width % self.size_multiple:
            raise ValueError(
                f"sources.images: height and width must be multiples of {self.size_multiple} "
                f"(one halving per cascade level), got {height}x{width}"
            )
        if source_neighbours.shape[-1] < 1:
            raise ValueError("source_neighbours: every view needs at least one MVS neighbour")
        if source_neighbours.min() < 0 or source_neighbours.max() >= num_views:
            raise ValueError(
                f"source_neighbours: indices must lie in [0, {num_views}), got "
                f"[{int(source_neighbours.min())}, {int(source_neighbours.max())}]"
            )

    def hypotheses(
        self,
        level: int,
        near: Float[Tensor, " bv"],
        base_interval: Float[Tensor, " bv"],
        previous_depth: Float[Tensor, "bv _ _"] | None,
        size: tuple[int, int],
    ) -> Float[Tensor, "bv d h w"]:
        """Per-pixel depth hypotheses of one level (module docstring)."""
        count = self.cfg.n_depths[level]
        interval = (base_interval * self.cfg.interval_ratios[level])[:, None, None]
        if previous_depth is None:
            start = near[:, None, None].expand(-1, *size)
        else:
            # Bilinear with align_corners=False, the resize convention of scale_intrinsics (the
            # reference's align_corners=True shifts the map by up to 1/4 pixel at the borders).
            upsampled = F.interpolate(
                previous_depth.detach()[:, None], size=size, mode="bilinear", align_corners=False
            )[:, 0]
            start = (upsampled - count / 2 * interval).clamp_min(self.cfg.min_depth)
        steps = torch.arange(count, device=near.device, dtype=near.dtype)
        return start[:, None] + steps[None, :, None, None] * interval[:, None]

    def forward(self, sources: Views, source_neighbours: Int64[Tensor, "b v n"]) -> SourceGeometry:
        self.check_inputs(sources, source_neighbours)
        batch, num_views, _, height, width = sources.images.shape
        features = self.feature_net(rearrange(sources.images, "b v c h w -> (b v) c h w"))

        # Neighbour indices into the folded (b v) axis.
        offsets = torch.arange(batch, device=source_neighbours.device)[:, None, None] * num_views
        neighbours = rearrange(source_neighbours + offsets, "b v n -> (b v) n")
        intrinsics = rearrange(sources.intrinsics, "b v i j -> (b v) i j")
        cam_to_world = rearrange(sources.cam_to_world, "b v i j -> (b v) i j")
        near = rearrange(sources.near, "b v -> (b v)")
        far = rearrange(sources.far, "b v -> (b v)")
        base_interval = (far - near) / (self.cfg.n_depths[0] * self.cfg.interval_ratios[0])

        unfold = {"b": batch, "v": num_views}
        depths, ranges, volumes = [], [], []
        previous_depth = None
        for level, (cost_volume, level_features) in enumerate(
            zip(self.cost_volumes, features.pyramid)
        ):
            size = (level_features.shape[-2], level_features.shape[-1])
            level_intrinsics = scale_intrinsics(intrinsics, (width, height), (size[1], size[0]))
            hypotheses = self.hypotheses(level, near, base_interval, previous_depth, size)
            # index_select, not level_features[neighbours]: the backward of advanced indexing
            # accumulates repeated rows in thread order on the CPU, so two runs differed.
            neighbour_features = level_features.index_select(0, neighbours.flatten())
            output = cost_volume(
                level_features,
                neighbour_features.view(*neighbours.shape, *level_features.shape[1:]),
                level_intrinsics,
                cam_to_world,
                level_intrinsics[neighbours],
                cam_to_world[neighbours],
                hypotheses,
            )
            previous_depth = output.depth
            depths.append(rearrange(output.depth, "(b v) h w -> b v h w", **unfold))
            first_last = torch.stack([hypotheses[:, 0], hypotheses[:, -1]], dim=1)
            ranges.append(rearrange(first_last, "(b v) two h w -> b v two h w", **unfold))
            volumes.append(
                rearrange(output.volume_features, "(b v) c d h w -> b v c d h w", **unfold)
            )

        return SourceGeometry(
            depths=depths,
            depth_ranges=ranges,
            volume_features=volumes,
            image_features=rearrange(features.pyramid[-1], "(b v) c h w -> b v c h w", **unfold),
            semantic_features=rearrange(
                features.semantic_features, "(b v) c h w -> b v c h w", **unfold
            ),
            semantic_logits=rearrange(
                features.semantic_logits, "(b v) c h w -> b v c h w", **unfold
            ),
        )
