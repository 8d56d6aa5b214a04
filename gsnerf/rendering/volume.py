"""Alpha compositing along rays (spec 2.8), as pure functions.

For sorted sample distances ``t_0 < ... < t_{S-1}`` with densities ``sigma_i`` (1/metre):

    delta_i = t_{i+1} - t_i,   delta_{S-1} = far - t_{S-1}       (sample_intervals)
    alpha_i = 1 - exp(-sigma_i delta_i)                          (alphas_from_density)
    T_i     = prod_{j<i} (1 - alpha_j),  T_0 = 1                 (transmittance)
    w_i     = T_i alpha_i                                        (render_weights)
    C = sum_i w_i c_i,  D = sum_i w_i t_i,  opacity = sum_i w_i  (composite, composite_depth)

The reference uses ``alpha_i = 1 - exp(-sigma_i)`` without the interval (spec 7.13), which makes
the density depend on the number of samples; it is not copied here.

Worked example: t = (1, 2, 4), far = 5, sigma = (0, ln 2, ln 2 / 2) -> delta = (1, 2, 1),
alpha = (0, 3/4, 1 - 2^-1/2), T = (1, 1, 1/4), w = (0, 3/4, (1 - 2^-1/2)/4 = 0.0732).
"""

from enum import Enum

import torch
from jaxtyping import Float
from torch import Tensor


class DepthNormalisation(str, Enum):
    """How the composited depth treats rays whose weights do not sum to 1."""

    # D = sum_i w_i t_i: missing opacity pulls the depth toward 0 (the reference, spec 2.8).
    NONE = "none"
    # D = sum_i w_i t_i / sum_i w_i: the expected distance given that the ray terminates.
    OPACITY = "opacity"


def sample_intervals(
    depths: Float[Tensor, "*batch samples"], far: Float[Tensor, "*batch"]
) -> Float[Tensor, "*batch samples"]:
    """Length of the interval each sample stands for: up to the next sample, the last up to far.

    The last interval matters when there are few samples: with 4 samples packed around a
    surface, the space behind the last one up to ``far`` is still part of the ray, and a ray that
    has not terminated by then is absorbed there, in proportion to the last density. Pass
    ``far = depths[..., -1] + c`` for a constant last interval ``c`` instead. Intervals are
    clamped at 0 (a sample clamped onto far gets an empty interval).
    Example: depths (1, 2, 4), far 5 -> (1, 2, 1).
    """
    ends = torch.cat([depths[..., 1:], far[..., None]], dim=-1)
    return (ends - depths).clamp_min(0.0)


def alphas_from_density(
    sigma: Float[Tensor, "*batch samples"], deltas: Float[Tensor, "*batch samples"]
) -> Float[Tensor, "*batch samples"]:
    """Opacity of each interval, ``alpha = 1 - exp(-sigma delta)``.

    Computed as ``-expm1(-sigma delta)``, exact for small products; the gradient
    ``delta exp(-sigma delta)`` is finite for sigma = 0 and goes to 0 for very large sigma.
    Example: sigma = ln 2, delta = 2 -> alpha = 3/4.
    """
    return -torch.expm1(-sigma * deltas)


def transmittance(alphas: Float[Tensor, "*batch samples"]) -> Float[Tensor, "*batch samples"]:
    """Light reaching each sample, the exclusive product ``T_i = prod_{j<i} (1 - alpha_j)``.

    Example: alpha (0.5, 0.5, 0.5) -> T (1, 0.5, 0.25).
    """
    survive = torch.cumprod(1.0 - alphas, dim=-1)
    return torch.cat([torch.ones_like(survive[..., :1]), survive[..., :-1]], dim=-1)


def render_weights(alphas: Float[Tensor, "*batch samples"]) -> Float[Tensor, "*batch samples"]:
    """Contribution of each sample, ``w_i = T_i alpha_i``.

    Example: alpha (0.5, 0.5, 0.5) -> w (0.5, 0.25, 0.125).
    """
    return transmittance(alphas) * alphas


def composite(
    weights: Float[Tensor, "*batch samples"], values: Float[Tensor, "*batch samples channels"]
) -> Float[Tensor, "*batch channels"]:
    """Weighted sum of per-sample values (colour, semantic logits), ``sum_i w_i v_i``.

    Example: w (0.5, 0.25), colours (red, blue) -> (0.5, 0, 0.25).
    """
    return (weights[..., None] * values).sum(dim=-2)


def opacity(weights: Float[Tensor, "*batch samples"]) -> Float[Tensor, "*batch"]:
    """Accumulated opacity ``sum_i w_i = 1 - T_S`` in [0, 1]. Example: w (0.5, 0.25) -> 0.75."""
    return weights.sum(dim=-1)


def composite_depth(
    weights: Float[Tensor, "*batch samples"],
    depths: Float[Tensor, "*batch samples"],
    normalisation: DepthNormalisation = DepthNormalisation.NONE,
    eps: float = 1e-10,
) -> Float[Tensor, "*batch"]:
    """Expected distance along the ray, ``sum_i w_i t_i``, optionally divided by the opacity.

    With ``OPACITY`` the sum is divided by ``max(opacity, eps)``, so a fully transparent ray
    gives 0 rather than NaN. Example: w (0.5, 0.25), t (2, 4) -> 2 (none) or 8/3 (opacity).
    """
    expected = (weights * depths).sum(dim=-1)
    if normalisation is DepthNormalisation.OPACITY:
        return expected / opacity(weights).clamp_min(eps)
    return expected
