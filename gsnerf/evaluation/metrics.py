"""Evaluation metrics of gsnerf in one namespace (spec 5.2).

- segmentation: confusion matrix, dataset-level mIoU and accuracies, and the paper's per-image
  protocol (:mod:`gsnerf.evaluation.segmentation`);
- image quality: PSNR, SSIM and lazy LPIPS with the paper's masking
  (:mod:`gsnerf.evaluation.image_quality`);
- depth: abs error, abs rel, RMSE, delta and threshold accuracies
  (:mod:`gsnerf.evaluation.depth_metrics`).

A metric that cannot be computed is a :class:`MetricValue` with a reason, never a number.
"""

from gsnerf.evaluation.depth_metrics import (
    DepthMetricsAccumulator,
    DepthMetricsCfg,
    depth_metric_keys,
    depth_metrics,
)
from gsnerf.evaluation.image_quality import (
    LpipsBackbone,
    LpipsMetric,
    psnr,
    ssim,
    vgg16_weight_path,
)
from gsnerf.evaluation.metric_value import MetricValue
from gsnerf.evaluation.segmentation import (
    SEGMENTATION_KEYS,
    ConfusionAccumulator,
    PaperImageScores,
    PaperProtocolAccumulator,
    confusion_matrix,
    dataset_scores,
    iou_per_class,
    paper_image_scores,
    recall_per_class,
)

__all__ = [
    "SEGMENTATION_KEYS",
    "ConfusionAccumulator",
    "DepthMetricsAccumulator",
    "DepthMetricsCfg",
    "LpipsBackbone",
    "LpipsMetric",
    "MetricValue",
    "PaperImageScores",
    "PaperProtocolAccumulator",
    "confusion_matrix",
    "dataset_scores",
    "depth_metric_keys",
    "depth_metrics",
    "iou_per_class",
    "paper_image_scores",
    "psnr",
    "recall_per_class",
    "ssim",
    "vgg16_weight_path",
]
