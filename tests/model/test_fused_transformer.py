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
from compiled_checks import runtime_type_checks_off
from fused_cases import compare_in_interpreter, compiled_on_cuda, transformer_case
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
    inputs = transformer_case(case, device)
    with torch.no_grad():
        fused = fused_transformer.fused_transformer(
            inputs.transformer.blocks, inputs.tokens, inputs.key_mask, dtype
        )
    return inputs.plain, fused


@pytest.mark.skipif(fused_transformer.triton is None, reason="Triton is not installed")
def test_fused_transformer_matches_the_plain_blocks_in_the_interpreter() -> None:
    compare_in_interpreter("test_fused_transformer")


@pytest.mark.skipif(fused_transformer.triton is None, reason="Triton is not installed")
def test_narrower_transformer_tiles_give_the_plain_blocks_in_the_interpreter() -> None:
    # The sweep's tile sizes of the one-kernel transformer (16 rows: one set of 9 tokens or 4
    # rays of 4 samples; 32 rows: three sets or eight rays) on the paper's view transformer
    # and ray transformer; the module's own tests cover its 64 rows.
    output = run_in_triton_interpreter(
        """
        import torch
        from test_fused_transformer import plain_and_fused
        from gsnerf.model import fused_transformer

        for rows in (16, 32):
            fused_transformer.ROWS = rows
            for case in ((32, 4, 4, 32, 9, True), (32, 4, 1, 32, 4, False)):
                plain, fused = plain_and_fused(case, "cpu", torch.float32)
                error = (fused - plain).abs().max().item()
                assert error < 1e-4, (rows, case, error)
        print("tiles match")
        """
    )
    assert "tiles match" in output


@pytest.mark.skipif(fused_transformer.triton is None, reason="Triton is not installed")
def test_kernel_is_compiled_from_its_modules_own_functions() -> None:
    # A kernel wrapped by the test suite's jaxtyping hook would lose the module's ``tl``
    # (test_fused_blocks.py).
    for kernel in (
        fused_transformer._transformer_kernel,
        fused_transformer._blocks,
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
    fused, plain = compiled_on_cuda()
    assert fused.dtype == torch.bfloat16
    torch.testing.assert_close(fused.float(), plain, atol=1e-1, rtol=0)


def test_sets_longer_than_a_narrowed_tile_are_left_to_the_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    blocks = TokenTransformer(TransformerCfg()).blocks
    assert fused_transformer.kernel_fits(blocks, 9)
    monkeypatch.setattr(fused_transformer, "ROWS", 16)
    assert fused_transformer.kernel_fits(blocks, 9)
    monkeypatch.setattr(fused_transformer, "ROWS", 8)
    assert not fused_transformer.kernel_fits(blocks, 9)
    assert fused_transformer.kernel_fits(blocks, 4)
