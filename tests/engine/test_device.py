"""Device-dependent defaults: precision and data-loader workers."""

import pytest
import torch

from gsnerf.engine.device import (
    autocast_context,
    data_workers,
    make_grad_scaler,
    resolve_device,
    resolve_precision,
)

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


def test_automatic_precision_needs_bf16_support_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert resolve_precision("auto", CUDA) == "bf16"
    # An older GPU without bf16 trains in fp32 rather than in a dtype it emulates or lacks.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert resolve_precision("auto", CUDA) == "fp32"


@pytest.mark.parametrize(
    ("precision", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)]
)
def test_autocast_runs_in_the_named_dtype(precision: str, dtype: torch.dtype) -> None:
    with autocast_context(precision, CPU):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == dtype
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == dtype
    with autocast_context("fp32", CPU):
        assert not torch.is_autocast_enabled("cpu")


def test_only_fp16_gets_a_gradient_scaler() -> None:
    # bf16 has fp32's exponent range: its gradients do not underflow and need no scaling.
    assert make_grad_scaler("fp32", CPU) is None
    assert make_grad_scaler("bf16", CPU) is None
    assert isinstance(make_grad_scaler("fp16", CPU), torch.amp.GradScaler)
