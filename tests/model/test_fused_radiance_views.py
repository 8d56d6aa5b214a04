"""The Triton radiance view stage against :meth:`RadianceHead.view_stage`, and in a render.

On a CPU the kernel runs, through its torch operator, in Triton's interpreter
(``TRITON_INTERPRET=1``, in a process of its own), in float32 and in float16 under CPU autocast
(the 16-bit path; the interpreter multiplies bfloat16 ``tl.dot`` operands wrongly,
test_fused_blocks.py). On CUDA it is compared in float32 and bf16.
"""

import dataclasses
from collections.abc import Callable

import pytest
import torch
from compiled_checks import runtime_type_checks_off
from kernel_checks import assert_renders_close
from small_models import small_gsnerf_cfg
from triton_interpreter import run_in_triton_interpreter

from gsnerf.evaluation.benchmark_scene import plane_example
from gsnerf.model import fused_radiance_views, fused_semantic_logits, head_tiles
from gsnerf.model.feature_gather import GatheredFeatures, attention_view_mask
from gsnerf.model.fused_radiance_views import fused_radiance_views_applies, kernel_fits
from gsnerf.model.gsnerf import GSNeRF
from gsnerf.model.radiance_head import RadianceHead, RadianceHeadCfg
from gsnerf.model.transformer import TransformerCfg

needs_triton = pytest.mark.skipif(fused_radiance_views.triton is None, reason="needs Triton")

# (views, volume channels, image channels, angle channels, transformer width, layers, samples):
# the paper's head (8 views, 3 levels of 8 volume channels, 8 image channels, 4 frequencies),
# the CPU model's, and a narrower one with other widths; sample counts that fill no tile.
CASES = [
    (8, 24, 8, 8, 32, 4, 60),
    (8, 12, 8, 8, 32, 2, 45),
    (3, 6, 4, 2, 16, 1, 50),
]


def head_case(case: tuple, device: str) -> tuple[RadianceHead, GatheredFeatures, torch.Tensor]:
    """A head with perturbed weights and random per-view inputs; about a third of the views
    out of frustum or occluded, one sample with a single attended view."""
    views, volume, image, angle, width, layers, samples = case
    torch.manual_seed(views + volume + samples)
    cfg = RadianceHeadCfg(transformer=TransformerCfg(width, 4 if width == 32 else 2, layers, width))
    head = RadianceHead(cfg, volume, image, angle).eval().to(device)
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    shape = (1, samples // 5, 5, views)

    def draw(*channels: int) -> torch.Tensor:
        return torch.randn(*shape, *channels, device=device)

    gathered = GatheredFeatures(
        volume=draw(volume),
        image=draw(image),
        colours=torch.rand(*shape, 3, device=device),
        angle=draw(angle),
        in_frustum=torch.rand(shape, device=device) > 0.3,
        visible=torch.rand(shape, device=device) > 0.3,
    )
    gathered.in_frustum[0, 0, 0] = False
    gathered.in_frustum[0, 0, 0, 1] = True
    return head, gathered, attention_view_mask(gathered.in_frustum, gathered.visible)


def stage_and_kernel(case: tuple, device: str, autocast: bool) -> tuple[tuple, tuple]:
    """The PyTorch view stage in float32 and the kernel's, under autocast if ``autocast``
    (float16 on a CPU, bf16 on CUDA)."""
    head, gathered, mask = head_case(case, device)
    dtype = torch.float16 if device == "cpu" else torch.bfloat16
    with torch.no_grad():
        expected = head.view_stage(gathered, mask)
        with torch.autocast(device, dtype=dtype, enabled=autocast):
            kernel = fused_radiance_views.fused_radiance_views(head, gathered, mask)
    return expected, kernel


COMPARISON = """
    import torch
    from test_fused_radiance_views import CASES, stage_and_kernel

    # float16 products keep 11 significant bits; tokens through 1-4 blocks then differ by up
    # to a few thousandths, blending weights and colours by less.
    for autocast, tolerance in ((False, 1e-4), (True, 2e-2)):
        for case in CASES:
            expected, kernel = stage_and_kernel(case, "cpu", autocast)
            for name, got, want in zip(("tokens", "weights", "rgb"), kernel, expected):
                assert got.shape == want.shape, (case, name, got.shape)
                error = (got.float() - want).abs().max().item()
                assert error < tolerance, (case, autocast, name, error)
            # Masked views get no weight.
            assert torch.all(kernel[1][expected[1] == 0] == 0), case
    print("interpreted view stages: all cases match")
"""

# A small model with two-layer blending and class MLPs rendered with both head kernels serving
# every chunk (their CUDA conditions lifted) against its plain render.
RENDER = """
    import torch
    from test_fused_radiance_views import small_renders

    plain, render, calls = small_renders()
    assert min(calls.values()) >= 1, calls
    for name in ("rgb", "depth", "semantic_logits", "opacity"):
        error = (getattr(render, name) - getattr(plain, name)).abs().max().item()
        assert error < 1e-4, (name, error)
    print("interpreted render: match")
"""


def small_renders(device: str = "cpu") -> tuple[object, object, dict[str, int]]:
    """A small model's plain render and its render with both head kernels lifted onto
    ``device``'s tensors; each kernel's call count."""
    cfg = small_gsnerf_cfg()
    cfg.renderer.radiance = dataclasses.replace(cfg.renderer.radiance, blend_hidden=[32, 16])
    cfg.renderer.semantic = dataclasses.replace(cfg.renderer.semantic, hidden=[16, 16])
    torch.manual_seed(0)
    model = GSNeRF(cfg, num_classes=4).eval().to(device)
    example = plane_example(3, 8, 12, 4, seed=0).to(device)
    calls = {"radiance": 0, "semantic": 0}
    conditions = {
        "radiance": (fused_radiance_views, "fused_radiance_views_applies"),
        "semantic": (fused_semantic_logits, "fused_semantic_logits_applies"),
    }
    originals = {name: getattr(*where) for name, where in conditions.items()}

    def lifted(name: str, fits: Callable[..., bool]) -> Callable[..., bool]:
        def applies(head: torch.nn.Module, inputs: object) -> bool:
            calls[name] += 1
            return not torch.is_grad_enabled() and fits(head, inputs)

        return applies

    with torch.no_grad():
        geometry = model.encode_sources(example)
        plain = model.render_image(example, geometry)
        for name, (module, condition) in conditions.items():
            setattr(module, condition, lifted(name, module.kernel_fits))
        try:
            render = model.render_image(example, geometry)
        finally:
            for name, (module, condition) in conditions.items():
                setattr(module, condition, originals[name])
    return plain, render, calls


@needs_triton
def test_kernel_equals_the_view_stage_in_the_interpreter() -> None:
    assert "all cases match" in run_in_triton_interpreter(COMPARISON)


@needs_triton
def test_a_render_with_the_head_kernels_matches_the_plain_render_in_the_interpreter() -> None:
    assert "match" in run_in_triton_interpreter(RENDER)


@needs_triton
def test_kernel_is_compiled_from_its_modules_own_functions() -> None:
    # A kernel wrapped by the test suite's jaxtyping hook would lose the module's ``tl``.
    kernel = fused_radiance_views._radiance_views_kernel
    assert kernel.fn.__globals__ is vars(fused_radiance_views)
    for tile_function in (head_tiles._linear, head_tiles._transformed_tokens):
        assert tile_function.fn.__globals__ is vars(head_tiles)


def test_conditions(monkeypatch: pytest.MonkeyPatch) -> None:
    head, gathered, _ = head_case(CASES[0], "cpu")
    assert kernel_fits(head, gathered)
    assert not kernel_fits(head, dataclasses.replace(gathered, volume=gathered.volume.double()))
    # A blending MLP of one hidden layer, or of a width tl.dot cannot take.
    for hidden in ([16], [24, 16]):
        cfg = RadianceHeadCfg(blend_hidden=hidden)
        assert not kernel_fits(RadianceHead(cfg, 24, 8, 8), gathered)
    # More feature channels than the tile holds.
    wide = dataclasses.replace(gathered, volume=torch.zeros(*gathered.volume.shape[:-1], 60))
    assert not kernel_fits(RadianceHead(RadianceHeadCfg(), 60, 8, 8), wide)
    # Never for CPU tensors: the interpreter serves the tests only.
    monkeypatch.setattr(fused_radiance_views, "enabled", True)
    with torch.no_grad():
        assert not fused_radiance_views_applies(head, gathered)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_kernel_equals_the_view_stage_on_cuda() -> None:
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for autocast, tolerance in ((False, 1e-4), (True, 1e-1)):
            for case in CASES:
                expected, kernel = stage_and_kernel(case, "cuda", autocast)
                for got, want in zip(kernel, expected, strict=True):
                    assert (got.float() - want).abs().max() < tolerance, (case, autocast)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_render_with_the_head_kernels_matches_the_plain_render_on_cuda() -> None:
    with runtime_type_checks_off():
        plain, render, calls = small_renders("cuda")
    assert min(calls.values()) >= 1
    assert_renders_close(render, plain)


class GraphCaptured(Exception):
    """Raised in place of running a captured graph (the kernel cannot run without a GPU)."""


@needs_triton
def test_compiled_head_traces_the_kernel_into_its_graph_as_one_operator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What compile_heads' torch.compile does with the operator before code generation (which
    # needs a GPU): tracing it with fake tensors. The CUDA condition is lifted.
    head, gathered, mask = head_case(CASES[0], "cpu")
    monkeypatch.setattr(
        fused_radiance_views,
        "fused_radiance_views_applies",
        lambda head, gathered: not torch.is_grad_enabled() and kernel_fits(head, gathered),
    )
    calls: list[str] = []

    def capture(graph: torch.fx.GraphModule, example_inputs: list) -> object:
        # Graphs run as they are, except the one that calls the kernel, which is only read.
        # (Under the test suite's type-check hook the weights' stacking breaks the graph.)
        targets = [str(node.target) for node in graph.graph.nodes if node.op == "call_function"]
        calls.extend(targets)
        if "gsnerf.fused_radiance_views.default" not in targets:
            return graph.forward

        def not_run(*args: object) -> None:
            raise GraphCaptured

        return not_run

    positions = torch.rand(mask.shape[:3])
    torch._dynamo.reset()
    compiled = torch.compile(head.forward, backend=capture, dynamic=False)
    with runtime_type_checks_off(), torch.no_grad(), pytest.raises(GraphCaptured):
        compiled(gathered, mask, positions)
    torch._dynamo.reset()
    assert calls.count("gsnerf.fused_radiance_views.default") == 1, calls
    # Nothing of the PyTorch view stage is left: no softmax, no masked moments' products.
    assert not [name for name in calls if "softmax" in name], calls
