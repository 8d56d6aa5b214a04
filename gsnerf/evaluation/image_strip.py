"""Per-view images: the strip GT | render | semantics | GT semantics | error | depth | legend,
and the source views' 2-D semantic predictions beside their ground truth (spec 5.4)."""

import numpy as np
import torch
from jaxtyping import UInt8

from gsnerf.evaluation.palette import colorize_labels, depth_to_color, legend_image
from gsnerf.types import Example, ImageRender, SourceGeometry


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """``3 h w`` float in [0, 1] -> ``h w 3`` uint8."""
    array = image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return np.round(array * 255).astype(np.uint8)


def view_strip(
    example: Example, image: ImageRender, class_names: list[str], ignore_index: int
) -> UInt8[np.ndarray, "h w 3"]:
    """The strip of the first item of a batch; panels without ground truth are black."""
    target = example.target
    gt_rgb = target.images[0, 0]
    rgb = image.rgb[0].clamp(0, 1)
    height, width = gt_rgb.shape[-2:]
    blank = np.zeros((height, width, 3), dtype=np.uint8)
    prediction = image.semantic_logits[0].argmax(0)
    gt_labels = (
        blank if target.labels is None else colorize_labels(target.labels[0, 0], ignore_index)
    )
    # Five times the absolute error, as the reference's strips show it (spec 5.4), on the pixels
    # the colour metrics count (GT depth > 0): the rest is black.
    error = (5.0 * (rgb - gt_rgb).abs()).clamp(0, 1)
    if target.depths is not None:
        error = error * (target.depths[0, 0] > 0).to(error.dtype)
    panels = [
        _to_uint8(gt_rgb),
        _to_uint8(rgb),
        colorize_labels(prediction, ignore_index),
        gt_labels,
        _to_uint8(error),
        depth_to_color(image.depth[0].float()),
    ]
    strip = np.concatenate(panels, axis=1)
    # About ten legend rows per image height, never smaller than legible 8-pixel rows.
    legend = legend_image(class_names, height, row_height=max(8, min(20, height // 10)))
    return np.concatenate([strip, legend], axis=1)


def source_semantics(
    example: Example, geometry: SourceGeometry, ignore_index: int
) -> tuple[UInt8[np.ndarray, "h vw 3"], UInt8[np.ndarray, "h vw 3"] | None]:
    """The 2-D network's class per pixel of each source view of the first item, side by side,
    and the views' ground-truth labels the same way (None without labels)."""
    predicted = geometry.semantic_logits[0].argmax(1)
    row = np.concatenate([colorize_labels(labels, ignore_index) for labels in predicted], axis=1)
    labels = example.sources.labels
    if labels is None:
        return row, None
    gt_row = np.concatenate([colorize_labels(view, ignore_index) for view in labels[0]], axis=1)
    return row, gt_row
