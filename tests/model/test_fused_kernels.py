"""The fused kernels' switches: set together, off for FLOP counting, and from eval options."""

import pytest
import torch

from gsnerf.evaluation.benchmark import load_model_cfg
from gsnerf.evaluation.evaluator import EvalCfg, apply_inference_options
from gsnerf.model import attention_kernel, fused_blocks, fused_transformer
from gsnerf.model.fused_kernels import (
    FusedKernels,
    current_fused_kernels,
    kernels_disabled,
    set_fused_kernels,
)
from gsnerf.model.gsnerf import build_model


@pytest.fixture
def restored_switches():
    saved = current_fused_kernels()
    yield
    set_fused_kernels(saved)


def switches() -> tuple[bool, bool, bool]:
    return attention_kernel.enabled, fused_blocks.enabled, fused_transformer.enabled


def test_switches_are_set_together_and_read_back(restored_switches) -> None:
    assert switches() == (False, False, False)  # every kernel off by default
    set_fused_kernels(FusedKernels(attention=True, transformer=True))
    assert switches() == (True, False, True)
    assert current_fused_kernels() == FusedKernels(True, False, True)


def test_kernels_disabled_switches_every_kernel_off_and_restores_them(restored_switches) -> None:
    set_fused_kernels(FusedKernels(True, True, True))
    with kernels_disabled():
        assert switches() == (False, False, False)
    assert switches() == (True, True, True)


def test_eval_options_switch_the_fused_kernels(restored_switches) -> None:
    model = build_model(load_model_cfg("tiny", 4), num_classes=3)  # eval.compile stays none
    cpu = torch.device("cpu")
    apply_inference_options(model, EvalCfg(fused_blocks=True), cpu)
    assert switches() == (False, True, False)
    apply_inference_options(model, EvalCfg(fused_attention=True), cpu)
    assert switches() == (True, False, False)
    apply_inference_options(model, EvalCfg(fused_transformer=True), cpu)
    assert switches() == (False, False, True)
    apply_inference_options(model, EvalCfg(), cpu)
    assert switches() == (False, False, False)
