"""The C++ single-output 3x3x3 convolution of channels-last volumes against float64 library
convolutions, and in the cost volumes' U-Net."""

import pytest
import torch
import torch.nn.functional as F
from compiled_checks import runtime_type_checks_off
from kernel_checks import on_thread_counts, record_call_shapes

from gsnerf.model import cpu_logit_conv
from gsnerf.model.cost_volume import CostRegularizer, CostVolumeCfg, LogitConv3d
from gsnerf.model.cpu_logit_conv import cpu_logit_conv_applies, logit_conv_forward
from gsnerf.model.native_library import compiler_present

needs_compiler = pytest.mark.skipif(not compiler_present(), reason="no C++ compiler")

# Rows of 13 cells of 8 channels: one 64-float block, one vector and a scalar tail between the
# edge cells; 12 and 24 channels repeat their lanes' pattern over three vectors, 32 over two;
# single cells and single rows have no neighbours to read on some axes.
SHAPES = [
    (2, 8, 3, 5, 13),
    (3, 8, 4, 6, 80),
    (2, 12, 4, 6, 5),
    (1, 24, 2, 3, 9),
    (2, 32, 3, 2, 4),
    (1, 3, 1, 1, 1),
    (2, 4, 1, 1, 7),
    (1, 1, 5, 4, 3),
]


@pytest.fixture
def kernel_on() -> None:
    # tests/conftest.py restores every kernel switch after each test.
    cpu_logit_conv.enabled = True


def channels_last(volume: torch.Tensor) -> torch.Tensor:
    return volume.contiguous(memory_format=torch.channels_last_3d)


def inputs(shape, seed: int):
    generator = torch.Generator().manual_seed(seed)
    volume = channels_last(torch.randn(shape, generator=generator))
    return volume, torch.randn(1, shape[1], 3, 3, 3, generator=generator)


@needs_compiler
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_a_float64_convolution(shape) -> None:
    volume, weight = inputs(shape, 0)
    logits = logit_conv_forward(volume, weight)
    assert logits.shape == (shape[0], 1, *shape[2:]) and logits.is_contiguous()
    expected = F.conv3d(volume.double(), weight.double(), padding=1)
    # Sums of up to 27 * 32 products of unit-scale numbers, in float32.
    torch.testing.assert_close(logits.double(), expected, atol=2e-5, rtol=1e-6)


@needs_compiler
@pytest.mark.parametrize("shape", SHAPES)
def test_gradients_match_float64_autograd(shape) -> None:
    volume, weight = inputs(shape, 1)
    grad_out = torch.randn(shape[0], 1, *shape[2:], generator=torch.Generator().manual_seed(2))
    ours = [tensor.clone().requires_grad_() for tensor in (volume, weight)]
    logit_conv_forward(*ours).backward(grad_out)
    exact = [tensor.double().detach().requires_grad_() for tensor in (volume, weight)]
    F.conv3d(*exact, padding=1).backward(grad_out.double())
    assert ours[0].grad.is_contiguous(memory_format=torch.channels_last_3d)
    for mine, theirs in zip(ours, exact):
        # The weight's gradient sums a product over every cell of the batch.
        scale = theirs.grad.abs().max().item()
        torch.testing.assert_close(mine.grad.double(), theirs.grad, atol=1e-6 * scale, rtol=0)


@needs_compiler
def test_thread_counts_give_the_same_numbers() -> None:
    volume, weight = inputs((3, 8, 4, 5, 6), 3)
    volume.requires_grad_()
    weight.requires_grad_()
    grad_out = torch.randn(3, 1, 4, 5, 6, generator=torch.Generator().manual_seed(4))

    def forward_and_gradients():
        logits = logit_conv_forward(volume, weight)
        return [logits, *torch.autograd.grad(logits, (volume, weight), grad_out)]

    for one, three in zip(*on_thread_counts(forward_and_gradients)):
        assert torch.equal(one, three)


@needs_compiler
def test_conditions(kernel_on) -> None:
    conv = LogitConv3d(8, 1, 3, padding=1, bias=False)
    volume = channels_last(torch.randn(2, 8, 3, 4, 5))
    assert cpu_logit_conv_applies(volume, conv)
    assert not cpu_logit_conv_applies(volume.contiguous(), conv)  # channels apart
    assert not cpu_logit_conv_applies(volume.double(), conv.double())
    for other in (
        LogitConv3d(8, 1, 3, padding=1, bias=True),
        LogitConv3d(8, 2, 3, padding=1, bias=False),
        LogitConv3d(8, 1, 3, padding=1, stride=2, bias=False),
        LogitConv3d(8, 1, 3, padding=0, bias=False),
    ):
        assert not cpu_logit_conv_applies(volume, other)
        torch.testing.assert_close(
            other(volume), F.conv3d(volume, other.weight, other.bias, other.stride, other.padding)
        )
    cpu_logit_conv.enabled = False
    assert not cpu_logit_conv_applies(volume, conv)
    with pytest.raises(ValueError, match=r"weight of shape \(1, 8, 3, 3, 3\)"):
        logit_conv_forward(volume, torch.randn(1, 4, 3, 3, 3))


@needs_compiler
def test_regularizer_training_matches_the_library_convolution(kernel_on, monkeypatch) -> None:
    calls = record_call_shapes(monkeypatch, cpu_logit_conv, "cpu_logit_conv")
    torch.manual_seed(6)
    cfg = CostVolumeCfg(widths=[8, 8, 16, 16], volume_channels=4, channels_last=True)
    regularizer = CostRegularizer(8, cfg)
    cost = torch.randn(2, 8, 8, 12, 16)

    def forward_and_gradients():
        regularizer.zero_grad()
        logits, volume = regularizer(cost)
        (logits.square().sum() + volume.sum()).backward()
        return logits.detach(), regularizer.depth_head[1].weight.grad.clone()

    fast_logits, fast_grad = forward_and_gradients()
    assert calls == [(2, 8, 8, 16, 16)]  # padded to the U-Net's size multiple
    cpu_logit_conv.enabled = False
    plain_logits, plain_grad = forward_and_gradients()
    torch.testing.assert_close(fast_logits, plain_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast_grad, plain_grad, atol=1e-4, rtol=1e-5)
    # Same state-dict keys as the plain convolution (checkpoints load).
    assert set(regularizer.depth_head[1].state_dict()) == {"weight"}


@needs_compiler
def test_compiled_convolution_has_the_eager_numbers(kernel_on) -> None:
    # train.compile with the kernel: the operator and its autograd formula in compiled code.
    torch.manual_seed(7)
    conv = LogitConv3d(8, 1, 3, padding=1, bias=False)
    volume = channels_last(torch.randn(2, 8, 4, 6, 8)).requires_grad_()
    grad_out = torch.randn(2, 1, 4, 6, 8)

    def run(module):
        conv.zero_grad()
        logits = module(volume)
        (grad_volume,) = torch.autograd.grad(logits, volume, grad_out, retain_graph=True)
        logits.backward(grad_out)
        return logits.detach(), grad_volume, conv.weight.grad.clone()

    with runtime_type_checks_off():
        compiled = run(torch.compile(conv, fullgraph=True))
    for ours, eager in zip(compiled, run(conv)):
        torch.testing.assert_close(ours, eager, atol=1e-5, rtol=1e-5)
