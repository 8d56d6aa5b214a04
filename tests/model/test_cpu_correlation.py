"""The C++ warp-and-correlate kernel against the PyTorch cost volume and analytic cases."""

import logging

import pytest
import torch
from kernel_checks import on_thread_counts, without_compiler
from small_models import small_geo_reasoner_cfg

from gsnerf.evaluation.benchmark_scene import plane_example
from gsnerf.model import cost_volume, cpu_correlation, native_library
from gsnerf.model.cost_volume import correlation_volume
from gsnerf.model.cpu_correlation import cpu_correlation_applies, cpu_correlation_volume
from gsnerf.model.geo_reasoner import SemanticGeoReasoner
from gsnerf.model.native_library import NativeBuildError, compiler_present

needs_compiler = pytest.mark.skipif(not compiler_present(), reason="no C++ compiler")


@pytest.fixture
def kernel_on():
    saved = cpu_correlation.enabled
    cpu_correlation.enabled = True
    yield
    cpu_correlation.enabled = saved


def _intrinsics(views: int, height: int, width: int) -> torch.Tensor:
    """[views, 3, 3] pinholes with the principal point at the image centre."""
    matrix = torch.tensor(
        [[0.9 * width, 0.0, (width - 1) / 2], [0.0, 0.9 * width, (height - 1) / 2], [0, 0, 1]]
    )
    return matrix.expand(views, 3, 3).clone()


def _poses(views: int, generator: torch.Generator, spread: float = 0.3) -> torch.Tensor:
    """[views, 4, 4] camera-to-world: rotations of up to ~0.2 rad, centres within ``spread`` m."""
    skew = torch.zeros(views, 3, 3)
    angles = 0.2 * (torch.rand(views, 3, generator=generator) - 0.5)
    skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = -angles[:, 2], angles[:, 1], -angles[:, 0]
    poses = torch.eye(4).repeat(views, 1, 1)
    poses[:, :3, :3] = torch.linalg.matrix_exp(skew - skew.transpose(1, 2))
    poses[:, :3, 3] = spread * (torch.rand(views, 3, generator=generator) - 0.5)
    return poses


def _level(batch, neighbours, channels, depths, height, width, seed=0):
    """The arguments of ``correlation_volume`` for random features, cameras and depths."""
    generator = torch.Generator().manual_seed(seed)
    ref = torch.randn(batch, channels, height, width, generator=generator)
    nbr = torch.randn(batch, neighbours, channels, height, width, generator=generator)
    poses = _poses(batch * (neighbours + 1), generator)
    intrinsics = _intrinsics(batch * (neighbours + 1), height, width)
    ref_poses, nbr_poses = poses[:batch], poses[batch:].view(batch, neighbours, 4, 4)
    ref_k, nbr_k = intrinsics[:batch], intrinsics[batch:].view(batch, neighbours, 3, 3)
    # Depths from 0.5 to 4 m, a different ramp per pixel, as the finer cascade levels have.
    base = 0.5 + 3.5 * torch.rand(batch, 1, height, width, generator=generator)
    hypotheses = base + 0.05 * torch.arange(depths).view(1, depths, 1, 1)
    return ref, nbr, ref_k, ref_poses, nbr_k, nbr_poses, hypotheses


@needs_compiler
@pytest.mark.parametrize(
    ("batch", "neighbours", "channels", "groups", "depths", "height", "width"),
    [(2, 3, 8, 4, 6, 15, 20), (1, 2, 16, 8, 5, 9, 37), (3, 1, 4, 1, 3, 4, 3)],
)
def test_kernel_equals_the_pytorch_warp(
    kernel_on, batch, neighbours, channels, groups, depths, height, width
):
    # Widths that are not multiples of the kernel's 16 lanes test the partial last vector.
    arguments = _level(batch, neighbours, channels, depths, height, width)
    with torch.no_grad():
        fused = cpu_correlation_volume(*arguments, groups)
        cpu_correlation.enabled = False
        expected = correlation_volume(*arguments, groups)
        exact = correlation_volume(*(tensor.double() for tensor in arguments), groups)
    assert fused.shape == expected.shape == (batch, groups, depths, height, width)
    assert fused.is_contiguous(memory_format=torch.channels_last_3d)
    # Random poses put a good share of every volume outside the neighbours' images.
    assert 0.05 < (expected == 0).float().mean() < 0.95 or neighbours == 1
    # Both carry the float32 rounding of the projected coordinates (about 1e-6 pixels times
    # the features' slope, which is large for random features): the kernel is as close to a
    # float64 computation as the PyTorch warp.
    pytorch_error = (expected - exact).abs().max()
    assert (fused - exact).abs().max() <= 2 * pytorch_error + 1e-6
    assert (fused - expected).abs().max() < 1e-4


@needs_compiler
def test_identical_cameras_correlate_the_reference_with_itself(kernel_on):
    # Every neighbour is the reference: the warp is the identity at every depth, so each group's
    # cost is the mean of the reference's squared channels there.
    ref, _, ref_k, ref_poses, _, _, hypotheses = _level(2, 1, 8, 4, 7, 11)
    neighbours = ref[:, None].expand(-1, 3, -1, -1, -1)
    cost = cpu_correlation_volume(
        ref,
        neighbours,
        ref_k,
        ref_poses,
        ref_k[:, None].expand(-1, 3, -1, -1),
        ref_poses[:, None].expand(-1, 3, -1, -1),
        hypotheses,
        2,
    )
    expected = (ref**2).view(2, 2, 4, 7, 11).mean(dim=2)[:, :, None].expand_as(cost)
    assert (cost - expected).abs().max() < 1e-5


@needs_compiler
def test_neighbours_behind_the_camera_add_nothing(kernel_on):
    # The second neighbour looks the other way: every point is behind it (zeros), but it still
    # counts in the mean, as the PyTorch warp's zero padding does.
    ref, _, ref_k, ref_poses, _, _, hypotheses = _level(1, 1, 4, 3, 6, 5)
    backwards = ref_poses.clone()
    backwards[:, :3, :3] = backwards[:, :3, :3] @ torch.diag(torch.tensor([-1.0, 1.0, -1.0]))
    neighbours = torch.stack([ref, torch.randn_like(ref)], dim=1)
    cost = cpu_correlation_volume(
        ref,
        neighbours,
        ref_k,
        ref_poses,
        ref_k[:, None].expand(-1, 2, -1, -1),
        torch.stack([ref_poses, backwards], dim=1),
        hypotheses,
        1,
    )
    expected = (ref**2).mean(dim=1, keepdim=True)[:, :, None] / 2
    assert (cost - expected.expand_as(cost)).abs().max() < 1e-5


@needs_compiler
def test_points_near_the_camera_plane_read_zeros_not_nan(kernel_on):
    # A neighbour 1 m to the side looking back across the reference's view: its z-depth
    # 1 - X_x crosses 0 inside the reference's frustum, so projections run from behind the
    # camera through huge coordinates to ordinary ones; the PyTorch warp clamps them.
    ref, nbr, ref_k, _, nbr_k, _, _ = _level(1, 1, 4, 3, 6, 8)
    ref_pose = torch.eye(4)[None]
    side = torch.eye(4)[None, None].clone()
    side[0, 0, :3, :3] = torch.tensor([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    side[0, 0, 0, 3] = 1.0
    hypotheses = torch.linspace(0.0, 4.0, 17).view(1, 17, 1, 1).expand(1, 17, 6, 8).contiguous()
    arguments = (ref, nbr, ref_k, ref_pose, nbr_k, side, hypotheses, 1)
    cost = cpu_correlation_volume(*arguments)
    cpu_correlation.enabled = False
    expected = correlation_volume(*arguments)
    assert torch.isfinite(cost).all()
    assert (expected == 0).any() and (expected != 0).any()
    assert (cost - expected).abs().max() < 1e-5


@needs_compiler
def test_threads_split_the_rows_alike(kernel_on):
    arguments = _level(2, 3, 8, 5, 13, 21)
    one, three = on_thread_counts(lambda: cpu_correlation_volume(*arguments, 4))
    assert torch.equal(one, three)


@needs_compiler
def test_source_encoding_with_the_kernel_matches_pytorch(kernel_on):
    torch.manual_seed(0)
    reasoner = SemanticGeoReasoner(small_geo_reasoner_cfg(), num_classes=3).eval()
    example = plane_example(4, 32, 40, 3, seed=0)
    sources, neighbours = example.sources, example.source_neighbours
    calls = []
    original = cpu_correlation.cpu_correlation_volume
    cost_volume.cpu_correlation.cpu_correlation_volume = lambda *a: calls.append(1) or original(*a)
    try:
        with torch.no_grad():
            fused = reasoner(sources, neighbours)
            cpu_correlation.enabled = False
            plain = reasoner(sources, neighbours)
    finally:
        cost_volume.cpu_correlation.cpu_correlation_volume = original
    assert len(calls) == 3  # one call per cascade level
    for level in range(3):
        assert (fused.depths[level] - plain.depths[level]).abs().max() < 1e-4
        error = (fused.volume_features[level] - plain.volume_features[level]).abs().max()
        assert error < 1e-4


def test_conditions(kernel_on):
    ref, nbr, *_, hypotheses = _level(1, 2, 8, 3, 4, 5)
    with torch.no_grad():
        assert cpu_correlation_applies(ref, nbr, hypotheses, 4) == compiler_present()
        assert not cpu_correlation_applies(ref.bfloat16(), nbr.bfloat16(), hypotheses, 4)
        assert not cpu_correlation_applies(ref, nbr, hypotheses, 3)  # groups must divide
        cpu_correlation.enabled = False
        assert not cpu_correlation_applies(ref, nbr, hypotheses, 4)
    cpu_correlation.enabled = True
    # Gradients flow to the features, not to the hypotheses (detached upstream).
    assert cpu_correlation_applies(ref.requires_grad_(), nbr, hypotheses, 4) == compiler_present()
    assert not cpu_correlation_applies(ref, nbr, hypotheses.requires_grad_(), 4)


@needs_compiler
@pytest.mark.parametrize(
    ("batch", "neighbours", "channels", "groups", "depths", "height", "width"),
    [(2, 3, 8, 4, 6, 15, 20), (3, 1, 4, 1, 3, 4, 3)],
)
def test_gradients_equal_float64_autograd_of_the_pytorch_warp(
    kernel_on, batch, neighbours, channels, groups, depths, height, width
):
    ref, nbr, *cameras, hypotheses = _level(batch, neighbours, channels, depths, height, width)
    grad_cost = torch.randn(batch, groups, depths, height, width)
    features = [tensor.clone().requires_grad_() for tensor in (ref, nbr)]
    cpu_correlation_volume(*features, *cameras, hypotheses, groups).backward(grad_cost)
    cpu_correlation.enabled = False
    exact = [tensor.double().requires_grad_() for tensor in (ref, nbr)]
    cameras64 = [tensor.double() for tensor in (*cameras, hypotheses)]
    correlation_volume(*exact, *cameras64, groups).backward(grad_cost.double())
    for ours, theirs in zip(features, exact):
        assert theirs.grad.abs().max() > 0.1  # the reads and the splats reach the features
        # Float32 rounding of the projections and the sums (random features are steep).
        torch.testing.assert_close(ours.grad.double(), theirs.grad, atol=1e-4, rtol=1e-4)


def test_without_a_compiler_the_pytorch_warp_runs(kernel_on, monkeypatch, caplog, tmp_path):
    with without_compiler(monkeypatch, tmp_path):
        with pytest.raises(NativeBuildError, match="no-such-compiler"):
            native_library.load_native_library(cpu_correlation.SOURCE, {"CHANNELS": 4})
        arguments = _level(1, 2, 8, 3, 4, 5)
        with torch.no_grad(), caplog.at_level(logging.WARNING):
            assert not cpu_correlation_applies(arguments[0], arguments[1], arguments[-1], 4)
            cost = correlation_volume(*arguments, 4)
        assert "C++ kernel group_correlation unavailable" in caplog.text
        cpu_correlation.enabled = False
        with torch.no_grad():
            assert torch.equal(cost, correlation_volume(*arguments, 4))


@needs_compiler
def test_a_compiler_without_openmp_builds_serial_kernels(kernel_on, monkeypatch, caplog, tmp_path):
    arguments = _level(2, 2, 8, 3, 5, 7)
    parallel = cpu_correlation_volume(*arguments, 4)
    # An OpenMP flag the compiler rejects stands for a compiler without OpenMP.
    monkeypatch.setenv("GSNERF_NATIVE_CACHE", str(tmp_path))
    monkeypatch.setattr(native_library, "OPENMP_FLAGS", ("-fno-such-openmp-flag",))
    caches = (native_library._load, native_library.native_function)
    caches += (native_library.native_function_builds,)
    for cache in caches:
        cache.cache_clear()
    try:
        with caplog.at_level(logging.WARNING):
            serial = cpu_correlation_volume(*arguments, 4)
        assert "without OpenMP" in caplog.text and list(tmp_path.glob("*.so"))
    finally:
        for cache in caches:
            cache.cache_clear()
    assert torch.equal(serial, parallel)
