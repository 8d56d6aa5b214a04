"""Segmentation metrics against hand-computed cases, torchmetrics and a numpy bincount."""

import math

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassJaccardIndex

from gsnerf.evaluation.segmentation import (
    ConfusionAccumulator,
    PaperProtocolAccumulator,
    confusion_matrix,
    dataset_scores,
    iou_per_class,
    paper_image_scores,
)

IGNORE = 255


def _values(summary: dict) -> dict[str, float]:
    return {key: metric.value for key, metric in summary.items()}


def test_confusion_matrix_by_hand_rows_are_ground_truth() -> None:
    gt = torch.tensor([0, 0, 1, 2, IGNORE])
    pred = torch.tensor([0, 1, 1, 0, 2])
    # The last pixel is dropped (GT ignore); (gt 0, pred 1) lands in row 0, column 1.
    expected = torch.tensor([[1, 1, 0], [0, 1, 0], [1, 0, 0]])
    assert torch.equal(confusion_matrix(pred, gt, num_classes=3, ignore_index=IGNORE), expected)


def test_dataset_scores_by_hand_exclude_unseen_class() -> None:
    confusion = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    # Class 0: TP 1, FN 1 (predicted 1), FP 1 (GT 2) -> 1/3.
    # Class 1: TP 1, FN 0, FP 1 -> 1/2.  Class 2: TP 0, FN 1 -> 0.  Class 3: never seen -> NaN.
    iou = iou_per_class(confusion)
    assert iou[:3].tolist() == pytest.approx([1 / 3, 1 / 2, 0.0])
    assert math.isnan(iou[3])
    # mIoU over classes 0..2 = (1/3 + 1/2 + 0) / 3 = 5/18; accuracy 2/4; recalls (1/2, 1, 0).
    assert _values(dataset_scores(confusion)) == pytest.approx(
        {"miou": 5 / 18, "total_accuracy": 1 / 2, "class_average_accuracy": 1 / 2}
    )


def test_predicted_only_class_counts_at_dataset_level_not_in_paper_protocol() -> None:
    gt = torch.tensor([0, 0])
    pred = torch.tensor([0, 1])
    confusion = confusion_matrix(pred, gt, num_classes=2)
    # Class 0: TP 1, FN 1 -> 1/2. Class 1: predicted once, never in GT -> IoU 0.
    assert _values(dataset_scores(confusion))["miou"] == pytest.approx((1 / 2 + 0) / 2)
    # The paper protocol averages only over the classes of the image's GT: class 0.
    assert paper_image_scores(confusion).miou == pytest.approx(1 / 2)


@pytest.mark.parametrize(
    ("pred", "gt", "message"),
    [
        ([0, 3], [0, 1], "pred"),
        ([0, -1], [0, 1], "pred"),
        ([0, 1], [0, 7], "gt"),
    ],
)
def test_labels_outside_the_classes_are_errors(pred: list, gt: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        confusion_matrix(torch.tensor(pred), torch.tensor(gt), num_classes=3)


def test_ignore_index_inside_the_classes_is_an_error() -> None:
    with pytest.raises(ValueError, match="ignore_index"):
        confusion_matrix(torch.tensor([0]), torch.tensor([0]), num_classes=3, ignore_index=2)


def _random_labels(seed: int, pixels: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    pred = torch.randint(0, num_classes, (pixels,), generator=generator)
    gt = torch.randint(0, num_classes, (pixels,), generator=generator)
    gt[torch.rand(pixels, generator=generator) < 0.1] = IGNORE
    return pred, gt


def test_confusion_and_iou_match_torchmetrics_on_random_labels() -> None:
    num_classes = 7
    pred, gt = _random_labels(seed=0, pixels=2000, num_classes=num_classes)
    # Leave class 6 out of both, so one IoU is undefined.
    pred[pred == 6] = 0
    gt[gt == 6] = 1
    reference_confusion = MulticlassConfusionMatrix(num_classes, ignore_index=IGNORE)(pred, gt)
    reference_iou = MulticlassJaccardIndex(
        num_classes, average="none", ignore_index=IGNORE, zero_division=float("nan")
    )(pred, gt)
    assert torch.equal(confusion_matrix(pred, gt, num_classes), reference_confusion)
    iou = iou_per_class(confusion_matrix(pred, gt, num_classes))
    torch.testing.assert_close(iou.float(), reference_iou, equal_nan=True)


def test_accumulator_matches_numpy_bincount_over_images_and_merge() -> None:
    num_classes = 5
    images = [_random_labels(seed, pixels=300, num_classes=num_classes) for seed in range(4)]
    all_pred = torch.cat([p for p, _ in images]).numpy()
    all_gt = torch.cat([g for _, g in images]).numpy()
    kept = all_gt != IGNORE
    expected = np.bincount(
        all_gt[kept] * num_classes + all_pred[kept], minlength=num_classes**2
    ).reshape(num_classes, num_classes)

    first, second = ConfusionAccumulator(num_classes), ConfusionAccumulator(num_classes)
    for pred, gt in images[:2]:
        first.add(pred, gt)
    for pred, gt in images[2:]:
        second.add(pred, gt)
    first.merge(second)
    np.testing.assert_array_equal(first.confusion.numpy(), expected)

    true_positive = np.diag(expected).astype(float)
    union = expected.sum(0) + expected.sum(1) - true_positive
    recall = true_positive / expected.sum(1)
    assert _values(first.summary()) == pytest.approx(
        {
            "miou": np.mean(true_positive / union),
            "total_accuracy": true_positive.sum() / expected.sum(),
            "class_average_accuracy": np.mean(recall),
        }
    )


def test_paper_protocol_differs_from_dataset_level_on_two_images() -> None:
    # Image A: GT [0, 0, 1, 1], pred [0, 0, 1, 0] -> IoU0 = 2/3, IoU1 = 1/2, mIoU 7/12,
    #   accuracy 3/4, class accuracy (1 + 1/2) / 2 = 3/4.
    # Image B: GT [2, 2], pred [2, 0] -> only class 2 present: IoU2 = 1/2, accuracy 1/2,
    #   class accuracy 1/2 (class 0's false positive is left out of B's mean).
    image_a = (torch.tensor([[0, 0], [1, 0]]), torch.tensor([[0, 0], [1, 1]]))
    image_b = (torch.tensor([[2, 0]]), torch.tensor([[2, 2]]))
    paper, dataset = PaperProtocolAccumulator(3), ConfusionAccumulator(3)
    for pred, gt in (image_a, image_b):
        paper.add(pred, gt)
        dataset.add(pred, gt)
    # Paper: mIoU (7/12 + 1/2) / 2 = 13/24, accuracy (3/4 + 1/2) / 2 = 5/8, class acc 5/8.
    assert _values(paper.summary()) == pytest.approx(
        {"miou": 13 / 24, "total_accuracy": 5 / 8, "class_average_accuracy": 5 / 8}
    )
    # Dataset: confusion rows [2,0,0], [1,1,0], [1,0,1]; IoU0 = 2/4, IoU1 = 1/2, IoU2 = 1/2;
    # accuracy 4/6; recalls (1, 1/2, 1/2) -> 2/3.
    assert _values(dataset.summary()) == pytest.approx(
        {"miou": 1 / 2, "total_accuracy": 2 / 3, "class_average_accuracy": 2 / 3}
    )


def test_paper_protocol_image_without_labelled_pixels_counts_zero() -> None:
    paper = PaperProtocolAccumulator(3)
    # Same scores as image A above: (7/12, 3/4, 3/4).
    paper.add(torch.tensor([[0, 0, 1, 0]]), torch.tensor([[0, 0, 1, 1]]))
    scores = paper.add(torch.tensor([[0, 1]]), torch.tensor([[IGNORE, IGNORE]]))
    assert (scores.miou, scores.total_accuracy, scores.class_average_accuracy) == (0, 0, 0)
    assert paper.num_images == 2
    assert _values(paper.summary()) == pytest.approx(
        {"miou": 7 / 24, "total_accuracy": 3 / 8, "class_average_accuracy": 3 / 8}
    )


def test_empty_accumulators_are_unavailable_with_reason() -> None:
    for summary in (ConfusionAccumulator(3).summary(), PaperProtocolAccumulator(3).summary()):
        assert set(summary) == {"miou", "total_accuracy", "class_average_accuracy"}
        assert all(not m.available and m.unavailable_reason for m in summary.values())
