"""FeatureNet: output shapes, heads, mode independence and offline pretrained trunks."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torchvision
from torch.nn import GroupNorm
from torchvision.ops.misc import FrozenBatchNorm2d

from gsnerf.model.feature_net import FeatureNet, FeatureNetCfg

TINY = FeatureNetCfg(
    stem_width=4,
    encoder_widths=[8, 8, 16, 16],
    decoder_widths=[16, 8, 8, 8],
    pyramid_widths=[16, 8, 4],
)
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def test_unet_outputs_pyramid_semantics_and_logits_at_their_resolutions() -> None:
    torch.manual_seed(0)
    net = FeatureNet(TINY, num_classes=5)
    out = net(torch.rand(2, 3, 32, 48))

    assert [tuple(level.shape) for level in out.pyramid] == [
        (2, 16, 8, 12),
        (2, 8, 16, 24),
        (2, 4, 32, 48),
    ]
    assert out.semantic_features.shape == (2, 5, 32, 48)
    assert out.semantic_logits.shape == (2, 5, 32, 48)
    assert net.image_channels == 4 and net.semantic_channels == 5


def test_group_norms_hold_the_configured_channels_per_group() -> None:
    # GroupNorm by channels per group (4), not by a fixed group count: widths 8 and 16 get 2 and
    # 4 groups; a width that 4 does not divide (6) takes their largest common divisor, 2 channels
    # in each of 3 groups.
    net = FeatureNet(replace(TINY, stem_width=6), num_classes=5)
    norms = {(m.num_channels, m.num_groups) for m in net.modules() if isinstance(m, GroupNorm)}
    assert norms == {(6, 3), (8, 2), (16, 4)}


def test_logits_are_a_one_by_one_conv_of_the_semantic_features() -> None:
    torch.manual_seed(1)
    cfg = replace(TINY, semantic_channels=6)
    net = FeatureNet(cfg, num_classes=3)
    out = net(torch.rand(1, 3, 16, 16))

    weight = net.logits_head.weight[:, :, 0, 0]
    expected = torch.einsum("kc,bchw->bkhw", weight, out.semantic_features)
    expected = expected + net.logits_head.bias.view(1, 3, 1, 1)
    assert out.semantic_features.shape == (1, 6, 16, 16)
    torch.testing.assert_close(out.semantic_logits, expected)


def test_odd_sizes_below_one_sixteenth_still_give_exact_pyramid_sizes() -> None:
    # 36 x 44: the 1/16 map is 3 x 3 (rounded up); the decoder resizes to each skip.
    net = FeatureNet(TINY, num_classes=2)
    out = net(torch.rand(1, 3, 36, 44))
    assert [tuple(level.shape[-2:]) for level in out.pyramid] == [(9, 11), (18, 22), (36, 44)]


def test_train_and_eval_modes_give_identical_outputs() -> None:
    torch.manual_seed(2)
    net = FeatureNet(TINY, num_classes=4)
    images = torch.rand(3, 3, 32, 32)
    train_out = net.train()(images)
    eval_out = net.eval()(images)
    torch.testing.assert_close(train_out.semantic_logits, eval_out.semantic_logits, rtol=0, atol=0)
    for train_level, eval_level in zip(train_out.pyramid, eval_out.pyramid):
        torch.testing.assert_close(train_level, eval_level, rtol=0, atol=0)


def save_random_weights(builder, path: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    model = builder(weights=None)
    # Non-trivial BatchNorm statistics, so that freezing them is visible in the outputs.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    state = model.state_dict()
    torch.save(state, path)
    return state


@pytest.mark.parametrize(
    ("encoder", "builder", "stage_of_1_16"),
    [
        ("mobilenet_v3_small", torchvision.models.mobilenet_v3_small, lambda m: m.features[:9]),
        (
            "resnet18",
            torchvision.models.resnet18,
            lambda m: torch.nn.Sequential(
                m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3
            ),
        ),
    ],
    ids=["mobilenet_v3_small", "resnet18"],
)
def test_pretrained_trunk_loads_a_local_state_dict_and_normalises_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encoder, builder, stage_of_1_16
) -> None:
    def no_download(*args, **kwargs):
        raise AssertionError("a weights download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    path = tmp_path / f"{encoder}.pth"
    state = save_random_weights(builder, path)
    cfg = replace(TINY, encoder=encoder, pretrained_weights=str(path))
    net = FeatureNet(cfg, num_classes=3)
    images = torch.rand(2, 3, 32, 48)

    # The 1/16 trunk output equals torchvision's eval-mode model on ImageNet-normalised images.
    reference = builder(weights=None)
    reference.load_state_dict(state)
    reference.eval()
    with torch.no_grad():
        expected = stage_of_1_16(reference)((images - IMAGENET_MEAN) / IMAGENET_STD)
        got = net.trunk(images)[3]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert any(isinstance(m, FrozenBatchNorm2d) for m in net.trunk.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.trunk.modules())

    # Same outputs in both modes, and gradients reach every trainable parameter.
    out = net.train()(images)
    eval_out = net.eval()(images)
    torch.testing.assert_close(out.semantic_logits, eval_out.semantic_logits, rtol=0, atol=0)
    loss = out.semantic_logits.square().mean() + sum(level.square().mean() for level in out.pyramid)
    loss.backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_missing_weights_file_says_where_to_put_it(tmp_path: Path) -> None:
    missing = tmp_path / "resnet18.pth"
    cfg = replace(TINY, encoder="resnet18", pretrained_weights=str(missing))
    with pytest.raises(FileNotFoundError) as error:
        FeatureNet(cfg, num_classes=3)
    message = str(error.value)
    assert str(missing) in message
    assert "cannot be downloaded" in message
    assert "resnet18-f37072fd.pth" in message


def test_wrong_state_dict_and_bad_choices_raise_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "mobilenet.pth"
    save_random_weights(torchvision.models.mobilenet_v3_small, path)
    wrong = replace(TINY, encoder="resnet18", pretrained_weights=str(path))
    with pytest.raises(ValueError, match="not a torchvision 'resnet18' state dict"):
        FeatureNet(wrong, num_classes=3)
    with pytest.raises(ValueError, match="trained from scratch"):
        FeatureNet(FeatureNetCfg(pretrained_weights=str(path)), num_classes=3)
    with pytest.raises(ValueError, match="mobilenet_v3_small"):
        FeatureNet(FeatureNetCfg(encoder="vgg"), num_classes=3)
    with pytest.raises(ValueError, match="pyramid_widths"):
        FeatureNet(FeatureNetCfg(pyramid_widths=[8, 8]), num_classes=3)
