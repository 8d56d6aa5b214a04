"""The Triton warp-and-correlate kernel and its backward against the PyTorch cost volume.

On a CPU the kernels run, through their torch operators, in Triton's interpreter
(``TRITON_INTERPRET=1``, in a process of their own), in float32 and float16; bfloat16 is
checked on CUDA (test_fused_volume_conv.py).
"""

import pytest
import torch
from test_cpu_correlation import _level
from test_fused_volume_conv_grad import captured_step_graphs
from triton_interpreter import run_in_triton_interpreter

from gsnerf.model import fused_correlation
from gsnerf.model.cost_volume import correlation_volume
from gsnerf.model.fused_correlation import fused_correlation_applies, fused_correlation_volume

needs_triton = pytest.mark.skipif(fused_correlation.triton is None, reason="needs Triton")

# (batch, neighbours, channels, groups, depths, height, width, features' dtype): the pyramid's
# widths (8 to 32 channels in 8 groups), one group, one channel per group, widths that are no
# multiple of anything, and 16-bit features.
CASES = [
    (2, 3, 8, 4, 6, 15, 20, "float32"),
    (1, 2, 16, 8, 5, 9, 37, "float32"),
    (3, 1, 4, 1, 3, 4, 3, "float32"),
    (1, 2, 32, 8, 4, 6, 7, "float16"),
    (2, 2, 8, 8, 3, 5, 6, "float16"),
]


def level(case: tuple, device: str, turned: bool = False) -> tuple:
    """``correlation_volume``'s arguments for ``case`` (features rounded to its dtype, in
    float32), on ``device``; ``turned``: the last neighbour looks the other way, so that every
    point lies behind it."""
    batch, neighbours, channels, _, depths, height, width, dtype = case
    arguments = list(_level(batch, neighbours, channels, depths, height, width, seed=channels))
    arguments[:2] = [features.to(getattr(torch, dtype)).float() for features in arguments[:2]]
    if turned:
        flip = torch.diag(torch.tensor([-1.0, 1.0, -1.0]))
        arguments[5][:, -1, :3, :3] = arguments[5][:, -1, :3, :3] @ flip
    return tuple(tensor.to(device) for tensor in arguments)


def volumes(case: tuple, device: str, turned: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The PyTorch volume of ``case`` and the kernel's (from the features in its dtype)."""
    groups, dtype = case[3], getattr(torch, case[-1])
    arguments = level(case, device, turned)
    with torch.no_grad():
        expected = correlation_volume(*arguments, groups)
        features = [tensor.to(dtype) for tensor in arguments[:2]]
        out = fused_correlation_volume(*features, *arguments[2:], groups)
    return expected, out


def gradients(case: tuple, device: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The features' gradients of a loss of ``case``'s volume: by autograd through the PyTorch
    warp and by the kernel's backward."""
    groups, dtype = case[3], getattr(torch, case[-1])
    arguments = level(case, device)
    features = [tensor.clone().requires_grad_() for tensor in arguments[:2]]
    expected = correlation_volume(*features, *arguments[2:], groups)
    generator = torch.Generator().manual_seed(7)
    upstream = torch.randn(expected.shape, generator=generator).to(device)
    plain = torch.autograd.grad((expected * upstream).sum(), features)
    rounded = [tensor.detach().to(dtype).requires_grad_() for tensor in arguments[:2]]
    out = fused_correlation_volume(*rounded, *arguments[2:], groups)
    fused = torch.autograd.grad((out.float() * upstream).sum(), rounded)
    return list(plain), [grad.float() for grad in fused]


COMPARISON = """
    import torch
    from test_fused_correlation import CASES, gradients, volumes

    off_image = 0
    for case in CASES:
        for turned in (False, True):
            expected, out = volumes(case, "cpu", turned)
            dtype = getattr(torch, case[-1])
            assert out.shape == expected.shape and out.dtype == dtype, case
            assert out.is_contiguous(memory_format=torch.channels_last_3d), case
            # Random poses put parts of the volumes off the neighbours' images; a single
            # neighbour turned away sees nothing.
            off_image += (expected == 0).sum().item()
            assert (expected == 0).all() or not (turned and case[1] == 1), case
            # Float32 sums in another order (and projections rounded alike); float16 outputs
            # keep 11 bits.
            scale = expected.abs().max().item()
            tolerance = 1e-4 if dtype == torch.float32 else 1e-3 * scale
            error = (out.float() - expected).abs().max().item()
            assert error < tolerance, (case, turned, error)
    assert off_image > 1000, off_image
    print("interpreted correlation volumes: all cases match")
    for case in CASES:
        expected, computed = gradients(case, "cpu")
        tolerance = 1e-5 if case[-1] == "float32" else 2e-3
        for name, a, b in zip(("reference", "neighbours"), expected, computed):
            assert a.shape == b.shape, (case, name)
            error = ((a - b).abs().max() / a.abs().max()).item()
            assert error < tolerance, (case, name, error)
    print("interpreted correlation gradients: all cases match")
"""


@needs_triton
def test_kernels_equal_the_pytorch_volume_and_its_gradients_in_the_interpreter() -> None:
    output = run_in_triton_interpreter(COMPARISON)
    assert "volumes: all cases match" in output and "gradients: all cases match" in output


# A small model's geo-reasoner (all three cascade levels) with the kernel serving every
# correlation against the plain one: its outputs, and the gradients of every parameter of a
# loss of them (a training step's backward through the cost volumes).
INTERPRETED_ENCODING = """
    import torch
    from small_models import small_gsnerf_cfg

    from gsnerf.evaluation.benchmark_scene import plane_example
    from gsnerf.model import build_model, fused_correlation
    from gsnerf.model.fused_kernels import FusedKernels, set_fused_kernels

    set_fused_kernels(FusedKernels())
    fused_correlation.BLOCK = 512  # fewer, larger programs: the interpreter's time goes by op
    torch.manual_seed(0)
    model = build_model(small_gsnerf_cfg(), 4)
    example = plane_example(3, 16, 24, 4, seed=0)
    served = []

    def encode():
        encoding = model.encode_sources(example)
        generator = torch.Generator().manual_seed(3)
        loss = sum(
            (tensor * torch.randn(tensor.shape, generator=generator)).sum()
            for tensor in (*encoding.depths, *encoding.volume_features)
        )
        loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        model.zero_grad()
        return encoding, grads

    plain, plain_grads = encode()
    applies = fused_correlation.fused_correlation_applies

    def lifted(ref_features, neighbour_features, hypotheses, groups):
        served.append(ref_features.shape)
        return True

    fused_correlation.fused_correlation_applies = lifted
    fused, fused_grads = encode()
    assert len(served) == len(plain.depths), served
    for name in ("depths", "volume_features"):
        for a, b in zip(getattr(plain, name), getattr(fused, name), strict=True):
            error = (a - b).abs().max().item()
            assert error < 1e-4 * max(1.0, a.abs().max().item()), (name, error)
    assert plain_grads.keys() == fused_grads.keys() and len(plain_grads) > 20
    for name, expected in plain_grads.items():
        error = ((expected - fused_grads[name]).abs().max() / expected.abs().max()).item()
        # Float32 rounding in another summation order, magnified where GroupNorm normalises
        # volumes of a few voxels (the U-Nets' 1/8-scale blocks) and in biases, whose gradient
        # sums a whole volume: measured up to 1.1e-4 on one CPU, up to 2.9e-4 on an AMD EPYC
        # (MKL). A wrong kernel (a neighbour or group mixed up) is off by order 1.
        assert error < 1e-3, (name, error)
    print("interpreted encodings and gradients: match")
"""


@needs_triton
def test_encoding_and_its_gradients_with_the_kernel_equal_the_plain_ones_in_the_interpreter():
    assert "match" in run_in_triton_interpreter(INTERPRETED_ENCODING)


@needs_triton
def test_kernels_are_compiled_from_their_modules_own_functions() -> None:
    # A kernel wrapped by the test suite's jaxtyping hook would lose the module's ``tl``.
    for kernel in (
        fused_correlation._correlation_kernel,
        fused_correlation._correlation_grad_kernel,
    ):
        assert kernel.fn.__globals__ is vars(fused_correlation)


@needs_triton
def test_compiled_step_keeps_the_kernels_in_its_forward_and_backward_graphs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The kernel's CUDA condition lifted: fake tensors trace it on the CPU.
    monkeypatch.setattr(fused_correlation, "fused_correlation_applies", lambda *args: True)
    reference, neighbours, *cameras = level(CASES[0], "cpu")

    def step(reference: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        return correlation_volume(reference, neighbours, *cameras, CASES[0][3]).square().mean()

    forward, backward = captured_step_graphs(
        step, reference.requires_grad_(), neighbours.requires_grad_()
    )
    assert forward.count("_correlation_kernel") == 1, forward
    assert backward.count("_correlation_grad_kernel") == 1, backward
    assert not [name for name in forward + backward if "grid_sampler" in name]


def test_conditions(monkeypatch: pytest.MonkeyPatch) -> None:
    reference, neighbours, hypotheses = torch.zeros(1, 8, 4, 4), torch.zeros(1, 2, 8, 4, 4), None
    hypotheses = torch.ones(1, 3, 4, 4)
    assert not fused_correlation_applies(reference, neighbours, hypotheses, 8)  # switched off
    monkeypatch.setattr(fused_correlation, "enabled", True)
    # Never for CPU tensors: the interpreter serves the tests only.
    assert not fused_correlation_applies(reference, neighbours, hypotheses, 8)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda tensor: True))
    assert fused_correlation_applies(reference, neighbours, hypotheses, 8) == (
        fused_correlation.triton is not None
    )
    # Channels and groups powers of two, groups within the channels, 64 channels at most.
    assert not fused_correlation_applies(reference[:, :6], neighbours[:, :, :6], hypotheses, 2)
    assert not fused_correlation_applies(reference, neighbours, hypotheses, 3)
    assert not fused_correlation_applies(reference, neighbours, hypotheses, 16)
    wide = torch.zeros(1, 128, 4, 4)
    assert not fused_correlation_applies(wide, wide[:, None], hypotheses, 8)
    assert not fused_correlation_applies(reference, neighbours.double(), hypotheses, 8)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_kernels_on_cuda() -> None:
    cases = CASES + [(*case[:-1], "bfloat16") for case in CASES if case[-1] == "float16"]
    for case in cases:
        for turned in (False, True):
            expected, out = volumes(case, "cuda", turned)
            scale = expected.abs().max().item()
            tolerance = 1e-4 if case[-1] == "float32" else 1e-2 * scale
            assert (out.float() - expected).abs().max() < tolerance, (case, turned)
        expected, computed = gradients(case, "cuda")
        tolerance = 1e-5 if case[-1] == "float32" else 1e-2
        for a, b in zip(expected, computed):
            assert ((a - b).abs().max() / a.abs().max()).item() < tolerance, case
    # Compiled: the operator within the graph gives the eager numbers.
    arguments = level(CASES[0], "cuda")
    with torch.no_grad():
        eager = fused_correlation_volume(*arguments, CASES[0][3])
        compiled = torch.compile(fused_correlation_volume)(*arguments, CASES[0][3])
    # The same kernel; inductor composes the projections, to rounding.
    assert (eager - compiled).abs().max() < 1e-5 * eager.abs().max()
