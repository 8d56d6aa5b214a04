"""The C++ trilinear volume read against ``grid_sample``, known values, and in renders."""

import logging

import pytest
import torch
import torch.nn.functional as F
from kernel_checks import (
    RENDER_CHUNK_RAYS,
    RENDER_HEIGHT,
    RENDER_WIDTH,
    assert_renders_close,
    on_thread_counts,
    renders_off_and_on,
    without_compiler,
)

from gsnerf.model import cpu_volume_read, native_library
from gsnerf.model.cpu_volume_read import cpu_volume_read_applies
from gsnerf.model.feature_gather import grid_read
from gsnerf.model.native_library import NativeBuildError, compiler_present

needs_compiler = pytest.mark.skipif(not compiler_present(), reason="no C++ compiler")


@pytest.fixture
def kernel_on():
    saved = cpu_volume_read.enabled
    cpu_volume_read.enabled = True
    yield
    cpu_volume_read.enabled = saved


def _library(values, grid):
    return F.grid_sample(values, grid, mode="bilinear", padding_mode="border", align_corners=False)


@needs_compiler
@pytest.mark.parametrize(
    ("values_shape", "grid_shape"),
    [
        ((3, 4, 6, 9, 11), (3, 7, 5, 1, 3)),  # sizes that are no powers of two
        ((2, 5, 1, 4, 1), (2, 3, 4, 2, 3)),  # one hypothesis, one column
        ((1, 8, 3, 1, 6), (1, 40, 1, 1, 3)),  # one row, the paper's 8 channels
    ],
)
def test_reads_equal_grid_sample(kernel_on, values_shape, grid_shape):
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(values_shape, generator=generator)
    # Points up to 30 % beyond the edges, where the border is read.
    grid = torch.rand(grid_shape, generator=generator) * 2.6 - 1.3
    with torch.no_grad():
        assert cpu_volume_read_applies(values, grid)
        read = cpu_volume_read.cpu_volume_read(values, grid)
    expected = _library(values, grid)
    assert read.shape == expected.shape
    # Float32 corner weights: positions of up to ~16 cells carry ~1e-6 of rounding.
    assert (read - expected).abs().max() < 2e-5


@needs_compiler
def test_known_values_at_centres_midpoints_and_beyond_the_border(kernel_on):
    # Sizes of powers of two: a pixel centre's normalised coordinate (2i + 1) / W - 1 is exact.
    depth, height, width = 2, 4, 8
    volume = torch.arange(depth * height * width, dtype=torch.float32)
    volume = volume.view(1, 1, depth, height, width).repeat(1, 2, 1, 1, 1)
    volume[:, 1] *= -1.0

    def normalised(index: float, size: int) -> float:
        return (2 * index + 1) / size - 1

    # (x, y, z) in cells -> value: a centre, midpoints along x and z, beyond the -x border
    # (column 0), beyond the +y border (last row), and beyond both ends of the depth.
    cases = [
        ((3, 2, 1), 32 + 16 + 3),
        ((3.5, 2, 1), 32 + 16 + 3.5),
        ((5, 1, 0.5), 16 + 8 + 5),
        ((-4, 1, 0), 8),
        ((6, 9, 1), 32 + 24 + 6),
        ((2, 0, -3), 2),
        ((2, 0, 7), 32 + 2),
    ]
    grid = torch.tensor(
        [
            [normalised(x, width), normalised(y, height), normalised(z, depth)]
            for (x, y, z), _ in cases
        ]
    ).view(1, len(cases), 1, 1, 3)
    with torch.no_grad():
        read = cpu_volume_read.cpu_volume_read(volume, grid)[:, :, :, 0, 0]
    expected = torch.tensor([value for _, value in cases])
    assert torch.equal(read[0, 0], expected)
    assert torch.equal(read[0, 1], -expected)


@needs_compiler
def test_threads_split_the_points_alike(kernel_on):
    generator = torch.Generator().manual_seed(1)
    volume = torch.randn(3, 4, 5, 9, 13, generator=generator)
    grid = torch.rand(3, 50, 7, 1, 3, generator=generator) * 2 - 1
    one, three = on_thread_counts(lambda: cpu_volume_read.cpu_volume_read(volume, grid))
    assert torch.equal(one, three)


@needs_compiler
@pytest.mark.parametrize("compiled", [False, True])
def test_renders_with_the_kernel_match_the_library_reads(kernel_on, monkeypatch, compiled):
    reads = []
    original = cpu_volume_read.cpu_volume_read
    monkeypatch.setattr(
        cpu_volume_read, "cpu_volume_read", lambda *a: reads.append(1) or original(*a)
    )
    plain, render = renders_off_and_on(cpu_volume_read, compiled)
    # Per chunk, one read of each of the three levels' volumes.
    assert len(reads) == 3 * (RENDER_HEIGHT * RENDER_WIDTH // RENDER_CHUNK_RAYS)
    assert_renders_close(render, plain)


def test_conditions(kernel_on):
    volume, grid = torch.zeros(1, 4, 2, 3, 5), torch.zeros(1, 2, 2, 1, 3)
    with torch.no_grad():
        assert cpu_volume_read_applies(volume, grid) == compiler_present()
        assert not cpu_volume_read_applies(volume.bfloat16(), grid)
        assert not cpu_volume_read_applies(volume, grid.double())
        assert not cpu_volume_read_applies(torch.zeros(1, 65, 2, 3, 5), grid)
        assert not cpu_volume_read_applies(torch.zeros(1, 4, 3, 5), torch.zeros(1, 2, 2, 2))
        cpu_volume_read.enabled = False
        assert not cpu_volume_read_applies(volume, grid)
    cpu_volume_read.enabled = True
    assert not cpu_volume_read_applies(volume, grid)  # gradients wanted


def test_without_a_compiler_grid_sample_reads(kernel_on, monkeypatch, caplog, tmp_path):
    with without_compiler(monkeypatch, tmp_path):
        generator = torch.Generator().manual_seed(2)
        volume = torch.randn(2, 4, 3, 5, 6, generator=generator)
        grid = torch.rand(2, 4, 3, 1, 3, generator=generator) * 2 - 1
        with pytest.raises(NativeBuildError, match="no-such-compiler"):
            native_library.load_native_library(cpu_volume_read.SOURCE, {"CHANNELS": 4})
        with torch.no_grad(), caplog.at_level(logging.WARNING):
            assert not cpu_volume_read_applies(volume, grid)
            read = grid_read(volume, grid)
        assert "C++ kernel volume_read unavailable" in caplog.text
        assert torch.equal(read, _library(volume, grid))
