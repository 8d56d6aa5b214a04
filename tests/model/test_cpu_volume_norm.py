"""The C++ GroupNorm + LeakyReLU of channels-last volumes against float64 library code, and in
the cost volumes' U-Net."""

import pytest
import torch
import torch.nn.functional as F
from compiled_checks import runtime_type_checks_off
from kernel_checks import record_call_shapes

from gsnerf.model import cpu_volume_norm
from gsnerf.model.cost_volume import CostRegularizer, CostVolumeCfg, conv3d_norm_act
from gsnerf.model.cpu_volume_norm import (
    cell_stride,
    cpu_volume_norm_act,
    cpu_volume_norm_applies,
)
from gsnerf.model.native_library import compiler_present

needs_compiler = pytest.mark.skipif(not compiler_present(), reason="no C++ compiler")


@pytest.fixture
def kernel_on() -> None:
    # tests/conftest.py restores every kernel switch after each test.
    cpu_volume_norm.enabled = True


def channels_last(volume: torch.Tensor) -> torch.Tensor:
    return volume.contiguous(memory_format=torch.channels_last_3d)


def random_inputs(shape, generator, offset: float):
    """A channels-last volume with an offset and a spread per channel (its statistics must not
    cancel), and a weight and a bias."""
    offsets = torch.randn(1, shape[1], 1, 1, 1, generator=generator) * offset
    volume = channels_last(torch.randn(shape, generator=generator) * 3 + offsets)
    weight = torch.randn(shape[1], generator=generator)
    return volume, weight, torch.randn(shape[1], generator=generator)


def reference(volume, weight, bias, groups, slope):
    """The library's norm and activation in float64."""
    normalised = F.group_norm(volume.double(), groups, weight.double(), bias.double(), eps=1e-5)
    return F.leaky_relu(normalised, slope)


@needs_compiler
@pytest.mark.parametrize(
    ("shape", "groups"),
    [((3, 8, 6, 10, 12), 8), ((2, 16, 4, 5, 7), 4), ((1, 6, 1, 1, 1), 3), ((2, 64, 3, 4, 5), 64)],
)
def test_matches_float64_group_norm_and_leaky_relu(shape, groups) -> None:
    volume, weight, bias = random_inputs(shape, torch.Generator().manual_seed(0), offset=20)
    out = cpu_volume_norm_act(volume, weight, bias, groups, 1e-5, 0.01)
    assert out.is_contiguous(memory_format=torch.channels_last_3d)
    expected = reference(volume, weight, bias, groups, 0.01)
    torch.testing.assert_close(out.double(), expected, atol=2e-5, rtol=1e-5)
    # The activation's slope acts on the negative side only.
    assert (out < 0).any() and (out > 0).any()


@needs_compiler
def test_reads_a_channel_slice_of_a_wider_volume() -> None:
    # The cost volumes' heads normalise slices of one convolution's output (CostRegularizer).
    generator = torch.Generator().manual_seed(1)
    both = channels_last(torch.randn(2, 12, 4, 6, 8, generator=generator))
    weight, bias = torch.randn(4, generator=generator), torch.randn(4, generator=generator)
    part = both[:, 8:]
    assert cell_stride(part) == 12 and not part.is_contiguous()
    out = cpu_volume_norm_act(part, weight, bias, 4, 1e-5, 0.2)
    torch.testing.assert_close(
        out.double(), reference(part, weight, bias, 4, 0.2), atol=2e-5, rtol=0
    )


@needs_compiler
def test_conditions(kernel_on) -> None:
    norm = torch.nn.GroupNorm(8, 8)
    volume = channels_last(torch.randn(2, 8, 3, 4, 5))
    assert cpu_volume_norm_applies(volume, norm)  # with gradients too
    assert not cpu_volume_norm_applies(volume.contiguous(), norm)  # channels apart
    assert not cpu_volume_norm_applies(volume.double(), norm)
    cpu_volume_norm.enabled = False
    assert not cpu_volume_norm_applies(volume, norm)
    with pytest.raises(ValueError, match="3 groups"):
        cpu_volume_norm_act(volume, norm.weight, norm.bias, 3, 1e-5, 0.01)


@needs_compiler
@pytest.mark.parametrize(("shape", "groups"), [((3, 8, 6, 10, 12), 8), ((2, 16, 4, 5, 7), 4)])
def test_gradients_match_float64_autograd(shape, groups) -> None:
    generator = torch.Generator().manual_seed(4)
    volume, weight, bias = random_inputs(shape, generator, offset=5)
    grad_out = torch.randn(shape, generator=generator)
    inputs = [tensor.clone().requires_grad_() for tensor in (volume, weight, bias)]
    cpu_volume_norm_act(*inputs, groups, 1e-5, 0.1).backward(grad_out)
    exact = [tensor.double().detach().requires_grad_() for tensor in (volume, weight, bias)]
    reference(*exact, groups, 0.1).backward(grad_out.double())
    assert inputs[0].grad.is_contiguous(memory_format=torch.channels_last_3d)
    for ours, theirs in zip(inputs, exact):
        scale = theirs.grad.abs().max().item()  # weight and bias gradients sum many terms
        torch.testing.assert_close(ours.grad.double(), theirs.grad, atol=1e-5 * scale, rtol=0)


@needs_compiler
def test_conv_norm_act_and_regularizer_match_the_library_modules(kernel_on, monkeypatch) -> None:
    calls = record_call_shapes(monkeypatch, cpu_volume_norm, "cpu_volume_norm_act")
    torch.manual_seed(2)
    cfg = CostVolumeCfg(widths=[8, 8, 16, 16], volume_channels=4, channels_last=True)
    block = conv3d_norm_act(8, 16, 2, cfg)
    regularizer = CostRegularizer(8, cfg).eval()
    for module in regularizer.modules():
        if isinstance(module, torch.nn.GroupNorm):  # not the initial 1 and 0
            torch.nn.init.normal_(module.weight)
            torch.nn.init.normal_(module.bias)
    cost = torch.randn(2, 8, 8, 12, 16)
    with torch.no_grad():
        fast_block = block(channels_last(cost))
        fast_logits, fast_volume = regularizer(cost)
        # Every norm of the block and the U-Net: 1 + 1 + 3 x 2 down + 3 up + 2 heads.
        assert len(calls) == 13
        cpu_volume_norm.enabled = False
        plain_block = block(channels_last(cost))
        plain_logits, plain_volume = regularizer(cost)
    torch.testing.assert_close(fast_block, plain_block, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast_logits, plain_logits, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(fast_volume, plain_volume, atol=1e-4, rtol=1e-5)
    # Same state-dict keys as a plain Sequential of the three modules (checkpoints load).
    assert set(block.state_dict()) == {"0.weight", "1.weight", "1.bias"}


@needs_compiler
def test_compiled_regularizer_calls_the_kernel(kernel_on) -> None:
    torch.manual_seed(3)
    cfg = CostVolumeCfg(widths=[8, 8, 16, 16], volume_channels=4, channels_last=True)
    regularizer = CostRegularizer(8, cfg).eval()
    cost = torch.randn(1, 8, 8, 8, 8)
    compiled = torch.compile(regularizer, fullgraph=True)
    with torch.no_grad(), runtime_type_checks_off():
        logits, volume = compiled(cost)
        plain_logits, plain_volume = regularizer(cost)
    torch.testing.assert_close(logits, plain_logits, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(volume, plain_volume, atol=1e-4, rtol=1e-5)


@needs_compiler
def test_compiled_training_block_has_the_eager_gradients(kernel_on) -> None:
    # train.compile with the kernel: the operator's autograd formula inside compiled code.
    torch.manual_seed(5)
    block = conv3d_norm_act(4, 8, 1, CostVolumeCfg(channels_last=True))
    for parameter in block[1].parameters():
        torch.nn.init.normal_(parameter)
    volume = channels_last(torch.randn(2, 4, 4, 6, 8))
    grad_out = torch.randn(2, 8, 4, 6, 8)

    def gradients(module) -> list[torch.Tensor]:
        block.zero_grad()
        module(volume).backward(grad_out)
        return [parameter.grad.clone() for parameter in block.parameters()]

    with runtime_type_checks_off():
        compiled = gradients(torch.compile(block, fullgraph=True))
    for ours, eager in zip(compiled, gradients(block)):
        torch.testing.assert_close(ours, eager, atol=1e-5, rtol=1e-5)
