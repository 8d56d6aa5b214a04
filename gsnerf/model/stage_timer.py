"""Time and FLOPs per named stage of a forward pass, for benchmarks (spec 9).

A :class:`StageRecorder` is handed to :meth:`gsnerf.model.gsnerf.GSNeRF.profiled`; the model then
wraps each stage in ``with recorder("stage"):`` (or a module's forward, :meth:`attach`) and the
recorder adds what the stage cost to its total for that name. Without a recorder the model runs
exactly as before: every stage context is :func:`contextlib.nullcontext`.

- :class:`StageTimer` counts wall-clock seconds. On CUDA it synchronises the device at the start
  and the end of each stage, so kernels queued by one stage are charged to that stage and not
  to the next one. Example: three chunks of 0.1 s each in "heads" give
  ``seconds["heads"] = 0.3`` and ``calls["heads"] = 3``.
- :class:`StageFlops` counts the FLOPs a ``torch.utils.flop_counter.FlopCounterMode`` sees
  within each stage. Example: a ``Linear(8, 4)`` on 10 rows in "heads" gives
  ``flops["heads"] = 2 * 10 * 8 * 4 = 640``.
"""

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.hooks import RemovableHandle

from gsnerf.engine.device import synchronize


class StageRecorder:
    """Accumulates a measure per stage name between :meth:`start` and :meth:`stop`.

    Stages must not nest: an inner stage's cost would be counted in the outer one too.
    ``read`` returns the measure's running value (a clock, a FLOP count); ``totals`` holds the
    sums of its increases per stage, ``calls`` the counts.
    """

    def __init__(self, read: Callable[[], float]) -> None:
        self._read = read
        self.totals: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._started: dict[str, float] = {}

    def reset(self) -> None:
        self.totals.clear()
        self.calls.clear()
        self._started.clear()

    def start(self, stage: str) -> None:
        if self._started:
            raise RuntimeError(
                f"{type(self).__name__}: stage {stage!r} started inside "
                f"{next(iter(self._started))!r}; stages must not nest, or their cost would be "
                "counted twice"
            )
        self._started[stage] = self._read()

    def stop(self, stage: str) -> None:
        self.totals[stage] += self._read() - self._started.pop(stage)
        self.calls[stage] += 1

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        self.start(stage)
        try:
            yield
        finally:
            self.stop(stage)

    def attach(self, module: nn.Module, stage: str) -> list[RemovableHandle]:
        """Record every forward call of ``module`` as ``stage``; returns the hook handles."""
        return [
            module.register_forward_pre_hook(lambda _module, _inputs: self.start(stage)),
            module.register_forward_hook(lambda _module, _inputs, _output: self.stop(stage)),
        ]

    def total(self) -> float:
        return sum(self.totals.values())


class StageTimer(StageRecorder):
    """Wall-clock seconds per stage (module doc); ``seconds`` is ``totals``."""

    def __init__(self, device: torch.device) -> None:
        super().__init__(self._clock)
        self.device = device

    @property
    def seconds(self) -> dict[str, float]:
        return self.totals

    def _clock(self) -> float:
        synchronize(self.device)
        return time.perf_counter()


class StageFlops(StageRecorder):
    """FLOPs per stage counted by FlopCounterModes (module doc); ``flops`` is ``totals``.

    ``counters``: the modes whose counts make up the pass (a pass may switch between several,
    say one for the source encoding and one for the rendering; only the active one grows, so
    the stage's share of their sum is its own).
    """

    def __init__(self, *counters: FlopCounterMode) -> None:
        super().__init__(lambda: float(sum(counter.get_total_flops() for counter in counters)))

    @property
    def flops(self) -> dict[str, float]:
        return self.totals
