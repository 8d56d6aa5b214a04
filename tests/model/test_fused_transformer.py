"""The one-kernel transformer against the plain blocks (library attention, sets first).

On a CPU the kernel runs, through its torch operator, in Triton's interpreter
(``TRITON_INTERPRET=1``, in a process of its own), in float32 and float16: the interpreter
multiplies bfloat16 ``tl.dot`` operands wrongly (test_fused_blocks.py), so float16 stands in
for the 16-bit path (16-bit products, float32 sums and LayerNorms) and bfloat16 is checked on
CUDA.
"""

import re

import pytest
import torch
from test_compiled_heads import runtime_type_checks_off
from triton_interpreter import run_in_triton_interpreter

from gsnerf.model import fused_transformer
from gsnerf.model.transformer import TokenTransformer, TransformerCfg

# (width, heads, layers, ffn_width, tokens, masked): the paper's view and semantic transformers
# (9 tokens with a key mask, 7 sets per tile), its ray transformer (4 samples, no mask, 16 sets
# per tile), the longest sets the kernel takes (2 per tile), narrower tokens with a wider
# feed-forward layer and sets that do not divide the tile (5 tokens: 12 sets in 60 of 64 rows).
CASES = [
    (32, 4, 4, 32, 9, True),
    (32, 4, 1, 32, 4, False),
    (32, 4, 2, 32, 32, True),
    (16, 2, 2, 64, 5, True),
]


def plain_and_fused(
    case: tuple, device: str, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain blocks' result in float32 and the kernel's on ``dtype`` tokens."""
    width, heads, layers, ffn_width, tokens, masked = case
    torch.manual_seed(layers * 10 + tokens)
    transformer = TokenTransformer(TransformerCfg(width, heads, layers, ffn_width)).to(device)
    # Non-trivial LayerNorm parameters, so that a swapped weight and bias would show.
    for parameter in transformer.parameters():
        parameter.data.add_(0.1 * torch.randn_like(parameter))
    sets = 150  # no multiple of any tile's sets
    inputs = torch.randn(sets, tokens, width, device=device)
    mask = torch.rand(sets, tokens, device=device) > 0.5
    mask[torch.arange(sets), torch.randint(tokens, (sets,))] = True
    mask[0] = False  # a set whose only attended key is its last one
    mask[0, -1] = True
    mask = mask if masked else None
    with torch.no_grad():
        plain = inputs
        for block in transformer.blocks:
            plain = block(plain, mask)
        fused = fused_transformer.fused_transformer(transformer.blocks, inputs, mask, dtype)
    return plain, fused


INTERPRETED = """
    import torch
    from test_fused_transformer import CASES, plain_and_fused

    # float16 keeps 11 significant bits: measured up to 4e-3 from the float32 blocks.
    for dtype, tolerance in ((torch.float32, 1e-4), (torch.float16, 2e-2)):
        for case in CASES:
            plain, fused = plain_and_fused(case, "cpu", dtype)
            assert fused.shape == plain.shape and fused.dtype == dtype, (case, fused.shape)
            error = (fused.float() - plain).abs().max().item()
            assert error < tolerance, (case, dtype, error)
    print("interpreted fused transformer: all cases match")
"""


@pytest.mark.skipif(fused_transformer.triton is None, reason="Triton is not installed")
def test_fused_transformer_matches_the_plain_blocks_in_the_interpreter() -> None:
    assert "all cases match" in run_in_triton_interpreter(INTERPRETED)


# A small model's whole render (view and semantic transformers of width 16 with key masks, a
# ray transformer over 4 guided + 2 uniform samples) with the one-kernel transformers against
# the plain render; the kernel's CUDA condition is lifted for it.
INTERPRETED_RENDER = """
    import torch
    from small_models import small_gsnerf_cfg

    from gsnerf.evaluation.benchmark_scene import plane_example
    from gsnerf.model import build_model, fused_transformer

    served = []

    def applies(blocks, tokens):
        fits = fused_transformer.kernel_fits(blocks, tokens.shape[1])
        fits = fits and not torch.is_grad_enabled()
        served.append(fits)
        return fits

    torch.manual_seed(0)
    model = build_model(small_gsnerf_cfg(num_uniform=2, rendering="volume"), 4).eval()
    example = plane_example(3, 8, 12, 4, seed=0)
    with torch.no_grad():
        geometry = model.encode_sources(example)
        plain = model.render_image(example, geometry)
        fused_transformer.fused_transformer_applies = applies
        fused = model.render_image(example, geometry)
    # Each transformer (view, ray, semantic) at least once.
    assert sum(served) >= 3, served
    for name in ("rgb", "depth", "semantic_logits", "opacity"):
        error = (getattr(fused, name) - getattr(plain, name)).abs().max().item()
        assert error < 1e-4, (name, error)
    print("interpreted render with the fused transformer: match")
"""


@pytest.mark.skipif(fused_transformer.triton is None, reason="Triton is not installed")
def test_render_with_the_fused_transformer_matches_the_plain_render_in_the_interpreter() -> None:
    assert "match" in run_in_triton_interpreter(INTERPRETED_RENDER)


@pytest.mark.skipif(fused_transformer.triton is None, reason="Triton is not installed")
def test_kernel_is_compiled_from_its_modules_own_functions() -> None:
    # A kernel wrapped by the test suite's jaxtyping hook would lose the module's ``tl``
    # (test_fused_blocks.py).
    for kernel in (
        fused_transformer._transformer_kernel,
        fused_transformer._product,
        fused_transformer._layer_norm_rows,
    ):
        assert kernel.fn.__globals__ is vars(fused_transformer)


class GraphCaptured(Exception):
    """Raised in place of running a captured graph (the kernel cannot run without a GPU)."""


@pytest.mark.skipif(fused_transformer.triton is None, reason="Triton is not installed")
def test_compiled_transformer_traces_the_kernel_into_its_graph_as_one_operator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What torch.compile does with the operator before code generation (which needs a GPU):
    # tracing it with fake tensors, whose shapes come from running the launch function with a
    # stand-in launcher. The CUDA condition is lifted; the graph is captured, not run.
    def applies(blocks: torch.nn.ModuleList, tokens: torch.Tensor) -> bool:
        return not torch.is_grad_enabled() and fused_transformer.kernel_fits(
            blocks, tokens.shape[1]
        )

    monkeypatch.setattr(fused_transformer, "fused_transformer_applies", applies)
    calls: list[str] = []
    shapes = []

    def capture(graph: torch.fx.GraphModule, example_inputs: list) -> object:
        # Graphs run as they are, except the one that calls the kernel, which is only read.
        targets = [str(node.target) for node in graph.graph.nodes if node.op == "call_function"]
        calls.extend(targets)
        if "gsnerf.fused_transformer.default" not in targets:
            return graph.forward
        output = next(node for node in graph.graph.nodes if node.op == "output")
        shapes.append(output.args[0][0].meta["example_value"].shape)

        def not_run(*args: object) -> None:
            raise GraphCaptured

        return not_run

    transformer = TokenTransformer(TransformerCfg()).eval()
    tokens = torch.randn(100, 9, 32)
    mask = torch.ones(100, 9, dtype=torch.bool)
    torch._dynamo.reset()
    compiled = torch.compile(transformer.forward, backend=capture, dynamic=False)
    with runtime_type_checks_off(), torch.no_grad(), pytest.raises(GraphCaptured):
        compiled(tokens, mask)
    torch._dynamo.reset()
    assert calls.count("gsnerf.fused_transformer.default") == 1, calls
    # Nothing of the plain blocks is left: no products, LayerNorms or exponentials (the rest
    # is stacking the weights).
    plain_steps = [name for name in calls if re.search(r"\b(mm|linear|layer_norm|exp2?)\b", name)]
    assert not plain_steps, plain_steps
    assert shapes == [(100, 9, 32)]


def test_fused_transformer_is_off_by_default_and_never_serves_cpu_tensors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert fused_transformer.enabled is False
    monkeypatch.setattr(fused_transformer, "enabled", True)
    paper = TokenTransformer(TransformerCfg())
    with torch.no_grad():
        assert not fused_transformer.fused_transformer_applies(paper.blocks, torch.zeros(4, 9, 32))


def test_kernel_needs_tile_widths_sets_of_at_most_half_a_tile_and_blocks() -> None:
    paper = TokenTransformer(TransformerCfg())
    assert fused_transformer.kernel_fits(paper.blocks, 9)
    assert fused_transformer.kernel_fits(paper.blocks, fused_transformer.MAX_TOKENS)
    assert not fused_transformer.kernel_fits(paper.blocks, fused_transformer.MAX_TOKENS + 1)
    narrow = TokenTransformer(TransformerCfg(width=24, heads=4, ffn_width=32))
    assert not fused_transformer.kernel_fits(narrow.blocks, 9)
    assert not fused_transformer.kernel_fits(TokenTransformer(TransformerCfg(layers=0)).blocks, 9)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_transformer_matches_the_plain_blocks_on_cuda(dtype: torch.dtype) -> None:
    # bf16 products round to 8-bit mantissas; float32 ones run in full precision (TF32 off).
    tolerance = 1e-4 if dtype == torch.float32 else 1e-1
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for case in CASES[:2]:
            plain, fused = plain_and_fused(case, "cuda", dtype)
            torch.testing.assert_close(fused.float(), plain, atol=tolerance, rtol=0)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_transformer_with_the_fused_kernel_matches_the_plain_one_on_cuda(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fused_transformer, "enabled", True)
    torch.manual_seed(0)
    transformer = TokenTransformer(TransformerCfg()).cuda()
    tokens = torch.randn(3000, 9, 32, device="cuda")
    mask = torch.rand(3000, 9, device="cuda") > 0.3
    mask[:, 0] = True
    compiled = torch.compile(transformer.forward, dynamic=False)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16)
    with runtime_type_checks_off(), torch.inference_mode(), autocast:
        fused = compiled(tokens, mask)
    with torch.no_grad():
        plain = tokens
        for block in transformer.blocks:
            plain = block(plain, mask)
    assert fused.dtype == torch.bfloat16
    torch.testing.assert_close(fused.float(), plain, atol=1e-1, rtol=0)
