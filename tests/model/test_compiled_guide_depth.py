"""The target depth D_T compiled (``compile_heads(..., parts=["guide_depth"])``) against eager."""

import dataclasses

import torch
from compiled_checks import assert_same_render, runtime_type_checks_off
from test_compiled_heads import CLASSES

from gsnerf.evaluation.benchmark import load_model_cfg
from gsnerf.evaluation.benchmark_scene import plane_example
from gsnerf.model import GSNeRF, build_model
from gsnerf.model.compiled_heads import compile_heads


def test_compiled_guide_depth_is_the_eager_one() -> None:
    torch.manual_seed(0)
    model = build_model(load_model_cfg("tiny", 4), CLASSES).eval()
    example = plane_example(3, 24, 32, CLASSES, seed=0)
    with torch.inference_mode():
        geometry = model.encode_sources(example)
        # No depth on the left half of every source view: part of the target is then reached
        # by no source depth, so the splat's misses and the hole filling are compared too.
        finest = geometry.depths[-1].clone()
        finest[..., : finest.shape[-1] // 2] = 0
        geometry = dataclasses.replace(geometry, depths=[*geometry.depths[:-1], finest])
        plain_guide = model.estimate_guide(example, geometry)
        plain = model.render_image(example, geometry, 200)
        compile_heads(model, "default", parts=["guide_depth"])
        with runtime_type_checks_off():
            guide = model.estimate_guide(example, geometry)
            fast = model.render_image(example, geometry, 200)
    # Replaced on the instance only; the class keeps the eager method.
    assert "estimate_guide" in vars(model) and model.estimate_guide != GSNeRF.estimate_guide
    assert 0 < plain_guide.valid.float().mean() < 1
    assert torch.equal(guide.valid, plain_guide.valid)
    torch.testing.assert_close(guide.depth, plain_guide.depth, atol=1e-5, rtol=1e-6)
    assert_same_render(fast, plain)
