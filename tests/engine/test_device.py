"""Device-dependent defaults: precision and data-loader workers."""

import pytest
import torch

from gsnerf.engine.device import data_workers, resolve_device, resolve_precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_automatic_loader_workers_only_with_cuda() -> None:
    # A CPU trains with all its cores, so it loads in the training process.
    assert data_workers(-1, CPU, cores=16) == 0
    # With CUDA half the cores, at most 4, at least none.
    assert data_workers(-1, CUDA, cores=16) == 4
    assert data_workers(-1, CUDA, cores=6) == 3
    assert data_workers(-1, CUDA, cores=1) == 0
    # An explicit count is kept on every device.
    assert data_workers(0, CUDA, cores=16) == 0
    assert data_workers(7, CPU, cores=2) == 7
    with pytest.raises(ValueError, match="num_workers"):
        data_workers(-2, CPU, cores=2)


def test_automatic_precision_is_fp32_on_a_cpu() -> None:
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp8", CPU)


def test_cuda_without_a_gpu_names_the_config_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == CPU
    with pytest.raises(RuntimeError, match="train.device=cuda but no CUDA device"):
        resolve_device("cuda")
    # The benchmark's key is "device".
    with pytest.raises(RuntimeError, match="^device=cuda:1 .* use device=auto$"):
        resolve_device("cuda:1", "device")
