"""SemanticGeoReasoner: cascade shapes, hypothesis windows, gradients, batching invariances."""

from dataclasses import fields

import pytest
import torch
import torch.nn.functional as F
from small_models import small_geo_reasoner_cfg

from gsnerf.evaluation.benchmark import load_model_cfg
from gsnerf.evaluation.benchmark_scene import plane_example
from gsnerf.geometry.camera import scale_intrinsics
from gsnerf.model.cost_volume import CostVolumeLevel
from gsnerf.model.geo_reasoner import GeoReasonerCfg, SemanticGeoReasoner
from gsnerf.types import SourceGeometry, Views

NUM_CLASSES = 5


def make_views(batch: int, num_views: int, height: int, width: int, seed: int = 0) -> Views:
    """Cameras on a small arc looking down +z, with per-view near/far."""
    generator = torch.Generator().manual_seed(seed)
    focal = 0.8 * width
    k = torch.tensor([[focal, 0.0, (width - 1) / 2], [0.0, focal, (height - 1) / 2], [0, 0, 1.0]])
    poses = torch.eye(4).repeat(batch, num_views, 1, 1)
    poses[..., :3, 3] = 0.2 * torch.randn(batch, num_views, 3, generator=generator)
    near = 0.4 + 0.2 * torch.rand(batch, num_views, generator=generator)
    return Views(
        images=torch.rand(batch, num_views, 3, height, width, generator=generator),
        intrinsics=k.repeat(batch, num_views, 1, 1),
        cam_to_world=poses,
        near=near,
        far=near + 3.0 + torch.rand(batch, num_views, generator=generator),
        depths=None,
        labels=None,
        frame_ids=torch.arange(num_views).repeat(batch, 1),
    )


def ring_neighbours(batch: int, num_views: int, count: int) -> torch.Tensor:
    """View i's neighbours are i+1, i+2, ... (mod v)."""
    rows = [[(i + 1 + j) % num_views for j in range(count)] for i in range(num_views)]
    return torch.tensor(rows).repeat(batch, 1, 1)


def select_views(views: Views, index: tuple) -> Views:
    """The same views with every tensor field indexed by ``index`` on its leading axes."""
    return Views(
        **{
            item.name: None
            if getattr(views, item.name) is None
            else getattr(views, item.name)[index]
            for item in fields(Views)
        }
    )


@pytest.fixture(scope="module")
def tiny_run() -> tuple[SemanticGeoReasoner, Views, SourceGeometry]:
    torch.manual_seed(0)
    model = SemanticGeoReasoner(small_geo_reasoner_cfg(), NUM_CLASSES)
    sources = make_views(1, 3, 32, 48)
    with torch.no_grad():
        geometry = model(sources, ring_neighbours(1, 3, 2))
    return model, sources, geometry


def test_output_shapes_per_level(tiny_run) -> None:
    _, _, geometry = tiny_run
    assert [tuple(d.shape) for d in geometry.depths] == [
        (1, 3, 8, 12),
        (1, 3, 16, 24),
        (1, 3, 32, 48),
    ]
    assert [tuple(r.shape) for r in geometry.depth_ranges] == [
        (1, 3, 2, 8, 12),
        (1, 3, 2, 16, 24),
        (1, 3, 2, 32, 48),
    ]
    assert [tuple(x.shape) for x in geometry.volume_features] == [
        (1, 3, 4, 16, 8, 12),
        (1, 3, 4, 8, 16, 24),
        (1, 3, 4, 4, 32, 48),
    ]
    assert geometry.image_features.shape == (1, 3, 4, 32, 48)
    assert geometry.semantic_features.shape == (1, 3, NUM_CLASSES, 32, 48)
    assert geometry.semantic_logits.shape == (1, 3, NUM_CLASSES, 32, 48)


def test_coarsest_hypotheses_span_near_to_far(tiny_run) -> None:
    # 16 hypotheses near + k (far - near) / 16: first = near, last = far - (far - near) / 16.
    _, sources, geometry = tiny_run
    first, last = geometry.depth_ranges[0].unbind(dim=2)
    near = sources.near[..., None, None].expand_as(first)
    far = sources.far[..., None, None].expand_as(first)
    torch.testing.assert_close(first, near)
    torch.testing.assert_close(last, far - (far - near) / 16)


def test_finer_windows_follow_the_upsampled_previous_depth(tiny_run) -> None:
    # Level l: first = max(up(d_{l-1}) - n_l / 2 * interval_l, 1e-3), last = first + (n_l - 1)
    # interval_l, with interval_l = (far - near) / 16 / 4 * ratio_l (ratios 2, 1).
    model, sources, geometry = tiny_run
    base = (sources.far - sources.near) / 16 / 4
    for level, (count, ratio) in enumerate([(8, 2.0), (4, 1.0)], start=1):
        interval = (base * ratio)[..., None, None]
        first, last = geometry.depth_ranges[level].unbind(dim=2)
        upsampled = F.interpolate(
            geometry.depths[level - 1], size=first.shape[-2:], mode="bilinear", align_corners=False
        )
        expected_first = (upsampled - count / 2 * interval).clamp_min(model.cfg.min_depth)
        torch.testing.assert_close(first, expected_first)
        torch.testing.assert_close(last - first, (count - 1) * interval.expand_as(first))


def test_every_level_depth_lies_inside_its_hypothesis_range(tiny_run) -> None:
    _, _, geometry = tiny_run
    for depth, ranges in zip(geometry.depths, geometry.depth_ranges):
        assert (depth >= ranges[:, :, 0] - 1e-5).all()
        assert (depth <= ranges[:, :, 1] + 1e-5).all()


def test_every_level_warps_with_intrinsics_scaled_to_its_resolution(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The depths alone do not show which intrinsics a level used (same K everywhere: full-size
    # neighbour intrinsics at 1/4 and 1/2 still give plausible depths), so spy on the inputs.
    calls = []
    original = CostVolumeLevel.forward

    def spy(self, *args):
        calls.append(args)
        return original(self, *args)

    monkeypatch.setattr(CostVolumeLevel, "forward", spy)
    torch.manual_seed(0)
    model = SemanticGeoReasoner(small_geo_reasoner_cfg(), NUM_CLASSES)
    height, width = 32, 48
    sources = make_views(1, 3, height, width)
    # A different K per view, so a wrong neighbour index would show too.
    sources.intrinsics[0, :, 0, 0] *= torch.tensor([1.0, 1.1, 1.3])
    sources.intrinsics[0, :, 1, 2] += torch.tensor([0.0, 1.5, -2.0])
    neighbours = ring_neighbours(1, 3, 2)
    with torch.no_grad():
        model(sources, neighbours)
    assert len(calls) == 3
    k = sources.intrinsics[0]
    for level, (level_height, level_width) in enumerate([(8, 12), (16, 24), (32, 48)]):
        ref_features, _, ref_k, _, neighbour_k, _, _ = calls[level]
        assert tuple(ref_features.shape[-2:]) == (level_height, level_width)
        size = (level_width, level_height)
        expected_ref = scale_intrinsics(k, (width, height), size)
        expected_neighbours = scale_intrinsics(k[neighbours[0]], (width, height), size)
        torch.testing.assert_close(ref_k, expected_ref)
        torch.testing.assert_close(neighbour_k, expected_neighbours)


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(1)
    model = SemanticGeoReasoner(small_geo_reasoner_cfg(), NUM_CLASSES)
    geometry = model(make_views(1, 3, 32, 48), ring_neighbours(1, 3, 2))
    loss = (
        sum(depth.mean() for depth in geometry.depths)
        + sum(volume.square().mean() for volume in geometry.volume_features)
        + geometry.semantic_logits.square().mean()
    )
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_gradients_are_identical_between_runs_with_several_threads() -> None:
    # Every view is an MVS neighbour of others; the backward of advanced indexing summed
    # such repeated rows in thread order on the CPU, so two identical runs differed (with the
    # quickstart's model at 80x60 in every trial; smaller maps hide it).
    example = plane_example(4, 60, 80, NUM_CLASSES, seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gradients = []
        for _ in range(3):
            torch.manual_seed(2)
            model = SemanticGeoReasoner(load_model_cfg("tiny", 4).geo_reasoner, NUM_CLASSES)
            geometry = model(example.sources, example.source_neighbours)
            sum(depth.square().sum() for depth in geometry.depths).backward()
            gradients.append([p.grad for p in model.feature_net.parameters() if p.grad is not None])
    finally:
        torch.set_num_threads(threads)
    assert gradients[0]
    for other in gradients[1:]:
        assert all(torch.equal(a, b) for a, b in zip(gradients[0], other))


def test_train_and_eval_modes_give_identical_outputs(tiny_run) -> None:
    model, sources, geometry = tiny_run
    model.train()
    with torch.no_grad():
        train_geometry = model(sources, ring_neighbours(1, 3, 2))
    for train_depth, eval_depth in zip(train_geometry.depths, geometry.depths):
        torch.testing.assert_close(train_depth, eval_depth, rtol=0, atol=0)
    for train_volume, eval_volume in zip(train_geometry.volume_features, geometry.volume_features):
        torch.testing.assert_close(train_volume, eval_volume, rtol=0, atol=0)
    torch.testing.assert_close(
        train_geometry.semantic_logits, geometry.semantic_logits, rtol=0, atol=0
    )


def test_batch_items_are_independent_and_views_are_permutation_equivariant() -> None:
    torch.manual_seed(2)
    model = SemanticGeoReasoner(small_geo_reasoner_cfg(), NUM_CLASSES).eval()
    pair = make_views(2, 3, 16, 32, seed=3)
    neighbours = torch.tensor([[[1, 2], [2, 0], [0, 1]], [[2, 1], [0, 2], [1, 0]]])
    # Item 1 alone, and item 1 with its views reordered by perm (neighbour ids remapped).
    perm = torch.tensor([2, 0, 1])
    inverse = torch.argsort(perm)
    second = select_views(pair, (slice(1, 2),))
    permuted = select_views(second, (slice(None), perm))
    with torch.no_grad():
        both = model(pair, neighbours)
        alone = model(second, neighbours[1:])
        reordered = model(permuted, inverse[neighbours[1:, perm]])
    # oneDNN picks its convolution kernels by batch size and CPU, so the orders of summation
    # differ: up to 1.5e-5 apart on an AVX-512 CPU. A mixed-up view or item is off by O(1).
    close = {"atol": 5e-5, "rtol": 1e-5}
    for level in range(3):
        torch.testing.assert_close(both.depths[level][1:], alone.depths[level], **close)
        torch.testing.assert_close(reordered.depths[level], alone.depths[level][:, perm], **close)
        torch.testing.assert_close(
            reordered.volume_features[level], alone.volume_features[level][:, perm], **close
        )


def test_paper_config_runs_at_reduced_resolution() -> None:
    # The dataclass defaults are the paper model (spec 2.1-2.2); 64 x 80 exercises the same code
    # as 240 x 320 at a fraction of the cost.
    torch.manual_seed(3)
    model = SemanticGeoReasoner(GeoReasonerCfg(), num_classes=21)
    with torch.no_grad():
        geometry = model(make_views(1, 4, 64, 80), ring_neighbours(1, 4, 3))
    assert [tuple(x.shape) for x in geometry.volume_features] == [
        (1, 4, 8, 48, 16, 20),
        (1, 4, 8, 32, 32, 40),
        (1, 4, 8, 8, 64, 80),
    ]
    assert geometry.image_features.shape == (1, 4, 8, 64, 80)
    assert geometry.semantic_features.shape == (1, 4, 21, 64, 80)
    assert (model.volume_channels, model.image_channels, model.semantic_channels) == (8, 8, 21)


def test_bad_inputs_raise_clear_errors() -> None:
    model = SemanticGeoReasoner(small_geo_reasoner_cfg(), NUM_CLASSES)
    with pytest.raises(ValueError, match="multiples of 4"):
        model(make_views(1, 3, 30, 48), ring_neighbours(1, 3, 2))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 3\)"):
        model(make_views(1, 3, 32, 48), ring_neighbours(1, 3, 2) + 1)
    with pytest.raises(ValueError, match="n_depths"):
        SemanticGeoReasoner(GeoReasonerCfg(n_depths=[16, 8]), NUM_CLASSES)
