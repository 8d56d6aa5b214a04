"""Helpers of the C++ kernels' tests: running a kernel on several torch thread counts (its
numbers must not depend on how its work is split), and recording which inputs reach it."""

from collections.abc import Callable
from types import ModuleType
from typing import TypeVar

import pytest
import torch

Result = TypeVar("Result")


def on_thread_counts(run: Callable[[], Result], counts: tuple[int, ...] = (1, 3)) -> list[Result]:
    """``run()``'s result with each of ``counts`` torch threads; the thread count is restored."""
    saved = torch.get_num_threads()
    results = []
    try:
        for threads in counts:
            torch.set_num_threads(threads)
            results.append(run())
    finally:
        torch.set_num_threads(saved)
    return results


def record_call_shapes(monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str) -> list:
    """Replace ``module.name`` by a wrapper that calls it and appends the shape of its first
    argument to the returned list (for the test's duration)."""
    calls = []
    function = getattr(module, name)

    def recorded(*args):
        calls.append(args[0].shape)
        return function(*args)

    monkeypatch.setattr(module, name, recorded)
    return calls
