"""Test-suite wide settings: small thread pools so parallel workers do not oversubscribe, and
the fused-kernel switches back at their defaults after every test."""

import os

import pytest
import torch

from gsnerf.model.fused_kernels import current_fused_kernels, set_fused_kernels

# Under pytest-xdist each worker gets one core; without it, torch keeps its default.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` where CUDA is not available."""
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def fused_kernel_switches_restored():
    """Evaluation, render.py and the benchmark set the switches for the whole process."""
    saved = current_fused_kernels()
    yield
    set_fused_kernels(saved)
