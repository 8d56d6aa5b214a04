"""Colour loss of the rendered target rays (spec 3.1).

``L_image = mean over rays and channels of (c_hat - c)^2``: the plain MSE, not a sum, as the
reference does. It is computed in float32 whatever the input dtype.
"""

from jaxtyping import Float
from torch import Tensor


def image_loss(
    predicted: Float[Tensor, "b rays 3"], target: Float[Tensor, "b rays 3"]
) -> Float[Tensor, ""]:
    """Mean squared error over every ray and colour channel.

    Example: one ray, predicted ``(0.5, 0, 1)``, target ``(0, 0, 0)`` ->
    ``(0.25 + 0 + 1) / 3 = 0.41667``.
    """
    return (predicted.float() - target.float()).square().mean()
