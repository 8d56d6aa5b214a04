"""Image quality of a rendered view: PSNR, SSIM and LPIPS, with the paper's masking (spec 5.2).

The mask of valid pixels is "target GT depth > 0" (ScanNet depth has holes). PSNR averages the
squared error over the valid pixels only. SSIM and LPIPS follow the reference protocol (spec
7.23): both images get their invalid pixels **set to 0** and the full images are compared, so
the masked pixels count as a perfect match and pull SSIM up and LPIPS down. gsnerf keeps that
protocol so its numbers compare with the paper's tables.

LPIPS needs the torchvision VGG16 ImageNet backbone, which the ``lpips`` wheel does not ship and
which cannot be downloaded offline. :class:`LpipsMetric` checks for the weight file in torch
hub's checkpoint folder before building anything and otherwise reports the metric as
unavailable, naming the missing file.
"""

import logging
import warnings
from enum import Enum
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Bool, Float
from skimage.metrics import structural_similarity
from torch import Tensor, nn

from gsnerf.evaluation.metric_value import MetricValue

log = logging.getLogger(__name__)

# Side of the uniform SSIM window, pixels: skimage's default, used by the reference (spec 5.2).
SSIM_WINDOW_SIZE = 7


def _zero_masked(
    image: Float[Tensor, "3 h w"], mask: Bool[Tensor, "h w"] | None
) -> Float[Tensor, "3 h w"]:
    return image if mask is None else image * mask.to(image.dtype)


def psnr(
    pred: Float[Tensor, "3 h w"],
    gt: Float[Tensor, "3 h w"],
    mask: Bool[Tensor, "h w"] | None = None,
) -> float:
    """``-10 log10(MSE)`` with the MSE over the masked pixels and the 3 channels (spec 5.2).

    Colours are in [0, 1]. Identical images give ``inf``; an all-False mask raises ValueError.
    Example: a constant error of 0.1 gives ``MSE = 0.01`` and 20 dB.
    """
    squared_error = (pred.double() - gt.double()).square()
    if mask is not None:
        if not bool(mask.any()):
            raise ValueError("psnr: mask has no valid pixel")
        squared_error = squared_error[:, mask]
    mse = float(squared_error.mean())
    return float("inf") if mse == 0.0 else -10.0 * float(np.log10(mse))


def ssim(
    pred: Float[Tensor, "3 h w"],
    gt: Float[Tensor, "3 h w"],
    mask: Bool[Tensor, "h w"] | None = None,
) -> float:
    """skimage SSIM of H x W x 3 float64 images, data range 1, 7 x 7 uniform window.

    Paper protocol (spec 5.2, 7.23): pixels outside ``mask`` are set to 0 in both images and
    kept in the mean, not excluded. Needs images of at least 7 x 7 pixels.
    """
    height, width = pred.shape[-2:]
    if min(height, width) < SSIM_WINDOW_SIZE:
        raise ValueError(
            f"ssim: image of {height} x {width} pixels is smaller than the "
            f"{SSIM_WINDOW_SIZE} x {SSIM_WINDOW_SIZE} window"
        )
    pred_hwc = _zero_masked(pred, mask).permute(1, 2, 0).double().cpu().numpy()
    gt_hwc = _zero_masked(gt, mask).permute(1, 2, 0).double().cpu().numpy()
    return float(
        structural_similarity(
            pred_hwc, gt_hwc, win_size=SSIM_WINDOW_SIZE, data_range=1.0, channel_axis=2
        )
    )


class LpipsBackbone(str, Enum):
    """Trunk of the LPIPS network."""

    # VGG16 with torchvision's ImageNet weights: the metric of the paper (spec 5.2).
    IMAGENET = "imagenet"
    # Randomly initialised VGG16 (lpips ``pnet_rand=True``): exercises the code without
    # weights; its values are not LPIPS and must never be reported.
    RANDOM = "random"


def vgg16_weight_path() -> Path:
    """Where torchvision looks for the VGG16 ImageNet weights: torch hub's checkpoint folder."""
    from torchvision.models import VGG16_Weights

    file_name = Path(VGG16_Weights.IMAGENET1K_V1.url).name
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


class LpipsMetric:
    """LPIPS (v0.1, VGG trunk) of zero-masked images mapped to [-1, 1] (spec 5.2).

    Nothing is imported or built until the first call; the network is then built once per
    device and kept. With the ImageNet trunk, the weight file is looked up first and never
    downloaded: if it is missing, every call returns an unavailable :class:`MetricValue`.
    """

    def __init__(self, backbone: LpipsBackbone = LpipsBackbone.IMAGENET) -> None:
        self.backbone = backbone
        self._networks: dict[str, nn.Module] = {}

    def unavailable_reason(self) -> str | None:
        """Why LPIPS cannot be computed here, or None when it can."""
        try:
            import lpips
        except ImportError as error:
            return f"the lpips package cannot be imported ({error})"
        linear_heads = Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"
        if not linear_heads.is_file():
            return f"the lpips linear-head weights {linear_heads} are missing"
        if self.backbone == LpipsBackbone.IMAGENET:
            backbone_file = vgg16_weight_path()
            if not backbone_file.is_file():
                return (
                    f"the VGG16 ImageNet weights {backbone_file} are missing (no download is "
                    "attempted; place the torchvision file there to enable LPIPS)"
                )
        return None

    def _network(self, device: torch.device) -> nn.Module:
        key = str(device)
        if key not in self._networks:
            import lpips

            # The lpips package still passes torchvision's deprecated ``pretrained`` flag.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
                network = lpips.LPIPS(
                    net="vgg",
                    version="0.1",
                    pnet_rand=self.backbone == LpipsBackbone.RANDOM,
                    verbose=False,
                )
            log.info("LPIPS network (%s trunk) built on %s", self.backbone.value, key)
            self._networks[key] = network.eval().to(device)
        return self._networks[key]

    def __call__(
        self,
        pred: Float[Tensor, "3 h w"],
        gt: Float[Tensor, "3 h w"],
        mask: Bool[Tensor, "h w"] | None = None,
    ) -> MetricValue:
        """LPIPS distance (lower is better) of two [0, 1] images on ``pred``'s device."""
        reason = self.unavailable_reason()
        if reason is not None:
            return MetricValue.unavailable(reason)
        network = self._network(pred.device)
        pred_signed = _zero_masked(pred, mask).float() * 2.0 - 1.0
        gt_signed = _zero_masked(gt, mask).float().to(pred.device) * 2.0 - 1.0
        with torch.inference_mode():
            distance = network(pred_signed[None], gt_signed[None])
        return MetricValue.of(float(distance.reshape(())))
