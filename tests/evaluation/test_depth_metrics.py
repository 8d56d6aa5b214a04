"""Depth metrics on hand-computed maps, per image and accumulated."""

import math

import pytest
import torch

from gsnerf.evaluation.depth_metrics import (
    DepthMetricsAccumulator,
    DepthMetricsCfg,
    depth_metric_keys,
    depth_metrics,
)

KEYS = [
    "abs_error_m",
    "abs_rel",
    "rmse_m",
    "delta_under_1.25",
    "acc_under_0.01m",
    "acc_under_0.05m",
    "acc_under_0.1m",
]

# Image 1: the pixel with GT 0 is not evaluated; errors on the rest are [0.5, 0, 0].
GT_1 = torch.tensor([[2.0, 4.0], [0.0, 1.0]])
PRED_1 = torch.tensor([[2.5, 4.0], [3.0, 1.0]])
EXPECTED_1 = {
    "abs_error_m": 0.5 / 3,
    "abs_rel": (0.5 / 2) / 3,
    "rmse_m": math.sqrt(0.25 / 3),
    # Ratios 1.25, 1, 1: 1.25 is not strictly below 1.25.
    "delta_under_1.25": 2 / 3,
    "acc_under_0.01m": 2 / 3,
    "acc_under_0.05m": 2 / 3,
    "acc_under_0.1m": 2 / 3,
}
# Image 2: one pixel, GT 1, prediction 2: error 1, ratio 2.
GT_2 = torch.tensor([[1.0]])
PRED_2 = torch.tensor([[2.0]])


def _values(summary: dict) -> dict[str, float]:
    return {key: metric.value for key, metric in summary.items()}


def test_metric_names_follow_the_thresholds() -> None:
    assert depth_metric_keys(DepthMetricsCfg()) == KEYS
    cfg = DepthMetricsCfg(abs_error_thresholds_m=[0.2], delta_ratio=1.1)
    assert depth_metric_keys(cfg) == [*KEYS[:3], "delta_under_1.1", "acc_under_0.2m"]


def test_depth_metrics_by_hand_skip_zero_ground_truth() -> None:
    assert _values(depth_metrics(PRED_1, GT_1)) == pytest.approx(EXPECTED_1)


def test_valid_mask_and_thresholds() -> None:
    valid = torch.tensor([[False, True], [True, True]])
    # Only the pixels with GT 4 and 1 remain (GT 0 is still skipped): both exact.
    assert all(
        v == pytest.approx(1.0 if "_under_" in k else 0.0)
        for k, v in _values(depth_metrics(PRED_1, GT_1, valid)).items()
    )
    # Error 0.04 is under 0.05 m and 0.1 m but not under 0.01 m; ratio 1.04.
    scores = _values(depth_metrics(torch.tensor([[1.04]]), torch.tensor([[1.0]])))
    assert [scores[k] for k in KEYS[3:]] == [1.0, 0.0, 1.0, 1.0]


def test_delta_counts_under_and_over_prediction_alike() -> None:
    # GT 2 m. Ratios max(p/g, g/p): 1.5 -> 1.33, 3.0 -> 1.5 fail; 1.8 -> 1.11, 2.2 -> 1.1 pass.
    # Under-predictions alone: 1.5 -> 1.33, 1.55 -> 1.29 fail; 1.7 -> 1.18, 1.75 -> 1.14 pass.
    gt = torch.full((1, 4), 2.0)
    for pred in ([1.5, 3.0, 1.8, 2.2], [1.5, 1.55, 1.7, 1.75]):
        scores = _values(depth_metrics(torch.tensor([pred]), gt))
        assert scores["delta_under_1.25"] == pytest.approx(0.5), pred


def test_non_positive_prediction_fails_delta() -> None:
    # Ratios of a negative prediction are negative, hence "below" 1.25: it must still fail.
    scores = _values(depth_metrics(torch.tensor([[-1.0, 0.0]]), torch.tensor([[1.0, 1.0]])))
    assert scores["delta_under_1.25"] == 0.0


def test_no_evaluated_pixel_is_unavailable_with_reason() -> None:
    result = depth_metrics(torch.ones(2, 2), torch.zeros(2, 2))
    assert list(result) == KEYS
    assert all(m.value is None and "depth > 0" in m.unavailable_reason for m in result.values())


def test_accumulator_per_image_mean_and_pooled_pixels() -> None:
    first, second = DepthMetricsAccumulator(), DepthMetricsAccumulator()
    first.add(PRED_1, GT_1)
    # An image without ground truth changes neither aggregate.
    first.add(torch.ones(2, 2), torch.zeros(2, 2))
    second.add(PRED_2, GT_2)
    first.merge(second)

    per_image = _values(first.per_image_mean())
    assert per_image["abs_error_m"] == pytest.approx((0.5 / 3 + 1.0) / 2)
    assert per_image["rmse_m"] == pytest.approx((math.sqrt(0.25 / 3) + 1.0) / 2)
    assert per_image["delta_under_1.25"] == pytest.approx((2 / 3 + 0.0) / 2)

    # Pooled over the 4 evaluated pixels: errors [0.5, 0, 0, 1], relative [0.25, 0, 0, 1].
    pooled = _values(first.pooled())
    assert pooled["abs_error_m"] == pytest.approx(1.5 / 4)
    assert pooled["abs_rel"] == pytest.approx(1.25 / 4)
    assert pooled["rmse_m"] == pytest.approx(math.sqrt(1.25 / 4))
    assert pooled["delta_under_1.25"] == pytest.approx(2 / 4)
    assert pooled["acc_under_0.1m"] == pytest.approx(2 / 4)


def test_single_image_accumulator_equals_depth_metrics() -> None:
    accumulator = DepthMetricsAccumulator()
    accumulator.add(PRED_1, GT_1)
    assert _values(accumulator.per_image_mean()) == pytest.approx(EXPECTED_1)
    assert _values(accumulator.pooled()) == pytest.approx(EXPECTED_1)


def test_empty_accumulator_is_unavailable() -> None:
    accumulator = DepthMetricsAccumulator()
    for summary in (accumulator.per_image_mean(), accumulator.pooled()):
        assert all(not m.available for m in summary.values())


def test_metrics_json_reports_both_aggregates() -> None:
    from gsnerf.evaluation.evaluator import SceneScores

    scores = SceneScores(num_classes=3, ignore_index=255)
    scores.depth.add(PRED_1, GT_1)
    scores.depth.add(PRED_2, GT_2)
    summary = scores.summary()
    assert summary["depth_abs_error_m"] == pytest.approx((0.5 / 3 + 1.0) / 2)
    assert summary["depth_pooled_abs_error_m"] == pytest.approx(1.5 / 4)
    # No guide depth was added: both of its aggregates are unavailable, not zero.
    assert summary["guide_abs_rel"] is None and summary["guide_pooled_abs_rel"] is None
