"""The most expensive operators of one pass, from ``torch.profiler`` (the benchmark's op table).

The stage table of the benchmark says which part of a frame is slow; this says why: the
operators (and on CUDA the kernels, each listed as a row of its own next to the operator that
launched it) with the most *self* time, on the device that runs them. On CUDA that is the
kernels' device time, on a CPU the host time. Example of what it found: on an H200 the
memory-efficient attention kernel was 72 % of an fp32 frame, for sets of 9 tokens.
"""

import logging
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from gsnerf.engine.device import synchronize

log = logging.getLogger(__name__)


def top_operators(run: Callable[[], object], device: torch.device, count: int) -> list[dict]:
    """Up to ``count`` rows ``{"name", "self_ms", "calls"}`` of one ``run()``, largest first.

    ``self_ms`` is the time spent in the operator itself (not in the operators it calls): on
    CUDA its device time, on a CPU its host time. Rows without such time are left out; a
    profiler that fails gives no rows and a warning.
    """
    on_cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    synchronize(device)
    try:
        with profile(activities=activities) as profiler:
            run()
            synchronize(device)
    except RuntimeError as error:
        # A machine whose profiling interface refuses must not cost the run its other figures.
        log.warning("torch.profiler failed, no operator table: %s", error)
        return []
    rows: dict[str, dict] = {}
    for event in profiler.key_averages():
        # Older torch releases name the device time after CUDA only.
        device_us = getattr(event, "self_device_time_total", None)
        if device_us is None:
            device_us = event.self_cuda_time_total
        self_us = device_us if on_cuda else event.self_cpu_time_total
        name = _readable(event.key)
        # A Triton kernel of compiled code comes twice under one name, as the host-side call
        # that launched it (carrying the kernel's device time) and as the kernel: one row.
        if self_us > 0 and self_us / 1000 > rows.get(name, {"self_ms": 0.0})["self_ms"]:
            rows[name] = {"name": name, "self_ms": self_us / 1000, "calls": event.count}
    return sorted(rows.values(), key=lambda row: row["self_ms"], reverse=True)[:count]


def _readable(name: str) -> str:
    """The profiler's name of a row; a call of inductor's compiled code as "compiled graph <id>"."""
    marker = "## Call CompiledFxGraph "
    if name.startswith(marker):
        return f"compiled graph {name[len(marker) :][:8]}"
    return name
