"""Feature gathering: hand-computed projections, level alignment, masks, patch order, angle."""

import math

import pytest
import torch
import torch.nn.functional as F

from gsnerf.model.feature_gather import (
    GatherCfg,
    angle_encoding,
    attention_view_mask,
    border_grid_read,
    gather_features,
    gather_semantic_features,
    project_to_sources,
    sample_maps,
    select_samples,
)
from gsnerf.types import SourceGeometry, Views

HEIGHT, WIDTH = 16, 24
FOCAL = 20.0
# Hypotheses of the fine level: 1.0, 1.1, ..., 1.7 m at every pixel.
FIRST, STEP, COUNT = 1.0, 0.1, 8


def camera() -> torch.Tensor:
    return torch.tensor([[FOCAL, 0.0, 11.5], [0.0, FOCAL, 7.5], [0.0, 0.0, 1.0]])


def one_view(images: torch.Tensor) -> Views:
    """A single source camera at the origin looking down +z (the target's own camera)."""
    return Views(
        images=images,
        intrinsics=camera()[None, None],
        cam_to_world=torch.eye(4)[None, None],
        near=torch.tensor([[0.5]]),
        far=torch.tensor([[4.0]]),
        depths=None,
        labels=None,
        frame_ids=torch.zeros(1, 1, dtype=torch.int64),
    )


def ramp_x(height: int, width: int) -> torch.Tensor:
    """A map whose value is the full-resolution x coordinate of each cell centre."""
    scale = WIDTH / width
    cols = (torch.arange(width, dtype=torch.float32) + 0.5) * scale - 0.5
    return cols.expand(height, width)


def geometry(source_depth: float = 2.0) -> SourceGeometry:
    """Two levels: 1/2 resolution (volume = x ramp) and full resolution (volume = index k)."""
    coarse_h, coarse_w = HEIGHT // 2, WIDTH // 2
    coarse_volume = ramp_x(coarse_h, coarse_w).expand(1, 1, 1, 4, coarse_h, coarse_w)
    fine_volume = torch.arange(COUNT, dtype=torch.float32)[:, None, None]
    fine_volume = fine_volume.expand(1, 1, 1, COUNT, HEIGHT, WIDTH)
    last = FIRST + STEP * (COUNT - 1)
    coarse_ranges = torch.tensor([0.5, 4.0])[:, None, None].expand(1, 1, 2, coarse_h, coarse_w)
    fine_ranges = torch.tensor([FIRST, last])[:, None, None].expand(1, 1, 2, HEIGHT, WIDTH)
    generator = torch.Generator().manual_seed(0)
    return SourceGeometry(
        depths=[
            torch.full((1, 1, coarse_h, coarse_w), source_depth),
            torch.full((1, 1, HEIGHT, WIDTH), source_depth),
        ],
        depth_ranges=[coarse_ranges, fine_ranges],
        volume_features=[coarse_volume, fine_volume],
        image_features=torch.rand(1, 1, 5, HEIGHT, WIDTH, generator=generator),
        semantic_features=torch.rand(1, 1, 2, HEIGHT, WIDTH, generator=generator),
        semantic_logits=torch.rand(1, 1, 3, HEIGHT, WIDTH, generator=generator),
    )


def points_at(pixels: list[tuple[float, float]], depths: list[float]) -> torch.Tensor:
    """World points at z-depth ``depths`` behind pixel ``(x, y)``s: one ray per pixel."""
    xy = torch.tensor(pixels)
    z = torch.tensor(depths)
    x = (xy[:, 0:1] - 11.5) / FOCAL * z
    y = (xy[:, 1:2] - 7.5) / FOCAL * z
    return torch.stack([x, y, z.expand_as(x)], dim=-1)[None]


def gather(points: torch.Tensor, cfg: GatherCfg = GatherCfg(), depth: float = 2.0):
    images = torch.rand(1, 1, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(1))
    sources = one_view(images)
    directions = F.normalize(points[:, :, 0], dim=-1)
    projection = project_to_sources(points, sources)
    return gather_features(projection, points, directions, sources, geometry(depth), cfg), images


def test_sample_on_a_pixel_gathers_that_pixel_exactly() -> None:
    pixels = [(0.0, 0.0), (7.0, 3.0), (23.0, 15.0)]
    points = points_at(pixels, [1.3, 1.7, 2.5])
    gathered, images = gather(points)
    source = geometry()
    for ray, (x, y) in enumerate(pixels):
        for sample in range(3):
            colour = gathered.colours[0, ray, sample, 0]
            assert torch.allclose(colour, images[0, 0, :, int(y), int(x)], atol=1e-6)
            features = gathered.image[0, ray, sample, 0]
            assert torch.allclose(features, source.image_features[0, 0, :, int(y), int(x)])
    assert gathered.in_frustum.all()


def test_volume_is_read_at_the_hypothesis_fraction_and_levels_align() -> None:
    # Hypotheses k = 0, 2, 7 and halfway between 4 and 5.
    depths = [1.0, 1.2, 1.7, 1.45]
    points = points_at([(9.0, 6.0)], depths)
    gathered, _ = gather(points)
    fine = gathered.volume[0, 0, :, 0, -1]
    assert torch.allclose(fine, torch.tensor([0.0, 2.0, 7.0, 4.5]), atol=1e-5)
    # The 1/2-resolution x ramp read at full-resolution x = 9 gives 9 (same normalised grid).
    coarse = gathered.volume[0, 0, :, 0, 0]
    assert torch.allclose(coarse, torch.full((4,), 9.0), atol=1e-5)


def test_maps_of_several_batch_items_and_views_stay_with_their_item_and_view() -> None:
    # Constant maps holding 10 b + v (channel 0) and -(10 b + v) (channel 1), read at any
    # point: each read must come back at its own (b, v), whatever the flattening order inside.
    batch, views = 2, 3
    ids = 10.0 * torch.arange(batch)[:, None] + torch.arange(views)[None, :]
    maps = torch.stack([ids, -ids], dim=-1)[..., None, None].expand(batch, views, 2, 4, 5)
    grid = torch.rand(batch * views, 6, 2, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    read = sample_maps(maps, grid)
    assert read.shape == (batch, 6, 2, views, 2)
    expected = torch.stack([ids, -ids], dim=-1)[:, None, None].expand_as(read)
    torch.testing.assert_close(read, expected)


def test_in_frustum_is_false_outside_the_image_and_behind_the_camera() -> None:
    inside = points_at([(23.4, 15.4)], [2.0])
    right = points_at([(23.6, 3.0)], [2.0])
    above = points_at([(3.0, -0.6)], [2.0])
    # Past the bottom edge (15.5) of the 16-row image, though within its 24 columns' span.
    below = points_at([(3.0, 15.6)], [2.0])
    behind = -points_at([(11.5, 7.5)], [2.0])
    points = torch.cat([inside, right, above, below, behind], dim=1)
    gathered, _ = gather(points)
    assert gathered.in_frustum[0, :, 0, 0].tolist() == [True, False, False, False, False]


@pytest.mark.parametrize(
    ("unit", "tolerance", "expected"),
    [
        # Span 0.7 m -> 0.14 m: 2.1 visible, 2.2 not.
        ("hypothesis_span", 0.2, [True, True, True, False, False]),
        ("metres", 0.05, [True, True, False, False, False]),
    ],
)
def test_occlusion_against_the_source_depth(unit: str, tolerance: float, expected: list) -> None:
    points = points_at([(5.0, 5.0)], [1.0, 2.0, 2.1, 2.2, 3.0])
    cfg = GatherCfg(occlusion_unit=unit, occlusion_tolerance=tolerance)
    gathered, _ = gather(points, cfg, depth=2.0)
    assert gathered.visible[0, 0, :, 0].tolist() == expected


@pytest.mark.parametrize("patch", [1, 3])
def test_semantic_patch_is_rows_major_then_columns(patch: int) -> None:
    rows = torch.arange(HEIGHT, dtype=torch.float32)[:, None].expand(HEIGHT, WIDTH)
    cols = torch.arange(WIDTH, dtype=torch.float32).expand(HEIGHT, WIDTH)
    features = torch.stack([cols, rows])[None, None]
    points = points_at([(7.0, 5.0)], [2.0])
    projection = project_to_sources(points, one_view(torch.zeros(1, 1, 3, HEIGHT, WIDTH)))
    gathered = gather_semantic_features(projection, features, GatherCfg(semantic_patch=patch))
    offsets = [0] if patch == 1 else [-1, 0, 1]
    expected = [[7.0 + dx, 5.0 + dy] for dy in offsets for dx in offsets]
    assert gathered.shape == (1, 1, 1, 1, 2 * patch**2)
    assert torch.allclose(gathered[0, 0, 0, 0], torch.tensor(expected).flatten(), atol=1e-5)


def test_angle_encoding_of_known_angles() -> None:
    directions = torch.tensor([[[0.0, 0.0, 1.0]]])
    points = torch.tensor([[[[0.0, 0.0, 2.0]]]])
    # Same centre as the target (0 degrees), to the side (90), behind the point (180).
    centres = torch.tensor([[[0.0, 0.0, 0.0], [2.0, 0.0, 2.0], [0.0, 0.0, 3.0]]])
    encoding = angle_encoding(directions, points, centres, frequencies=2)[0, 0, 0]
    for view, theta in enumerate([0.0, math.pi / 2, math.pi]):
        expected = [math.sin(theta), math.cos(theta), math.sin(2 * theta), math.cos(2 * theta)]
        assert torch.allclose(encoding[view], torch.tensor(expected), atol=1e-6)


def test_angle_encoding_equals_atan2_then_sine_and_cosine_of_its_multiples() -> None:
    generator = torch.Generator().manual_seed(0)
    directions = F.normalize(torch.randn(2, 50, 3, generator=generator), dim=-1)
    points = 3 * torch.randn(2, 50, 4, 3, generator=generator)
    centres = torch.randn(2, 5, 3, generator=generator)
    centres[0, 1] = points[0, 0, 0]  # a point at a source centre: theta = 0
    encoding = angle_encoding(directions, points, centres, frequencies=4).double()
    offsets = points.double()[:, :, :, None] - centres.double()[:, None, None]
    unit = F.normalize(offsets, dim=-1)
    direction = directions.double()[:, :, None, None].expand_as(unit)
    theta = torch.atan2(
        torch.linalg.cross(direction, unit, dim=-1).norm(dim=-1), (direction * unit).sum(-1)
    )
    for k in range(4):
        expected = torch.stack([(2**k * theta).sin(), (2**k * theta).cos()], dim=-1)
        # Float32 rounding of the directions, amplified 2^k times by the multiple.
        assert (encoding[..., 2 * k : 2 * k + 2] - expected).abs().max() < 2**k * 1e-6
    assert torch.equal(encoding[0, 0, 0, 1], torch.tensor([0.0, 1.0] * 4, dtype=torch.float64))


def test_view_mask_falls_back_to_in_frustum_then_to_all_views() -> None:
    in_frustum = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=torch.bool)
    visible = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 0, 0]], dtype=torch.bool)
    mask = attention_view_mask(in_frustum, visible)
    assert mask.tolist() == [[True, False, False], [True, True, False], [True, True, True]]


def test_selected_samples_project_as_their_points_do() -> None:
    """Two views (one moved 0.3 m along x), rays of three samples; sample 2, 0, 1 picked."""
    moved = torch.eye(4)
    moved[0, 3] = 0.3
    sources = Views(
        images=torch.zeros(1, 2, 3, HEIGHT, WIDTH),
        intrinsics=camera().expand(1, 2, 3, 3),
        cam_to_world=torch.stack([torch.eye(4), moved])[None],
        near=torch.full((1, 2), 0.5),
        far=torch.full((1, 2), 4.0),
        depths=None,
        labels=None,
        frame_ids=torch.zeros(1, 2, dtype=torch.int64),
    )
    pixels = [(3.0, 4.0), (20.0, 10.0), (-3.0, 2.0)]  # the last one outside the image
    points = torch.stack([points_at(pixels, [z, z, z])[0, :, 0] for z in (1.0, 2.0, 3.0)], 1)[None]
    index = torch.tensor([[[2], [0], [1]]])
    picked = points.gather(2, index[..., None].expand(-1, -1, -1, 3))
    expected = project_to_sources(picked, sources)
    selected = select_samples(project_to_sources(points, sources), index)
    torch.testing.assert_close(selected.grid, expected.grid)
    torch.testing.assert_close(selected.depth, expected.depth)
    assert torch.equal(selected.in_frustum, expected.in_frustum)
    assert selected.in_frustum[:, 2].sum() == 0 and selected.in_frustum[:, :2].all()


def test_border_grid_read_is_grid_sample_with_its_shape() -> None:
    generator = torch.Generator().manual_seed(0)
    maps = torch.randn(2, 3, 5, 7, generator=generator)
    volume = torch.randn(2, 3, 4, 5, 7, generator=generator)
    grid = torch.rand(2, 6, 4, 2, generator=generator) * 2.4 - 1.2
    grid_3d = torch.rand(2, 6, 4, 1, 3, generator=generator) * 2.4 - 1.2
    for values, points in ((maps, grid), (volume, grid_3d)):
        expected = F.grid_sample(
            values, points, mode="bilinear", padding_mode="border", align_corners=False
        )
        assert torch.equal(border_grid_read(values, points), expected)
        # Schema, fake (shape-only) implementation and dispatch agree.
        torch.library.opcheck(border_grid_read, (values, points))
