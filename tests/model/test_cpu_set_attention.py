"""The C++ attention within small sets against float64 library attention, and in the
transformer blocks' training."""

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from kernel_checks import on_thread_counts, record_call_shapes

from gsnerf.model import cpu_set_attention
from gsnerf.model.cpu_set_attention import (
    cpu_set_attention_applies,
    set_attention_forward,
)
from gsnerf.model.native_library import compiler_present
from gsnerf.model.transformer import TokenTransformer, TransformerCfg

needs_compiler = pytest.mark.skipif(not compiler_present(), reason="no C++ compiler")

# (sets, tokens, heads, channels per head): the quickstart's view sets (4 views and the global
# token), a ray's samples, single tokens, the paper's 9-token view sets, the longest sets.
SHAPES = [(40, 5, 4, 8), (16, 4, 4, 8), (6, 1, 2, 4), (12, 9, 4, 8), (3, 64, 1, 16)]


@pytest.fixture
def kernel_on() -> None:
    # tests/conftest.py restores every kernel switch after each test.
    cpu_set_attention.enabled = True


def random_inputs(sets, tokens, heads, channels, seed):
    """Fused query, key and value; a key mask with the first key of every set attended."""
    generator = torch.Generator().manual_seed(seed)
    qkv = torch.randn(sets, tokens, 3 * heads * channels, generator=generator) * 2
    key_mask = torch.rand(sets, tokens, generator=generator) > 0.4
    key_mask[:, 0] = True
    return qkv, key_mask


def library_attention(qkv, key_mask, heads):
    query, key, value = rearrange(qkv, "n t (three h c) -> three n h t c", three=3, h=heads)
    attended = F.scaled_dot_product_attention(
        query, key, value, attn_mask=key_mask[:, None, None, :]
    )
    return rearrange(attended, "n h t c -> n t (h c)")


@needs_compiler
@pytest.mark.parametrize(("sets", "tokens", "heads", "channels"), SHAPES)
def test_matches_float64_library_attention(sets, tokens, heads, channels) -> None:
    qkv, key_mask = random_inputs(sets, tokens, heads, channels, 0)
    attended, probabilities = set_attention_forward(qkv, key_mask, heads)
    expected = library_attention(qkv.double(), key_mask, heads)
    torch.testing.assert_close(attended.double(), expected, atol=1e-5, rtol=1e-5)
    # Masked keys get no attention; every query's probabilities sum to one.
    assert (probabilities.masked_select(~key_mask[:, None, None, :]) == 0).all()
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(sets, heads, tokens))


@needs_compiler
@pytest.mark.parametrize(("sets", "tokens", "heads", "channels"), SHAPES)
def test_gradients_match_float64_autograd(sets, tokens, heads, channels) -> None:
    qkv, key_mask = random_inputs(sets, tokens, heads, channels, 1)
    grad_out = torch.randn(
        sets, tokens, heads * channels, generator=torch.Generator().manual_seed(2)
    )
    ours = qkv.clone().requires_grad_()
    set_attention_forward(ours, key_mask, heads)[0].backward(grad_out)
    exact = qkv.double().requires_grad_()
    library_attention(exact, key_mask, heads).backward(grad_out.double())
    # The library's own float32 attention is up to 7.8e-7 of the scale away here, ours 1.1e-6
    # (64 tokens, a sharp softmax).
    scale = exact.grad.abs().max().item()
    torch.testing.assert_close(ours.grad.double(), exact.grad, atol=2e-6 * scale, rtol=0)
    # Masked keys and their values get no gradient.
    masked = rearrange(ours.grad, "n t (three hc) -> n t three hc", three=3)[~key_mask][:, 1:]
    assert (masked == 0).all()


@needs_compiler
def test_thread_counts_give_the_same_numbers() -> None:
    qkv, key_mask = random_inputs(37, 5, 4, 8, 3)
    qkv.requires_grad_()
    grad_out = torch.randn(37, 5, 32, generator=torch.Generator().manual_seed(4))

    def forward_and_gradient():
        attended = set_attention_forward(qkv, key_mask, 4)[0]
        return [attended, *torch.autograd.grad(attended, qkv, grad_out)]

    for one, three in zip(*on_thread_counts(forward_and_gradient)):
        assert torch.equal(one, three)


@needs_compiler
def test_conditions(kernel_on) -> None:
    qkv = torch.randn(4, 5, 96)
    assert cpu_set_attention_applies(qkv, 4)
    assert not cpu_set_attention_applies(qkv.double(), 4)
    assert not cpu_set_attention_applies(torch.randn(4, 65, 96), 4)  # longer than MAX_TOKENS
    assert not cpu_set_attention_applies(qkv, 5)  # 96 is not 3 x 5 x c
    cpu_set_attention.enabled = False
    assert not cpu_set_attention_applies(qkv, 4)
    with pytest.raises(ValueError, match="3 x heads x channels"):
        set_attention_forward(qkv, torch.ones(4, 5, dtype=torch.bool), 5)


@needs_compiler
@pytest.mark.parametrize("masked", [True, False])
def test_transformer_training_matches_the_library_attention(kernel_on, monkeypatch, masked):
    calls = record_call_shapes(monkeypatch, cpu_set_attention, "set_attention_forward")
    torch.manual_seed(5)
    transformer = TokenTransformer(TransformerCfg(width=32, heads=4, layers=2, ffn_width=32))
    tokens = torch.randn(50, 5, 32)
    key_mask = (torch.rand(50, 5) > 0.3) | (torch.arange(5) == 0) if masked else None

    def output_and_gradients():
        transformer.zero_grad()
        out = transformer(tokens, key_mask)
        out.square().sum().backward()
        return [out.detach()] + [parameter.grad.clone() for parameter in transformer.parameters()]

    fast = output_and_gradients()
    assert calls == [(50, 5, 96)] * 2  # one call per block
    cpu_set_attention.enabled = False
    for ours, library in zip(fast, output_and_gradients()):
        torch.testing.assert_close(ours, library, atol=2e-5, rtol=1e-5)
