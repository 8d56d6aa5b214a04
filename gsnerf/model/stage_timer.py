"""Wall-clock time per named stage of a forward pass, for benchmarks (spec 9).

A :class:`StageTimer` is handed to :meth:`gsnerf.model.gsnerf.GSNeRF.profiled`; the model then
wraps each stage in ``with timer("stage"):`` and the timer adds the stage's elapsed seconds to
``timer.seconds["stage"]``. Without a timer the model runs exactly as before: every stage
context is :func:`contextlib.nullcontext`. On CUDA the timer synchronises the device at the start
and the end of each stage, so kernels queued by one stage are charged to that stage and not to
the next one. Example: three chunks of 0.1 s each in "heads" give ``seconds["heads"] = 0.3`` and
``calls["heads"] = 3``.
"""

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from gsnerf.engine.device import synchronize


class StageTimer:
    """Accumulates elapsed seconds per stage name; stages must not nest."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._started: dict[str, float] = {}

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self._started.clear()

    def start(self, stage: str) -> None:
        if self._started:
            raise RuntimeError(
                f"StageTimer: stage {stage!r} started inside {next(iter(self._started))!r}; "
                "stages must not nest, or their times would be counted twice"
            )
        synchronize(self.device)
        self._started[stage] = time.perf_counter()

    def stop(self, stage: str) -> None:
        synchronize(self.device)
        self.seconds[stage] += time.perf_counter() - self._started.pop(stage)
        self.calls[stage] += 1

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        self.start(stage)
        try:
            yield
        finally:
            self.stop(stage)

    def attach(self, module: nn.Module, stage: str) -> list[RemovableHandle]:
        """Time every forward call of ``module`` as ``stage``; returns the hook handles."""
        return [
            module.register_forward_pre_hook(lambda _module, _inputs: self.start(stage)),
            module.register_forward_hook(lambda _module, _inputs, _output: self.stop(stage)),
        ]

    def total(self) -> float:
        return sum(self.seconds.values())
