"""A metric result that is either a number or the reason it could not be computed.

Every metric of gsnerf that can fail to exist (no valid pixel, a missing LPIPS backbone, an empty
accumulator) returns a :class:`MetricValue` instead of a made-up number such as 0 or NaN.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricValue:
    """Exactly one of ``value`` and ``unavailable_reason`` is set."""

    # The metric's value, or None when it could not be computed.
    value: float | None
    # Why the metric could not be computed, or None when ``value`` holds it.
    unavailable_reason: str | None = None

    def __post_init__(self) -> None:
        if (self.value is None) == (self.unavailable_reason is None):
            raise ValueError(
                "MetricValue needs exactly one of value and unavailable_reason, got "
                f"value={self.value!r}, unavailable_reason={self.unavailable_reason!r}"
            )

    @classmethod
    def of(cls, value: float) -> "MetricValue":
        """An available metric value."""
        return cls(value=float(value))

    @classmethod
    def unavailable(cls, reason: str) -> "MetricValue":
        """A metric that could not be computed, with the reason."""
        return cls(value=None, unavailable_reason=reason)

    @property
    def available(self) -> bool:
        return self.value is not None
