"""Semantic segmentation metrics: confusion matrix, IoU, mIoU and accuracies.

Two protocols, reported under separate names so that neither is mistaken for the other:

- **Dataset level** (the standard of segmentation benchmarks): one confusion matrix summed over
  every pixel of every test image (:class:`ConfusionAccumulator`), then per-class IoU and the
  means over classes.
- **Paper protocol** (spec 5.2, what the GSNeRF tables report): a confusion matrix per image, the
  image's mIoU over the classes present in that image's ground truth, then the plain mean over
  images (:class:`PaperProtocolAccumulator`). Small images and rare classes weigh more than in
  the dataset-level numbers, so the two differ.

Both use ``confusion[g, p]`` = number of pixels of ground-truth class ``g`` predicted as ``p``
(rows = ground truth, columns = prediction), with ``TP_c = confusion[c, c]``,
``FN_c = row_c - TP_c`` and ``FP_c = column_c - TP_c``.

Difference from the reference (spec 7.22): the reference builds its confusion matrix with
sklearn's ``confusion_matrix(..., labels=0..C-2)``, which silently drops every pixel whose
prediction is outside those labels, i.e. pixels predicted as its extra "ignore" class vanish
from all its metrics. gsnerf's model predicts only real classes, so there is nothing to drop, and
a prediction outside ``0..num_classes-1`` is an error here rather than a silent exclusion. The
reference's unused ``calculate_segmentation_metrics`` also calls ``np.float``, which NumPy 1.24
removed (spec 7.27); gsnerf has a single torch code path.
"""

from dataclasses import dataclass

import torch
from jaxtyping import Float64, Int64
from torch import Tensor

from gsnerf.evaluation.metric_value import MetricValue

SEGMENTATION_KEYS = ("miou", "total_accuracy", "class_average_accuracy")


def confusion_matrix(
    pred: Int64[Tensor, "*pixels"],
    gt: Int64[Tensor, "*pixels"],
    num_classes: int,
    ignore_index: int = 255,
) -> Int64[Tensor, "classes classes"]:
    """Pixel counts ``confusion[g, p]`` (rows = ground truth, columns = prediction).

    Pixels whose ground truth equals ``ignore_index`` are dropped. Any other label outside
    ``0..num_classes-1``, in either tensor, raises ``ValueError``.
    Example: ``gt = [0, 0, 1]``, ``pred = [0, 1, 1]``, 2 classes -> ``[[1, 1], [0, 1]]``.
    """
    if num_classes < 1:
        raise ValueError(f"confusion_matrix: num_classes must be >= 1, got {num_classes}")
    if 0 <= ignore_index < num_classes:
        raise ValueError(
            f"confusion_matrix: ignore_index {ignore_index} is a real class of {num_classes}"
        )
    _check_range("pred", pred, num_classes)
    kept = gt != ignore_index
    gt_kept = gt[kept]
    _check_range("gt (besides ignore_index)", gt_kept, num_classes)
    flat_index = gt_kept * num_classes + pred[kept]
    counts = torch.bincount(flat_index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _check_range(name: str, labels: Tensor, num_classes: int) -> None:
    if labels.numel() == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"confusion_matrix: {name} holds labels in [{low}, {high}], outside the "
            f"{num_classes} classes 0..{num_classes - 1}"
        )


def iou_per_class(confusion: Int64[Tensor, "classes classes"]) -> Float64[Tensor, " classes"]:
    """``IoU_c = TP / (TP + FP + FN)``; NaN for a class with ``TP + FP + FN = 0``.

    Example: ``[[2, 0], [1, 1]]`` -> ``[2 / 3, 1 / 2]``.
    """
    counts = confusion.to(torch.float64)
    true_positive = counts.diagonal()
    union = counts.sum(dim=0) + counts.sum(dim=1) - true_positive
    return true_positive / union


def recall_per_class(confusion: Int64[Tensor, "classes classes"]) -> Float64[Tensor, " classes"]:
    """``TP / (TP + FN)`` (row-normalised diagonal); NaN for a class with no GT pixel."""
    counts = confusion.to(torch.float64)
    return counts.diagonal() / counts.sum(dim=1)


def dataset_scores(confusion: Int64[Tensor, "classes classes"]) -> dict[str, MetricValue]:
    """Dataset-level ``miou``, ``total_accuracy`` and ``class_average_accuracy``.

    - ``miou``: mean IoU over the classes that occur in the ground truth *or* the prediction;
      a class with ``TP + FP + FN = 0`` has no defined IoU and is excluded (counting it as 0 or
      1 would move the mean for a class that was never seen).
    - ``total_accuracy``: ``trace / sum``.
    - ``class_average_accuracy``: mean recall over the classes with ground-truth pixels.
    All three are unavailable when the matrix holds no pixel.
    """
    total = int(confusion.sum())
    if total == 0:
        reason = "no labelled pixel was evaluated (empty confusion matrix)"
        return {key: MetricValue.unavailable(reason) for key in SEGMENTATION_KEYS}
    return {
        "miou": MetricValue.of(float(iou_per_class(confusion).nanmean())),
        "total_accuracy": MetricValue.of(int(confusion.trace()) / total),
        "class_average_accuracy": MetricValue.of(float(recall_per_class(confusion).nanmean())),
    }


@dataclass(frozen=True)
class PaperImageScores:
    """One image's scores under the paper protocol (spec 5.2), each in [0, 1]."""

    # Mean IoU over the classes present in this image's ground truth.
    miou: float
    # Correct pixels / evaluated pixels of this image.
    total_accuracy: float
    # Mean recall over the classes present in this image's ground truth.
    class_average_accuracy: float


def paper_image_scores(confusion: Int64[Tensor, "classes classes"]) -> PaperImageScores:
    """Scores of one image's confusion matrix under the paper protocol (spec 5.2).

    Classes without a ground-truth pixel in the image are left out of its mIoU and class
    accuracy, even when they were predicted (their false positives still lower the IoU of the
    present classes they were taken from). An image without any evaluated pixel has an
    undefined mIoU, which the reference turns into 0 for all three scores; so does gsnerf.
    Example: ``gt = [0, 0, 1, 1]``, ``pred = [0, 0, 1, 0]`` -> IoU ``(2/3, 1/2)``, mIoU 7/12,
    total accuracy 3/4, class accuracy ``(1 + 1/2) / 2 = 3/4``.
    """
    present = confusion.sum(dim=1) > 0
    if not bool(present.any()):
        return PaperImageScores(miou=0.0, total_accuracy=0.0, class_average_accuracy=0.0)
    return PaperImageScores(
        miou=float(iou_per_class(confusion)[present].mean()),
        total_accuracy=int(confusion.trace()) / int(confusion.sum()),
        class_average_accuracy=float(recall_per_class(confusion)[present].mean()),
    )


class ConfusionAccumulator:
    """Sums confusion matrices over a whole test set; gives the dataset-level metrics.

    Under distributed evaluation, ``torch.distributed.all_reduce(acc.confusion)`` (sum) merges
    the ranks; :meth:`merge` does the same for two accumulators in one process.
    """

    def __init__(
        self, num_classes: int, ignore_index: int = 255, device: torch.device | str = "cpu"
    ) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def add(self, pred: Int64[Tensor, "*pixels"], gt: Int64[Tensor, "*pixels"]) -> None:
        """Count the pixels of one image or a batch of images."""
        counts = confusion_matrix(pred, gt, self.num_classes, self.ignore_index)
        self.confusion += counts.to(self.confusion.device)

    def merge(self, other: "ConfusionAccumulator") -> None:
        if other.num_classes != self.num_classes:
            raise ValueError(
                f"ConfusionAccumulator.merge: {other.num_classes} classes, expected "
                f"{self.num_classes}"
            )
        self.confusion += other.confusion.to(self.confusion.device)

    def iou_per_class(self) -> Float64[Tensor, " classes"]:
        """Dataset-level IoU per class; NaN for classes never seen in GT or prediction."""
        return iou_per_class(self.confusion)

    def summary(self) -> dict[str, MetricValue]:
        """Dataset-level ``miou``, ``total_accuracy``, ``class_average_accuracy``."""
        return dataset_scores(self.confusion)


class PaperProtocolAccumulator:
    """Averages per-image scores over images: the paper protocol of spec 5.2 (spec 7.22).

    ``sums`` holds ``[sum of mIoU, sum of total accuracy, sum of class accuracy, images]`` in
    float64, so ``torch.distributed.all_reduce(acc.sums)`` (sum) merges the ranks.
    """

    def __init__(
        self, num_classes: int, ignore_index: int = 255, device: torch.device | str = "cpu"
    ) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.sums = torch.zeros(len(SEGMENTATION_KEYS) + 1, dtype=torch.float64, device=device)

    def add(self, pred: Int64[Tensor, "h w"], gt: Int64[Tensor, "h w"]) -> PaperImageScores:
        """Score one image, add it to the average and return its scores."""
        scores = paper_image_scores(confusion_matrix(pred, gt, self.num_classes, self.ignore_index))
        image = [scores.miou, scores.total_accuracy, scores.class_average_accuracy, 1.0]
        self.sums += torch.tensor(image, dtype=torch.float64, device=self.sums.device)
        return scores

    def merge(self, other: "PaperProtocolAccumulator") -> None:
        self.sums += other.sums.to(self.sums.device)

    @property
    def num_images(self) -> int:
        return int(self.sums[-1])

    def summary(self) -> dict[str, MetricValue]:
        """Per-image ``miou``, ``total_accuracy``, ``class_average_accuracy``, averaged."""
        if self.num_images == 0:
            reason = "no image was evaluated"
            return {key: MetricValue.unavailable(reason) for key in SEGMENTATION_KEYS}
        means = (self.sums[:-1] / self.sums[-1]).tolist()
        return {key: MetricValue.of(mean) for key, mean in zip(SEGMENTATION_KEYS, means)}
