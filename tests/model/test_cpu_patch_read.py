"""The C++ 3x3 patch read against ``grid_sample`` of the nine points, and in the gathering."""

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from gsnerf.model import cpu_patch_read
from gsnerf.model.cpu_patch_read import cpu_patch_read_applies
from gsnerf.model.feature_gather import GatherCfg, SourceProjection, gather_semantic_features
from gsnerf.model.native_library import compiler_present

needs_compiler = pytest.mark.skipif(not compiler_present(), reason="no C++ compiler")


@pytest.fixture
def kernel_on():
    saved = cpu_patch_read.enabled
    cpu_patch_read.enabled = True
    yield
    cpu_patch_read.enabled = saved


def _library_patches(maps, grid, views):
    """The nine points of every patch through ``grid_sample``, in the kernel's layout."""
    height, width = maps.shape[-2:]
    steps = torch.tensor([-1.0, 0.0, 1.0])
    rows, cols = torch.meshgrid(steps, steps, indexing="ij")
    offsets = torch.stack([cols.flatten() * 2 / width, rows.flatten() * 2 / height], dim=-1)
    points = grid[:, :, :, None] + offsets
    read = F.grid_sample(
        maps, points.flatten(2, 3), mode="bilinear", padding_mode="border", align_corners=False
    )
    return rearrange(read, "(b v) c r (s p) -> b r s v (p c)", v=views, p=9)


@needs_compiler
@pytest.mark.parametrize(
    ("maps_shape", "grid_shape"),
    [((6, 20, 12, 16), (6, 40, 4)), ((2, 5, 7, 3), (2, 9, 2)), ((1, 1, 2, 2), (1, 8, 1))],
)
def test_patches_equal_grid_sample_of_their_nine_points(kernel_on, maps_shape, grid_shape):
    views = 3 if maps_shape[0] == 6 else 1  # a batch of two scenes of three views
    # Maps of 2 to 16 pixels a side with points up to 30 % beyond the edges: windows inside,
    # across and beyond the border (3 and 2 pixel wide maps have no inside window at all).
    generator = torch.Generator().manual_seed(0)
    maps = torch.randn(maps_shape, generator=generator)
    grid = torch.rand(*grid_shape, 2, generator=generator) * 2.6 - 1.3
    with torch.no_grad():
        assert cpu_patch_read_applies(maps, grid)
        patches = cpu_patch_read.cpu_patch_read(maps, grid, views)
    expected = _library_patches(maps, grid, views)
    assert patches.shape == expected.shape
    # Float32 rounding of positions of up to 16 pixels (the kernel adds whole pixels to the
    # centre, grid_sample unnormalises each point's own coordinate).
    assert (patches - expected).abs().max() < 2e-5


@needs_compiler
def test_a_patch_inside_reads_the_pixels_it_covers(kernel_on):
    # A map whose value is 100 y + x: bilinear reads are exact at any point (a linear map), so
    # the patch around (x, y) = (5.25, 3.5) holds 100 (3.5 + j) + 5.25 + i for i, j in -1..1.
    height, width = 8, 16
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    maps = (100.0 * ys + xs).float()[None, None]
    grid = torch.tensor([[[[(2 * 5.25 + 1) / width - 1, (2 * 3.5 + 1) / height - 1]]]])
    with torch.no_grad():
        patch = cpu_patch_read.cpu_patch_read(maps, grid, 1)[0, 0, 0, 0]
    expected = torch.tensor([100 * (3.5 + j) + 5.25 + i for j in (-1, 0, 1) for i in (-1, 0, 1)])
    assert torch.allclose(patch, expected, rtol=0, atol=1e-4)


@needs_compiler
def test_semantic_gathering_with_the_kernel_matches_grid_sample(kernel_on):
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(1, 3, 6, 10, 14, generator=generator)
    grid = torch.rand(3, 20, 2, 2, generator=generator) * 2.2 - 1.1
    projection = SourceProjection(
        grid=grid,
        depth=torch.ones(3, 20, 2),
        in_frustum=torch.ones(3, 20, 2, dtype=torch.bool),
        num_views=3,
        image_size=(10, 14),
    )
    with torch.no_grad():
        fused = gather_semantic_features(projection, features, GatherCfg())
        cpu_patch_read.enabled = False
        plain = gather_semantic_features(projection, features, GatherCfg())
    assert fused.shape == plain.shape == (1, 20, 2, 3, 9 * 6)
    assert (fused - plain).abs().max() < 2e-5


def test_conditions(kernel_on):
    maps, grid = torch.zeros(2, 4, 5, 6), torch.zeros(2, 3, 1, 2)
    with torch.no_grad():
        assert cpu_patch_read_applies(maps, grid) == compiler_present()
        assert not cpu_patch_read_applies(maps.bfloat16(), grid)
        assert not cpu_patch_read_applies(torch.zeros(2, 65, 5, 6), grid)
        cpu_patch_read.enabled = False
        assert not cpu_patch_read_applies(maps, grid)
    cpu_patch_read.enabled = True
    assert not cpu_patch_read_applies(maps, grid)  # gradients wanted


@needs_compiler
def test_operator_schema_and_fake_shape(kernel_on):
    generator = torch.Generator().manual_seed(2)
    maps = torch.randn(4, 3, 6, 7, generator=generator)
    grid = torch.rand(4, 4, 3, 2, generator=generator) * 2 - 1
    torch.library.opcheck(cpu_patch_read.cpu_patch_read, (maps, grid, 2))
