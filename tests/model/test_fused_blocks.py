"""The fused transformer blocks against the plain blocks (library attention, sets first).

On a CPU the kernels run, through their torch operators, in Triton's interpreter
(``TRITON_INTERPRET=1``, in a process of its own), in float32 and float16: the interpreter
(Triton 3.8) multiplies bfloat16 ``tl.dot`` operands wrongly (a 32x32 by 32x64 product was off
by 5e10), so float16 stands in for the 16-bit path and bfloat16 is checked on CUDA only.
"""

import pytest
import torch
from fused_cases import compare_in_interpreter, compiled_on_cuda, transformer_case

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
# On CUDA the paper's two shapes; the third is covered by the interpreter.
CUDA_CASES = CASES[:2]


def plain_and_fused(
    case: tuple, device: str, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain blocks' result in float32 and the fused kernels' on ``dtype`` tokens."""
    inputs = transformer_case(case, device)
    bias = None if inputs.key_mask is None else key_bias(inputs.key_mask, dtype)
    with torch.no_grad():
        fused = fused_blocks.fused_token_major_blocks(
            inputs.transformer.blocks, inputs.tokens.to(dtype), bias
        )
    return inputs.plain, fused


@pytest.mark.skipif(fused_blocks.triton is None, reason="Triton is not installed")
def test_fused_blocks_match_the_plain_blocks_in_the_interpreter() -> None:
    compare_in_interpreter("test_fused_blocks")


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
    fused, plain = compiled_on_cuda()
    assert fused.dtype == torch.bfloat16
    torch.testing.assert_close(fused.float(), plain, atol=1e-1, rtol=0)
