"""PSNR by hand, SSIM against scikit-image, LPIPS against the lpips package (random trunk)."""

import math
import subprocess
import sys
import warnings

import lpips
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from gsnerf.evaluation.image_quality import (
    LpipsBackbone,
    LpipsMetric,
    psnr,
    ssim,
    vgg16_weight_path,
)


def _images(seed: int, height: int = 16, width: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    gt = torch.rand(3, height, width, generator=generator)
    noise = 0.1 * torch.randn(3, height, width, generator=generator)
    return (gt + noise).clamp(0, 1), gt


def _half_mask(height: int = 16, width: int = 20) -> torch.Tensor:
    mask = torch.ones(height, width, dtype=torch.bool)
    mask[:, width // 2 :] = False
    return mask


def test_psnr_constant_error_of_a_tenth_is_20_db() -> None:
    gt = torch.full((3, 4, 5), 0.5)
    # MSE = 0.1^2 = 0.01 -> -10 log10(0.01) = 20 dB.
    assert psnr(gt + 0.1, gt) == pytest.approx(20.0)


def test_psnr_averages_only_masked_pixels() -> None:
    gt = torch.zeros(3, 2, 2)
    pred = torch.full((3, 2, 2), 0.1)
    pred[:, 1, 1] = 0.5
    mask = torch.ones(2, 2, dtype=torch.bool)
    mask[1, 1] = False
    # Masked: only the 0.1 errors remain -> 20 dB.
    assert psnr(pred, gt, mask) == pytest.approx(20.0)
    # Unmasked: MSE = (3 * 0.01 + 0.25) / 4 = 0.07.
    assert psnr(pred, gt) == pytest.approx(-10 * math.log10(0.07))


def test_psnr_identical_images_is_infinite_and_empty_mask_is_an_error() -> None:
    image = torch.rand(3, 4, 4)
    assert psnr(image, image) == math.inf
    with pytest.raises(ValueError, match="mask"):
        psnr(image, image, torch.zeros(4, 4, dtype=torch.bool))


def test_ssim_matches_skimage_on_zero_filled_images() -> None:
    pred, gt = _images(seed=0)
    mask = _half_mask()
    # Paper protocol: invalid pixels set to 0 in both, the full images compared.
    pred_np = pred.permute(1, 2, 0).double().numpy() * mask.numpy()[..., None]
    gt_np = gt.permute(1, 2, 0).double().numpy() * mask.numpy()[..., None]
    expected = structural_similarity(pred_np, gt_np, channel_axis=2, data_range=1.0)
    assert ssim(pred, gt, mask) == pytest.approx(expected, abs=1e-12)
    unmasked = structural_similarity(
        pred.permute(1, 2, 0).double().numpy(),
        gt.permute(1, 2, 0).double().numpy(),
        channel_axis=2,
        data_range=1.0,
    )
    assert ssim(pred, gt) == pytest.approx(unmasked, abs=1e-12)
    assert ssim(pred, gt, mask) != pytest.approx(unmasked)


def test_ssim_is_one_when_images_differ_only_outside_the_mask() -> None:
    _, gt = _images(seed=1)
    mask = _half_mask()
    pred = torch.where(mask, gt, 1.0 - gt)
    assert ssim(gt, gt) == pytest.approx(1.0)
    assert ssim(pred, gt, mask) == pytest.approx(1.0)


def test_ssim_rejects_images_smaller_than_the_window() -> None:
    with pytest.raises(ValueError, match="window"):
        ssim(torch.rand(3, 6, 20), torch.rand(3, 6, 20))


def test_metrics_import_does_not_import_lpips() -> None:
    code = "import sys, gsnerf.evaluation.metrics; print('lpips' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_lpips_without_vgg16_weights_is_unavailable_and_builds_nothing(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert vgg16_weight_path() == tmp_path / "checkpoints" / "vgg16-397923af.pth"
    metric = LpipsMetric()
    result = metric(torch.rand(3, 8, 8), torch.rand(3, 8, 8))
    assert result.value is None
    assert "vgg16-397923af.pth" in result.unavailable_reason
    assert metric._networks == {}


def test_lpips_is_available_once_the_weight_file_is_in_the_hub_folder(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "vgg16-397923af.pth").touch()
    assert LpipsMetric().unavailable_reason() is None


@pytest.fixture(scope="module")
def random_trunk_lpips() -> tuple[LpipsMetric, lpips.LPIPS]:
    """The wrapper and the lpips package built from the same seed (random VGG16 trunk)."""
    metric = LpipsMetric(LpipsBackbone.RANDOM)
    torch.manual_seed(0)
    metric._network(torch.device("cpu"))
    torch.manual_seed(0)
    with warnings.catch_warnings():
        # The lpips package passes torchvision's deprecated ``pretrained`` flag.
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        direct = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False).eval()
    return metric, direct


def test_lpips_wrapper_matches_the_lpips_package_on_zero_masked_images(
    random_trunk_lpips: tuple[LpipsMetric, lpips.LPIPS],
) -> None:
    metric, direct = random_trunk_lpips
    pred, gt = _images(seed=2, height=32, width=32)
    mask = _half_mask(32, 32)
    with torch.no_grad():
        expected = direct((pred * mask) * 2 - 1, (gt * mask) * 2 - 1).item()
        unmasked = direct(pred * 2 - 1, gt * 2 - 1).item()
    assert metric(pred, gt, mask).value == pytest.approx(expected, rel=1e-5)
    assert metric(pred, gt).value == pytest.approx(unmasked, rel=1e-5)
    assert expected != pytest.approx(unmasked)


def test_lpips_is_zero_when_images_differ_only_outside_the_mask(
    random_trunk_lpips: tuple[LpipsMetric, lpips.LPIPS],
) -> None:
    metric, _ = random_trunk_lpips
    _, gt = _images(seed=3, height=32, width=32)
    mask = _half_mask(32, 32)
    pred = torch.where(mask, gt, 1.0 - gt)
    assert metric(pred, gt, mask).value == pytest.approx(0.0, abs=1e-7)
    assert metric(pred, gt).value > 1e-4
    np.testing.assert_equal(list(metric._networks), ["cpu"])


@pytest.mark.parametrize(
    ("backbone", "random_trunk"), [(LpipsBackbone.IMAGENET, False), (LpipsBackbone.RANDOM, True)]
)
def test_lpips_builds_a_random_trunk_only_for_the_random_backbone(
    backbone: LpipsBackbone, random_trunk: bool, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the ImageNet file present, a random trunk would still give plausible numbers: a
    # faked LPIPS. Record the constructor's flags instead of building VGG16 (no weights here).
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "vgg16-397923af.pth").touch()
    built = []

    class Recorder(torch.nn.Module):
        def __init__(self, **kwargs) -> None:
            super().__init__()
            built.append(kwargs)

        def forward(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
            return torch.zeros(1, 1, 1, 1)

    monkeypatch.setattr(lpips, "LPIPS", Recorder)
    result = LpipsMetric(backbone)(torch.rand(3, 8, 8), torch.rand(3, 8, 8))
    assert result.value == 0.0
    assert len(built) == 1
    assert built[0]["pnet_rand"] is random_trunk
    assert built[0]["net"] == "vgg"
