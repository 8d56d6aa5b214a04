"""Volume rendering against hand-computed transmittance and weights."""

import math

import pytest
import torch

from gsnerf.rendering.volume import (
    DepthNormalisation,
    alphas_from_density,
    composite,
    composite_depth,
    opacity,
    render_weights,
    sample_intervals,
    transmittance,
)


def test_three_samples_by_hand() -> None:
    # Samples at t = 1, 1.5, 2.5 with far = 3: intervals 0.5, 1.0, 0.5 (the last one to far).
    depths = torch.tensor([[1.0, 1.5, 2.5]])
    far = torch.tensor([3.0])
    sigma = torch.tensor([[0.5, 1.0, 2.0]])
    # sigma * delta = 0.25, 1.0, 1.0.
    expected_deltas = [0.5, 1.0, 0.5]
    # alpha = 1 - exp(-sigma delta) = 0.221199, 0.632121, 0.632121.
    expected_alphas = [1 - math.exp(-0.25), 1 - math.exp(-1.0), 1 - math.exp(-1.0)]
    # T_0 = 1, T_1 = exp(-0.25) = 0.778801, T_2 = exp(-0.25 - 1.0) = 0.286505.
    expected_transmittance = [1.0, math.exp(-0.25), math.exp(-1.25)]
    # w = T alpha = 0.221199, 0.492296, 0.181106; they sum to 1 - exp(-2.25) = 0.894601.
    expected_weights = [t * a for t, a in zip(expected_transmittance, expected_alphas)]

    deltas = sample_intervals(depths, far)
    alphas = alphas_from_density(sigma, deltas)
    weights = render_weights(alphas)
    assert torch.allclose(deltas, torch.tensor([expected_deltas]))
    assert torch.allclose(alphas, torch.tensor([expected_alphas]))
    assert torch.allclose(transmittance(alphas), torch.tensor([expected_transmittance]))
    assert torch.allclose(weights, torch.tensor([expected_weights]))
    assert torch.allclose(weights, torch.tensor([[0.221199, 0.492296, 0.181106]]), atol=1e-6)
    assert opacity(weights).item() == pytest.approx(1 - math.exp(-2.25), abs=1e-5)

    # Red, green, blue samples composite to their weights.
    colours = torch.eye(3)[None]
    assert torch.allclose(composite(weights, colours), torch.tensor([expected_weights]))
    # Depth: 1 * 0.221199 + 1.5 * 0.492296 + 2.5 * 0.181106 = 1.412408, / 0.894601 = 1.578815.
    assert composite_depth(weights, depths).item() == pytest.approx(1.412408, abs=1e-5)
    normalised = composite_depth(weights, depths, DepthNormalisation.OPACITY)
    assert normalised.item() == pytest.approx(1.578815, abs=1e-5)


def test_transmittance_agrees_with_the_log_space_form() -> None:
    # T_i = exp(-sum_{j<i} sigma_j delta_j), the closed form of the exclusive product.
    generator = torch.Generator().manual_seed(0)
    sigma = 3.0 * torch.rand(4, 16, generator=generator, dtype=torch.float64)
    depths = torch.sort(5.0 * torch.rand(4, 16, generator=generator, dtype=torch.float64)).values
    deltas = sample_intervals(depths, torch.full((4,), 6.0, dtype=torch.float64))
    optical = sigma * deltas
    exclusive = torch.cumsum(optical, dim=-1) - optical
    expected = torch.exp(-exclusive)
    assert torch.allclose(transmittance(alphas_from_density(sigma, deltas)), expected)


def test_gradients_are_finite_for_zero_and_huge_density() -> None:
    depths = torch.tensor([[1.0, 2.0, 3.0, 3.0], [1.0, 1.1, 1.2, 1.3]])
    far = torch.tensor([3.0, 4.0])
    # Zero density, huge density, and a sample clamped onto far (empty last interval).
    sigma = torch.tensor([[0.0, 1e8, 0.0, 1e8], [0.0, 0.0, 0.0, 0.0]], requires_grad=True)
    colours = torch.rand(2, 4, 3, requires_grad=True)
    weights = render_weights(alphas_from_density(sigma, sample_intervals(depths, far)))
    depth = composite_depth(weights, depths, DepthNormalisation.OPACITY)
    loss = composite(weights, colours).sum() + depth.sum() + opacity(weights).sum()
    loss.backward()
    assert torch.isfinite(sigma.grad).all() and torch.isfinite(colours.grad).all()
    # The opaque sample takes all the weight; the transparent ray renders depth 0, not NaN.
    assert torch.allclose(weights[0], torch.tensor([0.0, 1.0, 0.0, 0.0]))
    assert depth.tolist() == [2.0, 0.0]


def test_single_sample_ray() -> None:
    # S = 1: one interval from t = 2 to far = 3, alpha = 1 - exp(-0.7).
    depths = torch.tensor([[2.0]])
    weights = render_weights(
        alphas_from_density(torch.tensor([[0.7]]), sample_intervals(depths, torch.tensor([3.0])))
    )
    assert torch.allclose(weights, torch.tensor([[1 - math.exp(-0.7)]]))
    assert torch.allclose(composite_depth(weights, depths), 2.0 * weights[:, 0])
    normalised = composite_depth(weights, depths, DepthNormalisation.OPACITY)
    assert torch.allclose(normalised, torch.tensor([2.0]))


def test_weight_gradients_match_finite_differences() -> None:
    depths = torch.tensor([[0.5, 1.0, 1.8, 2.0]], dtype=torch.float64)
    far = torch.tensor([2.5], dtype=torch.float64)
    sigma = torch.tensor([[0.3, 2.0, 0.0, 5.0]], dtype=torch.float64, requires_grad=True)

    def rendered_depth(density: torch.Tensor) -> torch.Tensor:
        weights = render_weights(alphas_from_density(density, sample_intervals(depths, far)))
        return composite_depth(weights, depths, DepthNormalisation.OPACITY)

    assert torch.autograd.gradcheck(rendered_depth, (sigma,))
