"""Colour MSE against hand-computed values."""

import torch

from gsnerf.losses.photometric import image_loss


def test_image_loss_is_the_mean_over_rays_and_channels() -> None:
    predicted = torch.tensor([[[0.5, 0.0, 1.0], [0.2, 0.2, 0.2]]])
    target = torch.zeros(1, 2, 3)
    # (0.25 + 0 + 1 + 3 * 0.04) / 6 rays x channels.
    expected = 1.37 / 6
    assert torch.isclose(image_loss(predicted, target), torch.tensor(expected))


def test_image_loss_is_float32_for_bf16_inputs() -> None:
    predicted = torch.tensor([[[0.5, 0.0, 1.0]]], dtype=torch.bfloat16)
    target = torch.tensor([[[0.0, 0.0, 0.0]]], dtype=torch.bfloat16)
    loss = image_loss(predicted, target)
    assert loss.dtype == torch.float32
    # 0.5 and 1.0 are exact in bf16, so the value is exact: (0.25 + 1) / 3.
    assert torch.isclose(loss, torch.tensor(1.25 / 3))


def test_image_loss_gradient_is_the_mse_derivative() -> None:
    predicted = torch.tensor([[[0.5, 0.0, 1.0]]], requires_grad=True)
    image_loss(predicted, torch.zeros(1, 1, 3)).backward()
    # d/dp mean((p - t)^2) = 2 (p - t) / 3.
    assert torch.allclose(predicted.grad, torch.tensor([[[1.0, 0.0, 2.0]]]) / 3)
