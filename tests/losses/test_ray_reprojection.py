"""The rendered rays' reprojection into the sources (spec 3.5a) on a scene with known geometry.

Four pinhole cameras with the same orientation look at a textured fronto-parallel plane at
z = 2 m: every source depth is exactly 2 m, and a ray rendered at its true distance lands, in
every source, at the pixel the pinhole model gives, with z-depth 2.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from test_depth_self_supervised import intrinsics as pinhole
from test_depth_self_supervised import pose

from gsnerf.geometry.camera import camera_rays
from gsnerf.losses import LossCfg, RayTargets, compute_losses
from gsnerf.losses.depth_self_supervised import SelfSupervisedDepthCfg
from gsnerf.losses.ray_reprojection import (
    patch_deviation,
    ray_reprojection_loss,
    read_at_pixels,
    reprojected_targets,
)
from gsnerf.types import Example, RayBundle, RenderOutput, SourceGeometry, Views

HEIGHT, WIDTH, FOCAL, PLANE_Z = 32, 48, 80.0, 2.0
SOURCE_X = [-0.2, 0.0, 0.2]
TARGET_X = 0.1
LEVELS = [(HEIGHT // 4, WIDTH // 4), (HEIGHT // 2, WIDTH // 2), (HEIGHT, WIDTH)]
LEVEL_WEIGHTS = [0.5, 1.0, 2.0]
THRESHOLDS = dict(photo_threshold=0.02, render_threshold=0.02, texture_threshold=0.05, patch=5)


def intrinsics() -> torch.Tensor:
    return pinhole(HEIGHT, WIDTH, FOCAL)


def texture(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """RGB of the plane at world (x, y): smooth, with contrast at the scale of a few pixels."""
    grey = 0.5 + 0.35 * torch.sin(2 * math.pi * x / 0.3) * torch.cos(2 * math.pi * y / 0.35)
    return torch.stack([grey, 0.8 * grey + 0.1, 0.6 * grey + 0.2], dim=-1)


def source_views(flat: bool = False) -> Views:
    """The plane seen by the sources; ``flat``: one colour everywhere."""
    rows, cols = torch.meshgrid(
        torch.arange(HEIGHT, dtype=torch.float32),
        torch.arange(WIDTH, dtype=torch.float32),
        indexing="ij",
    )
    k = intrinsics()
    images = []
    for x in SOURCE_X:
        world_x = x + (cols - k[0, 2]) * PLANE_Z / FOCAL
        world_y = (rows - k[1, 2]) * PLANE_Z / FOCAL
        image = texture(world_x, world_y).permute(2, 0, 1)
        images.append(torch.full_like(image, 0.4) if flat else image)
    count = len(SOURCE_X)
    return Views(
        images=torch.stack(images)[None],
        intrinsics=k.expand(1, count, 3, 3).clone(),
        cam_to_world=torch.stack([pose(x) for x in SOURCE_X])[None],
        near=torch.full((1, count), 0.1),
        far=torch.full((1, count), 10.0),
        depths=None,
        labels=None,
        frame_ids=torch.arange(count)[None],
    )


def target_rays(count: int = 200) -> tuple[RayBundle, torch.Tensor, torch.Tensor]:
    """Rays of the target camera through random pixels, their true distance to the plane and
    the plane's colour there."""
    generator = torch.Generator().manual_seed(0)
    pixels_xy = torch.rand(1, count, 2, generator=generator) * torch.tensor(
        [WIDTH - 1.0, HEIGHT - 1.0]
    )
    origins, directions, z_per_distance = camera_rays(
        intrinsics()[None], pose(TARGET_X)[None], pixels_xy
    )
    distance = PLANE_Z / z_per_distance
    hits = origins + distance[..., None] * directions
    rays = RayBundle(
        origins=origins,
        directions=directions,
        near=torch.full_like(distance, 0.1),
        far=torch.full_like(distance, 10.0),
        pixels=pixels_xy.flip(-1).round().long(),
        guide_depth=distance,
        guide_valid=torch.ones_like(distance, dtype=torch.bool),
    )
    return rays, distance, texture(hits[..., 0], hits[..., 1])


def level_depths(value: float) -> list[torch.Tensor]:
    return [torch.full((1, len(SOURCE_X), h, w), value, requires_grad=True) for h, w in LEVELS]


def test_reads_at_pixel_centres_agree_across_resolutions() -> None:
    # The full-resolution x coordinate, area-averaged to half and quarter resolution, is still
    # the x coordinate of each coarse pixel's centre: reads at any full-resolution point return
    # that point's x at every level (bilinear reads are exact on linear maps).
    x_map = torch.arange(WIDTH, dtype=torch.float32).expand(1, 1, HEIGHT, WIDTH)
    points = torch.tensor([[[7.25, 3.5], [20.0, 17.75], [30.6, 12.1]]])
    for factor in (1, 2, 4):
        coarse = F.avg_pool2d(x_map, factor)
        read = read_at_pixels(coarse, points, (HEIGHT, WIDTH))
        torch.testing.assert_close(read[0, 0], points[0, :, 0], atol=1e-5, rtol=0)


def test_patch_deviation_of_flat_and_striped_images() -> None:
    flat = torch.full((1, 3, 8, 8), 0.3)
    assert patch_deviation(flat, 5).abs().max() < 1e-6
    stripes = torch.zeros(1, 3, 8, 8)
    stripes[..., ::2] = 1.0
    deviation = patch_deviation(stripes, 3)
    # Inside the image a 3 x 3 window holds 3 or 6 of 9 bright values: std sqrt(2) / 3.
    torch.testing.assert_close(
        deviation[0, 0, 1:-1, 1:-1], torch.full((6, 6), math.sqrt(2) / 3), atol=1e-5, rtol=0
    )


def test_true_points_land_where_the_pinhole_model_puts_them_at_depth_two() -> None:
    rays, distance, colour = target_rays()
    points = rays.origins + distance[..., None] * rays.directions
    pixels, z, trusted = reprojected_targets(points, colour, colour, source_views(), **THRESHOLDS)
    k = intrinsics()
    for view, x in enumerate(SOURCE_X):
        expected_x = k[0, 2] + FOCAL * (points[0, :, 0] - x) / PLANE_Z
        torch.testing.assert_close(pixels[0, view, :, 0], expected_x, atol=1e-4, rtol=0)
    torch.testing.assert_close(z, torch.full_like(z, PLANE_Z), atol=1e-5, rtol=0)
    # Most pairs are trusted: in the image, photo-consistent to interpolation, textured.
    in_image = (pixels[..., 0] >= 0) & (pixels[..., 0] <= WIDTH - 1)
    assert trusted.sum() > 0.6 * in_image.sum()
    assert not (trusted & ~in_image).any()


def test_pairs_fail_on_wrong_colours_and_flat_texture() -> None:
    rays, distance, colour = target_rays()
    points = rays.origins + distance[..., None] * rays.directions
    sources = source_views()
    _, _, trusted = reprojected_targets(points, colour, colour, sources, **THRESHOLDS)
    # A source 0.1 brighter than the target: none of its pairs is trusted.
    sources.images[0, 1] += 0.1
    _, _, brighter = reprojected_targets(points, colour, colour, sources, **THRESHOLDS)
    assert trusted[0, 1].any() and not brighter[0, 1].any()
    assert torch.equal(brighter[0, [0, 2]], trusted[0, [0, 2]])
    # A ray rendered in the wrong colour is trusted in no view.
    rendered = colour.clone()
    rendered[0, :100] += 0.1
    _, _, wrong_render = reprojected_targets(points, rendered, colour, source_views(), **THRESHOLDS)
    assert not wrong_render[0, :, :100].any()
    assert torch.equal(wrong_render[0, :, 100:], trusted[0, :, 100:])
    # A flat plane is photo-consistent everywhere and tells nothing about depth.
    grey = torch.full_like(colour, 0.4)
    _, _, flat = reprojected_targets(points, grey, grey, source_views(flat=True), **THRESHOLDS)
    assert not flat.any()


def test_loss_is_zero_at_the_true_depths_and_the_smooth_l1_of_an_offset() -> None:
    rays, distance, colour = target_rays()
    points = rays.origins + distance[..., None] * rays.directions
    pixels, z, trusted = reprojected_targets(points, colour, colour, source_views(), **THRESHOLDS)
    size = (HEIGHT, WIDTH)
    exact = ray_reprojection_loss(
        level_depths(PLANE_Z), pixels, z, trusted, size, LEVEL_WEIGHTS, 1.0
    )
    assert exact.item() < 1e-10
    # 10 cm too far at every level: SmoothL1 0.5 * 0.1^2 per trusted pair and level.
    offset = level_depths(PLANE_Z + 0.1)
    loss = ray_reprojection_loss(offset, pixels, z, trusted, size, LEVEL_WEIGHTS, 1.0)
    assert loss.item() == pytest.approx(sum(LEVEL_WEIGHTS) * 0.005, rel=1e-4)
    loss.backward()
    for level in offset:
        # Descent lowers the predicted depths, near the reprojected points only.
        assert (level.grad >= 0).all() and (level.grad > 0).any()
    with pytest.raises(ValueError, match="3 depth levels but .* has 2"):
        ray_reprojection_loss(offset, pixels, z, trusted, size, [1.0, 1.0], 1.0)


def loss_inputs(
    depth: torch.Tensor, colour: torch.Tensor
) -> tuple[RenderOutput, SourceGeometry, Example]:
    """Rays rendered at ``depth`` in ``colour`` and the plane's sources, with every source depth
    predicted 10 cm too far, as ``compute_losses`` takes them."""
    count = depth.shape[1]
    output = RenderOutput(
        rgb=colour,
        depth=depth,
        semantic_logits=torch.zeros(1, count, 4),
        weights=torch.full((1, count, 4), 0.25),
        opacity=(depth.detach() > 0).float(),
    )
    geometry = SourceGeometry(
        depths=level_depths(PLANE_Z + 0.1),
        depth_ranges=[torch.ones(1, 3, 2, h, w) for h, w in LEVELS],
        volume_features=[torch.zeros(1, 3, 4, 2, h, w) for h, w in LEVELS],
        image_features=torch.zeros(1, 3, 4, HEIGHT, WIDTH),
        semantic_features=torch.zeros(1, 3, 4, HEIGHT, WIDTH),
        semantic_logits=torch.zeros(1, 3, 4, HEIGHT, WIDTH),
    )
    sources = source_views()
    example = Example(
        sources=sources,
        target=sources,
        source_neighbours=torch.tensor([[[1, 2], [0, 2], [1, 0]]]),
        scenes=["plane"],
    )
    return output, geometry, example


REPROJECTION_ONLY = LossCfg(
    depth_supervision="self_supervised",
    self_supervised=SelfSupervisedDepthCfg(weight=0.0, guide_weight=0.0, reprojection_weight=0.1),
)


def test_compute_losses_adds_the_weighted_term_from_the_rendered_depth() -> None:
    rays, distance, colour = target_rays()
    rendered_depth = distance.clone().requires_grad_()
    output, geometry, example = loss_inputs(rendered_depth, colour)
    depths = geometry.depths
    targets = RayTargets(rgb=colour, labels=None, depth=None)
    cfg = REPROJECTION_ONLY
    terms = compute_losses(cfg, output, targets, geometry, example, rays=rays)
    assert terms["depth_reprojection"].item() == pytest.approx(
        0.1 * sum(LEVEL_WEIGHTS) * 0.005, rel=1e-4
    )
    terms["total"].backward()
    # The rendered depth only places the points: no gradient reaches it through this term.
    assert rendered_depth.grad is None
    assert all(level.grad is not None and level.grad.abs().sum() > 0 for level in depths)
    # Without rays (or with weight 0) the term is left out.
    assert "depth_reprojection" not in compute_losses(cfg, output, targets, geometry, example)
    off = LossCfg(
        depth_supervision="self_supervised",
        self_supervised=SelfSupervisedDepthCfg(weight=0.0, reprojection_weight=0.0),
    )
    assert "depth_reprojection" not in compute_losses(
        off, output, targets, geometry, example, rays=rays
    )


def test_batched_pairs_equal_each_item_alone() -> None:
    rays, distance, colour = target_rays()
    points = rays.origins + distance[..., None] * rays.directions
    first, second = source_views(), source_views()
    # The second item's middle source is 0.1 brighter: none of its pairs is photo-consistent.
    second.images[0, 1] += 0.1
    batched = Views(
        images=torch.cat([first.images, second.images]),
        intrinsics=torch.cat([first.intrinsics, second.intrinsics]),
        cam_to_world=torch.cat([first.cam_to_world, second.cam_to_world]),
        near=torch.cat([first.near, second.near]),
        far=torch.cat([first.far, second.far]),
        depths=None,
        labels=None,
        frame_ids=torch.cat([first.frame_ids, second.frame_ids]),
    )
    both = reprojected_targets(
        points.expand(2, -1, -1),
        colour.expand(2, -1, -1),
        colour.expand(2, -1, -1),
        batched,
        **THRESHOLDS,
    )
    alone = [
        reprojected_targets(points, colour, colour, item, **THRESHOLDS) for item in (first, second)
    ]
    assert alone[0][2][0, 1].any() and not alone[1][2][0, 1].any()
    for batched_part, *item_parts in zip(both, *alone, strict=True):
        torch.testing.assert_close(batched_part, torch.cat(item_parts), atol=1e-5, rtol=0)


def test_depth_maps_are_read_at_the_projected_x_on_a_wide_image() -> None:
    # Each level holds the ramp D(x) = 0.05 x of the full-resolution column x, sampled at its
    # own pixel centres (full-resolution x = f j + (f - 1) / 2 at downsampling f).
    depths = []
    for h, w in LEVELS:
        factor = WIDTH // w
        centres = torch.arange(w, dtype=torch.float32) * factor + (factor - 1) / 2
        depths.append((0.05 * centres).expand(1, len(SOURCE_X), h, w).clone())
    xy = torch.tensor([[8.0, 5.0], [20.0, 16.0], [36.0, 27.0]])
    pixels = xy.expand(1, len(SOURCE_X), 3, 2).clone()
    z = torch.ones(1, len(SOURCE_X), 3)
    trusted = torch.ones(1, len(SOURCE_X), 3, dtype=torch.bool)
    loss = ray_reprojection_loss(depths, pixels, z, trusted, (HEIGHT, WIDTH), LEVEL_WEIGHTS, 1.0)
    # D = 0.4, 1.0, 1.8 against z = 1: SmoothL1 0.5 * 0.6^2, 0, 0.5 * 0.8^2 -> mean 0.5 / 3.
    assert loss.item() == pytest.approx(sum(LEVEL_WEIGHTS) * 0.5 / 3, rel=1e-5)


def test_patch_deviation_counts_only_pixels_inside_the_image() -> None:
    stripes = torch.zeros(1, 3, 8, 8)
    stripes[..., ::2] = 1.0
    # A 3 x 3 window clipped to columns 0-1 or 6-7 holds one bright and one dark column: std
    # 1 / 2; clipped to rows 0-1 or 6-7 it still holds 1 or 2 of 3 bright columns: sqrt(2) / 3.
    expected = torch.full((8, 8), math.sqrt(2) / 3)
    expected[:, [0, -1]] = 0.5
    torch.testing.assert_close(patch_deviation(stripes, 3)[0, 0], expected, atol=1e-5, rtol=0)


def reprojection_term(
    origins: torch.Tensor, directions: torch.Tensor, distance: torch.Tensor, colour: torch.Tensor
) -> float:
    """``depth_reprojection`` of rays rendered at ``distance`` in ``colour`` (also the target's
    colour), with every source depth predicted 10 cm too far."""
    output, geometry, example = loss_inputs(distance, colour)
    count = distance.shape[1]
    rays = RayBundle(
        origins=origins,
        directions=directions,
        near=torch.full_like(distance, 0.1),
        far=torch.full_like(distance, 10.0),
        pixels=torch.zeros(1, count, 2, dtype=torch.long),
        guide_depth=distance,
        guide_valid=torch.ones_like(distance, dtype=torch.bool),
    )
    targets = RayTargets(rgb=colour, labels=None, depth=None)
    return compute_losses(REPROJECTION_ONLY, output, targets, geometry, example, rays=rays)[
        "depth_reprojection"
    ].item()


def test_a_ray_with_no_rendered_depth_adds_nothing_to_the_term() -> None:
    rays, distance, colour = target_rays()
    # Origins moved along each ray to z = 1 (in front of the sources), hits unchanged.
    step = distance / PLANE_Z
    origins = rays.origins + step[..., None] * rays.directions
    distance = distance - step
    # One more ray, through target pixel (20, 16), that rendered nothing (depth 0): its origin
    # (0.1 + (20 - 23.5) / 80, 0.5 / 80, 1) lands on the textured pixel (28, 16) of source 1,
    # whose colour it was rendered in and has as target.
    empty_origin, empty_direction, _ = camera_rays(
        intrinsics()[None], pose(TARGET_X)[None], torch.tensor([[[20.0, 16.0]]])
    )
    empty_origin = empty_origin + empty_direction / empty_direction[..., 2:]
    empty_colour = source_views().images[0, 1, :, 16, 28].expand(1, 1, 3)
    _, _, origin_trusted = reprojected_targets(
        empty_origin, empty_colour, empty_colour, source_views(), **THRESHOLDS
    )
    # Every other condition passes, so only the depth-0 check keeps the pair out.
    assert origin_trusted[0, 1, 0]
    without = reprojection_term(origins, rays.directions, distance, colour)
    with_empty_ray = reprojection_term(
        torch.cat([origins, empty_origin], dim=1),
        torch.cat([rays.directions, empty_direction], dim=1),
        torch.cat([distance, torch.zeros(1, 1)], dim=1),
        torch.cat([colour, empty_colour], dim=1),
    )
    # The rendered points are the plane hits: 10 cm short of every predicted depth.
    assert without == pytest.approx(0.1 * sum(LEVEL_WEIGHTS) * 0.005, rel=1e-4)
    assert with_empty_ray == pytest.approx(without, rel=1e-6)
