"""Supervised depth losses against hand-computed SmoothL1 values."""

import pytest
import torch
import torch.nn.functional as F

from gsnerf.losses.depth_supervised import (
    GtDownsample,
    downsample_depth,
    masked_smooth_l1,
    ray_depth_loss,
    source_depth_loss,
)


def test_two_by_two_map_averages_over_the_three_valid_pixels() -> None:
    predicted = torch.tensor([[[[1.0, 3.0], [2.5, 9.0]]]])
    gt = torch.tensor([[[[1.5, 1.0], [0.0, 2.0]]]])
    # SL1 (beta 1) of the errors 0.5, 2, 7 (the 0 is invalid): 0.125, 1.5, 6.5.
    expected = (0.125 + 1.5 + 6.5) / 3
    loss = source_depth_loss([predicted], gt, [1.0], beta=1.0, gt_downsample=GtDownsample.MIN_POOL)
    assert torch.isclose(loss, torch.tensor(expected))
    weighted = source_depth_loss([predicted], gt, [2.0], 1.0, GtDownsample.MIN_POOL)
    assert torch.isclose(weighted, torch.tensor(2 * expected))


def test_beta_sets_the_quadratic_zone() -> None:
    predicted = torch.tensor([[[[1.0, 3.0]]]])
    gt = torch.tensor([[[[1.5, 1.0]]]])
    # Beta 0.25: 0.5 -> 0.5 - 0.125 = 0.375; 2 -> 2 - 0.125 = 1.875.
    loss = source_depth_loss([predicted], gt, [1.0], beta=0.25, gt_downsample=GtDownsample.NEAREST)
    assert torch.isclose(loss, torch.tensor((0.375 + 1.875) / 2))


def gt_with_hole() -> torch.Tensor:
    gt = torch.full((1, 1, 4, 4), 2.0)
    gt[0, 0, 0, 0] = 0.0
    return gt


def three_levels() -> list[torch.Tensor]:
    fine = torch.full((1, 1, 4, 4), 2.0)
    fine[0, 0, 3, 3] = 4.0
    return [torch.full((1, 1, 1, 1), 3.0), torch.full((1, 1, 2, 2), 2.5), fine]


def test_level_weights_apply_coarse_to_fine_with_min_pooled_gt() -> None:
    # Min-pooled GT is 2 at every coarse pixel (the hole is skipped).
    # 1x1: SL1(1) = 0.5, x0.5. 2x2: SL1(0.5) = 0.125, x1. 4x4: one error of 2 (SL1 1.5)
    # over the 15 valid pixels = 0.1, x2.
    expected = 0.5 * 0.5 + 1.0 * 0.125 + 2.0 * 0.1
    loss = source_depth_loss(
        three_levels(), gt_with_hole(), [0.5, 1.0, 2.0], 1.0, GtDownsample.MIN_POOL
    )
    assert torch.isclose(loss, torch.tensor(expected))


def test_nearest_gt_loses_blocks_whose_corner_is_a_hole() -> None:
    # Nearest keeps each block's top-left pixel: the 1x1 level sees only the hole (no valid
    # pixel, 0), the 2x2 level keeps 3 valid blocks of SL1 0.125.
    expected = 0.0 + 1.0 * 0.125 + 2.0 * 0.1
    loss = source_depth_loss(
        three_levels(), gt_with_hole(), [0.5, 1.0, 2.0], 1.0, GtDownsample.NEAREST
    )
    assert torch.isclose(loss, torch.tensor(expected))


def test_downsample_modes_on_one_block() -> None:
    block = torch.tensor([[[0.0, 3.0], [2.0, 5.0]]])
    assert downsample_depth(block, 1, 1, GtDownsample.MIN_POOL).item() == 2.0
    assert downsample_depth(block, 1, 1, GtDownsample.NEAREST).item() == 0.0
    holes = torch.zeros(1, 4, 4)
    assert torch.equal(downsample_depth(holes, 2, 2, GtDownsample.MIN_POOL), torch.zeros(1, 2, 2))


def test_min_pool_equals_max_pool_of_the_negated_depth_without_holes() -> None:
    depth = torch.rand(2, 8, 12) + 0.5
    expected = -F.max_pool2d(-depth[:, None], 4)[:, 0]
    assert torch.equal(downsample_depth(depth, 2, 3, GtDownsample.MIN_POOL), expected)


def test_no_valid_gt_gives_zero_with_zero_gradient() -> None:
    predicted = torch.full((1, 2, 3, 3), 1e-3, requires_grad=True)
    loss = source_depth_loss(
        [predicted], torch.zeros(1, 2, 3, 3), [1.0], 1.0, GtDownsample.MIN_POOL
    )
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(predicted.grad, torch.zeros_like(predicted))


def test_ray_depth_averages_over_valid_rays_only() -> None:
    predicted = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    gt = torch.tensor([[1.5, 0.0, 0.0, 4.0]])
    # Valid rays 0 and 3: (0.125 + 0) / 2 (the reference would divide by all 4 rays).
    assert torch.isclose(ray_depth_loss(predicted, gt, beta=1.0), torch.tensor(0.0625))


def test_masked_smooth_l1_ignores_non_finite_invalid_entries() -> None:
    predicted = torch.tensor([1.0, 3.0, float("inf")], requires_grad=True)
    target = torch.tensor([1.5, 1.0, 0.0])
    loss = masked_smooth_l1(predicted, target, target > 0, beta=1.0)
    loss.backward()
    assert torch.isclose(loss, torch.tensor((0.125 + 1.5) / 2))
    assert torch.isfinite(predicted.grad).all()


def test_level_count_must_match_the_level_weights() -> None:
    with pytest.raises(ValueError, match="level_weights has 3 entries"):
        source_depth_loss(
            three_levels()[1:], gt_with_hole(), [0.5, 1.0, 2.0], 1.0, GtDownsample.MIN_POOL
        )
