"""Colours for saved images: class palette, label and depth colourisation, legend (spec 5.4).

The class palette is built, not copied: greedy farthest-point sampling in CIELAB over a 6-level
RGB grid, starting from black and white as already taken. Every class colour is therefore far
from the ignore colour (black), from the legend background (white) and from the colours of the
classes before it; the first 21 classes (ScanNet's 20 + 1) are at least 35 CIELAB units apart.
"""

import functools
import itertools
from enum import Enum

import cv2
import numpy as np
import torch
from jaxtyping import Bool, Float, Int64, UInt8
from torch import Tensor

# Number of class colours (NYU40's 40 classes + 1 covers every label table of gsnerf).
PALETTE_SIZE = 41
# Colour of ignored / unlabelled pixels and of invalid depth.
IGNORE_COLOR = (0, 0, 0)
# Grey levels per RGB channel of the candidate colours the palette is drawn from.
_GRID_LEVELS = 6


def _to_lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb[None].astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)[0]


@functools.cache
def _palette_rgb() -> tuple[tuple[int, int, int], ...]:
    levels = np.linspace(0, 255, _GRID_LEVELS).round()
    candidates = np.array(list(itertools.product(levels, repeat=3)), dtype=np.uint8)
    candidates_lab = _to_lab(candidates)
    taken_lab = _to_lab(np.array([IGNORE_COLOR, (255, 255, 255)], dtype=np.uint8))
    distance = np.linalg.norm(candidates_lab[:, None] - taken_lab[None], axis=-1).min(axis=1)
    chosen = []
    for _ in range(PALETTE_SIZE):
        best = int(np.argmax(distance))
        chosen.append(tuple(int(c) for c in candidates[best]))
        to_best = np.linalg.norm(candidates_lab - candidates_lab[best], axis=-1)
        distance = np.minimum(distance, to_best)
    return tuple(chosen)


def class_palette() -> UInt8[np.ndarray, "classes 3"]:
    """RGB colour of each class id ``0..40`` (a fresh array; same colours on every call)."""
    return np.array(_palette_rgb(), dtype=np.uint8)


def colorize_labels(
    labels: Int64[Tensor, "h w"], ignore_index: int = 255
) -> UInt8[np.ndarray, "h w 3"]:
    """RGB image of a label map: class ``c`` gets ``class_palette()[c]``, ignore is black."""
    labels_np = labels.detach().cpu().numpy()
    ignored = labels_np == ignore_index
    real = labels_np[~ignored]
    if real.size and (real.min() < 0 or real.max() >= PALETTE_SIZE):
        raise ValueError(
            f"colorize_labels: labels in [{real.min()}, {real.max()}] besides ignore_index "
            f"{ignore_index}; the palette covers 0..{PALETTE_SIZE - 1}"
        )
    image = class_palette()[np.where(ignored, 0, labels_np)]
    image[ignored] = IGNORE_COLOR
    return image


def legend_image(
    class_names: list[str], height: int, row_height: int = 20
) -> UInt8[np.ndarray, "h w 3"]:
    """White RGB image of ``height`` rows listing a colour swatch and the name of each class.

    Classes run top to bottom, then in further columns when they do not fit in one.
    """
    if not class_names or len(class_names) > PALETTE_SIZE:
        raise ValueError(
            f"legend_image: needs 1..{PALETTE_SIZE} class names, got {len(class_names)}"
        )
    if height < row_height:
        raise ValueError(f"legend_image: height {height} is below one row of {row_height} pixels")
    font, thickness = cv2.FONT_HERSHEY_SIMPLEX, 1
    # Hershey simplex capitals are about 22 pixels tall at scale 1.
    font_scale = 0.5 * row_height / 22
    swatch = row_height - 4
    text_width = max(cv2.getTextSize(n, font, font_scale, thickness)[0][0] for n in class_names)
    column_width = swatch + text_width + 12
    rows_per_column = height // row_height
    columns = -(-len(class_names) // rows_per_column)
    image = np.full((height, columns * column_width, 3), 255, dtype=np.uint8)
    palette = class_palette()
    for index, name in enumerate(class_names):
        top = (index % rows_per_column) * row_height + 2
        left = (index // rows_per_column) * column_width + 2
        image[top : top + swatch, left : left + swatch] = palette[index]
        baseline = top + swatch // 2 + cv2.getTextSize(name, font, font_scale, thickness)[0][1] // 2
        cv2.putText(
            image,
            name,
            (left + swatch + 4, baseline),
            font,
            font_scale,
            (0, 0, 0),
            thickness,
            cv2.LINE_AA,
        )
    return image


class DepthColormap(str, Enum):
    """Colour map of depth images."""

    # Google's Turbo: perceptually smoother than Jet, same blue-to-red order.
    TURBO = "turbo"
    # Jet, what the reference's strips use (spec 5.4).
    JET = "jet"


_CV2_COLORMAPS = {DepthColormap.TURBO: cv2.COLORMAP_TURBO, DepthColormap.JET: cv2.COLORMAP_JET}


def depth_to_color(
    depth: Float[Tensor, "h w"],
    valid: Bool[Tensor, "h w"] | None = None,
    colormap: DepthColormap = DepthColormap.TURBO,
) -> UInt8[np.ndarray, "h w 3"]:
    """RGB image of a depth map, near = blue, far = red, invalid pixels black.

    Depth is normalised by the min and max over the valid pixels (``depth > 0`` and finite,
    and ``valid`` where given); a constant map shows the colour of the near end.
    """
    shown = (depth > 0) & torch.isfinite(depth)
    if valid is not None:
        shown &= valid
    depth_np = depth.detach().double().cpu().numpy()
    shown_np = shown.cpu().numpy()
    scaled = np.zeros_like(depth_np)
    if shown_np.any():
        low, high = depth_np[shown_np].min(), depth_np[shown_np].max()
        span = max(high - low, np.finfo(np.float64).tiny)
        scaled = np.clip((np.where(shown_np, depth_np, low) - low) / span, 0, 1)
    gray = np.where(shown_np, np.round(scaled * 255), 0).astype(np.uint8)
    colored = cv2.cvtColor(cv2.applyColorMap(gray, _CV2_COLORMAPS[colormap]), cv2.COLOR_BGR2RGB)
    colored[~shown_np] = IGNORE_COLOR
    return colored
