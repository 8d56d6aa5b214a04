"""Semantic head: every token mode, masked views ignored, samples independent, signed logits."""

import pytest
import torch

from gsnerf.model.semantic_head import SemanticHead, SemanticHeadCfg, SemanticTokens
from gsnerf.model.transformer import TransformerCfg

VIEWS, CHANNELS, CLASSES = 3, 18, 5
MODES = [mode.value for mode in SemanticTokens]


def head(tokens: str) -> SemanticHead:
    torch.manual_seed(0)
    cfg = SemanticHeadCfg(transformer=TransformerCfg(width=16, heads=2, layers=2), tokens=tokens)
    return SemanticHead(cfg, CHANNELS, CLASSES).eval()


def inputs(rays: int, samples: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    shape = (1, rays, samples, VIEWS)
    features = torch.randn(*shape, CHANNELS, generator=generator)
    in_frustum = torch.rand(*shape, generator=generator) > 0.3
    visible = torch.rand(*shape, generator=generator) > 0.3
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[..., 0] = True
    mask[..., 1] = in_frustum[..., 1]
    return features, in_frustum, visible, mask


@pytest.mark.parametrize("tokens", MODES)
@pytest.mark.parametrize("samples", [1, 4])
def test_logits_per_sample_are_finite_and_signed(tokens: str, samples: int) -> None:
    features, in_frustum, visible, mask = inputs(8, samples)
    with torch.no_grad():
        logits = head(tokens)(features, in_frustum, visible, mask)
    assert logits.shape == (1, 8, samples, CLASSES)
    assert torch.isfinite(logits).all()
    # No ReLU on the output (spec 7.15): cross-entropy needs negative logits too.
    assert (logits < 0).any() and (logits > 0).any()


@pytest.mark.parametrize("tokens", MODES)
def test_masked_views_do_not_change_the_logits(tokens: str) -> None:
    features, in_frustum, visible, mask = inputs(4, 3)
    other = torch.randn(features.shape, generator=torch.Generator().manual_seed(9))
    edited = torch.where(mask[..., None], features, other)
    model = head(tokens)
    with torch.no_grad():
        before = model(features, in_frustum, visible, mask)
        after = model(edited, in_frustum, visible, mask)
    assert torch.allclose(before, after, atol=1e-6)


@pytest.mark.parametrize("tokens", MODES)
def test_each_sample_depends_on_its_own_features_only(tokens: str) -> None:
    features, in_frustum, visible, mask = inputs(2, 3)
    edited = features.clone()
    edited[0, 0, 0] += 1.0
    model = head(tokens)
    with torch.no_grad():
        before = model(features, in_frustum, visible, mask)
        after = model(edited, in_frustum, visible, mask)
    assert not torch.allclose(before[0, 0, 0], after[0, 0, 0], atol=1e-4)
    assert torch.equal(before[0, 0, 1:], after[0, 0, 1:])
    assert torch.equal(before[0, 1], after[0, 1])


def test_views_mode_has_no_global_token() -> None:
    assert not hasattr(head("views"), "global_embed")
    assert hasattr(head("global_only"), "global_embed")


def test_unknown_choices_are_rejected_with_the_field_name() -> None:
    with pytest.raises(ValueError, match="SemanticHeadCfg.tokens"):
        SemanticHeadCfg(tokens="only_global")
    with pytest.raises(ValueError, match="SemanticHeadCfg.rendering"):
        SemanticHeadCfg(rendering="middle")


@pytest.mark.parametrize("tokens", MODES)
def test_masked_views_count_as_absent(tokens: str) -> None:
    # A sample seen by one view among three masked ones has the logits of that view alone: the
    # masked views are out of the attention and of the view mean's count.
    features, in_frustum, visible, _ = inputs(4, 2)
    mask = torch.zeros(features.shape[:-1], dtype=torch.bool)
    mask[..., 0] = True
    model = head(tokens)
    with torch.no_grad():
        among = model(features, in_frustum, visible, mask)
        alone = model(features[..., :1, :], in_frustum[..., :1], visible[..., :1], mask[..., :1])
    torch.testing.assert_close(among, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tokens", ["views_and_global", "global_only"])
def test_the_global_token_is_always_attended(tokens: str) -> None:
    # Spec 2.6: the global token is a key for every query even where no view is attended, so
    # such a sample still gets logits (from the global token) rather than an empty attention.
    features, in_frustum, visible, _ = inputs(2, 2)
    nothing = torch.zeros(features.shape[:-1], dtype=torch.bool)
    with torch.no_grad():
        logits = head(tokens)(features, in_frustum, visible, nothing)
    assert torch.isfinite(logits).all()
