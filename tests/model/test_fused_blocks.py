"""The fused transformer blocks against the plain blocks (library attention, sets first).

On a CPU the kernels run, through their torch operators, in Triton's interpreter
(``TRITON_INTERPRET=1``, in a process of its own), in float32 and float16: the interpreter
(Triton 3.8) multiplies bfloat16 ``tl.dot`` operands wrongly (a 32x32 by 32x64 product was off
by 5e10), so float16 stands in for the 16-bit path and bfloat16 is checked on CUDA only.
"""

import pytest
import torch
from test_compiled_heads import runtime_type_checks_off
from triton_interpreter import run_in_triton_interpreter

from gsnerf.model import attention_kernel, fused_blocks
from gsnerf.model.transformer import TokenTransformer, TransformerCfg, key_bias

# (width, heads, layers, ffn_width, tokens, masked): the paper's view and semantic transformers
# (9 tokens with a key mask), its ray transformer (4 samples, no mask), narrower tokens with a
# wider feed-forward layer.
CASES = [
    (32, 4, 4, 32, 9, True),
    (32, 4, 1, 32, 4, False),
    (16, 2, 2, 32, 5, True),
]
# On CUDA every kernel variant compiles for up to 20 s: the paper's two shapes only, the third
# being covered by the interpreter.
CUDA_CASES = CASES[:2]


def plain_and_fused(
    case: tuple, device: str, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain blocks' result in float32 and the fused kernels' on ``dtype`` tokens."""
    width, heads, layers, ffn_width, tokens, masked = case
    torch.manual_seed(layers * 10 + tokens)
    transformer = TokenTransformer(TransformerCfg(width, heads, layers, ffn_width)).to(device)
    sets = 150  # no multiple of the kernels' tiles
    inputs = torch.randn(sets, tokens, width, device=device)
    mask = torch.rand(sets, tokens, device=device) > 0.3
    mask[torch.arange(sets), torch.randint(tokens, (sets,))] = True
    mask = mask if masked else None
    with torch.no_grad():
        plain = inputs
        for block in transformer.blocks:
            plain = block(plain, mask)
        bias = None if mask is None else key_bias(mask, dtype)
        fused = fused_blocks.fused_token_major_blocks(transformer.blocks, inputs.to(dtype), bias)
    return plain, fused


INTERPRETED = """
    import torch
    from test_fused_blocks import CASES, plain_and_fused

    # float16 keeps 11 significant bits: measured up to 3e-3 from the float32 blocks.
    for dtype, tolerance in ((torch.float32, 1e-4), (torch.float16, 2e-2)):
        for case in CASES:
            plain, fused = plain_and_fused(case, "cpu", dtype)
            assert fused.shape == plain.shape and fused.dtype == dtype, (case, fused.shape)
            error = (fused.float() - plain).abs().max().item()
            assert error < tolerance, (case, dtype, error)
    print("interpreted fused blocks: all cases match")
"""


@pytest.mark.skipif(fused_blocks.triton is None, reason="Triton is not installed")
def test_fused_blocks_match_the_plain_blocks_in_the_interpreter() -> None:
    assert "all cases match" in run_in_triton_interpreter(INTERPRETED)


# A whole image rendered by a small model (transformers of width 16: view and semantic ones
# with key masks, a ray transformer over 4 guided + 2 uniform samples) with the fused attention,
# then with the fused blocks, in every transformer, against the plain render. The kernels' CUDA
# condition is lifted for it.
INTERPRETED_RENDER = """
    import torch
    from small_models import small_gsnerf_cfg

    from gsnerf.evaluation.benchmark_scene import plane_example
    from gsnerf.model import build_model, fused_blocks, transformer

    calls = {"attention": 0, "blocks": 0}

    def attention_served(query):
        calls["attention"] += 1
        return not torch.is_grad_enabled()

    def blocks_served(blocks, tokens):
        calls["blocks"] += 1
        return not torch.is_grad_enabled() and fused_blocks.kernels_fit(blocks, tokens.shape[1])

    torch.manual_seed(0)
    model = build_model(small_gsnerf_cfg(num_uniform=2, rendering="volume"), 4).eval()
    example = plane_example(3, 8, 12, 4, seed=0)
    with torch.no_grad():
        geometry = model.encode_sources(example)
        plain = model.render_image(example, geometry)
        transformer.fused_attention_applies = attention_served
        fused_attention = model.render_image(example, geometry)
        fused_blocks.fused_blocks_apply = blocks_served
        fused = model.render_image(example, geometry)
    # Each transformer (view, ray, semantic) at least once per render.
    assert calls["attention"] >= 3 and calls["blocks"] >= 3, calls
    for render in (fused_attention, fused):
        for name in ("rgb", "depth", "semantic_logits", "opacity"):
            error = (getattr(render, name) - getattr(plain, name)).abs().max().item()
            assert error < 1e-4, (name, error)
    print("interpreted renders with the fused kernels: match")
"""


@pytest.mark.skipif(fused_blocks.triton is None, reason="Triton is not installed")
def test_renders_with_the_fused_kernels_match_the_plain_render_in_the_interpreter() -> None:
    assert "match" in run_in_triton_interpreter(INTERPRETED_RENDER)


@pytest.mark.skipif(fused_blocks.triton is None, reason="Triton is not installed")
def test_kernels_are_compiled_from_their_modules_own_functions() -> None:
    # The test suite's jaxtyping import hook wraps the package's functions; a wrapped kernel
    # carried the wrapper's globals, without ``tl``, and Triton's CUDA compiler failed on it
    # with a NameError (H100). The interpreter never resolves those globals, so only this
    # check catches it on a CPU.
    kernels = [
        (attention_kernel._attention_kernel, attention_kernel),
        (fused_blocks._block_tail_kernel, fused_blocks),
        (fused_blocks._layer_norm, fused_blocks),
    ]
    for kernel, module in kernels:
        assert kernel.fn.__globals__ is vars(module)


def test_fused_blocks_are_off_by_default_and_never_serve_cpu_tensors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert fused_blocks.enabled is False
    monkeypatch.setattr(fused_blocks, "enabled", True)
    paper = TokenTransformer(TransformerCfg())
    with torch.no_grad():
        assert not fused_blocks.fused_blocks_apply(paper.blocks, torch.zeros(4, 9, 32))


def test_kernels_need_tile_widths_short_sets_and_blocks() -> None:
    paper = TokenTransformer(TransformerCfg())
    assert fused_blocks.kernels_fit(paper.blocks, 9)
    assert not fused_blocks.kernels_fit(paper.blocks, 17)  # t^2 key reads per set
    narrow = TokenTransformer(TransformerCfg(width=24, heads=4, ffn_width=32))
    assert not fused_blocks.kernels_fit(narrow.blocks, 9)  # tl.dot needs powers of two >= 16
    small_ffn = TokenTransformer(TransformerCfg(ffn_width=8))
    assert not fused_blocks.kernels_fit(small_ffn.blocks, 9)
    assert not fused_blocks.kernels_fit(TokenTransformer(TransformerCfg(layers=0)).blocks, 9)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_blocks_match_the_plain_blocks_on_cuda(dtype: torch.dtype) -> None:
    # The kernels' float32 products run in TF32 (10-bit mantissas), bf16 ones in 8 bits.
    tolerance = 2e-2 if dtype == torch.float32 else 1e-1
    for case in CUDA_CASES:
        plain, fused = plain_and_fused(case, "cuda", dtype)
        torch.testing.assert_close(fused.float(), plain, atol=tolerance, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_transformer_with_fused_blocks_matches_the_plain_one_on_cuda(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fused_blocks, "enabled", True)
    torch.manual_seed(0)
    transformer = TokenTransformer(TransformerCfg()).cuda()
    tokens = torch.randn(3000, 9, 32, device="cuda")
    mask = torch.rand(3000, 9, device="cuda") > 0.3
    mask[:, 0] = True
    compiled = torch.compile(transformer.forward, dynamic=False)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16)
    # jaxtyping's checks off while compiling, as for the compiled heads (test_compiled_heads).
    with runtime_type_checks_off(), torch.inference_mode(), autocast:
        fused = compiled(tokens, mask)
    with torch.no_grad():
        plain = tokens
        for block in transformer.blocks:
            plain = block(plain, mask)
    assert fused.dtype == torch.bfloat16
    torch.testing.assert_close(fused.float(), plain, atol=1e-1, rtol=0)
