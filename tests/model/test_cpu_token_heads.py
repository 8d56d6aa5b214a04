"""The heads' view-token stage in one C++ kernel against their PyTorch code in float64."""

import copy
import dataclasses
import logging

import pytest
import torch
from kernel_checks import on_thread_counts

from gsnerf.model import cpu_token_heads, cpu_transformer, fused_transformer, native_library
from gsnerf.model.cpu_token_heads import (
    cpu_radiance_applies,
    cpu_radiance_op,
    cpu_radiance_views,
    cpu_semantic_applies,
    cpu_semantic_op,
    head_weights,
    radiance_shape,
)
from gsnerf.model.feature_gather import GatheredFeatures, attention_view_mask
from gsnerf.model.native_library import compiler_present
from gsnerf.model.radiance_head import RadianceHead, RadianceHeadCfg
from gsnerf.model.semantic_head import SemanticHead, SemanticHeadCfg
from gsnerf.model.transformer import TransformerCfg

needs_compiler = pytest.mark.skipif(not compiler_present(), reason="no C++ compiler")

VOLUME, IMAGE, ANGLE, CLASSES = 12, 16, 8, 20


@pytest.fixture
def kernel_on():
    # tests/conftest.py restores every kernel switch after each test.
    fused_transformer.enabled = True


def _spread(module: torch.nn.Module) -> torch.nn.Module:
    """Weights of a trained model's spread, larger than the initialisation's: peaked softmaxes,
    ELUs on both sides of 0."""
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0.0, 0.3)
    return module.eval()


def _radiance_head(layers: int = 2, width: int = 32, heads: int = 4) -> RadianceHead:
    transformer = TransformerCfg(width=width, heads=heads, layers=layers, ffn_width=32)
    return _spread(RadianceHead(RadianceHeadCfg(transformer=transformer), VOLUME, IMAGE, ANGLE))


def _gathered(rays: int, samples: int, views: int, seed: int = 1) -> GatheredFeatures:
    generator = torch.Generator().manual_seed(seed)
    shape = (1, rays, samples, views)
    in_frustum = torch.rand(*shape, generator=generator) > 0.3
    in_frustum[0, 0, 0] = False  # a sample seen by no view: every view is attended
    return GatheredFeatures(
        volume=torch.randn(*shape, VOLUME, generator=generator),
        image=torch.randn(*shape, IMAGE, generator=generator),
        colours=torch.rand(*shape, 3, generator=generator),
        angle=torch.randn(*shape, ANGLE, generator=generator),
        in_frustum=in_frustum,
        visible=torch.rand(*shape, generator=generator) > 0.3,
    )


def _float64(gathered: GatheredFeatures) -> GatheredFeatures:
    fields = {
        name: value.double() if value.is_floating_point() else value
        for name, value in vars(gathered).items()
    }
    return GatheredFeatures(**fields)


@needs_compiler
@pytest.mark.parametrize(("views", "layers", "rays"), [(8, 2, 7), (3, 4, 16), (15, 1, 1)])
def test_radiance_views_equal_the_pytorch_stage_in_float64(kernel_on, views, layers, rays):
    # 7 rays of 3 samples: 21 samples, one whole tile of 16 and a partial one.
    head = _radiance_head(layers)
    gathered = _gathered(rays, 3, views)
    mask = attention_view_mask(gathered.in_frustum, gathered.visible)
    with torch.inference_mode():
        assert cpu_radiance_applies(head, gathered)
        tokens, weights, rgb = cpu_radiance_views(head, gathered, mask)
        exact = copy.deepcopy(head).double().view_stage(_float64(gathered), mask)
        fused_transformer.enabled = False
        plain = head.view_stage(gathered, mask)
    for kernel, pytorch, reference in zip((tokens, weights, rgb), plain, exact):
        assert kernel.shape == reference.shape and kernel.dtype == torch.float32
        # Float32 rounding: within a few times the PyTorch code's own distance to float64.
        own_error = (pytorch.double() - reference).abs().max().item()
        torch.testing.assert_close(kernel.double(), reference, atol=4 * own_error + 2e-6, rtol=0)
    assert torch.all(weights[~mask] == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights[..., 0]))


@needs_compiler
def test_radiance_head_outputs_with_the_kernel(kernel_on):
    head = _radiance_head()
    gathered = _gathered(5, 4, 8)
    mask = attention_view_mask(gathered.in_frustum, gathered.visible)
    positions = torch.linspace(0.1, 0.9, 4).expand(1, 5, 4)
    with torch.inference_mode():
        fast = head(gathered, mask, positions)
        fused_transformer.enabled = False
        plain = head(gathered, mask, positions)
    for name in ("density", "rgb", "blend_weights"):
        torch.testing.assert_close(getattr(fast, name), getattr(plain, name), atol=2e-5, rtol=1e-5)


@needs_compiler
def test_masked_views_change_nothing(kernel_on):
    head = _radiance_head()
    gathered = _gathered(9, 4, 8)
    mask = attention_view_mask(gathered.in_frustum, gathered.visible)
    hidden = ~mask[..., None]
    changed = dataclasses.replace(
        gathered,
        volume=gathered.volume.masked_fill(hidden, 1e3),
        image=gathered.image.masked_fill(hidden, -1e3),
        colours=gathered.colours.masked_fill(hidden, 5.0),
        angle=gathered.angle.masked_fill(hidden, 1e3),
    )
    with torch.inference_mode():
        before = cpu_radiance_views(head, gathered, mask)
        after = cpu_radiance_views(head, changed, mask)
    for first, second in zip(before, after):
        assert torch.equal(first, second)


def _semantic_inputs(rays: int, views: int, channels: int, seed: int = 2):
    generator = torch.Generator().manual_seed(seed)
    shape = (1, rays, 1, views)
    features = torch.randn(*shape, channels, generator=generator)
    in_frustum = torch.rand(*shape, generator=generator) > 0.3
    visible = torch.rand(*shape, generator=generator) > 0.3
    return features, in_frustum, visible, attention_view_mask(in_frustum, visible)


@needs_compiler
@pytest.mark.parametrize(("views", "channels", "rays"), [(8, 180, 37), (4, 9, 16)])
def test_semantic_logits_equal_the_pytorch_head_in_float64(kernel_on, views, channels, rays):
    head = _spread(SemanticHead(SemanticHeadCfg(), channels, CLASSES))
    inputs = _semantic_inputs(rays, views, channels)
    with torch.inference_mode():
        assert cpu_semantic_applies(head, inputs[0])
        logits = head(*inputs)
        exact = copy.deepcopy(head).double()(inputs[0].double(), *inputs[1:])
        fused_transformer.enabled = False
        plain = head(*inputs)
    assert logits.shape == (1, rays, 1, CLASSES)
    own_error = (plain.double() - exact).abs().max().item()
    torch.testing.assert_close(logits.double(), exact, atol=4 * own_error + 2e-6, rtol=0)


@needs_compiler
def test_threads_split_the_samples_alike(kernel_on):
    head = _radiance_head()
    gathered = _gathered(50, 4, 8)
    mask = attention_view_mask(gathered.in_frustum, gathered.visible)
    with torch.inference_mode():
        one, several = on_thread_counts(lambda: cpu_radiance_views(head, gathered, mask))
    for first, second in zip(one, several):
        assert torch.equal(first, second)


@needs_compiler
def test_conditions(kernel_on):
    head = _radiance_head()
    gathered = _gathered(2, 4, 8)
    with torch.inference_mode():
        assert cpu_radiance_applies(head, gathered)
        assert not cpu_radiance_applies(head, _float64(gathered))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not cpu_radiance_applies(head, gathered)
        assert not cpu_radiance_applies(head, _gathered(2, 4, 16))  # 17 tokens
        assert not cpu_radiance_applies(_radiance_head(layers=0), gathered)
        deeper = copy.deepcopy(head)
        deeper.blend = torch.nn.Sequential(*head.blend, torch.nn.ELU(), torch.nn.Linear(1, 1))
        assert not cpu_radiance_applies(deeper, gathered)
        features = _semantic_inputs(3, 8, 9)[0]
        views_only = SemanticHead(SemanticHeadCfg(tokens="views"), 9, CLASSES)
        assert cpu_semantic_applies(SemanticHead(SemanticHeadCfg(), 9, CLASSES), features)
        assert not cpu_semantic_applies(views_only, features)
    # Training keeps the PyTorch code (the kernel has no backward pass).
    assert not cpu_radiance_applies(head, gathered)
    fused_transformer.enabled = False
    with torch.inference_mode():
        assert not cpu_radiance_applies(head, gathered)


@needs_compiler
def test_operators_for_compiled_code(kernel_on):
    head = _radiance_head()
    gathered = _gathered(2, 8, 8)
    mask = attention_view_mask(gathered.in_frustum, gathered.visible)
    flat = [
        tensor.reshape(16, 8, *tensor.shape[4:])
        for tensor in (gathered.volume, gathered.image, gathered.colours)
        + (gathered.in_frustum, gathered.visible, mask, gathered.angle)
    ]
    weights = head_weights(
        head.view_embed, head.global_embed, head.view_transformer.blocks, head.blend
    )
    shape = list(radiance_shape(head, gathered))
    torch.library.opcheck(
        cpu_radiance_op,
        (*flat, weights, shape, 2, 1e-6),
        test_utils=("test_schema", "test_faketensor"),
    )
    semantic = SemanticHead(SemanticHeadCfg(), 9, CLASSES).eval()
    features, in_frustum, visible, view_mask = _semantic_inputs(16, 8, 9)
    blocks = semantic.transformer.blocks
    semantic_weights = head_weights(
        semantic.view_embed, semantic.global_embed, blocks, semantic.classifier
    )
    semantic_shape = list(cpu_token_heads.semantic_shape(semantic, features))
    torch.library.opcheck(
        cpu_semantic_op,
        (
            *(t.reshape(16, 8, *t.shape[4:]) for t in (features, in_frustum, visible, view_mask)),
            semantic_weights,
            semantic_shape,
            len(blocks),
            1e-6,
        ),
        test_utils=("test_schema", "test_faketensor"),
    )


def test_without_a_compiler_the_heads_run_in_pytorch(kernel_on, monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("GSNERF_NATIVE_CACHE", str(tmp_path / "cache"))
    # Every cache of a build outcome: what fails here must not stay failed for later tests.
    caches = (
        cpu_transformer._builds,
        cpu_transformer._kernel,
        native_library._load,
        native_library.native_function,
        native_library.native_function_builds,
    )
    for cache in caches:
        cache.cache_clear()
    try:
        head = _radiance_head()
        gathered = _gathered(3, 4, 8)
        mask = attention_view_mask(gathered.in_frustum, gathered.visible)
        positions = torch.linspace(0.1, 0.9, 4).expand(1, 3, 4)
        with torch.inference_mode(), caplog.at_level(logging.WARNING):
            assert not cpu_radiance_applies(head, gathered)
            output = head(gathered, mask, positions)
            fused_transformer.enabled = False
            plain = head(gathered, mask, positions)
        assert "C++ kernel token_head unavailable" in caplog.text
        torch.testing.assert_close(output.rgb, plain.rgb, atol=2e-5, rtol=1e-5)
    finally:
        for cache in caches:
            cache.cache_clear()


@needs_compiler
def test_compiled_heads_call_the_kernel(kernel_on, monkeypatch):
    # Traced with the kernel on: its conditions run while torch.compile traces the heads.
    head = _radiance_head()
    gathered = _gathered(4, 4, 8)
    mask = attention_view_mask(gathered.in_frustum, gathered.visible)
    positions = torch.linspace(0.1, 0.9, 4).expand(1, 4, 4)
    semantic = _spread(SemanticHead(SemanticHeadCfg(), 9, CLASSES))
    inputs = _semantic_inputs(16, 8, 9)
    calls = []
    run = cpu_token_heads._run

    def counted(shape, *arguments):
        calls.append(shape[-2])  # the epilogue
        return run(shape, *arguments)

    with torch.inference_mode():
        expected = head(gathered, mask, positions)
        expected_logits = semantic(*inputs)
        torch._dynamo.reset()
        compiled = torch.compile(head.forward)
        compiled_semantic = torch.compile(semantic.forward)
        monkeypatch.setattr(cpu_token_heads, "_run", counted)
        output = compiled(gathered, mask, positions)
        logits = compiled_semantic(*inputs)
    assert calls == [cpu_token_heads.RADIANCE, cpu_token_heads.SEMANTIC]
    torch.testing.assert_close(output.rgb, expected.rgb, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output.density, expected.density, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, expected_logits, atol=1e-5, rtol=1e-5)
