"""The 2-D feature net and the compositing compiled (``compile_heads`` parts ``feature_net`` and
``compositing``) against the eager model, in inference and in a training step."""

import copy
import dataclasses

import pytest
import torch
from test_compiled_heads import (
    CLASSES,
    CPU_AND_CUDA,
    assert_same_render,
    fp32_matmuls,
    runtime_type_checks_off,
)

from gsnerf.engine.step import sample_pixels, training_losses
from gsnerf.evaluation.benchmark import load_model_cfg
from gsnerf.evaluation.benchmark_scene import plane_example
from gsnerf.losses import LossCfg
from gsnerf.model import GSNeRF, build_model
from gsnerf.model.compiled_heads import compile_heads


def tiny_model(device: str, rendering: str = "guide_point") -> GSNeRF:
    """The tiny model with the class logits of the guide sample (its default) or of every
    sample composited (``volume``)."""
    cfg = load_model_cfg("tiny", 4)
    semantic = dataclasses.replace(cfg.renderer.semantic, rendering=rendering)
    cfg = dataclasses.replace(cfg, renderer=dataclasses.replace(cfg.renderer, semantic=semantic))
    torch.manual_seed(0)
    return build_model(cfg, CLASSES).to(device)


@pytest.mark.parametrize("device", CPU_AND_CUDA)
def test_compiled_feature_net_encodes_the_plain_sources(device: str) -> None:
    model = tiny_model(device).eval()
    example = plane_example(3, 32, 48, CLASSES, seed=0).to(device)
    with fp32_matmuls(torch.device(device)), torch.inference_mode():
        plain = model.encode_sources(example)
        compile_heads(model, "default", parts=["feature_net"])
        with runtime_type_checks_off():
            fast = model.encode_sources(example)
    assert "forward" in vars(model.geo_reasoner.feature_net)
    assert "forward" not in vars(model.radiance_head)
    # Float32 rounding of the fused normalisations: measured up to 5e-6 on the CPU. The depths
    # go through the whole cascade, whose hypotheses each level's features place.
    pairs = [
        (fast.semantic_features, plain.semantic_features),
        (fast.semantic_logits, plain.semantic_logits),
        *zip(fast.depths, plain.depths),
    ]
    for fast_tensor, plain_tensor in pairs:
        torch.testing.assert_close(fast_tensor, plain_tensor, atol=1e-4, rtol=0)


@pytest.mark.parametrize("rendering", ["guide_point", "volume"])
@pytest.mark.parametrize("device", CPU_AND_CUDA)
def test_compiled_compositing_renders_the_plain_image(device: str, rendering: str) -> None:
    model = tiny_model(device, rendering).eval()
    example = plane_example(3, 24, 32, CLASSES, seed=0).to(device)
    with fp32_matmuls(torch.device(device)), torch.inference_mode():
        geometry = model.encode_sources(example)
        plain = model.render_image(example, geometry, 200)
        compile_heads(model, "default", parts=["compositing"])
        with runtime_type_checks_off():
            fast = model.render_image(example, geometry, 200)
    assert "composite_samples" in vars(model)
    assert model.composite_samples != GSNeRF.composite_samples
    assert_same_render(fast, plain)
    torch.testing.assert_close(fast.opacity, plain.opacity, atol=1e-5, rtol=0)
    # The logits themselves, not only their labels: the compiled sums of the composited ones.
    torch.testing.assert_close(fast.semantic_logits, plain.semantic_logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("device", CPU_AND_CUDA)
def test_compiled_feature_net_and_compositing_train_with_the_plain_gradients(device: str) -> None:
    # train.compile_parts: forward and backward of a training step through both compiled parts;
    # semantics composited over every sample, so the class logits' gradients pass the
    # compiled compositing too.
    plain = tiny_model(device, "volume").train()
    fast = copy.deepcopy(plain)
    compile_heads(fast, "default", parts=["feature_net", "compositing"])
    example = plane_example(3, 32, 48, CLASSES, seed=0).to(device)

    def loss_and_gradients(model: GSNeRF) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        generator = torch.Generator().manual_seed(1)
        pixels = sample_pixels(example.target, 64, generator).to(device)
        losses = training_losses(
            model, example, pixels, LossCfg(), generator, "fp32", torch.device(device)
        )
        losses["total"].backward()
        named = model.named_parameters()
        return losses["total"].detach(), {n: p.grad for n, p in named if p.grad is not None}

    with fp32_matmuls(torch.device(device)), runtime_type_checks_off():
        plain_loss, plain_gradients = loss_and_gradients(plain)
        fast_loss, fast_gradients = loss_and_gradients(fast)
    assert "forward" in vars(fast.geo_reasoner.feature_net) and "composite_samples" in vars(fast)
    assert fast_gradients.keys() == plain_gradients.keys()
    assert any("feature_net" in name for name in fast_gradients)
    assert any("semantic_head" in name for name in fast_gradients)
    # Float32 rounding of the fused normalisations, grown through the backward pass (as for the
    # compiled cost volumes); a wrong gradient is off by the order of the gradient itself.
    torch.testing.assert_close(fast_loss, plain_loss, atol=1e-5, rtol=0)
    for name, gradient in fast_gradients.items():
        scale = max(plain_gradients[name].abs().max().item(), 1e-4)
        torch.testing.assert_close(gradient, plain_gradients[name], atol=1e-2 * scale, rtol=0)
