"""The Triton volume convolution's backward against the library convolutions' autograd, and a
training step's gradients through the cost volumes' 3-D U-Net with it against the plain one.

On a CPU the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``, in a process of its
own), in float32 and float16 (test_fused_volume_conv.py: bfloat16 is checked on CUDA).
"""

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from compiled_checks import runtime_type_checks_off
from test_fused_volume_conv import CASES, CUDA_CASES
from torch._dynamo.backends.common import aot_autograd
from torch._functorch.partitioners import default_partition
from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table
from triton_interpreter import run_in_triton_interpreter

from gsnerf.model import fused_volume_conv, fused_volume_conv_grad
from gsnerf.model.cost_volume import CostRegularizer, CostVolumeCfg
from gsnerf.model.fused_volume_conv import STRIDE_2, TRANSPOSED_2

needs_triton = pytest.mark.skipif(fused_volume_conv.triton is None, reason="needs Triton")


def gradients(case: tuple, device: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The input's and kernels' gradients of a loss of ``case``'s output: by the library's
    autograd on the operands rounded to the product dtype, in float32, and by the kernels."""
    mode, in_channels, out_channels, size, dtype = case
    generator = torch.Generator().manual_seed(in_channels * 10 + out_channels)
    product = getattr(torch, dtype)
    volume = torch.randn(2, in_channels, *size, generator=generator).to(product).float()
    shape = (in_channels, out_channels) if mode == TRANSPOSED_2 else (out_channels, in_channels)
    weight = (torch.randn(*shape, 3, 3, 3, generator=generator) * 0.1).to(product).float()
    volume, weight = volume.to(device).requires_grad_(), weight.to(device).requires_grad_()
    if mode == TRANSPOSED_2:
        expected = F.conv_transpose3d(volume, weight, stride=2, padding=1, output_padding=1)
    else:
        expected = F.conv3d(volume, weight, stride=mode + 1, padding=1)
    upstream = torch.randn(expected.shape, generator=generator).to(device)
    plain = (expected * upstream).sum()
    out = fused_volume_conv.fused_volume_conv(volume, weight, mode, product)
    fused = (out.float() * upstream).sum()
    return (
        list(torch.autograd.grad(plain, (volume, weight))),
        list(torch.autograd.grad(fused, (volume, weight))),
    )


COMPARISON = """
    import torch
    from test_fused_volume_conv import CASES
    from test_fused_volume_conv_grad import gradients

    for case in CASES:
        expected, computed = gradients(case, "cpu")
        # float16: the output's gradient is rounded to the product dtype before the products.
        tolerance = 1e-5 if case[-1] == "float32" else 5e-3
        for name, a, b in zip(("input", "kernels"), expected, computed):
            assert a.shape == b.shape and a.dtype == b.dtype, (case, name)
            error = ((a - b).abs().max() / a.abs().max()).item()
            assert error < tolerance, (case, name, error)
    print("interpreted gradients: all cases match")
"""


@needs_triton
def test_backward_equals_the_library_gradients_in_the_interpreter() -> None:
    assert "all cases match" in run_in_triton_interpreter(COMPARISON)


# A training step's gradients through the 3-D U-Net of the paper's widths (every form, the
# merged heads) with the kernels serving every convolution, against the plain
# U-Net's, in float32: the cost volume's and every parameter's.
INTERPRETED_UNET_STEP = """
    import torch
    from gsnerf.model import fused_volume_conv, fused_volume_conv_grad
    from gsnerf.model.cost_volume import CostRegularizer, CostVolumeCfg
    from gsnerf.model.fused_kernels import FusedKernels, set_fused_kernels

    set_fused_kernels(FusedKernels())
    # Fewer, larger tiles: the interpreter's time goes by operation.
    fused_volume_conv.BLOCK = fused_volume_conv_grad.BLOCK = 512

    def step(unet, cost):
        cost = cost.clone().requires_grad_()
        logits, volume = unet(cost)
        generator = torch.Generator().manual_seed(1)
        loss = (logits * torch.randn(logits.shape, generator=generator)).sum()
        loss = loss + (volume * torch.randn(volume.shape, generator=generator)).sum()
        loss.backward()
        grads = {name: p.grad.clone() for name, p in unet.named_parameters()}
        unet.zero_grad()
        return cost.grad, grads

    torch.manual_seed(0)
    unet = CostRegularizer(8, CostVolumeCfg())
    for norm in unet.modules():
        if isinstance(norm, torch.nn.GroupNorm):  # not the identity of a fresh norm
            torch.nn.init.uniform_(norm.weight, 0.5, 1.5)
            torch.nn.init.uniform_(norm.bias, -0.2, 0.2)
    # 16^3: the deepest norms see 8 voxels (with 2 they magnify rounding 100-fold).
    cost = torch.randn(1, 8, 16, 16, 16)
    plain_input, plain = step(unet, cost)
    fused_volume_conv.fused_volume_conv_applies = lambda volume, conv: (
        fused_volume_conv.conv_mode(conv) is not None
    )
    fused_volume_conv.serves = lambda device: True
    fused_input, fused = step(unet, cost)
    checked = 0
    for name, expected in [("cost", plain_input), *plain.items()]:
        computed = fused_input if name == "cost" else fused[name]
        error = ((expected - computed).abs().max() / expected.abs().max()).item()
        assert error < 1e-4, (name, error)
        checked += 1
    assert checked == 1 + len(list(unet.parameters()))
    print("interpreted U-Net gradients: match")
"""


@needs_triton
def test_unet_gradients_with_the_kernels_equal_the_plain_ones_in_the_interpreter() -> None:
    assert "match" in run_in_triton_interpreter(INTERPRETED_UNET_STEP)


@needs_triton
def test_kernel_is_compiled_from_its_modules_own_functions() -> None:
    # A kernel wrapped by the test suite's jaxtyping hook would lose the module's ``tl``.
    globals_ = fused_volume_conv_grad._weight_grad_kernel.fn.__globals__
    assert globals_ is vars(fused_volume_conv_grad)


def test_weight_gradient_layout_is_the_inverse_of_the_kernels_tap_layout() -> None:
    for mode, shape in ((STRIDE_2, (16, 8)), (TRANSPOSED_2, (32, 16))):
        weight = torch.randn(*shape, 3, 3, 3)
        per_tap = fused_volume_conv.tap_kernels(weight, mode, torch.float32)
        restored = fused_volume_conv_grad.module_layout(per_tap, weight, mode)
        assert torch.equal(restored, weight)


class GraphCaptured(Exception):
    """Raised in place of running a captured graph (the kernels cannot run without a GPU)."""


def captured_step_graphs(step: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> tuple:
    """The operators of the forward and backward graphs of ``step(*inputs)`` (a loss), as
    ``train.compile`` has AOTAutograd trace them before code generation (which needs a GPU):
    with fake tensors, through the project's operators to their Triton kernels (named by their
    functions), partitioned into the two graphs."""
    graphs: dict[str, list[str]] = {}

    def partition(joint: torch.fx.GraphModule, joint_inputs: list, **kwargs: object) -> tuple:
        forward, backward = default_partition(joint, joint_inputs, **kwargs)
        graphs["forward"], graphs["backward"] = graph_calls(forward), graph_calls(backward)
        return forward, backward

    backend = aot_autograd(fw_compiler=_not_run, bw_compiler=_not_run, partition_fn=partition)
    _capture(step, backend, inputs)
    return graphs["forward"], graphs["backward"]


def captured_inference_graph(function: Callable[..., object], *inputs: object) -> list[str]:
    """The operators of the graph of ``function(*inputs)`` without gradients, as
    :func:`captured_step_graphs` traces them."""
    graphs: list[list[str]] = []

    def record(graph: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(graph_calls(graph))
        return _not_run(graph, example_inputs)

    _capture(function, aot_autograd(fw_compiler=record), inputs)
    return graphs[0]


def graph_calls(graph: torch.fx.GraphModule) -> list[str]:
    """A traced graph's operators; a Triton kernel (traced through its operator) by its
    function's name."""
    names = []
    for node in graph.graph.nodes:
        if node.op == "call_function" and "triton_kernel_wrapper" in str(node.target):
            names.append(kernel_side_table.get_kernel(node.kwargs["kernel_idx"]).fn.__name__)
        elif node.op == "call_function":
            names.append(str(node.target))
    return names


def _not_run(graph: torch.fx.GraphModule, example_inputs: list) -> object:
    def raise_captured(*args: object) -> None:
        raise GraphCaptured

    return raise_captured


def _capture(function: Callable[..., object], backend: object, inputs: tuple) -> None:
    torch._dynamo.reset()
    compiled = torch.compile(function, backend=backend, dynamic=False)
    try:
        with runtime_type_checks_off(), pytest.raises(GraphCaptured):
            compiled(*inputs)
    finally:
        torch._dynamo.reset()


@needs_triton
def test_compiled_unet_step_keeps_the_kernels_in_its_forward_and_backward_graphs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The kernels' CUDA condition lifted: fake tensors trace them on the CPU.
    monkeypatch.setattr(
        fused_volume_conv,
        "fused_volume_conv_applies",
        lambda volume, conv: fused_volume_conv.conv_mode(conv) is not None,
    )
    monkeypatch.setattr(fused_volume_conv, "serves", lambda device: True)
    unet = CostRegularizer(8, CostVolumeCfg())

    def step(cost: torch.Tensor) -> torch.Tensor:
        logits, volume = unet(cost)
        return logits.square().mean() + volume.square().mean()

    forward, backward = captured_step_graphs(step, torch.randn(1, 8, 8, 8, 16))
    # 10 blocks, the heads' merged first convolution and the logits; no library convolution.
    assert forward.count("_volume_conv_kernel") == 12, forward
    assert backward.count("_weight_grad_kernel") == 12, backward
    # The input's gradients: all but the first convolution's (the cost volume needs none).
    assert backward.count("_volume_conv_kernel") == 11, backward
    assert not [name for name in forward + backward if "convolution" in name]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_backward_and_unet_step_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    for case in CASES + CUDA_CASES:
        expected, computed = gradients(case, "cuda")
        tolerance = 1e-3 if case[-1] == "float32" else 2e-2
        for a, b in zip(expected, computed):
            assert ((a - b).abs().max() / a.abs().max()).item() < tolerance, case
    unet = CostRegularizer(8, CostVolumeCfg()).cuda()
    cost = torch.randn(2, 8, 16, 32, 40, device="cuda")

    def grads() -> list[torch.Tensor]:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits, volume = unet(cost)
        (logits.float().square().mean() + volume.float().square().mean()).backward()
        result = [p.grad.clone() for p in unet.parameters()]
        unet.zero_grad()
        return result

    plain = grads()
    monkeypatch.setattr(fused_volume_conv, "enabled", True)
    for a, b in zip(plain, grads()):
        assert ((a - b).abs().max() / a.abs().max().clamp_min(1e-6)).item() < 0.1
