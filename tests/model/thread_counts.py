"""Running a kernel on several torch thread counts, for the tests that its numbers do not
depend on how its work is split."""

from collections.abc import Callable
from typing import TypeVar

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
