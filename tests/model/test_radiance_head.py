"""Radiance head and view transformer: any sample count, masked views have no influence."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from gsnerf.model.feature_gather import GatheredFeatures
from gsnerf.model.radiance_head import RadianceHead, RadianceHeadCfg, position_encoding
from gsnerf.model.transformer import (
    EAGER_TOKEN_MAJOR_MAX_TOKENS,
    TokenTransformer,
    TransformerCfg,
    key_bias,
    masked_moments,
    math_attention_only,
    runs_token_major,
    sets_last_attention,
)

VIEWS, VOLUME, IMAGE, ANGLE = 4, 6, 5, 8


def features(rays: int, samples: int, seed: int = 0) -> GatheredFeatures:
    generator = torch.Generator().manual_seed(seed)
    shape = (1, rays, samples, VIEWS)
    return GatheredFeatures(
        volume=torch.randn(*shape, VOLUME, generator=generator),
        image=torch.randn(*shape, IMAGE, generator=generator),
        colours=torch.rand(*shape, 3, generator=generator),
        angle=torch.randn(*shape, ANGLE, generator=generator),
        in_frustum=torch.rand(*shape, generator=generator) > 0.2,
        visible=torch.rand(*shape, generator=generator) > 0.2,
    )


def head(ray_mixer: str = "attention", layers: int = 2) -> RadianceHead:
    torch.manual_seed(0)
    cfg = RadianceHeadCfg(transformer=TransformerCfg(layers=layers), ray_mixer=ray_mixer)
    return RadianceHead(cfg, VOLUME, IMAGE, ANGLE).eval()


def positions(rays: int, samples: int) -> torch.Tensor:
    return torch.linspace(0.1, 0.9, samples).expand(1, rays, samples)


def edit_views(gathered: GatheredFeatures, where: torch.Tensor, seed: int) -> GatheredFeatures:
    """The same features with new random values on the views selected by ``where``."""
    other = features(*gathered.in_frustum.shape[1:3], seed=seed)
    replaced = {
        name: torch.where(where[..., None], getattr(other, name), getattr(gathered, name))
        for name in ("volume", "image", "colours", "angle")
    }
    return dataclasses.replace(gathered, **replaced)


@pytest.mark.parametrize("samples", [1, 2, 4, 8, 128])
@pytest.mark.parametrize("ray_mixer", ["attention", "none"])
def test_any_sample_count_gives_finite_outputs_of_the_right_shape(
    samples: int, ray_mixer: str
) -> None:
    gathered = features(3, samples)
    mask = gathered.in_frustum | ~gathered.in_frustum.any(dim=-1, keepdim=True)
    with torch.no_grad():
        output = head(ray_mixer)(gathered, mask, positions(3, samples))
    assert output.density.shape == (1, 3, samples)
    assert output.rgb.shape == (1, 3, samples, 3)
    assert torch.isfinite(output.density).all() and (output.density >= 0).all()
    # Blends of colours in [0, 1] with weights that sum to 1 over the attended views only.
    assert torch.allclose(output.blend_weights.sum(-1), torch.ones(1, 3, samples), atol=1e-6)
    assert (output.blend_weights[~mask] == 0).all()
    assert (output.rgb >= 0).all() and (output.rgb <= 1).all()


@pytest.mark.parametrize("ray_mixer", ["attention", "none"])
def test_masked_views_do_not_change_density_or_colour(ray_mixer: str) -> None:
    gathered = features(3, 5)
    mask = torch.zeros(1, 3, 5, VIEWS, dtype=torch.bool)
    mask[..., 0] = True
    mask[:, 1, :, 2] = True
    model = head(ray_mixer)
    edited = edit_views(gathered, ~mask, seed=7)
    with torch.no_grad():
        before = model(gathered, mask, positions(3, 5))
        after = model(edited, mask, positions(3, 5))
    assert torch.allclose(before.density, after.density, atol=1e-6)
    assert torch.allclose(before.rgb, after.rgb, atol=1e-6)
    # One attended view: the colour is that view's colour.
    assert torch.allclose(before.rgb[0, 0], gathered.colours[0, 0, :, 0], atol=1e-6)


def test_the_viewing_angle_steers_the_blend_and_nothing_else() -> None:
    # The angle between the target ray and each source ray enters only the blending weights
    # (spec 2.6): new angles at one sample change its weights and colour, not the density.
    gathered = features(2, 3)
    mask = torch.ones(1, 2, 3, VIEWS, dtype=torch.bool)
    angle = gathered.angle.clone()
    angle[0, 0, 0] = torch.randn(VIEWS, ANGLE, generator=torch.Generator().manual_seed(5))
    turned = dataclasses.replace(gathered, angle=angle)
    model = head()
    with torch.no_grad():
        before = model(gathered, mask, positions(2, 3))
        after = model(turned, mask, positions(2, 3))
    assert (before.blend_weights[0, 0, 0] - after.blend_weights[0, 0, 0]).abs().max() > 1e-3
    assert not torch.allclose(before.rgb[0, 0, 0], after.rgb[0, 0, 0], atol=1e-4)
    torch.testing.assert_close(before.density, after.density, rtol=0, atol=1e-6)
    torch.testing.assert_close(before.blend_weights[0, 1], after.blend_weights[0, 1])


def test_rays_are_independent_and_samples_of_a_ray_interact() -> None:
    gathered = features(2, 6)
    mask = torch.ones(1, 2, 6, VIEWS, dtype=torch.bool)
    # Change the first sample of the first ray only.
    where = torch.zeros_like(mask)
    where[0, 0, 0] = True
    edited = edit_views(gathered, where, seed=3)
    results = {}
    for ray_mixer in ("attention", "none"):
        model = head(ray_mixer)
        with torch.no_grad():
            before = model(gathered, mask, positions(2, 6)).density
            after = model(edited, mask, positions(2, 6)).density
        assert torch.equal(before[0, 1], after[0, 1])
        results[ray_mixer] = (before[0, 0, 1:] - after[0, 0, 1:]).abs().max()
    assert results["attention"] > 1e-4
    assert results["none"] == 0


def test_transformer_ignores_masked_keys() -> None:
    torch.manual_seed(0)
    model = TokenTransformer(TransformerCfg(layers=3)).eval()
    tokens = torch.randn(2, 5, 32)
    mask = torch.tensor([[1, 1, 0, 1, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    edited = tokens.clone()
    edited[~mask] = torch.randn(int((~mask).sum()), 32)
    with torch.no_grad():
        before, after = model(tokens, mask), model(edited, mask)
    assert torch.allclose(before[mask], after[mask], atol=1e-6)
    # The attended tokens do change when an attended key changes.
    edited[0, 1] += 1.0
    with torch.no_grad():
        assert not torch.allclose(model(edited, mask)[0, 0], before[0, 0], atol=1e-4)


def test_sets_last_attention_equals_the_library_kernel() -> None:
    torch.manual_seed(0)
    query, key, value = torch.randn(3, 6, 4, 9, 8).unbind(0)  # n h t c
    mask = torch.rand(6, 9) > 0.5
    mask[:, 0] = True
    mask[1] = False
    mask[1, 4] = True  # one attended key: every query copies its value
    expected = F.scaled_dot_product_attention(query, key, value, attn_mask=mask[:, None, None])

    def sets_last(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.permute(1, 3, 2, 0)  # n h t c -> h c t n

    bias = key_bias(mask, query.dtype)
    assert bias[0, 1] == -torch.inf and bias[4, 1] == 0
    attended = sets_last_attention(*map(sets_last, (query, key, value)), bias)
    attended = attended.permute(3, 0, 2, 1)  # h c t n -> n h t c
    torch.testing.assert_close(attended, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(attended[1], value[1, :, 4:5].expand(4, 9, 8))
    unmasked = sets_last_attention(*map(sets_last, (query, key, value)), None)
    expected = F.scaled_dot_product_attention(query, key, value)
    torch.testing.assert_close(unmasked.permute(3, 0, 2, 1), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("masked", [True, False])
def test_token_major_blocks_equal_the_eager_blocks(masked: bool) -> None:
    torch.manual_seed(1)
    transformer = TokenTransformer(TransformerCfg(width=16, heads=2, layers=2, ffn_width=24))
    tokens = torch.randn(7, 5, 16)
    mask = torch.rand(7, 5) > 0.4
    mask[:, 2] = True
    mask = mask if masked else None
    with torch.no_grad():
        # The sets-first blocks with the library's attention kernel (the training path).
        expected = tokens
        for block in transformer.blocks:
            expected = block(expected, mask)
        # Token-major rows: the first token of every set, then every second token, ...
        rows = tokens.transpose(0, 1).reshape(35, 16)
        for block in transformer.blocks:
            bias = None if mask is None else key_bias(mask, rows.dtype)
            rows = block.forward_token_major(rows, bias, 5)
        # In inference the transformer itself runs token-major.
        whole = transformer(tokens, mask)
    torch.testing.assert_close(rows.reshape(5, 7, 16).transpose(0, 1), expected)
    torch.testing.assert_close(whole, expected)


def test_token_major_runs_for_short_sets_in_inference() -> None:
    short = torch.zeros(3, EAGER_TOKEN_MAJOR_MAX_TOKENS, 8)
    long = torch.zeros(3, EAGER_TOKEN_MAJOR_MAX_TOKENS + 1, 8)
    with torch.no_grad():
        assert runs_token_major(short)
        assert not runs_token_major(long)
    # Training keeps the library kernel: autograd would keep every unrolled term.
    assert not runs_token_major(short)


def test_short_sets_on_cuda_use_the_math_attention_backend() -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert math_attention_only(cuda, 9)
    assert math_attention_only(cuda, EAGER_TOKEN_MAJOR_MAX_TOKENS)
    assert not math_attention_only(cuda, EAGER_TOKEN_MAJOR_MAX_TOKENS + 1)
    assert not math_attention_only(cpu, 9)


def test_math_backend_training_gives_the_library_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    # What CUDA training runs for short sets, tried on the CPU: the same loss and gradients.
    import gsnerf.model.transformer as transformer_module

    torch.manual_seed(3)
    transformer = TokenTransformer(TransformerCfg(width=16, heads=2, layers=2, ffn_width=16))
    tokens = torch.randn(64, 9, 16)
    mask = torch.rand(64, 9) > 0.3
    mask[:, 0] = True
    results, asked = [], []
    for only_math in (False, True):

        def policy(*arguments: object, only_math: bool = only_math) -> bool:
            asked.append(arguments)
            return only_math

        monkeypatch.setattr(transformer_module, "math_attention_only", policy)
        transformer.zero_grad()
        loss = transformer(tokens, mask).square().mean()
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in transformer.parameters()]))
    # Every block asked, once per pass, with the device and the set length.
    assert asked == [(torch.device("cpu"), 9)] * 4
    (library_loss, library_grads), (math_loss, math_grads) = results
    torch.testing.assert_close(math_loss, library_loss)
    for math_grad, library_grad in zip(math_grads, library_grads):
        torch.testing.assert_close(math_grad, library_grad, atol=1e-6, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_training_gradients_on_cuda_match_the_cpu() -> None:
    # Sets of 9 tokens of 8 channels per head, as in the paper model's view transformer.
    torch.manual_seed(2)
    transformer = TokenTransformer(TransformerCfg(width=32, heads=4, layers=2, ffn_width=32))
    tokens = torch.randn(4096, 9, 32)
    mask = torch.rand(4096, 9) > 0.3
    mask[:, 0] = True
    transformer(tokens, mask).square().mean().backward()
    expected = [parameter.grad.clone() for parameter in transformer.parameters()]
    transformer.zero_grad()
    transformer.cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = transformer(tokens.cuda(), mask.cuda()).float().square().mean()
    loss.backward()
    for parameter, reference in zip(transformer.parameters(), expected):
        gradient = parameter.grad.cpu()
        assert torch.isfinite(gradient).all()
        assert (gradient - reference).norm() <= 0.05 * reference.norm()


def test_masked_moments_and_position_encoding() -> None:
    values = torch.tensor([[[1.0], [3.0], [100.0]]])
    mask = torch.tensor([[True, True, False]])
    assert torch.allclose(masked_moments(values, mask), torch.tensor([[2.0, 1.0]]))
    encoding = position_encoding(torch.tensor([0.5]), frequencies=2)
    assert torch.allclose(encoding, torch.tensor([[0.5, 1.0, 0.0, 0.0, -1.0]]), atol=1e-6)
