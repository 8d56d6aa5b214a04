"""The per-view images: the error panel on the scored pixels, the source views' 2-D semantics."""

import numpy as np
import torch

from gsnerf.evaluation.image_strip import source_semantics, view_strip
from gsnerf.evaluation.palette import colorize_labels
from gsnerf.types import Example, ImageRender, SourceGeometry, Views

HEIGHT, WIDTH, VIEWS, CLASSES = 48, 6, 3, 5


def views(count: int, labels: torch.Tensor | None, depths: torch.Tensor | None) -> Views:
    generator = torch.Generator().manual_seed(count)
    return Views(
        images=torch.rand(1, count, 3, HEIGHT, WIDTH, generator=generator),
        intrinsics=torch.eye(3).expand(1, count, 3, 3),
        cam_to_world=torch.eye(4).expand(1, count, 4, 4),
        near=torch.full((1, count), 0.1),
        far=torch.full((1, count), 5.0),
        depths=depths,
        labels=labels,
        frame_ids=torch.arange(count)[None],
    )


def example(source_labels: torch.Tensor | None) -> Example:
    target_depth = torch.ones(1, 1, HEIGHT, WIDTH)
    target_depth[..., :, :2] = 0.0  # no depth in the two left columns
    target_labels = torch.zeros(1, 1, HEIGHT, WIDTH, dtype=torch.long)
    return Example(
        sources=views(VIEWS, source_labels, None),
        target=views(1, target_labels, target_depth),
        source_neighbours=torch.zeros(1, VIEWS, 2, dtype=torch.long),
        scenes=["s"],
    )


def test_error_panel_shows_five_times_the_error_where_gt_depth_exists() -> None:
    item = example(None)
    gt = item.target.images[0, 0]
    rendered = (gt + 0.1).clamp(0, 1)
    image = ImageRender(
        rgb=rendered[None],
        depth=torch.ones(1, HEIGHT, WIDTH),
        semantic_logits=torch.zeros(1, CLASSES, HEIGHT, WIDTH),
        opacity=torch.ones(1, HEIGHT, WIDTH),
        guide_depth=torch.ones(1, HEIGHT, WIDTH),
        guide_valid=torch.ones(1, HEIGHT, WIDTH, dtype=torch.bool),
    )
    strip = view_strip(item, image, [f"c{i}" for i in range(CLASSES)], 255)
    error = strip[:, 4 * WIDTH : 5 * WIDTH].astype(np.float64) / 255
    expected = (5 * (rendered - gt).abs()).clamp(0, 1).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(error[:, 2:], expected[:, 2:], atol=1 / 255)
    assert (error[:, :2] == 0).all() and (error[:, 2:] > 0).any()


def test_source_semantics_colour_each_views_argmax_side_by_side() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1, VIEWS, CLASSES, HEIGHT, WIDTH, generator=generator)
    labels = torch.randint(CLASSES, (1, VIEWS, HEIGHT, WIDTH), generator=generator)
    labels[0, 1, 0, 0] = 255
    geometry = SourceGeometry(
        depths=[],
        depth_ranges=[],
        volume_features=[],
        image_features=torch.zeros(1, VIEWS, 1, HEIGHT, WIDTH),
        semantic_features=torch.zeros(1, VIEWS, 1, HEIGHT, WIDTH),
        semantic_logits=logits,
    )
    predicted, ground_truth = source_semantics(example(labels), geometry, 255)
    assert predicted.shape == ground_truth.shape == (HEIGHT, VIEWS * WIDTH, 3)
    for view in range(VIEWS):
        columns = slice(view * WIDTH, (view + 1) * WIDTH)
        argmax = logits[0, view].argmax(0)
        np.testing.assert_array_equal(predicted[:, columns], colorize_labels(argmax, 255))
        np.testing.assert_array_equal(ground_truth[:, columns], colorize_labels(labels[0, view]))
    assert (ground_truth[0, WIDTH] == 0).all()  # the ignored pixel is black
    assert source_semantics(example(None), geometry, 255)[1] is None
