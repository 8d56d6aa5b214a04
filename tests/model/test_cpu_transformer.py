"""The C++ CPU transformer kernel against the PyTorch blocks, its conditions, and its build."""

import logging

import pytest
import torch
from kernel_checks import on_thread_counts

from gsnerf.model import cpu_transformer, fused_transformer, native_library
from gsnerf.model.cpu_transformer import (
    cpu_token_transformer,
    cpu_transformer_applies,
)
from gsnerf.model.native_library import NativeBuildError, compiler_present, load_native_library
from gsnerf.model.transformer import TokenTransformer, TransformerCfg

needs_compiler = pytest.mark.skipif(not compiler_present(), reason="no C++ compiler")


@pytest.fixture
def kernel_on():
    saved = fused_transformer.enabled
    fused_transformer.enabled = True
    yield
    fused_transformer.enabled = saved


def _transformer(layers: int = 2, width: int = 32, heads: int = 4, ffn: int = 32, seed: int = 0):
    torch.manual_seed(seed)
    transformer = TokenTransformer(TransformerCfg(width, heads, layers, ffn)).eval()
    # Weights of a trained model's spread (larger than the initialisation's), so that softmaxes
    # are peaked and the LayerNorms' affine parameters matter.
    with torch.no_grad():
        for parameter in transformer.parameters():
            parameter.normal_(0.0, 0.4)
    return transformer


def _tokens_and_mask(sets: int, tokens: int, width: int = 32, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(sets, tokens, width, generator=generator)
    mask = torch.rand(sets, tokens, generator=generator) > 0.4
    mask[:, 0] = True  # every set attends to at least one key
    return values, mask


def _library_blocks(transformer: TokenTransformer, values, mask):
    """The blocks one by one in their sets-first form (``F.scaled_dot_product_attention``)."""
    for block in transformer.blocks:
        values = block(values, mask)
    return values


@needs_compiler
@pytest.mark.parametrize(
    ("tokens", "sets", "layers"), [(9, 37, 2), (4, 100, 1), (1, 5, 2), (16, 19, 4)]
)
def test_kernel_equals_the_library_blocks(kernel_on, tokens, sets, layers):
    # Set counts that are not multiples of the kernel's 16 lanes test the partial last tile.
    transformer = _transformer(layers)
    values, mask = _tokens_and_mask(sets, tokens)
    with torch.inference_mode():
        assert cpu_transformer_applies(transformer.blocks, values)
        expected = _library_blocks(transformer, values, mask)
        torch.testing.assert_close(transformer(values, mask), expected, atol=2e-5, rtol=1e-5)
        unmasked = _library_blocks(transformer, values, None)
        torch.testing.assert_close(transformer(values), unmasked, atol=2e-5, rtol=1e-5)


@needs_compiler
def test_kernel_other_widths(kernel_on):
    # Width 16 with 2 heads and a 48-wide feed-forward layer: one more library build.
    transformer = _transformer(layers=2, width=16, heads=2, ffn=48)
    values, mask = _tokens_and_mask(21, 5, width=16)
    with torch.inference_mode():
        expected = _library_blocks(transformer, values, mask)
        torch.testing.assert_close(transformer(values, mask), expected, atol=2e-5, rtol=1e-5)


@needs_compiler
def test_masked_keys_change_nothing(kernel_on):
    transformer = _transformer()
    values, mask = _tokens_and_mask(40, 9)
    changed = values.clone()
    changed[~mask] = 1e3  # huge values where no query may look
    with torch.inference_mode():
        before, after = transformer(values, mask), transformer(changed, mask)
    attended = mask[..., None].expand_as(before)
    # A masked token still gets its own output; every attended token's is unchanged.
    assert torch.equal(before[attended], after[attended])


@needs_compiler
def test_threads_split_the_sets_alike(kernel_on):
    transformer = _transformer()
    values, mask = _tokens_and_mask(200, 9)
    with torch.inference_mode():
        one, several = on_thread_counts(lambda: transformer(values, mask))
    assert torch.equal(one, several)


@needs_compiler
def test_compiled_transformer_calls_the_operator(kernel_on, monkeypatch):
    transformer = _transformer()
    values, mask = _tokens_and_mask(48, 9)
    calls = []
    kernel = cpu_transformer._kernel

    def counted(*shape):
        calls.append(shape)
        return kernel(*shape)

    with torch.inference_mode():
        expected = _library_blocks(transformer, values, mask)
        compiled = torch.compile(transformer)
        compiled(values, mask)  # compiles
        monkeypatch.setattr(cpu_transformer, "_kernel", counted)
        torch.testing.assert_close(compiled(values, mask), expected, atol=2e-5, rtol=1e-5)
    assert calls == [(32, 4, 32, 9)]  # the compiled code ran the kernel, once
    columns = values.permute(2, 1, 0).contiguous()
    keep = mask.t().float()
    weights = cpu_transformer.packed_weights(transformer.blocks)
    torch.library.opcheck(
        cpu_token_transformer,
        (columns, keep, weights, 2, 4, 32, 1e-6),
        test_utils=("test_schema", "test_faketensor"),
    )


@needs_compiler
def test_conditions(kernel_on):
    transformer = _transformer()
    values, _ = _tokens_and_mask(8, 9)
    with torch.inference_mode():
        assert cpu_transformer_applies(transformer.blocks, values)
        assert not cpu_transformer_applies(transformer.blocks, values.bfloat16())
        too_long, _ = _tokens_and_mask(8, cpu_transformer.MAX_TOKENS + 1)
        assert not cpu_transformer_applies(transformer.blocks, too_long)
    # Training keeps the PyTorch blocks (the kernel has no backward pass).
    assert not cpu_transformer_applies(transformer.blocks, values)
    fused_transformer.enabled = False
    with torch.inference_mode():
        assert not cpu_transformer_applies(transformer.blocks, values)


def test_without_a_compiler_the_blocks_run_in_pytorch(kernel_on, monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("GSNERF_NATIVE_CACHE", str(tmp_path / "cache"))
    cpu_transformer._builds.cache_clear()
    cpu_transformer._kernel.cache_clear()
    native_library._load.cache_clear()
    try:
        with pytest.raises(NativeBuildError, match="no-such-compiler"):
            load_native_library("token_transformer.cpp", {"WIDTH": 32})
        transformer = _transformer()
        values, mask = _tokens_and_mask(20, 9)
        with torch.inference_mode(), caplog.at_level(logging.WARNING):
            assert not cpu_transformer_applies(transformer.blocks, values)
            output = transformer(values, mask)
            expected = _library_blocks(transformer, values, mask)
        assert "CPU transformer kernel unavailable" in caplog.text
        torch.testing.assert_close(output, expected, atol=2e-5, rtol=1e-5)
    finally:
        cpu_transformer._builds.cache_clear()
        cpu_transformer._kernel.cache_clear()
        native_library._load.cache_clear()


@needs_compiler
def test_build_errors_name_the_source(monkeypatch, tmp_path):
    monkeypatch.setenv("GSNERF_NATIVE_CACHE", str(tmp_path))
    # Without its size definitions the source stops at the #error line of its header; the
    # message names the source, then gives the compiler's.
    with pytest.raises(NativeBuildError, match="(?s)token_transformer.cpp.*define WIDTH"):
        load_native_library("token_transformer.cpp", {"HEADS": 4})
    with pytest.raises(NativeBuildError, match="does not exist"):
        load_native_library("missing.cpp", {})
    assert not list(tmp_path.glob("*.so"))  # no half-written library left behind


@needs_compiler
def test_libraries_are_built_once_per_shape(monkeypatch, tmp_path):
    monkeypatch.setenv("GSNERF_NATIVE_CACHE", str(tmp_path))
    defines = {"WIDTH": 8, "HEADS": 2, "FFN": 8, "TOKENS": 3}
    native_library._load.cache_clear()
    try:
        load_native_library("token_transformer.cpp", defines)
        (built,) = tmp_path.glob("*.so")
        stamp = built.stat().st_mtime_ns
        native_library._load.cache_clear()
        load_native_library("token_transformer.cpp", defines)  # from the cache directory
        assert built.stat().st_mtime_ns == stamp
        load_native_library("token_transformer.cpp", {**defines, "TOKENS": 4})
        assert len(list(tmp_path.glob("*.so"))) == 2
    finally:
        native_library._load.cache_clear()
