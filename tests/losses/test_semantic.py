"""Semantic cross-entropies against torch's weighted CE and hand-computed cases."""

import math

import pytest
import torch
import torch.nn.functional as F

from gsnerf.losses.semantic import (
    class_weight_tensor,
    ray_semantic_loss,
    source_semantic_loss,
    weighted_cross_entropy,
)

IGNORE = 255


def test_ray_loss_matches_torch_weighted_cross_entropy() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 7, 4, generator=generator)
    labels = torch.randint(4, (2, 7), generator=generator)
    labels[0, 2] = IGNORE
    labels[1, 5] = IGNORE
    weights = torch.tensor([0.8, 1.0, 2.0, 0.5])
    expected = F.cross_entropy(
        logits.reshape(-1, 4), labels.reshape(-1), weight=weights, ignore_index=IGNORE
    )
    assert torch.isclose(ray_semantic_loss(logits, labels, weights, IGNORE), expected)
    unweighted = F.cross_entropy(logits.reshape(-1, 4), labels.reshape(-1), ignore_index=IGNORE)
    assert torch.isclose(ray_semantic_loss(logits, labels, None, IGNORE), unweighted)


def test_source_loss_matches_torch_on_image_shaped_logits() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 3, 5, 4, 6, generator=generator)
    labels = torch.randint(5, (1, 3, 4, 6), generator=generator)
    labels[0, 1, :2] = IGNORE
    weights = torch.tensor([1.0, 0.5, 3.0, 1.0, 0.2])
    expected = F.cross_entropy(logits[0], labels[0], weight=weights, ignore_index=IGNORE)
    assert torch.isclose(source_semantic_loss(logits, labels, weights, IGNORE), expected)


def test_two_class_weighted_mean_by_hand() -> None:
    # Entry 0: logits (0, ln 3), label 0 -> p = 1/4, CE = ln 4. Entry 1: logits (0, 0),
    # label 1 -> CE = ln 2. Weights (1, 3): (1 ln 4 + 3 ln 2) / (1 + 3) = 5/4 ln 2.
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    labels = torch.tensor([0, 1])
    loss = weighted_cross_entropy(logits, labels, torch.tensor([1.0, 3.0]), IGNORE)
    assert torch.isclose(loss, torch.tensor(1.25 * math.log(2.0)))


@pytest.mark.parametrize("weights", [None, torch.tensor([1.0, 2.0, 0.5])])
def test_all_ignored_gives_zero_with_zero_gradient(weights: torch.Tensor | None) -> None:
    logits = torch.tensor([[[1e4, -1e4, 0.0], [-1e4, 1e4, 3.0]]], requires_grad=True)
    labels = torch.full((1, 2), IGNORE)
    loss = ray_semantic_loss(logits, labels, weights, IGNORE)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_labels_of_zero_weight_only_give_zero_not_nan() -> None:
    logits = torch.randn(4, 2, requires_grad=True)
    loss = weighted_cross_entropy(
        logits, torch.zeros(4, dtype=torch.int64), torch.tensor([0.0, 1.0]), IGNORE
    )
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(logits.grad).all()


def test_extreme_logits_stay_finite() -> None:
    logits = torch.tensor([[[1e4, -1e4], [-1e4, 1e4]]], requires_grad=True)
    labels = torch.tensor([[1, 1]])
    loss = ray_semantic_loss(logits, labels, None, IGNORE)
    loss.backward()
    # Ray 0 is wrong by 2e4 nats, ray 1 is right: mean CE = 1e4.
    assert torch.isclose(loss, torch.tensor(1e4))
    assert torch.isfinite(logits.grad).all()


def test_bf16_logits_are_computed_in_float32() -> None:
    logits = torch.randn(1, 6, 3).to(torch.bfloat16)
    labels = torch.tensor([[0, 1, 2, 0, 1, IGNORE]])
    loss = ray_semantic_loss(logits, labels, None, IGNORE)
    expected = F.cross_entropy(logits.float()[0], labels[0], ignore_index=IGNORE)
    assert loss.dtype == torch.float32
    assert torch.isclose(loss, expected)


def test_class_weights_of_the_wrong_length_are_rejected() -> None:
    assert class_weight_tensor(None, 3, torch.device("cpu")) is None
    weights = class_weight_tensor([1.0, 0.5, 2.0], 3, torch.device("cpu"))
    assert torch.equal(weights, torch.tensor([1.0, 0.5, 2.0]))
    with pytest.raises(ValueError, match="loss.class_weights has 2 entries"):
        class_weight_tensor([1.0, 1.0], 3, torch.device("cpu"))
    with pytest.raises(ValueError, match="non-negative"):
        class_weight_tensor([1.0, -1.0, 1.0], 3, torch.device("cpu"))
