"""How evaluation adds up its views: per scene and overall, from hand-made renders."""

from types import SimpleNamespace

import pytest
import torch

from gsnerf.evaluation.evaluator import SceneScores, _score_view

SIZE = 8


def _view(error: float, guide: torch.Tensor, guide_valid: torch.Tensor) -> tuple:
    """A target of black pixels at 2 m and a render off by ``error`` in every channel."""
    target = SimpleNamespace(
        images=torch.zeros(1, 1, 3, SIZE, SIZE),
        depths=torch.full((1, 1, SIZE, SIZE), 2.0),
        labels=None,
    )
    image = SimpleNamespace(
        rgb=torch.full((1, 3, SIZE, SIZE), error),
        depth=torch.full((1, SIZE, SIZE), 2.0),
        guide_depth=guide[None],
        guide_valid=guide_valid[None],
    )
    return SimpleNamespace(target=target), image


def test_image_scores_are_averaged_per_scene_and_over_all_views() -> None:
    exact = torch.full((SIZE, SIZE), 2.0)
    valid = torch.ones(SIZE, SIZE, dtype=torch.bool)
    # Errors 0.1, 0.01 and 0.1 give 20, 40 and 20 dB (MSE 1e-2, 1e-4, 1e-2).
    views = [("a", 0.1), ("b", 0.01), ("b", 0.1)]
    scenes = {"a": SceneScores(4, 255), "b": SceneScores(4, 255)}
    overall = SceneScores(4, 255)
    for scene, error in views:
        example, image = _view(error, exact, valid)
        _score_view(example, image, scenes[scene], overall, None, "no weights offline")
    assert scenes["a"].summary()["psnr"] == pytest.approx(20.0)
    assert scenes["b"].summary()["psnr"] == pytest.approx(30.0)
    # The mean of the views (26.7 dB), not their median (20) nor the mean of the scenes (25).
    assert overall.summary()["psnr"] == pytest.approx(80.0 / 3)
    assert overall.summary()["lpips"] is None
    assert overall.unavailable()["lpips"] == "no weights offline"


def test_a_views_guide_error_leaves_out_pixels_without_a_guide() -> None:
    # D_T is 2.2 m (abs rel 0.1) where valid; one invalid pixel holds a wrong 100 m.
    guide = torch.full((SIZE, SIZE), 2.2)
    valid = torch.ones(SIZE, SIZE, dtype=torch.bool)
    guide[0, 0], valid[0, 0] = 100.0, False
    example, image = _view(0.1, guide, valid)
    scores, overall = SceneScores(4, 255), SceneScores(4, 255)
    row = _score_view(example, image, scores, overall, None, "no weights offline")
    assert row["guide_abs_rel"] == pytest.approx(0.1)
    assert scores.summary()["guide_abs_rel"] == pytest.approx(0.1)
