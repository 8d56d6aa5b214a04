"""Self-supervised depth losses on two views of a fronto-parallel textured plane.

Both views are rendered analytically: camera 1 is camera 0 moved ``BASELINE`` metres along x,
both look down +z at the plane ``z = PLANE_Z``, and a pixel's colour is a smooth texture
evaluated where its ray meets the plane. The true depth map is then ``PLANE_Z`` everywhere.
"""

import math

import kornia
import pytest
import torch

from gsnerf.losses.depth_self_supervised import (
    SelfSupervisedDepthCfg,
    guide_depth_loss,
    reconstruction_loss,
    self_supervised_depth_losses,
    smoothness_loss,
    ssim_loss,
    warp_to_reference,
)
from gsnerf.types import Views

HEIGHT, WIDTH, FOCAL = 48, 64, 40.0
PLANE_Z = 2.0
BASELINE = 0.37  # disparity FOCAL * BASELINE / PLANE_Z = 7.4 pixels, not an integer
LEVEL_SIZES = [(12, 16), (24, 32), (48, 64)]


def intrinsics(height: int = HEIGHT, width: int = WIDTH, focal: float = FOCAL) -> torch.Tensor:
    return torch.tensor(
        [[focal, 0.0, (width - 1) / 2], [0.0, focal, (height - 1) / 2], [0.0, 0.0, 1.0]]
    )


def pose(centre_x: float) -> torch.Tensor:
    matrix = torch.eye(4)
    matrix[0, 3] = centre_x
    return matrix


def render_plane(centre_x: float) -> torch.Tensor:
    """[3, h, w] image of the textured plane seen from a camera at (centre_x, 0, 0)."""
    rows, cols = torch.meshgrid(torch.arange(HEIGHT), torch.arange(WIDTH), indexing="ij")
    x_world = centre_x + (cols - (WIDTH - 1) / 2) / FOCAL * PLANE_Z
    y_world = (rows - (HEIGHT - 1) / 2) / FOCAL * PLANE_Z
    channels = [
        0.5
        + 0.2
        * torch.sin(2 * math.pi * x_world / 0.8 + phase)
        * torch.cos(2 * math.pi * y_world / 0.9)
        + 0.15 * torch.cos(2 * math.pi * x_world / 2.0 - phase)
        for phase in (0.0, 1.0, 2.0)
    ]
    return torch.stack(channels)


def plane_views() -> Views:
    return Views(
        images=torch.stack([render_plane(0.0), render_plane(BASELINE)])[None],
        intrinsics=intrinsics().expand(1, 2, 3, 3).clone(),
        cam_to_world=torch.stack([pose(0.0), pose(BASELINE)])[None],
        near=torch.full((1, 2), 0.1),
        far=torch.full((1, 2), 10.0),
        depths=None,
        labels=None,
        frame_ids=torch.tensor([[0, 1]]),
    )


NEIGHBOURS = torch.tensor([[[1], [0]]])


def constant_depths(value: float) -> list[torch.Tensor]:
    return [torch.full((1, 2, h, w), value) for h, w in LEVEL_SIZES]


def test_identical_cameras_warp_to_the_neighbour_image() -> None:
    image = torch.rand(1, 3, 6, 8)
    warped, valid = warp_to_reference(
        image,
        torch.full((1, 6, 8), 3.0),
        intrinsics(6, 8)[None],
        pose(0.0)[None],
        intrinsics(6, 8)[None],
        pose(0.0)[None],
    )
    assert valid.all()
    assert torch.allclose(warped, image, atol=1e-5)


def test_sideways_camera_warp_is_an_integer_shift() -> None:
    # Neighbour 0.25 m to the right, depth 2, focal 16: x_nb = x_ref - 16 * 0.25 / 2 = x_ref - 2.
    image = torch.rand(1, 3, 6, 8)
    warped, valid = warp_to_reference(
        image,
        torch.full((1, 6, 8), 2.0),
        intrinsics(6, 8, 16.0)[None],
        pose(0.0)[None],
        intrinsics(6, 8, 16.0)[None],
        pose(0.25)[None],
    )
    assert not valid[..., :2].any() and valid[..., 2:].all()
    assert torch.allclose(warped[..., 2:], image[..., :-2], atol=1e-5)
    assert torch.equal(warped[..., :2], torch.zeros(1, 3, 6, 2))


def test_reconstruction_takes_the_per_pixel_minimum_over_neighbours() -> None:
    reference = torch.rand(1, 1, 3, 4, 8)
    # Neighbour 1: off by 0.1 on the left half, 0.3 on the right; neighbour 2: off by 0.2.
    offset_1 = torch.tensor([0.1] * 4 + [0.3] * 4)
    warped = torch.stack([reference + offset_1, reference + 0.2], dim=2)
    valid = torch.ones(1, 1, 2, 4, 8, dtype=torch.bool)
    loss = reconstruction_loss(warped, valid, reference, gradient_weight=0.5, beta=1.0)
    # SL1 (beta 1) of an offset e is e^2 / 2, weighted 0.5 for colour. Left columns 0-2 pick
    # neighbour 1 (0.0025); the seam column 3 has neighbour 1's x-gradient error 0.2
    # (0.0025 + 0.01 = 0.0125) against neighbour 2's 0.01; columns 4-7 pick neighbour 2 (0.01).
    expected = (3 * 0.0025 + 5 * 0.01) / 8
    assert torch.allclose(loss, torch.tensor([[expected]]), rtol=1e-4)


def test_reconstruction_uses_each_pixel_where_some_neighbour_is_valid() -> None:
    reference = torch.rand(1, 1, 3, 4, 8)
    valid = torch.zeros(1, 1, 2, 4, 8, dtype=torch.bool)
    valid[:, :, 0, :, :4] = True
    valid[:, :, 1, :, 4:] = True
    # Each neighbour agrees with the reference where it is valid and is garbage elsewhere.
    warped = torch.where(valid[:, :, :, None], reference[:, :, None], torch.ones(1))
    loss = reconstruction_loss(warped, valid, reference, 0.5, 1.0)
    assert torch.allclose(loss, torch.zeros(1, 1), atol=1e-7)
    nothing_valid = reconstruction_loss(warped, torch.zeros_like(valid), reference, 0.5, 1.0)
    assert nothing_valid.item() == 0.0


def test_ssim_excludes_windows_that_touch_invalid_pixels() -> None:
    reference = torch.rand(1, 1, 3, 8, 8)
    valid = torch.ones(1, 1, 1, 8, 8, dtype=torch.bool)
    valid[..., :3] = False
    warped = torch.where(valid[:, :, :, None], reference[:, :, None], torch.zeros(1))
    assert ssim_loss(warped, valid, reference, window=3).item() < 1e-6
    assert ssim_loss(warped, torch.ones_like(valid), reference, window=3).item() > 0.05


def test_smoothness_is_zero_for_constant_depth_and_matches_kornia() -> None:
    images = torch.rand(1, 2, 3, 5, 7)
    assert torch.equal(smoothness_loss(torch.full((1, 2, 5, 7), 1.7), images), torch.zeros(1, 2))
    depth = torch.rand(1, 2, 5, 7) + 0.5
    normalised = depth / depth.mean((-2, -1), keepdim=True)
    expected = kornia.losses.inverse_depth_smoothness_loss(normalised[0, :, None], images[0])
    assert torch.isclose(smoothness_loss(depth, images).mean(), expected)
    # Mean normalisation: scaling the depth does not change the loss.
    assert torch.allclose(smoothness_loss(3.0 * depth, images), smoothness_loss(depth, images))


@pytest.mark.parametrize("scale", [0.8, 1.3])
def test_true_plane_depth_explains_the_views_and_a_wrong_one_does_not(scale: float) -> None:
    cfg = SelfSupervisedDepthCfg()
    true_terms = self_supervised_depth_losses(
        cfg, constant_depths(PLANE_Z), plane_views(), NEIGHBOURS
    )
    wrong_terms = self_supervised_depth_losses(
        cfg, constant_depths(scale * PLANE_Z), plane_views(), NEIGHBOURS
    )
    # Measured: 2.5e-4 against 1.6e-2 (x1.3) for L_RC, 4.5e-3 against 0.46 for SSIM.
    assert true_terms["ssl_reconstruction"].item() < 1e-3
    assert wrong_terms["ssl_reconstruction"].item() > 20 * true_terms["ssl_reconstruction"].item()
    assert wrong_terms["ssl_ssim"].item() > 20 * true_terms["ssl_ssim"].item()
    assert true_terms["ssl_smoothness"].item() == 0.0
    assert wrong_terms["ssl_smoothness"].item() == 0.0


@pytest.mark.parametrize("scale", [0.9, 1.1])
def test_reconstruction_gradient_points_toward_the_true_depth(scale: float) -> None:
    depths = [depth.requires_grad_() for depth in constant_depths(scale * PLANE_Z)]
    terms = self_supervised_depth_losses(
        SelfSupervisedDepthCfg(), depths, plane_views(), NEIGHBOURS
    )
    (terms["ssl_reconstruction"] + terms["ssl_ssim"]).backward()
    for depth in depths:
        # A gradient step (minus the gradient) must move the depth toward PLANE_Z.
        assert (depth.grad.sum().item() > 0) == (scale > 1)


def test_view_reduction_sums_or_averages_the_reference_views() -> None:
    depths = constant_depths(1.2 * PLANE_Z)
    summed = self_supervised_depth_losses(
        SelfSupervisedDepthCfg(), depths, plane_views(), NEIGHBOURS
    )
    mean_cfg = SelfSupervisedDepthCfg(view_reduction="mean")
    averaged = self_supervised_depth_losses(mean_cfg, depths, plane_views(), NEIGHBOURS)
    for name, value in summed.items():
        assert torch.isclose(value, 2 * averaged[name])


def test_guide_loss_uses_valid_guides_only_and_does_not_move_the_guide() -> None:
    rendered = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    guide = torch.tensor([[1.5, 0.0, 5.0]], requires_grad=True)
    loss = guide_depth_loss(rendered, guide, torch.tensor([[True, True, False]]), beta=1.0)
    loss.backward()
    # Ray 1 has no guide (0), ray 2 is flagged invalid: only ray 0 counts, SL1(0.5) = 0.125.
    assert torch.isclose(loss, torch.tensor(0.125))
    assert guide.grad is None
    assert torch.allclose(rendered.grad, torch.tensor([[-0.5, 0.0, 0.0]]))


def test_level_count_must_match_the_level_weights() -> None:
    with pytest.raises(ValueError, match="level_weights has 3"):
        self_supervised_depth_losses(
            SelfSupervisedDepthCfg(), constant_depths(PLANE_Z)[1:], plane_views(), NEIGHBOURS
        )
