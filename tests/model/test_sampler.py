"""Target rays and depth-guided samples: every N works, bands as documented, z-depth vs distance."""

import math
from statistics import NormalDist

import pytest
import torch

from gsnerf.model.sampler import BandMode, SamplerCfg, build_rays, sample_along_rays
from gsnerf.types import GuideDepth, RayBundle

NEAR, FAR = 0.5, 6.0
# Guide distances: inside, close to near, beyond far, below near, and one ray without a guide.
GUIDES = [2.0, 0.7, 7.5, 0.2, 3.0]
VALID = [True, True, True, True, False]


def bundle(guides: list[float] = GUIDES, valid: list[bool] = VALID) -> RayBundle:
    count = len(guides)
    return RayBundle(
        origins=torch.zeros(1, count, 3),
        directions=torch.tensor([0.0, 0.0, 1.0]).expand(1, count, 3),
        near=torch.full((1, count), NEAR),
        far=torch.full((1, count), FAR),
        pixels=torch.zeros(1, count, 2, dtype=torch.int64),
        guide_depth=torch.tensor([guides]),
        guide_valid=torch.tensor([valid]),
    )


def bin_centres(count: int) -> torch.Tensor:
    return NEAR + (FAR - NEAR) * (torch.arange(count) + 0.5) / count


@pytest.mark.parametrize("band", [mode.value for mode in BandMode])
@pytest.mark.parametrize("training", [False, True])
def test_every_sample_count_gives_sorted_bounded_samples_with_the_guide(
    band: str, training: bool
) -> None:
    rays = bundle()
    guide_clamped = rays.guide_depth.clamp(NEAR, FAR)
    generator = torch.Generator().manual_seed(0)
    for num_uniform in (0, 3):
        for num_samples in range(1, 129):
            cfg = SamplerCfg(num_samples=num_samples, num_uniform=num_uniform, band=band)
            samples = sample_along_rays(rays, cfg, training=training, generator=generator)
            depths = samples.depths[0]
            total = num_samples + num_uniform
            assert depths.shape == (len(GUIDES), total)
            assert (depths.diff(dim=-1) >= 0).all()
            assert (depths >= NEAR).all() and (depths <= FAR).all()
            at_guide = depths.gather(1, samples.guide_index[0, :, None])[:, 0]
            assert torch.equal(at_guide[:4], guide_clamped[0, :4])
            # The ray without a guide: uniform bins, its middle sample standing in for D_T.
            fallback = depths[4]
            assert samples.guide_index[0, 4] == total // 2
            if training:
                lower = NEAR + (FAR - NEAR) * torch.arange(total) / total
                upper = NEAR + (FAR - NEAR) * (torch.arange(total) + 1) / total
                assert (fallback >= lower - 1e-5).all() and (fallback <= upper + 1e-5).all()
            else:
                assert torch.allclose(fallback, bin_centres(total))


def test_reference_setting_96_uniform_plus_32_gaussian() -> None:
    # Spec 2.4: 96 uniform samples plus 31 Gaussian samples of std 0.5 m and one at D_T.
    cfg = SamplerCfg(num_samples=32, num_uniform=96, band="gaussian", band_width=0.5, jitter="none")
    count = 256
    rays = bundle([3.0] * count, [True] * count)
    samples = sample_along_rays(rays, cfg, True, torch.Generator().manual_seed(1))
    again = sample_along_rays(rays, cfg, True, torch.Generator().manual_seed(1))
    assert samples.depths.shape == (1, count, 128)
    assert torch.equal(samples.depths, again.depths)
    depths = samples.depths[0]
    assert torch.equal(
        depths.gather(1, samples.guide_index[0, :, None]), torch.full((count, 1), 3.0)
    )
    # The 96 uniform bin centres are all there on every ray.
    centres = bin_centres(96)
    matches = (depths[:, :, None] - centres).abs() < 1e-5
    assert matches.any(dim=1).all()
    # Everything else is the Gaussian band: 31 offsets per ray of std 0.5 m (no clamping here,
    # 3 m lies 5 sigma from both bounds), once the 96 uniform samples are taken out
    # (one sample per centre: a Gaussian draw may fall within 1e-5 of a centre too).
    is_uniform = torch.zeros_like(depths, dtype=torch.bool)
    is_uniform.scatter_(1, matches.long().argmax(dim=1), True)
    band = depths[~is_uniform].reshape(count, 32) - 3.0
    offsets = band[band != 0]
    assert offsets.numel() == 31 * count
    assert abs(offsets.std().item() - 0.5) < 0.025
    assert abs(offsets.mean().item()) < 0.025


def test_gaussian_band_at_evaluation_uses_normal_quantiles() -> None:
    # N = 4: slots 0..3 of a 5-slot grid, probabilities 0.1, 0.3, 0.5, 0.7.
    cfg = SamplerCfg(num_samples=4, band="gaussian", band_width=0.5)
    samples = sample_along_rays(bundle([3.0], [True]), cfg, training=False)
    expected = [3.0 + 0.5 * NormalDist().inv_cdf(p) for p in (0.1, 0.3, 0.5, 0.7)]
    # inv_cdf(0.1) = -1.2816, inv_cdf(0.3) = -0.5244: offsets -0.641, -0.262, 0, 0.262 m.
    assert torch.allclose(samples.depths[0, 0], torch.tensor(expected), atol=1e-5)
    assert samples.guide_index[0, 0] == 2


@pytest.mark.parametrize(
    ("num_samples", "units"),
    [(1, [0.0]), (2, [-1.0, 0.0]), (3, [-1.0, 0.0, 1.0]), (4, [-1.0, -0.5, 0.0, 0.5])],
)
def test_fixed_and_relative_bands_follow_the_grid(num_samples: int, units: list[float]) -> None:
    rays = bundle([3.0], [True])
    fixed = SamplerCfg(num_samples=num_samples, band="fixed", band_width=0.4)
    relative = SamplerCfg(num_samples=num_samples, band="relative", band_relative=0.1)
    for cfg, half_width in ((fixed, 0.4), (relative, 0.3)):
        samples = sample_along_rays(rays, cfg, training=False)
        expected = torch.tensor([3.0 + half_width * unit for unit in units])
        assert torch.allclose(samples.depths[0, 0], expected)
        assert samples.guide_index[0, 0] == num_samples // 2


def test_stratified_jitter_keeps_band_samples_in_their_cells() -> None:
    # N = 5, band 0.4 m: grid -0.4, -0.2, 0, 0.2, 0.4; cells of 0.2 m, jitter +-0.1 m.
    cfg = SamplerCfg(num_samples=5, band="fixed", band_width=0.4, jitter="stratified")
    count = 64
    samples = sample_along_rays(
        bundle([3.0] * count, [True] * count), cfg, True, torch.Generator().manual_seed(2)
    )
    offsets = samples.depths[0] - 3.0
    grid = torch.tensor([-0.4, -0.2, 0.0, 0.2, 0.4])
    assert ((offsets - grid).abs() <= 0.1 + 1e-5).all()
    assert (offsets[:, 2] == 0).all()
    assert (samples.guide_index == 2).all()
    # The jitter is real: the off-centre samples do move.
    assert (offsets - grid).abs().max() > 0.05


def test_build_rays_converts_z_depth_to_distance_on_an_off_axis_pixel() -> None:
    k = torch.tensor([[100.0, 0.0, 50.0], [0.0, 100.0, 40.0], [0.0, 0.0, 1.0]])
    # Camera turned 90 degrees about its z axis and moved to (1, 2, 3).
    cam_to_world = torch.tensor(
        [[0.0, -1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 1.0, 3.0], [0, 0, 0, 1.0]]
    )
    depth = torch.zeros(1, 90, 100)
    depth[0, 80, 80] = 2.0
    depth[0, 40, 50] = 1.5
    guide = GuideDepth(depth=depth, valid=depth > 0)
    # Pixel (row 80, col 80): K^-1 [80, 80, 1] = (0.3, 0.4, 1), of length sqrt(1.25).
    pixels = torch.tensor([[[80, 80], [40, 50], [0, 0]]])
    rays = build_rays(
        k[None], cam_to_world[None], pixels, guide, torch.tensor([0.5]), torch.tensor([6.0])
    )
    stretch = math.sqrt(1.25)
    assert rays.guide_depth[0, 0].item() == pytest.approx(2.0 * stretch, rel=1e-6)
    assert rays.near[0, 0].item() == pytest.approx(0.5 * stretch, rel=1e-6)
    assert rays.far[0, 0].item() == pytest.approx(6.0 * stretch, rel=1e-6)
    # The point at that distance is the camera point (0.6, 0.8, 2), i.e. world (0.2, 2.6, 5).
    point = rays.origins[0, 0] + rays.guide_depth[0, 0] * rays.directions[0, 0]
    assert torch.allclose(point, torch.tensor([0.2, 2.6, 5.0]), atol=1e-5)
    # On the optical axis distance and z-depth agree; pixel (0, 0) has no guide.
    assert rays.guide_depth[0, 1].item() == pytest.approx(1.5, rel=1e-6)
    assert rays.guide_valid.tolist() == [[True, True, False]]
    assert torch.allclose(rays.directions.norm(dim=-1), torch.ones(1, 3))

    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = build_rays(
            k[None], cam_to_world[None], pixels, guide, torch.tensor([0.5]), torch.tensor([6.0])
        )
    assert autocast.directions.dtype == torch.float32
    assert torch.equal(autocast.guide_depth, rays.guide_depth)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="num_samples"):
        SamplerCfg(num_samples=0)
    with pytest.raises(ValueError, match="SamplerCfg.band"):
        SamplerCfg(band="triangle")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("band", [mode.value for mode in BandMode])
def test_training_samples_on_cuda_come_from_the_cpu_generator(band: str) -> None:
    # The trainer's generator is a CPU one: CUDA rays get the numbers the CPU rays get.
    cfg = SamplerCfg(num_samples=8, num_uniform=3, band=band, jitter="stratified")
    rays = bundle()
    on_cpu = sample_along_rays(rays, cfg, True, torch.Generator().manual_seed(5))
    cuda_rays = RayBundle(**{name: value.cuda() for name, value in vars(rays).items()})
    on_cuda = sample_along_rays(cuda_rays, cfg, True, torch.Generator().manual_seed(5))
    assert on_cuda.depths.device.type == "cuda"
    torch.testing.assert_close(on_cuda.depths.cpu(), on_cpu.depths)
    assert torch.equal(on_cuda.guide_index.cpu(), on_cpu.guide_index)
