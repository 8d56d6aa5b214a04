"""A metric is a number or the reason it is missing, never both and never neither."""

import pytest

from gsnerf.evaluation.metric_value import MetricValue


def test_exactly_one_of_value_and_reason() -> None:
    assert MetricValue.of(0.5).available and MetricValue.of(0.5).value == 0.5
    missing = MetricValue.unavailable("no VGG16 weights offline")
    assert not missing.available and missing.unavailable_reason == "no VGG16 weights offline"
    # A number with an excuse, or neither, would let a made-up value pass as measured.
    with pytest.raises(ValueError, match="exactly one of value and unavailable_reason"):
        MetricValue(1.0, "weights missing")
    with pytest.raises(ValueError, match="exactly one of value and unavailable_reason"):
        MetricValue(None)
