"""Class palette, label and depth colourisation, legend image."""

import cv2
import numpy as np
import pytest
import torch
from skimage.color import rgb2lab

from gsnerf.evaluation.palette import (
    PALETTE_SIZE,
    DepthColormap,
    class_palette,
    colorize_labels,
    depth_to_color,
    legend_image,
)


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb[None].astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)[0]


def test_palette_has_41_distinct_colours_far_from_black() -> None:
    palette = class_palette()
    assert palette.shape == (PALETTE_SIZE, 3) and palette.dtype == np.uint8
    lab = _lab(palette)
    distance = np.linalg.norm(lab[:, None] - lab[None], axis=-1)
    np.fill_diagonal(distance, np.inf)
    # CIELAB distances: about 2.3 is a just-noticeable difference.
    assert distance[:21, :21].min() > 30
    assert distance.min() > 20
    assert np.linalg.norm(lab - _lab(np.zeros((1, 3), np.uint8)), axis=-1).min() > 20
    # A fresh, equal array on every call.
    palette[0] = 0
    assert not np.array_equal(class_palette()[0], palette[0])


def test_palette_colours_are_far_from_the_white_legend_background() -> None:
    # Swatches sit on white in the legend; scikit-image's CIELAB as an independent reference.
    lab = rgb2lab(class_palette() / 255.0)
    white = rgb2lab(np.ones((1, 3)))
    # The nearest colour is about 31.7 units away; a near-white swatch would be well under 25.
    assert np.linalg.norm(lab - white, axis=-1).min() > 25


def test_colorize_labels_uses_palette_and_black_for_ignore() -> None:
    labels = torch.tensor([[0, 1, 255], [20, 40, 3]])
    image = colorize_labels(labels, ignore_index=255)
    palette = class_palette()
    assert image.shape == (2, 3, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[0, 2], [0, 0, 0])
    for (row, col), label in np.ndenumerate(labels.numpy()):
        if label != 255:
            np.testing.assert_array_equal(image[row, col], palette[label])


def test_colorize_labels_rejects_labels_outside_the_palette() -> None:
    with pytest.raises(ValueError, match="palette"):
        colorize_labels(torch.tensor([[0, 41]]))


def test_legend_has_the_requested_height_and_one_swatch_per_class() -> None:
    names = [f"class {i}" for i in range(21)]
    row_height = 20
    legend = legend_image(names, height=240, row_height=row_height)
    assert legend.shape[0] == 240 and legend.shape[2] == 3 and legend.dtype == np.uint8
    palette = class_palette()
    # 12 rows per column: class 13 is the second row of the second column.
    column_width = legend.shape[1] // 2
    top, left = 1 * row_height + 2, column_width + 2
    np.testing.assert_array_equal(legend[top + 3, left + 3], palette[13])
    np.testing.assert_array_equal(legend[2 + 3, 2 + 3], palette[0])
    # Dark text pixels right of the first swatch.
    text_area = legend[2 : 2 + row_height - 4, row_height:column_width]
    assert (text_area.max(axis=-1) < 128).any()


def test_legend_rejects_too_many_names_and_too_small_height() -> None:
    with pytest.raises(ValueError, match="class names"):
        legend_image([str(i) for i in range(PALETTE_SIZE + 1)], height=100)
    with pytest.raises(ValueError, match="height"):
        legend_image(["wall"], height=10, row_height=20)


def test_depth_to_color_normalises_over_valid_pixels() -> None:
    depth = torch.tensor([[1.0, 2.0, 3.0], [0.0, 100.0, 2.0]])
    valid = torch.ones(2, 3, dtype=torch.bool)
    valid[1, 1] = False
    image = depth_to_color(depth, valid, DepthColormap.JET)
    assert image.shape == (2, 3, 3) and image.dtype == np.uint8
    # Invalid (masked or depth 0) pixels are black.
    np.testing.assert_array_equal(image[1, 0], [0, 0, 0])
    np.testing.assert_array_equal(image[1, 1], [0, 0, 0])
    # Min 1 -> level 0, max 3 -> 255 (the masked 100 does not stretch the range), 2 -> 128.
    levels = np.array([[0, 128, 255]], dtype=np.uint8)
    expected = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(image[0], expected[0])
    np.testing.assert_array_equal(image[1, 2], expected[0, 1])


def test_depth_to_color_without_valid_pixels_is_black() -> None:
    image = depth_to_color(torch.zeros(4, 5))
    assert image.shape == (4, 5, 3) and not image.any()


def test_depth_to_color_shows_infinite_depth_black_and_scales_the_finite_pixels() -> None:
    depth = torch.tensor([[1.0, 2.0, 3.0], [float("inf"), 0.0, 2.0]])
    image = depth_to_color(depth)
    np.testing.assert_array_equal(image[1, 0], [0, 0, 0])
    # The range is the finite pixels' own: min 1 -> level 0, 2 -> 128, max 3 -> 255.
    levels = np.array([[0, 128, 255]], dtype=np.uint8)
    expected = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(image[0], expected[0])
    np.testing.assert_array_equal(image[1, 2], expected[0, 1])
