"""Timing repeated passes of a function: synchronised wall-clock seconds and peak memory.

Used by the speed benchmark (:mod:`gsnerf.evaluation.benchmark`). On CUDA the device is
synchronised before and after each pass, so a pass's time includes its queued kernels; peak
memory is ``torch.cuda.max_memory_allocated``. On a CPU it is the process's peak resident set
size so far (``ru_maxrss``), which never decreases.
"""

import resource
import time
from collections.abc import Callable

import torch

from gsnerf.engine.device import synchronize


def timed(run: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call of ``run``, the device synchronised before and after."""
    synchronize(device)
    started = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - started


def repeat_passes(
    run: Callable[[], object], repeats: int, budget_s: float, device: torch.device
) -> list[float]:
    """Seconds of up to ``repeats`` passes (at least one), stopping once ``budget_s`` is spent."""
    seconds: list[float] = []
    while len(seconds) < max(repeats, 1) and sum(seconds) < budget_s:
        seconds.append(timed(run, device))
    return seconds


def alternate_passes(
    first: Callable[[], object],
    second: Callable[[], object],
    repeats: int,
    budget_s: float,
    device: torch.device,
) -> tuple[list[float], list[float], float, float]:
    """Seconds of ``first`` and ``second`` in alternating passes, and their peak memory in MB.

    Alternating, not one series after the other: on a shared machine the speed drifts over a
    run, and a drift then moves both series alike instead of their ratio. Up to ``repeats``
    pairs, stopping once ``budget_s`` is spent (at least one pair). The peaks are those of each
    function's first pass (:func:`peak_memory_mb`).
    """
    first_seconds: list[float] = []
    second_seconds: list[float] = []
    peaks: list[float] = []
    while len(first_seconds) < max(repeats, 1):
        if first_seconds and sum(first_seconds) + sum(second_seconds) >= budget_s:
            break
        for run, seconds in ((first, first_seconds), (second, second_seconds)):
            reset_peak_memory(device)
            seconds.append(timed(run, device))
            if len(seconds) == 1:
                peaks.append(peak_memory_mb(device))
    return first_seconds, second_seconds, peaks[0], peaks[1]


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated CUDA memory since the last reset, or the process's peak RSS, in MB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_memory(device: torch.device) -> None:
    """Start a new CUDA peak; a CPU's peak RSS cannot be reset."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
