"""2-D feature / semantic network of the Semantic Geo-Reasoner (spec 2.1).

A U-Net: a full-resolution stem, an encoder down to 1/16 (strided convs trained from scratch, or
an ImageNet-pretrained torchvision trunk read from a local file), and a decoder with skip
connections back to full resolution. Heads on the decoder give

- the MVS feature pyramid at 1/4, 1/2 and full resolution (coarse -> fine), for the cost volumes.
  The reference builds it as an FPN of its own on the encoder (1x1 laterals, top-down adds,
  spec 2.1); here 3x3 heads read the semantic decoder, so depth and semantics share it;
- the semantic feature map F_sem at full resolution (3x3 conv, no activation);
- 2-D semantic logits = 1x1 conv of F_sem.

Normalisation is GroupNorm: each image is normalised by its own statistics, identically in
training and evaluation. The reference runs BatchNorm in train mode at test time (spec 5.3,
7.21), so its outputs depend on the other images of the batch; we avoid that by construction.
Pretrained trunks keep their ImageNet BatchNorm statistics frozen, also mode-independent. The
paper's encoder is an ImageNet MobileNetV3; the default here trains from scratch because no
weights can be downloaded (spec 8).
"""

import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from jaxtyping import Float
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d


class EncoderKind(str, Enum):
    """Which encoder produces the 1/2 ... 1/16 feature maps."""

    # Strided-conv U-Net encoder trained from scratch (no weights to download).
    UNET = "unet"
    # Torchvision MobileNetV3-small trunk (the reference's encoder family, spec 2.1).
    MOBILENET_V3_SMALL = "mobilenet_v3_small"
    # Torchvision ResNet-18 trunk.
    RESNET18 = "resnet18"


@dataclass
class FeatureNetCfg:
    # Encoder: "unet" (from scratch), "mobilenet_v3_small" or "resnet18" (ImageNet, spec 2.1, 8).
    encoder: str = EncoderKind.UNET.value
    # Local torchvision ImageNet state dict, required by torchvision encoders (spec 8: no download).
    pretrained_weights: str | None = None
    # Width of the full-resolution stem, channels (spec 2.1: the reference's skip is raw RGB).
    stem_width: int = 8
    # From-scratch encoder widths at 1/2, 1/4, 1/8, 1/16 (spec 2.1 plain UNet: 16, 32, 64, 128).
    encoder_widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    # Decoder widths at 1/8, 1/4, 1/2, full resolution (spec 2.1 smp decoder: 128, 64, 64, 32).
    decoder_widths: list[int] = field(default_factory=lambda: [128, 64, 64, 32])
    # MVS pyramid widths at 1/4, 1/2, full resolution, coarse -> fine (spec 2.1: 32, 16, 8).
    pyramid_widths: list[int] = field(default_factory=lambda: [32, 16, 8])
    # Channels of the semantic feature map; null: the number of classes (spec 2.1).
    semantic_channels: int | None = None
    # Channels per GroupNorm group (a divisor of each width is used); spec 5.3: per-image stats.
    norm_channels_per_group: int = 4
    # Negative slope of every LeakyReLU (spec 2.1 plain UNet: InPlaceABN, slope 0.01).
    leaky_slope: float = 0.01


@dataclass
class FeatureNetOutput:
    """Per-image outputs of :class:`FeatureNet`."""

    pyramid: list[Float[Tensor, "b _ _ _"]]  # MVS features at 1/4, 1/2, full res (coarse -> fine)
    semantic_features: Float[Tensor, "b c_sem h w"]
    semantic_logits: Float[Tensor, "b classes h w"]


def conv_norm_act(
    in_channels: int, out_channels: int, stride: int, cfg: FeatureNetCfg
) -> nn.Sequential:
    """3x3 conv (no bias: the norm removes it) + GroupNorm + LeakyReLU."""
    groups = out_channels // math.gcd(cfg.norm_channels_per_group, out_channels)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(groups, out_channels),
        nn.LeakyReLU(cfg.leaky_slope),
    )


class UNetTrunk(nn.Module):
    """From-scratch encoder: per stage a stride-2 conv and a conv, from the stem to 1/16."""

    def __init__(self, cfg: FeatureNetCfg) -> None:
        super().__init__()
        widths = [cfg.stem_width, *cfg.encoder_widths]
        self.stages = nn.ModuleList(
            nn.Sequential(
                conv_norm_act(c_in, c_out, 2, cfg),
                conv_norm_act(c_out, c_out, 1, cfg),
            )
            for c_in, c_out in zip(widths[:-1], widths[1:])
        )
        self.widths = list(cfg.encoder_widths)

    def forward(self, stem: Float[Tensor, "b c h w"]) -> list[Float[Tensor, "b _ _ _"]]:
        features = []
        x = stem
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def freeze_batch_norms(module: nn.Module) -> None:
    """Replace every BatchNorm2d below ``module`` by a FrozenBatchNorm2d with its statistics.

    The ImageNet statistics are then used in training and evaluation alike (spec 5.3).
    """
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batch_norms(child)


class TorchvisionTrunk(nn.Module):
    """ImageNet-pretrained torchvision trunk cut after its 1/16 stage, weights from a local file.

    The model is built with ``weights=None`` (torchvision never downloads) and its state dict is
    read from ``weights_path``. Inputs in [0, 1] get the ImageNet mean/std these weights expect
    (the reference feeds raw [0, 1] images to its ImageNet encoder, spec 7.8).
    """

    def __init__(self, kind: str, weights_path: str | None) -> None:
        super().__init__()
        builders = {
            EncoderKind.MOBILENET_V3_SMALL: torchvision.models.mobilenet_v3_small,
            EncoderKind.RESNET18: torchvision.models.resnet18,
        }
        weight_enums = {
            EncoderKind.MOBILENET_V3_SMALL: torchvision.models.MobileNet_V3_Small_Weights,
            EncoderKind.RESNET18: torchvision.models.ResNet18_Weights,
        }
        encoder = EncoderKind(kind)
        url = weight_enums[encoder].IMAGENET1K_V1.url
        if weights_path is None or not Path(weights_path).is_file():
            raise FileNotFoundError(
                f"feature_net.pretrained_weights: encoder '{kind}' needs its ImageNet weights in "
                f"a local file, got {weights_path!r}. Weights cannot be downloaded offline: fetch "
                f"{url} on a machine with internet access, put it at that path (for example "
                f"data/weights/{url.rsplit('/', 1)[-1]}), or use encoder 'unet' to train from "
                "scratch"
            )
        model = builders[encoder](weights=None)
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            raise ValueError(
                f"feature_net.pretrained_weights: {weights_path} is not a torchvision '{kind}' "
                f"state dict: {error}"
            ) from error
        if encoder is EncoderKind.RESNET18:
            stages = [
                nn.Sequential(model.conv1, model.bn1, model.relu),
                nn.Sequential(model.maxpool, model.layer1),
                model.layer2,
                model.layer3,
            ]
            self.widths = [64, 64, 128, 256]
        else:
            # MobileNetV3-small blocks 0, 1, 2-3, 4-8 end at 1/2, 1/4, 1/8, 1/16 (spec 2.1).
            blocks = model.features
            stages = [blocks[0], blocks[1], blocks[2:4], blocks[4:9]]
            self.widths = [16, 16, 24, 48]
        self.stages = nn.ModuleList(stages)
        freeze_batch_norms(self.stages)
        # The normalisation the torchvision ImageNet weights were trained with.
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, images: Float[Tensor, "b 3 h w"]) -> list[Float[Tensor, "b _ _ _"]]:
        x = (images - self.mean) / self.std
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class DecoderBlock(nn.Module):
    """Upsample to the skip's size, concatenate the skip, two conv-norm-act layers."""

    def __init__(
        self, in_channels: int, skip_channels: int, out_channels: int, cfg: FeatureNetCfg
    ) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            conv_norm_act(in_channels + skip_channels, out_channels, 1, cfg),
            conv_norm_act(out_channels, out_channels, 1, cfg),
        )

    def forward(
        self, x: Float[Tensor, "b c_in _ _"], skip: Float[Tensor, "b c_skip h w"]
    ) -> Float[Tensor, "b c_out h w"]:
        # Bilinear, align_corners=False: the resize convention of camera.scale_intrinsics.
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.convs(torch.cat([x, skip], dim=1))


class FeatureNet(nn.Module):
    """Images in [0, 1] -> MVS pyramid, semantic features and 2-D semantic logits (spec 2.1)."""

    def __init__(self, cfg: FeatureNetCfg, num_classes: int) -> None:
        super().__init__()
        try:
            kind = EncoderKind(cfg.encoder)
        except ValueError:
            choices = ", ".join(k.value for k in EncoderKind)
            raise ValueError(
                f"feature_net.encoder: '{cfg.encoder}' is not one of {choices}"
            ) from None
        for name, expected in (("encoder_widths", 4), ("decoder_widths", 4), ("pyramid_widths", 3)):
            if len(getattr(cfg, name)) != expected:
                raise ValueError(
                    f"feature_net.{name}: needs {expected} entries, got {getattr(cfg, name)}"
                )
        if kind is EncoderKind.UNET and cfg.pretrained_weights is not None:
            raise ValueError(
                "feature_net.pretrained_weights: the 'unet' encoder is trained from scratch; "
                "choose encoder 'mobilenet_v3_small' or 'resnet18' to load ImageNet weights"
            )
        self.cfg = cfg
        self.semantic_channels = cfg.semantic_channels or num_classes
        self.image_channels = cfg.pyramid_widths[-1]
        self.stem = conv_norm_act(3, cfg.stem_width, 1, cfg)
        if kind is EncoderKind.UNET:
            self.trunk: nn.Module = UNetTrunk(cfg)
        else:
            self.trunk = TorchvisionTrunk(kind.value, cfg.pretrained_weights)
        self.trunk_reads_image = kind is not EncoderKind.UNET

        # Skips from coarse to fine: 1/8, 1/4, 1/2 from the trunk, full resolution from the stem.
        trunk_widths = self.trunk.widths
        skip_widths = [trunk_widths[2], trunk_widths[1], trunk_widths[0], cfg.stem_width]
        in_widths = [trunk_widths[3], *cfg.decoder_widths[:-1]]
        self.decoder = nn.ModuleList(
            DecoderBlock(c_in, c_skip, c_out, cfg)
            for c_in, c_skip, c_out in zip(in_widths, skip_widths, cfg.decoder_widths)
        )
        # Pyramid heads read the decoder at 1/4, 1/2 and full resolution (decoder blocks 1..3).
        self.pyramid_heads = nn.ModuleList(
            nn.Conv2d(c_in, c_out, 3, padding=1)
            for c_in, c_out in zip(cfg.decoder_widths[1:], cfg.pyramid_widths)
        )
        self.semantic_head = nn.Conv2d(cfg.decoder_widths[-1], self.semantic_channels, 3, padding=1)
        self.logits_head = nn.Conv2d(self.semantic_channels, num_classes, 1)

    def forward(self, images: Float[Tensor, "b 3 h w"]) -> FeatureNetOutput:
        stem = self.stem(images)
        trunk_features = self.trunk(images if self.trunk_reads_image else stem)
        skips = [trunk_features[2], trunk_features[1], trunk_features[0], stem]
        x = trunk_features[3]
        decoded = []
        for block, skip in zip(self.decoder, skips):
            x = block(x, skip)
            decoded.append(x)
        pyramid = [head(d) for head, d in zip(self.pyramid_heads, decoded[1:])]
        semantic_features = self.semantic_head(decoded[-1])
        return FeatureNetOutput(
            pyramid=pyramid,
            semantic_features=semantic_features,
            semantic_logits=self.logits_head(semantic_features),
        )
