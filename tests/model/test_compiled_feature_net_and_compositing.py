"""The 2-D feature net and the compositing compiled (``compile_heads`` parts ``feature_net`` and
``compositing``) against the eager model, in inference and in a training step."""

import copy
import dataclasses

import pytest
import torch
from compiled_checks import (
    assert_close_training,
    assert_same_render,
    plain_and_compiled_encodings,
    plain_and_compiled_renders,
    train_both,
)
from test_compiled_heads import CLASSES, CPU_AND_CUDA

from gsnerf.evaluation.benchmark import load_model_cfg
from gsnerf.evaluation.benchmark_scene import plane_example
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
    plain, fast = plain_and_compiled_encodings(model, example, ["feature_net"])
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
    plain, fast = plain_and_compiled_renders(model, example, ["compositing"])
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
    plain_loss, plain_gradients, fast_loss, fast_gradients = train_both(plain, fast, example)
    assert "forward" in vars(fast.geo_reasoner.feature_net) and "composite_samples" in vars(fast)
    assert any("feature_net" in name for name in fast_gradients)
    assert any("semantic_head" in name for name in fast_gradients)
    # Float32 rounding of the fused normalisations, grown through the backward pass (as for the
    # compiled cost volumes); a wrong gradient is off by the order of the gradient itself.
    assert_close_training(fast_loss, fast_gradients, plain_loss, plain_gradients)
