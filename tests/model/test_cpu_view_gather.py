"""The C++ view gathering against the PyTorch projection and gathering, and in renders."""

import copy
import dataclasses
import logging

import pytest
import torch
from gather_scenes import HEIGHT, WIDTH, encoded_scene, joined_batches, sample_points
from kernel_checks import (
    RENDER_CHUNK_RAYS,
    RENDER_HEIGHT,
    RENDER_WIDTH,
    assert_renders_close,
    on_thread_counts,
    renders_off_and_on,
    without_compiler,
)

from gsnerf.model import cpu_view_gather, native_library
from gsnerf.model.cpu_view_gather import cpu_view_gather_applies, gather_views
from gsnerf.model.feature_gather import GatherCfg, gather_features, project_to_sources
from gsnerf.model.native_library import NativeBuildError, compiler_present

needs_compiler = pytest.mark.skipif(not compiler_present(), reason="no C++ compiler")


@pytest.fixture
def kernel_on():
    saved = cpu_view_gather.enabled
    cpu_view_gather.enabled = True
    yield
    cpu_view_gather.enabled = saved


@needs_compiler
@pytest.mark.parametrize(
    ("batch", "views", "volume_channels", "cfg"),
    [
        (1, 3, 4, GatherCfg()),
        (2, 2, 8, GatherCfg(occlusion_unit="metres", occlusion_tolerance=0.05)),
        (1, 4, 3, GatherCfg(angle_frequencies=2, occlusion_tolerance=0.5)),
    ],
)
def test_equals_the_pytorch_projection_and_gathering(kernel_on, batch, views, volume_channels, cfg):
    scenes = [encoded_scene(seed, views, volume_channels) for seed in range(batch)]
    sources, geometry, target = scenes[0]
    for other in scenes[1:]:
        sources, geometry, target = (
            joined_batches(a, b) for a, b in zip((sources, geometry, target), other)
        )
    points, directions = sample_points(target, seed=batch)
    with torch.no_grad():
        assert cpu_view_gather_applies(points, sources, geometry, cfg)
        projection, gathered = gather_views(points, directions, sources, geometry, cfg)
        expected_projection = project_to_sources(points, sources)
        expected = gather_features(expected_projection, points, directions, sources, geometry, cfg)
    # The same sums in another order: a few float32 ulps of pixel coordinates and depths.
    assert torch.allclose(projection.grid, expected_projection.grid, atol=1e-5)
    assert torch.allclose(projection.depth, expected_projection.depth, rtol=1e-5, atol=1e-6)
    assert torch.equal(projection.in_frustum, expected_projection.in_frustum)
    assert projection.num_views == views and projection.image_size == (HEIGHT, WIDTH)
    for name in ("volume", "image", "colours", "angle"):
        kernel, reference = getattr(gathered, name), getattr(expected, name)
        assert kernel.shape == reference.shape, name
        assert (kernel - reference).abs().max() < 1e-4, name
    # The masks compare the same projections (equal above) and interpolated depths a few ulps
    # apart: a sample would have to lie within 1e-6 m of the occlusion threshold to flip.
    assert torch.equal(gathered.in_frustum, expected.in_frustum)
    assert torch.equal(gathered.visible, expected.visible)
    # Both outcomes occur, or the comparison proves little.
    assert expected.in_frustum.any() and not expected.in_frustum.all()
    assert expected.visible.any() and not expected.visible.all()


@needs_compiler
def test_threads_split_the_points_alike(kernel_on):
    sources, geometry, target = encoded_scene(3, 3, 4)
    points, directions = sample_points(target, seed=4)

    def run():
        with torch.no_grad():
            return gather_views(points, directions, sources, geometry, GatherCfg())[1].volume

    one, three = on_thread_counts(run)
    assert torch.equal(one, three)


@needs_compiler
@pytest.mark.parametrize("compiled", [False, True])
def test_renders_with_the_kernel_match_the_pytorch_gathering(kernel_on, monkeypatch, compiled):
    # The operator's body looks its kernel up on every call, compiled or not.
    calls = []
    lookup = cpu_view_gather.native_function
    monkeypatch.setattr(
        cpu_view_gather, "native_function", lambda *a: calls.append(1) or lookup(*a)
    )
    plain, render = renders_off_and_on(cpu_view_gather, compiled)
    assert len(calls) == RENDER_HEIGHT * RENDER_WIDTH // RENDER_CHUNK_RAYS
    assert_renders_close(render, plain)


def test_conditions(kernel_on):
    sources, geometry, target = encoded_scene(5, 2, 4)
    points, _ = sample_points(target, seed=5)
    cfg = GatherCfg()
    with torch.no_grad():
        assert cpu_view_gather_applies(points, sources, geometry, cfg) == compiler_present()
        assert not cpu_view_gather_applies(points.double(), sources, geometry, cfg)
        batch, views, _, height, width = geometry.image_features.shape
        wide_features = torch.zeros(batch, views, cpu_view_gather.MAX_CHANNELS + 1, height, width)
        wide = dataclasses.replace(geometry, image_features=wide_features)
        assert not cpu_view_gather_applies(points, sources, wide, cfg)
        # A volume of another size than its depth window.
        volumes = list(geometry.volume_features)
        volumes[0] = volumes[0][..., :-1]
        mismatched = dataclasses.replace(geometry, volume_features=volumes)
        assert not cpu_view_gather_applies(points, sources, mismatched, cfg)
        # Levels of different channel counts (set after construction: the annotations forbid
        # them, but nothing enforces those outside the tests).
        uneven = copy.copy(geometry)
        uneven.volume_features = list(geometry.volume_features)
        uneven.volume_features[1] = uneven.volume_features[1].repeat(1, 1, 2, 1, 1, 1)
        assert not cpu_view_gather_applies(points, sources, uneven, cfg)
        cpu_view_gather.enabled = False
        assert not cpu_view_gather_applies(points, sources, geometry, cfg)
    cpu_view_gather.enabled = True
    assert not cpu_view_gather_applies(points, sources, geometry, cfg)  # gradients wanted


def test_without_a_compiler_the_pytorch_gathering_runs(kernel_on, monkeypatch, caplog, tmp_path):
    with without_compiler(monkeypatch, tmp_path):
        sources, geometry, target = encoded_scene(6, 2, 4)
        points, _ = sample_points(target, seed=6)
        with pytest.raises(NativeBuildError, match="no-such-compiler"):
            native_library.load_native_library(cpu_view_gather.SOURCE, {"LEVELS": 3})
        with torch.no_grad(), caplog.at_level(logging.WARNING):
            assert not cpu_view_gather_applies(points, sources, geometry, GatherCfg())
        assert "C++ kernel view_gather unavailable" in caplog.text
