"""One cascade level of the Semantic Geo-Reasoner: group correlation + 3-D U-Net (spec 2.2).

Each reference view's features are correlated, per channel group, with the features of its MVS
neighbours warped onto the reference's depth hypotheses; a 3-D U-Net regularises the volume and
gives per-hypothesis depth logits (soft-argmin depth) and a regularised volume feature.
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn

from gsnerf.geometry.homography import plane_sweep_warp
from gsnerf.model import (
    cpu_correlation,
    cpu_logit_conv,
    cpu_volume_norm,
    fused_correlation,
    fused_volume_conv,
)


@dataclass
class CostVolumeCfg:
    # Groups of the group-wise correlation; must divide every pyramid width (spec 2.2: 8).
    groups: int = 8
    # 3-D U-Net widths at volume scale 1, 1/2, 1/4, 1/8 (spec 2.2 CostRegNet: 8, 16, 32, 64).
    widths: list[int] = field(default_factory=lambda: [8, 16, 32, 64])
    # Channels of the regularised volume feature, head br2 (spec 2.2: 8).
    volume_channels: int = 8
    # Channels per GroupNorm group; 1 is the reference's batch-of-one BatchNorm (spec 5.3).
    norm_channels_per_group: int = 1
    # Negative slope of every LeakyReLU (spec 2.2: InPlaceABN, slope 0.01).
    leaky_slope: float = 0.01
    # Channels-last (N D H W C) volumes in the U-Net. None: channels-last on a CPU (oneDNN's 3-D
    # convolutions: training steps 1.67 against 1.23 per s, benchmarks/README.md), the
    # contiguous layout on CUDA, where it is not yet timed (cuDNN's tensor-core kernels work in
    # channels-last and convert every input and output otherwise: 7 ms of an H100 frame), and
    # channels-last there where the Triton convolutions serve (fused_volume_conv). True also
    # stores the kernels channels-last. Same numbers either way, up to rounding (test).
    channels_last: bool | None = None


@dataclass
class CostVolumeOutput:
    """Result of one cascade level for a batch of reference views."""

    depth: Float[Tensor, "b h w"]  # soft-argmin z-depth, metres
    probability: Float[Tensor, "b d h w"]  # softmax over the hypotheses
    volume_features: Float[Tensor, "b c_vol d h w"]


def group_correlation(
    ref_features: Float[Tensor, "b c h w"],
    warped_features: Float[Tensor, "b c d h w"],
    groups: int,
) -> Float[Tensor, "b g d h w"]:
    """Mean over the channels of each group of ``ref * warped`` (spec 2.2).

    Example: with one group and ``ref = warped = 1`` everywhere the cost is 1.
    """
    ref = rearrange(ref_features, "b (g c) h w -> b g c h w", g=groups)
    warped = rearrange(warped_features, "b (g c) d h w -> b g c d h w", g=groups)
    return torch.einsum("bgchw,bgcdhw->bgdhw", ref, warped) / ref.shape[2]


def correlation_volume(
    ref_features: Float[Tensor, "b c h w"],
    neighbour_features: Float[Tensor, "b n c h w"],
    ref_intrinsics: Float[Tensor, "b 3 3"],
    ref_cam_to_world: Float[Tensor, "b 4 4"],
    neighbour_intrinsics: Float[Tensor, "b n 3 3"],
    neighbour_cam_to_world: Float[Tensor, "b n 4 4"],
    hypotheses: Float[Tensor, "b d h w"],
    groups: int,
) -> Float[Tensor, "b g d h w"]:
    """Group correlation of the reference with the mean of its n warped neighbours.

    The correlation is linear in the warped features, so correlating with their mean equals the
    mean of the n correlations. The reference divides the sum of 3 neighbours by V - 1 = 7
    (spec 7.9); here the divisor is the number of neighbours used. The same in one kernel that
    stores no warped volume: C++ on a CPU (:mod:`gsnerf.model.cpu_correlation`), Triton on CUDA
    (:mod:`gsnerf.model.fused_correlation`).
    """
    cameras = (ref_intrinsics, ref_cam_to_world, neighbour_intrinsics, neighbour_cam_to_world)
    kernels = (
        (cpu_correlation.cpu_correlation_applies, cpu_correlation.cpu_correlation_volume),
        (fused_correlation.fused_correlation_applies, fused_correlation.fused_correlation_volume),
    )
    for applies, kernel in kernels:
        if applies(ref_features, neighbour_features, hypotheses, groups):
            return kernel(ref_features, neighbour_features, *cameras, hypotheses, groups)
    num_neighbours = neighbour_features.shape[1]
    warped_sum = torch.zeros_like(ref_features)[:, :, None]
    # One neighbour at a time keeps a single warped volume in memory, not n of them.
    for index in range(num_neighbours):
        # The warp's coordinates in float32 under autocast too (bf16: a quarter pixel off at
        # x = 64); the warped features come back in the features' own precision.
        with torch.autocast(device_type=ref_features.device.type, enabled=False):
            warped, _ = plane_sweep_warp(
                neighbour_features[:, index],
                neighbour_intrinsics[:, index],
                neighbour_cam_to_world[:, index],
                ref_intrinsics,
                ref_cam_to_world,
                hypotheses,
            )
        warped_sum = warped_sum + warped
    return group_correlation(ref_features, warped_sum / num_neighbours, groups)


class VolumeGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that normalises a channels-last CPU volume in the contiguous layout when
    gradients are recorded.

    The same numbers and parameters. oneDNN's 3-D convolutions are faster on channels-last
    volumes (CostVolumeCfg.channels_last), but torch's CPU GroupNorm backward is slow on them:
    forward and backward of one [4, 8, 8, 64, 80] volume took 12.6 ms channels-last against
    6.9 ms converted to contiguous and back (2.7 ms on a contiguous input; one thread), and a
    training step of the quickstart 564 instead of 611 ms (with the CPU kernels on, the default,
    ConvNormAct runs neither this nor torch's norm). Without gradients the conversions
    cost more than they save (an uncached 8-view frame 631 against 602 ms), and CUDA volumes are
    not timed this way, so both keep their layout.
    """

    def forward(self, volume: Tensor) -> Tensor:
        channels_last = volume.dim() == 5 and not volume.is_contiguous()
        channels_last = channels_last and volume.is_contiguous(memory_format=torch.channels_last_3d)
        if channels_last and volume.device.type == "cpu" and torch.is_grad_enabled():
            normalised = super().forward(volume.contiguous())
            return normalised.contiguous(memory_format=torch.channels_last_3d)
        return super().forward(volume)


class ConvNormAct(nn.Sequential):
    """A 3-D convolution, its GroupNorm and a LeakyReLU: ``[conv, norm, activation]``.

    On a CPU the norm and the activation run as one C++ kernel, forward and backward
    (:mod:`gsnerf.model.cpu_volume_norm`), where it applies; on CUDA the convolution can run
    as a Triton kernel (:mod:`gsnerf.model.fused_volume_conv`). The same parameters and
    state-dict keys as a plain ``nn.Sequential`` of the three.
    """

    def forward(self, volume: Tensor) -> Tensor:
        conv = self[0]
        if fused_volume_conv.fused_volume_conv_applies(volume, conv):
            return self.norm_act(fused_volume_conv.convolve(volume, conv))
        return self.norm_act(conv(volume))

    def norm_act(self, volume: Tensor) -> Tensor:
        """The norm and the activation of ``volume`` (the convolution's output)."""
        norm, activation = self[1], self[2]
        if cpu_volume_norm.cpu_volume_norm_applies(volume, norm):
            return cpu_volume_norm.cpu_volume_norm_act(
                volume, norm.weight, norm.bias, norm.num_groups, norm.eps, activation.negative_slope
            )
        return activation(norm(volume))


class LogitConv3d(nn.Conv3d):
    """``nn.Conv3d`` that runs as a C++ kernel on a CPU where it applies
    (:mod:`gsnerf.model.cpu_logit_conv`: one output channel, 3x3x3, padding 1, no bias); the
    same parameters and state-dict keys."""

    def forward(self, volume: Tensor) -> Tensor:
        if cpu_logit_conv.cpu_logit_conv_applies(volume, self):
            return cpu_logit_conv.cpu_logit_conv(volume, self.weight)
        if fused_volume_conv.fused_volume_conv_applies(volume, self):
            return fused_volume_conv.convolve(volume, self)
        return super().forward(volume)


def conv3d_norm_act(
    in_channels: int, out_channels: int, stride: int, cfg: CostVolumeCfg
) -> ConvNormAct:
    """3x3x3 conv (no bias: the norm removes it) + GroupNorm + LeakyReLU."""
    groups = out_channels // math.gcd(cfg.norm_channels_per_group, out_channels)
    return ConvNormAct(
        nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        VolumeGroupNorm(groups, out_channels),
        nn.LeakyReLU(cfg.leaky_slope),
    )


def up3d_norm_act(in_channels: int, out_channels: int, cfg: CostVolumeCfg) -> ConvNormAct:
    """x2 transposed 3x3x3 conv + GroupNorm + LeakyReLU (spec 2.2 conv7/9/11)."""
    groups = out_channels // math.gcd(cfg.norm_channels_per_group, out_channels)
    return ConvNormAct(
        nn.ConvTranspose3d(
            in_channels, out_channels, 3, stride=2, padding=1, output_padding=1, bias=False
        ),
        VolumeGroupNorm(groups, out_channels),
        nn.LeakyReLU(cfg.leaky_slope),
    )


class CostRegularizer(nn.Module):
    """3-D U-Net over a cost volume with depth-logit and volume-feature heads (spec 2.2)."""

    def __init__(self, in_channels: int, cfg: CostVolumeCfg) -> None:
        super().__init__()
        if len(cfg.widths) != 4:
            raise ValueError(
                f"cost_volume.widths: needs 4 entries (3 downsamplings), got {cfg.widths}"
            )
        w0, w1, w2, w3 = cfg.widths
        # Three stride-2 stages: every volume size must be a multiple of 2^3.
        self.size_multiple = 8
        self.conv0 = conv3d_norm_act(in_channels, w0, 1, cfg)
        self.down1 = nn.Sequential(conv3d_norm_act(w0, w1, 2, cfg), conv3d_norm_act(w1, w1, 1, cfg))
        self.down2 = nn.Sequential(conv3d_norm_act(w1, w2, 2, cfg), conv3d_norm_act(w2, w2, 1, cfg))
        self.down3 = nn.Sequential(conv3d_norm_act(w2, w3, 2, cfg), conv3d_norm_act(w3, w3, 1, cfg))
        self.up3 = up3d_norm_act(w3, w2, cfg)
        self.up2 = up3d_norm_act(w2, w1, cfg)
        self.up1 = up3d_norm_act(w1, w0, cfg)
        # No bias on the logit conv: a constant shift cancels in the softmax over hypotheses.
        self.depth_head = nn.Sequential(
            conv3d_norm_act(w0, w0, 1, cfg), LogitConv3d(w0, 1, 3, padding=1, bias=False)
        )
        self.volume_head = conv3d_norm_act(w0, cfg.volume_channels, 1, cfg)
        self.channels_last = cfg.channels_last
        if cfg.channels_last:
            # Module.to and load_state_dict keep the kernels' layout from here on.
            self.to(memory_format=torch.channels_last_3d)

    def memory_format(self, device: torch.device) -> torch.memory_format:
        """The volumes' layout on ``device`` (CostVolumeCfg.channels_last); the convolutions
        keep the layout of their input."""
        channels_last = self.channels_last
        if channels_last is None:
            # The Triton convolutions read and write channels-last volumes.
            channels_last = device.type == "cpu" or fused_volume_conv.serves(device)
        return torch.channels_last_3d if channels_last else torch.contiguous_format

    def forward(
        self, cost: Float[Tensor, "b g d h w"]
    ) -> tuple[Float[Tensor, "b d h w"], Float[Tensor, "b c_vol d h w"]]:
        depth, height, width = cost.shape[-3:]
        # Zero-pad at the far end to the size multiple and crop after the heads (the reference
        # also adds 8 to sizes already divisible, spec 2.2; we pad only where needed).
        pad = [-size % self.size_multiple for size in (width, height, depth)]
        padded = F.pad(cost, (0, pad[0], 0, pad[1], 0, pad[2]))
        x0 = self.conv0(padded.contiguous(memory_format=self.memory_format(cost.device)))
        x1 = self.down1(x0)
        x2 = self.down2(x1)
        x = x2 + self.up3(self.down3(x2))
        x = x1 + self.up2(x)
        x = x0 + self.up1(x)
        logits, volume = self.heads(x)
        logits = logits[:, 0, :depth, :height, :width]
        volume = volume[:, :, :depth, :height, :width]
        # The rest of the model (and a scene-encoding cache) gets the contiguous layout back.
        return logits.contiguous(), volume.contiguous()

    def heads(
        self, features: Float[Tensor, "b c0 d h w"]
    ) -> tuple[Float[Tensor, "b 1 d h w"], Float[Tensor, "b c_vol d h w"]]:
        """Depth logits and volume features of the U-Net's output.

        In CPU inference the two heads' first convolutions, which read the same volume, run as
        one with both kernels: oneDNN's time for these convolutions is that of reading their
        input, whatever the output channels (1 to 16 took 19 ms each on [8, 8, 8, 64, 80], one
        thread), so an uncached 8-view tiny-model encoding took 270 against 296 ms, with the
        same numbers to the last bit. Training keeps two convolutions: there the merged one was
        no faster (forward and backward 400 against 401 ms). On CUDA they are merged where the
        Triton convolution serves them.
        """
        depth_block, volume_block = self.depth_head[0], self.volume_head
        # The Triton convolution's time is that of its 27 reads too, whatever its outputs (up to
        # 16 take one tile): the same merge, in training as well.
        merged_channels = depth_block[0].out_channels + volume_block[0].out_channels
        fused = fused_volume_conv.fused_volume_conv_applies(features, depth_block[0])
        fused = fused and merged_channels <= fused_volume_conv.MAX_CHANNELS
        if not fused and (features.device.type != "cpu" or torch.is_grad_enabled()):
            return self.depth_head(features), self.volume_head(features)
        kernels = torch.cat([depth_block[0].weight, volume_block[0].weight])
        if fused:
            dtype = fused_volume_conv.product_dtype(features)
            mode = fused_volume_conv.STRIDE_1
            both = fused_volume_conv.fused_volume_conv(features, kernels, mode, dtype)
        else:
            both = F.conv3d(features, kernels, padding=1)
        split = depth_block[0].out_channels
        hidden = depth_block.norm_act(both[:, :split])
        return self.depth_head[1](hidden), volume_block.norm_act(both[:, split:])


class CostVolumeLevel(nn.Module):
    """One cascade level: correlation volume -> regulariser -> soft-argmin depth (spec 2.2)."""

    def __init__(self, feature_channels: int, cfg: CostVolumeCfg) -> None:
        super().__init__()
        if feature_channels % cfg.groups != 0:
            raise ValueError(
                f"cost_volume.groups: {cfg.groups} groups do not divide the {feature_channels} "
                "feature channels of a pyramid level (feature_net.pyramid_widths)"
            )
        self.groups = cfg.groups
        self.regularizer = CostRegularizer(cfg.groups, cfg)

    def forward(
        self,
        ref_features: Float[Tensor, "b c h w"],
        neighbour_features: Float[Tensor, "b n c h w"],
        ref_intrinsics: Float[Tensor, "b 3 3"],
        ref_cam_to_world: Float[Tensor, "b 4 4"],
        neighbour_intrinsics: Float[Tensor, "b n 3 3"],
        neighbour_cam_to_world: Float[Tensor, "b n 4 4"],
        hypotheses: Float[Tensor, "b d h w"],
    ) -> CostVolumeOutput:
        cost = correlation_volume(
            ref_features,
            neighbour_features,
            ref_intrinsics,
            ref_cam_to_world,
            neighbour_intrinsics,
            neighbour_cam_to_world,
            hypotheses,
            self.groups,
        )
        logits, volume = self.regularizer(cost)
        probability = torch.softmax(logits, dim=1)
        # Soft-argmin: the expected hypothesis under the softmax (spec 2.2).
        depth = (probability * hypotheses).sum(dim=1)
        return CostVolumeOutput(depth=depth, probability=probability, volume_features=volume)
