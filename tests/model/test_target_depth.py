"""Guide depth D_T: edges stay sharp, small holes fill, large holes stay invalid, autocast-safe."""

import pytest
import torch

from gsnerf.model.target_depth import (
    HoleFill,
    TargetDepthCfg,
    estimate_guide_depth,
    fill_holes,
    smooth_depth,
)

HEIGHT, WIDTH = 24, 32


def intrinsics() -> torch.Tensor:
    return torch.tensor([[40.0, 0.0, 15.5], [0.0, 40.0, 11.5], [0.0, 0.0, 1.0]])


def guide_from_identity_view(source: torch.Tensor, cfg: TargetDepthCfg):
    """D_T of one source view that shares the target camera, so the splat is the source itself."""
    k = intrinsics()
    return estimate_guide_depth(
        source[None, None],
        k[None, None],
        torch.eye(4)[None, None],
        k[None],
        torch.eye(4)[None],
        HEIGHT,
        WIDTH,
        cfg,
    )


def test_fill_holes_worked_example() -> None:
    depth = torch.tensor([[[2.0, 0.0, 3.0]]])
    valid = depth > 0
    farthest, farthest_valid = fill_holes(depth, valid, HoleFill.FARTHEST, radius=1, iterations=1)
    median, _ = fill_holes(depth, valid, HoleFill.MEDIAN, radius=1, iterations=1)
    assert farthest.tolist() == [[[2.0, 3.0, 3.0]]]
    assert farthest_valid.all()
    # The lower middle of {2, 3}.
    assert median.tolist() == [[[2.0, 2.0, 3.0]]]


def test_step_edge_stays_sharp_while_noise_is_smoothed() -> None:
    # A box at 1 m left of column 14 in front of a wall at 3 m, with 0.3 % multiplicative noise.
    edge = 14
    truth = torch.full((HEIGHT, WIDTH), 3.0)
    truth[:, :edge] = 1.0
    noise = torch.randn(HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0))
    source = truth * (1.0 + 0.003 * noise)
    cfg = TargetDepthCfg(kernel_size=5, sigma_color=0.1, sigma_space=2.0)

    guide = guide_from_identity_view(source, cfg)
    depth = guide.depth[0]
    assert guide.valid.all()
    relative = (depth - truth).abs() / truth
    columns = torch.arange(WIDTH).expand(HEIGHT, WIDTH)
    far_from_edge = ((columns - edge + 0.5).abs() > 2).float()
    assert (relative * far_from_edge).max() < 0.01
    # Edge-preserving: even the columns touching the step keep their side's depth (a plain
    # 5x5 Gaussian blur of sigma 2 px would put 1.75 m and 2.25 m there).
    assert relative.max() < 0.01
    # And the filter does smooth: the noise left is well below the input noise.
    input_error = ((source - truth) / truth).std()
    assert ((depth - truth) / truth).std() < 0.6 * input_error


def test_small_hole_gets_a_depth_between_its_neighbours() -> None:
    # A slanted wall, depth rising 5 cm per column, with a 2x2 hole.
    columns = torch.arange(WIDTH, dtype=torch.float32).expand(HEIGHT, WIDTH)
    source = 2.0 + 0.05 * columns
    source[10:12, 10:12] = 0.0
    for rule in HoleFill:
        guide = guide_from_identity_view(source, TargetDepthCfg(hole_fill=rule.value))
        filled = guide.depth[0, 10:12, 10:12]
        assert guide.valid.all()
        # Neighbours span columns 9..12: depths 2.45 .. 2.60.
        assert (filled >= 2.45 - 1e-4).all() and (filled <= 2.60 + 1e-4).all()


def test_large_empty_region_stays_invalid() -> None:
    source = torch.full((HEIGHT, WIDTH), 2.0)
    source[4:20, 8:24] = 0.0
    cfg = TargetDepthCfg(fill_radius=1, fill_iterations=3)
    guide = guide_from_identity_view(source, cfg)
    # Three passes of a 3x3 window reach 3 px into the 16x16 hole; its 10x10 core stays empty.
    assert not guide.valid[0, 7:17, 11:21].any()
    assert (guide.depth[0, 7:17, 11:21] == 0).all()
    assert guide.valid[0, 4:7, 8:24].all() and guide.valid[0, 17:20, 8:24].all()
    assert torch.allclose(guide.depth[0][guide.valid[0]], torch.tensor(2.0))


def test_smoothing_ignores_invalid_pixels() -> None:
    depth = torch.full((1, 8, 8), 2.0)
    valid = torch.ones(1, 8, 8, dtype=torch.bool)
    depth[:, :, 4:] = 0.0
    valid[:, :, 4:] = False
    # A huge colour sigma makes the range kernel flat: only the mask keeps the zeros out.
    smoothed = smooth_depth(depth, valid, kernel_size=5, sigma_color=1e3, sigma_space=2.0)
    assert torch.allclose(smoothed[:, :, :4], torch.tensor(2.0))
    assert (smoothed[:, :, 4:] == 0).all()
    # Whatever the invalid pixels hold, the mask leaves it out: the same result with 100 m.
    garbage = torch.where(valid, depth, torch.full_like(depth, 100.0))
    again = smooth_depth(garbage, valid, kernel_size=5, sigma_color=1e3, sigma_space=2.0)
    torch.testing.assert_close(again, smoothed)


def test_guide_depth_is_float32_and_unchanged_under_autocast() -> None:
    # A moved target, so the splat runs real matrix products that autocast would downcast.
    columns = torch.arange(WIDTH, dtype=torch.float64).expand(HEIGHT, WIDTH)
    source = (3.0 + 0.01 * columns)[None, None]
    k = intrinsics().double()
    target = torch.eye(4, dtype=torch.float64)
    target[:3, 3] = torch.tensor([0.02, -0.01, 0.05])
    args = (source, k[None, None], torch.eye(4).double()[None, None], k[None], target[None])
    cfg = TargetDepthCfg()

    reference = estimate_guide_depth(*args, HEIGHT, WIDTH, cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = estimate_guide_depth(*args, HEIGHT, WIDTH, cfg)
    assert autocast.depth.dtype == torch.float32
    assert torch.equal(autocast.depth, reference.depth)
    assert torch.equal(autocast.valid, reference.valid)


def test_config_rejects_unknown_choice() -> None:
    with pytest.raises(ValueError, match="TargetDepthCfg.hole_fill"):
        TargetDepthCfg(hole_fill="nearest")
