"""The fused Triton attention kernel against the library attention (sets innermost layout).

On a CPU the kernel runs in Triton's interpreter (``TRITON_INTERPRET=1``, read when the kernel
module is imported, so in a process of its own); on CUDA compiled, eager and through a whole
view transformer.
"""

import pytest
import torch
import torch.nn.functional as F
from triton_interpreter import run_in_triton_interpreter

from gsnerf.model import attention_kernel
from gsnerf.model.transformer import TokenTransformer, TransformerCfg, key_bias

# (heads, channels, tokens, sets, masked, dtype): the paper's 4 x 8 channels and 9 tokens, a
# set count that is no multiple of the kernel's block, powers of two not needed anywhere, one
# token, no mask, and bf16 inputs.
CASES = [
    (4, 8, 9, 150, True, "float32"),
    (2, 3, 5, 70, False, "float32"),
    (1, 8, 1, 5, True, "float32"),
    (4, 8, 9, 100, True, "bfloat16"),
]
# On CUDA the model's two (9 tokens with a mask, float32 and bf16), the rest being covered by
# the interpreter.
CUDA_CASES = [CASES[0], CASES[3]]


def library_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` in float32 on ``(h, c, t, n)`` tensors."""
    sets_first = [tensor.float().permute(3, 0, 2, 1) for tensor in (query, key, value)]
    attn_mask = None if mask is None else mask[:, None, None, :]
    return F.scaled_dot_product_attention(*sets_first, attn_mask=attn_mask).permute(1, 3, 2, 0)


def random_case(
    heads: int, channels: int, tokens: int, sets: int, dtype: torch.dtype, device: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(heads * 100 + tokens)
    query, key, value = (
        torch.randn(heads, channels, tokens, sets, generator=generator).to(device, dtype)
        for _ in range(3)
    )
    # Random key masks with one random key always attended (every set needs one), so that
    # some sets start with masked keys.
    mask = torch.rand(sets, tokens, generator=generator) > 0.4
    mask[torch.arange(sets), torch.randint(tokens, (sets,), generator=generator)] = True
    return query, key, value, mask.to(device)


def check_cases(device: str, launch, cases: list[tuple] = CASES) -> None:
    for heads, channels, tokens, sets, masked, dtype_name in cases:
        dtype = getattr(torch, dtype_name)
        query, key, value, mask = random_case(heads, channels, tokens, sets, dtype, device)
        bias = key_bias(mask, dtype) if masked else None
        fused = launch(query, key, value, bias)
        assert fused.shape == query.shape and fused.dtype == dtype
        expected = library_attention(query, key, value, mask if masked else None)
        # bf16 outputs carry 8 significant bits: about 0.4 % of values of a few units.
        tolerance = 2e-2 if dtype == torch.bfloat16 else 2e-6
        torch.testing.assert_close(fused.float(), expected, atol=tolerance, rtol=0)


INTERPRETED = """
    from gsnerf.model.attention_kernel import _attention_kernel, launch_attention_kernel
    from test_attention_kernel import check_cases

    def launch(query, key, value, bias):
        return launch_attention_kernel(_attention_kernel, query, key, value, bias)

    check_cases("cpu", launch)
    print("interpreted kernel: all cases match")
"""


@pytest.mark.skipif(attention_kernel.triton is None, reason="Triton is not installed")
def test_kernel_matches_the_library_attention_in_the_interpreter() -> None:
    assert "all cases match" in run_in_triton_interpreter(INTERPRETED)


def test_kernel_is_off_by_default_and_never_serves_cpu_tensors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert attention_kernel.enabled is False
    monkeypatch.setattr(attention_kernel, "enabled", True)
    query = torch.zeros(1, 8, 9, 4)
    assert not attention_kernel.fused_attention_applies(query)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_kernel_matches_the_library_attention_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attention_kernel, "enabled", True)
    check_cases("cuda", attention_kernel.fused_sets_last_attention, CUDA_CASES)
    compiled = torch.compile(attention_kernel.fused_sets_last_attention, dynamic=False)
    check_cases("cuda", compiled, CUDA_CASES)
    query = torch.zeros(1, 8, 9, 4, device="cuda", requires_grad=True)
    assert not attention_kernel.fused_attention_applies(query)
    with torch.no_grad():
        assert attention_kernel.fused_attention_applies(query)
        # Longer sets keep the plain formulation (the loops are unrolled).
        assert not attention_kernel.fused_attention_applies(query.new_zeros(1, 8, 17, 4))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_view_transformer_with_the_kernel_matches_the_library_on_cuda(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attention_kernel, "enabled", True)
    torch.manual_seed(0)
    transformer = TokenTransformer(TransformerCfg()).cuda().to(dtype)
    tokens = torch.randn(5000, 9, 32, device="cuda", dtype=dtype)
    mask = torch.rand(5000, 9, device="cuda") > 0.3
    mask[:, 0] = True
    with torch.inference_mode():
        fused = transformer(tokens, mask)  # token-major, the kernel's attention
        # The same blocks through the library kernel, sets first.
        plain = tokens
        for block in transformer.blocks:
            plain = block(plain, mask)
    tolerance = 5e-2 if dtype == torch.bfloat16 else 1e-4
    torch.testing.assert_close(fused.float(), plain.float(), atol=tolerance, rtol=0)
