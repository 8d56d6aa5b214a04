"""GSNeRF end to end on tiny inputs: shapes, gradients, chunking, semantic rendering modes."""

import dataclasses

import pytest
import torch
from small_models import small_gsnerf_cfg

from gsnerf.model import GSNeRF, GSNeRFCfg, RendererCfg, build_model
from gsnerf.rendering.chunked import render_in_chunks
from gsnerf.rendering.volume import composite
from gsnerf.types import Example, RenderOutput, Views

CLASSES, HEIGHT, WIDTH = 4, 32, 48


def views(num_views: int, seed: int) -> Views:
    """Cameras near the origin looking down +z at random images."""
    generator = torch.Generator().manual_seed(seed)
    k = torch.tensor([[40.0, 0.0, 23.5], [0.0, 40.0, 15.5], [0.0, 0.0, 1.0]])
    poses = torch.eye(4).repeat(1, num_views, 1, 1)
    poses[..., :3, 3] = 0.1 * torch.randn(1, num_views, 3, generator=generator)
    return Views(
        images=torch.rand(1, num_views, 3, HEIGHT, WIDTH, generator=generator),
        intrinsics=k.repeat(1, num_views, 1, 1),
        cam_to_world=poses,
        near=torch.full((1, num_views), 0.5),
        far=torch.full((1, num_views), 4.0),
        depths=None,
        labels=None,
        frame_ids=torch.arange(num_views)[None],
    )


def example() -> Example:
    return Example(
        sources=views(3, seed=0),
        target=views(1, seed=1),
        source_neighbours=torch.tensor([[[1, 2], [2, 0], [0, 1]]]),
        scenes=["tiny"],
    )


def pixels(count: int = 64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(2)
    rows = torch.randint(HEIGHT, (1, count), generator=generator)
    cols = torch.randint(WIDTH, (1, count), generator=generator)
    return torch.stack([rows, cols], dim=-1)


def model(cfg: GSNeRFCfg | None = None) -> GSNeRF:
    torch.manual_seed(0)
    return build_model(cfg or small_gsnerf_cfg(), CLASSES)


def test_training_forward_shapes_and_gradients_reach_every_parameter() -> None:
    network = model()
    output = network(example(), pixels(), training=True, generator=torch.Generator().manual_seed(0))
    render = output.render
    assert render.rgb.shape == (1, 64, 3)
    assert render.depth.shape == render.opacity.shape == (1, 64)
    assert render.semantic_logits.shape == (1, 64, CLASSES)
    assert render.weights.shape == (1, 64, 6)
    for value in (render.rgb, render.depth, render.semantic_logits, render.weights):
        assert torch.isfinite(value).all()
    # The coarse depths and the 2-D logits are trained by their own losses (spec 3.3-3.4).
    loss = (
        render.rgb.sum()
        + render.depth.sum()
        + render.semantic_logits.sum()
        + sum(depth.sum() for depth in output.geometry.depths)
        + output.geometry.semantic_logits.sum()
    )
    loss.backward()
    missing = [
        name
        for name, parameter in network.named_parameters()
        if parameter.grad is None
        or not torch.isfinite(parameter.grad).all()
        or not parameter.grad.abs().sum() > 0
    ]
    assert missing == []


def test_the_guide_depth_passes_no_gradient_to_the_source_depths() -> None:
    # D_T only places the samples; the source depths learn from their own losses (spec 3.3),
    # not through the sample positions of the render.
    network = model()
    geometry = network.encode_sources(example())
    assert geometry.depths[-1].requires_grad
    guide = network.guide_depth(example(), geometry)
    assert guide.valid.any() and not guide.depth.requires_grad


@pytest.mark.parametrize(("num_samples", "num_uniform"), [(1, 0), (2, 0), (4, 3)])
def test_any_sample_count_renders(num_samples: int, num_uniform: int) -> None:
    network = model(small_gsnerf_cfg(num_samples, num_uniform)).eval()
    with torch.no_grad():
        output = network(example(), pixels(16), training=False)
    assert output.render.weights.shape == (1, 16, num_samples + num_uniform)
    assert torch.isfinite(output.render.rgb).all()
    assert (output.render.rgb >= 0).all() and (output.render.rgb <= 1).all()


def test_render_image_in_chunks_equals_one_pass_and_gives_z_depth() -> None:
    network = model().eval()
    batch = example()
    with torch.no_grad():
        geometry = network.encode_sources(batch)
        chunked = network.render_image(batch, geometry, chunk_rays=500)
        whole = network.render_image(batch, geometry, chunk_rays=HEIGHT * WIDTH)
        rays = network.render_rays(batch, geometry, pixels(8), training=False)
    assert chunked.rgb.shape == (1, 3, HEIGHT, WIDTH)
    assert chunked.semantic_logits.shape == (1, CLASSES, HEIGHT, WIDTH)
    assert chunked.depth.shape == chunked.guide_depth.shape == (1, HEIGHT, WIDTH)
    for name in ("rgb", "depth", "semantic_logits", "opacity"):
        assert torch.allclose(getattr(chunked, name), getattr(whole, name), atol=1e-5)
    # z = distance / |K^-1 (x, y, 1)| for the target camera's identity rotation.
    rows, cols = pixels(8)[0].unbind(-1)
    offsets = torch.stack([(cols - 23.5) / 40.0, (rows - 15.5) / 40.0], dim=-1)
    z = rays.render.depth[0] / torch.sqrt(1 + (offsets**2).sum(-1))
    assert torch.allclose(chunked.depth[0, rows, cols], z, atol=1e-5)


def semantic_pair() -> tuple[GSNeRF, GSNeRF, list[torch.Tensor]]:
    """The same weights with volume and guide-point rendering; the volume model records logits."""
    volume = model(small_gsnerf_cfg(rendering="volume")).eval()
    guide = model(small_gsnerf_cfg(rendering="guide_point")).eval()
    guide.load_state_dict(volume.state_dict())
    recorded: list[torch.Tensor] = []
    volume.semantic_head.register_forward_hook(lambda _m, _i, out: recorded.append(out))
    return volume, guide, recorded


def test_semantic_volume_rendering_composites_the_per_sample_logits() -> None:
    volume, _, recorded = semantic_pair()
    with torch.no_grad():
        output = volume(example(), pixels(), training=False)
    per_sample = recorded[-1]
    assert per_sample.shape == (1, 64, 6, CLASSES)
    expected = composite(output.render.weights, per_sample)
    assert torch.allclose(output.render.semantic_logits, expected, atol=1e-6)


def test_guide_point_mode_reads_the_guide_sample() -> None:
    volume, guide, recorded = semantic_pair()
    with torch.no_grad():
        full = volume(example(), pixels(), training=False)
        single = guide(example(), pixels(), training=False)
    index = full.samples.guide_index[..., None, None].expand(1, 64, 1, CLASSES)
    at_guide = recorded[-1].gather(2, index)[:, :, 0]
    assert torch.equal(single.samples.guide_index, full.samples.guide_index)
    assert torch.allclose(single.render.semantic_logits, at_guide, atol=1e-5)


def test_render_in_chunks_calls_consecutive_slices() -> None:
    calls = []

    def render(chunk: torch.Tensor) -> RenderOutput:
        calls.append(chunk.shape[1])
        value = chunk[..., 0].float() * 10 + chunk[..., 1].float()
        return RenderOutput(
            rgb=value[..., None].expand(*value.shape, 3),
            depth=value,
            semantic_logits=value[..., None],
            weights=value[..., None],
            opacity=value,
        )

    pixels_all = torch.stack([torch.arange(10), torch.arange(10) % 3], dim=-1)[None]
    joined = render_in_chunks(render, pixels_all, 4)
    assert calls == [4, 4, 2]
    assert torch.equal(joined.depth, render(pixels_all).depth)
    # Equal chunks: 10 rays in at most 4 -> three calls of 4, the last with two copies of
    # pixel 9 whose renders are dropped; at most 6 -> two calls of 5, nothing padded.
    for chunk_rays, expected_calls in ((4, [4, 4, 4]), (6, [5, 5])):
        calls.clear()
        equal = render_in_chunks(render, pixels_all, chunk_rays, equal_chunks=True)
        assert calls == expected_calls
        for name in ("rgb", "depth", "semantic_logits", "weights", "opacity"):
            assert torch.equal(getattr(equal, name), getattr(joined, name))


def test_build_model_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        build_model(small_gsnerf_cfg(), 0)
    with pytest.raises(ValueError, match="depth_normalisation"):
        dataclasses.replace(RendererCfg(), depth_normalisation="sum")
