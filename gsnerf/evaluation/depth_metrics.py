"""Depth metrics of a rendered depth map against ground truth (spec 5.2, logged only).

Evaluated pixels: ground truth > 0 (0 = unknown depth), a finite prediction, and ``valid`` where
given. Metrics, with ``p`` the prediction and ``g`` the ground truth, in metres:

- ``abs_error_m``: mean ``|p - g|`` (the reference's logged "abs error");
- ``abs_rel``: mean ``|p - g| / g``;
- ``rmse_m``: ``sqrt(mean (p - g)^2)``;
- ``delta_under_1.25``: fraction with ``max(p / g, g / p) < 1.25`` (a prediction <= 0 fails);
- ``acc_under_{t}m``: fraction with ``|p - g| < t`` for each threshold ``t`` (the reference's
  "accuracy under 0.01 / 0.05 / 0.1 m", logged as "mm").

:class:`DepthMetricsAccumulator` reports both usual aggregates: ``per_image_mean`` (each image's
metrics, averaged over the images that had evaluated pixels) and ``pooled`` (every evaluated
pixel of every image counted once, as the reference's "summed and normalised by the valid pixel
count"; the pooled RMSE is the root of the pooled mean squared error).
"""

from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float, Float64
from torch import Tensor

from gsnerf.evaluation.metric_value import MetricValue


@dataclass
class DepthMetricsCfg:
    # Thresholds of the "accuracy under t" metrics on |p - g|, metres (spec 5.2: 0.01, 0.05, 0.1).
    abs_error_thresholds_m: list[float] = field(default_factory=lambda: [0.01, 0.05, 0.1])
    # Ratio threshold of the delta accuracy max(p/g, g/p) < ratio (standard delta_1: 1.25).
    delta_ratio: float = 1.25


def depth_metric_keys(cfg: DepthMetricsCfg) -> list[str]:
    """Names of the metrics, in the order of the internal statistics."""
    thresholds = [f"acc_under_{t:g}m" for t in cfg.abs_error_thresholds_m]
    return ["abs_error_m", "abs_rel", "rmse_m", f"delta_under_{cfg.delta_ratio:g}", *thresholds]


def _depth_sums(
    pred: Float[Tensor, "h w"],
    gt: Float[Tensor, "h w"],
    valid: Bool[Tensor, "h w"] | None,
    cfg: DepthMetricsCfg,
) -> Float64[Tensor, " stats"]:
    """``[pixels, sum |e|, sum |e|/g, sum e^2, delta hits, threshold hits...]`` in float64."""
    evaluated = (gt > 0) & torch.isfinite(pred) & torch.isfinite(gt)
    if valid is not None:
        evaluated &= valid
    p = pred[evaluated].double()
    g = gt[evaluated].double()
    error = (p - g).abs()
    ratio = torch.maximum(p / g, g / p)
    delta_hits = ((p > 0) & (ratio < cfg.delta_ratio)).sum()
    threshold_hits = [(error < t).sum() for t in cfg.abs_error_thresholds_m]
    stats = [p.numel(), error.sum(), (error / g).sum(), error.square().sum(), delta_hits]
    device = pred.device
    return torch.stack(
        [torch.as_tensor(s, dtype=torch.float64, device=device) for s in stats + threshold_hits]
    )


def _metrics_from_sums(sums: Float64[Tensor, " stats"]) -> Float64[Tensor, " metrics"]:
    pixels = sums[0]
    means = sums[1:] / pixels
    return torch.cat([means[:2], means[2:3].sqrt(), means[3:]])


def _unavailable(cfg: DepthMetricsCfg, reason: str) -> dict[str, MetricValue]:
    return {key: MetricValue.unavailable(reason) for key in depth_metric_keys(cfg)}


def depth_metrics(
    pred: Float[Tensor, "h w"],
    gt: Float[Tensor, "h w"],
    valid: Bool[Tensor, "h w"] | None = None,
    cfg: DepthMetricsCfg | None = None,
) -> dict[str, MetricValue]:
    """Depth metrics of one image over the pixels with ``gt > 0`` (and ``valid``).

    Example: ``gt = [2, 4]``, ``pred = [2.5, 4]`` -> errors ``[0.5, 0]``: abs_error 0.25 m,
    abs_rel ``(0.25 + 0) / 2 = 0.125``, rmse ``sqrt(0.25 / 2)``, delta 0.5 (the ratio 1.25 is
    not strictly below 1.25), each accuracy under 0.01 / 0.05 / 0.1 m 0.5.
    All values are unavailable when no pixel is evaluated.
    """
    cfg = cfg or DepthMetricsCfg()
    sums = _depth_sums(pred, gt, valid, cfg)
    if sums[0] == 0:
        return _unavailable(cfg, "no pixel with ground-truth depth > 0 (and valid)")
    values = _metrics_from_sums(sums).tolist()
    return {key: MetricValue.of(v) for key, v in zip(depth_metric_keys(cfg), values)}


class DepthMetricsAccumulator:
    """Depth metrics over many images, as a per-image mean and pooled over pixels.

    ``per_image_sums`` (sum over images of each metric, then the image count) and
    ``pooled_sums`` (the pixel statistics of all images) are float64 tensors, so
    ``torch.distributed.all_reduce`` (sum) on both merges the ranks.
    """

    def __init__(self, cfg: DepthMetricsCfg | None = None, device: torch.device | str = "cpu"):
        self.cfg = cfg or DepthMetricsCfg()
        num_metrics = len(depth_metric_keys(self.cfg))
        self.per_image_sums = torch.zeros(num_metrics + 1, dtype=torch.float64, device=device)
        self.pooled_sums = torch.zeros(num_metrics + 1, dtype=torch.float64, device=device)

    def add(
        self,
        pred: Float[Tensor, "h w"],
        gt: Float[Tensor, "h w"],
        valid: Bool[Tensor, "h w"] | None = None,
    ) -> None:
        """Add one image; an image without evaluated pixels changes neither aggregate."""
        sums = _depth_sums(pred, gt, valid, self.cfg).to(self.pooled_sums.device)
        if sums[0] == 0:
            return
        self.pooled_sums += sums
        image_metrics = _metrics_from_sums(sums)
        self.per_image_sums += torch.cat([image_metrics, image_metrics.new_ones(1)])

    def merge(self, other: "DepthMetricsAccumulator") -> None:
        self.per_image_sums += other.per_image_sums.to(self.per_image_sums.device)
        self.pooled_sums += other.pooled_sums.to(self.pooled_sums.device)

    def per_image_mean(self) -> dict[str, MetricValue]:
        """Each image's metrics averaged over the images that had evaluated pixels."""
        images = self.per_image_sums[-1]
        if images == 0:
            return _unavailable(self.cfg, "no image had a pixel with ground-truth depth > 0")
        values = (self.per_image_sums[:-1] / images).tolist()
        return {key: MetricValue.of(v) for key, v in zip(depth_metric_keys(self.cfg), values)}

    def pooled(self) -> dict[str, MetricValue]:
        """Metrics over the union of all evaluated pixels (each pixel weighs the same)."""
        if self.pooled_sums[0] == 0:
            return _unavailable(self.cfg, "no pixel with ground-truth depth > 0 was added")
        values = _metrics_from_sums(self.pooled_sums).tolist()
        return {key: MetricValue.of(v) for key, v in zip(depth_metric_keys(self.cfg), values)}
