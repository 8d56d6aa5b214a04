"""Inference options: bf16 autocast, per-stage timing, memory-sized chunks (spec 9)."""

import dataclasses

import pytest
import torch

from gsnerf.engine.device import autocast_context
from gsnerf.evaluation.benchmark import load_model_cfg
from gsnerf.evaluation.benchmark_scene import plane_example
from gsnerf.geometry.homography import plane_sweep_warp
from gsnerf.model import GSNeRF, build_model
from gsnerf.model.cost_volume import correlation_volume, group_correlation
from gsnerf.model.feature_gather import project_to_sources
from gsnerf.model.stage_timer import StageTimer
from gsnerf.rendering.chunked import chunk_rays_for_memory
from gsnerf.types import RenderOutput

CLASSES = 5


def tiny_model(num_samples: int = 4) -> GSNeRF:
    torch.manual_seed(0)
    return build_model(load_model_cfg("tiny", num_samples), CLASSES).eval()


def test_bf16_autocast_render_stays_close_to_fp32() -> None:
    model = tiny_model()
    example = plane_example(3, 32, 48, CLASSES, seed=0)
    cpu = torch.device("cpu")
    with torch.inference_mode():
        reference = model.render_image(example, model.encode_sources(example), chunk_rays=0)
        with autocast_context("bf16", cpu):
            low = model.render_image(example, model.encode_sources(example), chunk_rays=0)
    assert low.rgb.dtype == low.depth.dtype == torch.float32
    # bf16 keeps 8 significant bits (relative rounding 2^-9 = 0.2 %); through the cascade and
    # two transformers the error grows to about 1 %, with rare outliers where the blending of
    # views is close to a tie. Measured on this scene: mean |d rgb| 0.007, mean depth error
    # 0.25 %, 99 % of the class predictions unchanged.
    rgb_error = (low.rgb - reference.rgb).abs()
    assert 0 < rgb_error.mean() < 0.02
    depth_error = (low.depth - reference.depth).abs() / reference.depth
    assert depth_error.mean() < 0.01 and depth_error.max() < 0.05
    # D_T is computed in float32 with autocast off; only its input depths were bf16.
    assert torch.equal(low.guide_valid, reference.guide_valid)
    agree = low.semantic_logits.argmax(1) == reference.semantic_logits.argmax(1)
    assert agree.float().mean() > 0.95


def test_bf16_autocast_leaves_projections_and_warps_in_float32() -> None:
    # Under autocast a matrix product runs in bf16, whose pixel coordinates would be a quarter
    # pixel off at x = 64; the projections of the renderer and the cost-volume warps opt out.
    example = plane_example(3, 48, 64, CLASSES, seed=2)
    sources = example.sources
    cpu = torch.device("cpu")
    points = 0.5 + 2.0 * torch.rand(1, 50, 4, 3, generator=torch.Generator().manual_seed(0))
    features = torch.rand(1, 3, 8, 48, 64, generator=torch.Generator().manual_seed(1))
    hypotheses = torch.linspace(1.5, 4.0, 6)[None, :, None, None].expand(1, 6, 48, 64)
    neighbours = (
        features[:, 0],
        features[:, 1:],
        sources.intrinsics[:, 0],
        sources.cam_to_world[:, 0],
        sources.intrinsics[:, 1:],
        sources.cam_to_world[:, 1:],
        hypotheses.contiguous(),
        4,
    )
    reference_grid = project_to_sources(points, sources).grid
    # The neighbours warped in float32; only the correlation itself may then run in bf16.
    warped = [
        plane_sweep_warp(
            features[:, index],
            sources.intrinsics[:, index],
            sources.cam_to_world[:, index],
            sources.intrinsics[:, 0],
            sources.cam_to_world[:, 0],
            hypotheses.contiguous(),
        )[0]
        for index in (1, 2)
    ]
    with autocast_context("bf16", cpu):
        projected = project_to_sources(points, sources)
        cost = correlation_volume(*neighbours)
        expected_cost = group_correlation(features[:, 0], (warped[0] + warped[1]) / 2, 4)
    assert projected.grid.dtype == torch.float32
    torch.testing.assert_close(projected.grid, reference_grid, rtol=0, atol=1e-6)
    torch.testing.assert_close(cost, expected_cost, rtol=0, atol=1e-6)


def test_profiled_render_is_unchanged_and_times_every_stage() -> None:
    model = tiny_model()
    example = plane_example(3, 16, 24, CLASSES, seed=1)
    timer = StageTimer(torch.device("cpu"))
    with torch.inference_mode():
        plain = model.render_image(example, model.encode_sources(example), chunk_rays=100)
        with model.profiled(timer):
            profiled = model.render_image(example, model.encode_sources(example), chunk_rays=100)
        # Outside the context nothing is timed any more: the hooks are gone.
        model.render_image(example, model.encode_sources(example), chunk_rays=100)
    assert torch.equal(plain.rgb, profiled.rgb)
    assert torch.equal(plain.semantic_logits, profiled.semantic_logits)
    # 16 x 24 = 384 rays in chunks of 100 -> 4 chunks; per chunk one gathering of every head
    # input, one block of the radiance and the semantic head and one compositing block; one D_T
    # per image; one feature net and one regulariser per cascade level (3) per encoding.
    assert dict(timer.calls) == {
        "feature_net": 1,
        "cost_volumes": 3,
        "guide_depth": 1,
        "sampling_gather": 4,
        "heads": 4,
        "compositing": 4,
    }
    assert all(seconds > 0 for seconds in timer.seconds.values())


def test_stages_cannot_nest() -> None:
    timer = StageTimer(torch.device("cpu"))
    with pytest.raises(RuntimeError, match="must not nest"), timer("outer"), timer("inner"):
        pass


def test_chunk_size_from_free_memory() -> None:
    # 0.5 * 1 GiB / 2 KiB per ray = 262144 rays.
    assert chunk_rays_for_memory(2048.0, 2**30, 0.5) == 262_144
    # Never fewer than one ray, even without free memory.
    assert chunk_rays_for_memory(2048.0, 0, 0.5) == 1
    with pytest.raises(ValueError, match="memory_fraction"):
        chunk_rays_for_memory(2048.0, 2**30, 1.5)


@pytest.mark.parametrize(
    ("cpu_chunk_samples", "num_uniform", "expected_chunks"),
    # 384 rays: 400 // 4 = 100 rays -> 4 chunks; 400 // (4 + 4) = 50 -> 8; 0 -> one pass.
    [(400, 0, 4), (400, 4, 8), (0, 0, 1)],
)
def test_automatic_cpu_chunks_hold_cpu_chunk_samples_samples(
    cpu_chunk_samples: int, num_uniform: int, expected_chunks: int
) -> None:
    cfg = load_model_cfg("tiny", 4)
    renderer = dataclasses.replace(cfg.renderer, cpu_chunk_samples=cpu_chunk_samples)
    sampler = dataclasses.replace(cfg.sampler, num_uniform=num_uniform)
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(cfg, renderer=renderer, sampler=sampler), CLASSES)
    example = plane_example(2, 16, 24, CLASSES, seed=2)
    timer = StageTimer(torch.device("cpu"))
    with torch.inference_mode(), model.eval().profiled(timer):
        model.render_image(example, model.encode_sources(example), chunk_rays=0)
        automatic = timer.calls["heads"]
        model.render_image(example, model.encode_sources(example))  # renderer.chunk_rays = 0
    # The radiance and the semantic head run once per chunk, in one timed block.
    assert automatic == expected_chunks
    assert timer.calls["heads"] == 2 * expected_chunks


def test_negative_chunk_sizes_are_rejected() -> None:
    cfg = load_model_cfg("tiny", 4)
    with pytest.raises(ValueError, match="cpu_chunk_samples"):
        dataclasses.replace(cfg.renderer, cpu_chunk_samples=-1)
    with pytest.raises(ValueError, match="chunk_rays"):
        dataclasses.replace(cfg.renderer, chunk_rays=-4096)
    with pytest.raises(ValueError, match="auto_chunk_max_mb"):
        dataclasses.replace(cfg.renderer, auto_chunk_max_mb=-1.0)


@pytest.mark.parametrize(
    ("equal_chunks", "max_mb", "expected_sizes"),
    # 384 rays: the probe, then chunks of at most 180; with equal chunks (compiled heads) of at
    # most 128, the power of two below, as three chunks of 112 (the last one padded); with at
    # most 0.1 MB per chunk (104 rays of 1000 bytes) chunks of 104; 0 bounds nothing.
    [
        (False, 2048.0, [50, 180, 154]),
        (True, 2048.0, [50, 112, 112, 112]),
        (False, 0.1, [50, 104, 104, 104, 22]),
        (False, 0.0, [50, 180, 154]),
    ],
)
def test_memory_sized_chunks_follow_the_probe_peak(
    monkeypatch: pytest.MonkeyPatch, equal_chunks: bool, max_mb: float, expected_sizes: list[int]
) -> None:
    """The CUDA sizing logic with the allocator's statistics replaced by known numbers."""
    cfg = load_model_cfg("tiny", 4)
    renderer = dataclasses.replace(cfg.renderer, auto_chunk_probe_rays=50, auto_chunk_max_mb=max_mb)
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(cfg, renderer=renderer), CLASSES).eval()
    model.equal_chunks = equal_chunks
    example = plane_example(2, 16, 24, CLASSES, seed=2)
    # The probe of 50 rays peaks 50 kB above what was allocated: 1000 bytes per ray. Free:
    # 207 143 B from the driver + 50 kB reserved but unused; 0.7 of it holds 180 rays.
    memory = {"memory_allocated": 10_000, "max_memory_allocated": 60_000, "memory_reserved": 60_000}
    for name, value in memory.items():
        monkeypatch.setattr(torch.cuda, name, lambda device=None, value=value: value)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (207_143, 10**9))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    sizes = []
    with torch.inference_mode():
        geometry = model.encode_sources(example)
        guide = model.guide_depth(example, geometry)
        pixels = torch.stack(
            torch.meshgrid(torch.arange(16), torch.arange(24), indexing="ij"), dim=-1
        ).reshape(1, -1, 2)

        def render_chunk(chunk: torch.Tensor) -> RenderOutput:
            sizes.append(chunk.shape[1])
            return model.render_rays(example, geometry, chunk, training=False, guide=guide).render

        sized = model.render_sized(render_chunk, pixels)
        whole = render_chunk(pixels)
    assert sizes[:-1] == expected_sizes
    for name in ("rgb", "depth", "semantic_logits", "opacity"):
        torch.testing.assert_close(getattr(sized, name), getattr(whole, name), atol=1e-5, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_memory_sized_chunks_on_cuda_equal_fixed_chunks() -> None:
    cfg = load_model_cfg("tiny", 4)
    renderer = dataclasses.replace(cfg.renderer, auto_chunk_probe_rays=256)
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(cfg, renderer=renderer), CLASSES).cuda().eval()
    example = plane_example(3, 32, 48, CLASSES, seed=0).to("cuda")
    with torch.inference_mode():
        geometry = model.encode_sources(example)
        sized = model.render_image(example, geometry, chunk_rays=0)
        fixed = model.render_image(example, geometry, chunk_rays=4096)
    for name in ("rgb", "depth", "semantic_logits", "opacity"):
        torch.testing.assert_close(getattr(sized, name), getattr(fixed, name), atol=1e-4, rtol=0)
