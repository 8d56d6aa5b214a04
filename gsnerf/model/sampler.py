"""Target rays and depth-guided samples along them (spec 2.4).

Per ray with a valid guide distance ``t_g`` (D_T converted to distance along the unit ray):

- ``num_samples`` = N guided samples: one exactly at ``t_g`` and N - 1 around it, at
  ``t_g + offset_i``. The offsets come from a grid of ``M`` slots centred on 0, ``M = N`` for odd
  N and ``N + 1`` for even N (the last, farthest slot is dropped, so the extra sample lies in
  front of the surface). Slot ``i`` of ``0..N-1`` has unit position ``u_i = (i - c) / c``,
  ``c = N // 2``, and the guide sample is slot ``c``. Example N = 4: ``u = -1, -0.5, 0, 0.5``.
  The band modes scale it:

  * ``fixed``: ``offset_i = band_width * u_i`` metres;
  * ``relative``: ``offset_i = band_relative * t_g * u_i`` (the band grows with distance);
  * ``gaussian``: offsets ~ N(0, band_width^2) drawn independently in training (the reference's
    31 samples of std 0.5 m); at evaluation the normal quantiles at ``(i + 0.5) / M``, so slot c
    is exactly 0. Example N = 4, band 0.5 m: offsets ``-0.64, -0.26, 0, 0.26`` m.

- ``num_uniform`` = U samples over [near, far] at bin centres ``near + (far - near)(i + 0.5) / U``
  (the reference uses ``linspace`` with both ends, a spacing of ``/(U-1)`` instead of ``/U``).
- With ``jitter = stratified`` in training, uniform samples move uniformly inside their bin and
  fixed / relative band samples within +-half a grid cell; the guide sample never moves. The
  reference has no jitter on this path (spec 7.11).
- Everything is clamped to [near, far] and sorted; ``guide_index`` is the sorted position of the
  guide sample. Rays without a valid guide get N + U uniform samples instead and
  ``guide_index = (N + U) // 2`` (the reference clamps such guides to the near plane, spec 2.4).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import torch
from jaxtyping import Float, Int64
from torch import Tensor

from gsnerf.geometry.camera import camera_rays
from gsnerf.types import GuideDepth, RayBundle, RaySamples


class BandMode(str, Enum):
    """How the guided samples are spread around the guide distance."""

    # Deterministic grid over +-band_width metres.
    FIXED = "fixed"
    # Deterministic grid over +-band_relative times the guide distance.
    RELATIVE = "relative"
    # Normal offsets of std band_width: random in training, quantiles at evaluation.
    GAUSSIAN = "gaussian"


class Jitter(str, Enum):
    """Randomisation of the deterministic sample positions during training."""

    # Positions as at evaluation.
    NONE = "none"
    # Each sample moves uniformly within its own bin or grid cell.
    STRATIFIED = "stratified"


@dataclass
class SamplerCfg:
    # Guided samples N per ray, one of them at D_T (spec 9: the paper's speed setting is 4; the
    # reference config uses 32 = 31 Gaussian + 1, spec 2.4); any N >= 1.
    num_samples: int = 4
    # Extra samples spread uniformly over [near, far] (spec 2.4: the reference uses 96).
    num_uniform: int = 0
    # Band placement around D_T: "fixed", "relative" or "gaussian" (module doc).
    band: str = BandMode.GAUSSIAN.value
    # Band half-width (fixed) or standard deviation (gaussian), metres (spec 2.4: sigma 0.5 m).
    band_width: float = 0.5
    # Band half-width as a fraction of the guide distance, for band = "relative".
    band_relative: float = 0.1
    # Training-time jitter of the deterministic positions: "none" or "stratified" (spec 7.11).
    jitter: str = Jitter.STRATIFIED.value

    def __post_init__(self) -> None:
        for name, choices in (("band", BandMode), ("jitter", Jitter)):
            value = getattr(self, name)
            if value not in {choice.value for choice in choices}:
                raise ValueError(
                    f"SamplerCfg.{name}: unknown value {value!r}, expected one of "
                    f"{[choice.value for choice in choices]}"
                )
        if self.num_samples < 1 or self.num_uniform < 0:
            raise ValueError(
                f"SamplerCfg: num_samples must be >= 1 and num_uniform >= 0, got "
                f"{self.num_samples} and {self.num_uniform}"
            )
        if self.band_width < 0 or self.band_relative < 0:
            raise ValueError("SamplerCfg: band_width and band_relative must be >= 0")


def build_rays(
    intrinsics: Float[Tensor, "b 3 3"],
    cam_to_world: Float[Tensor, "b 4 4"],
    pixels: Int64[Tensor, "b rays 2"],
    guide: GuideDepth,
    near: Float[Tensor, " b"],
    far: Float[Tensor, " b"],
) -> RayBundle:
    """Unit rays through target pixels ``(row, col)``, with near, far and D_T as distances.

    ``near``, ``far`` and ``guide.depth`` are z-depths; a z-depth ``z`` lies at distance
    ``z / cos(theta)`` along a ray at angle ``theta`` to the optical axis. Example: f = 100,
    pixel 30 px right and 40 px below the principal point, z = 2 -> distance
    ``2 * sqrt(1 + 0.3^2 + 0.4^2) = 2.236`` m. Computed in float32 with autocast disabled.
    """
    height, width = guide.depth.shape[-2:]
    with torch.autocast(device_type=intrinsics.device.type, enabled=False):
        coordinates = pixels.flip(-1).float()
        origins, directions, z_per_distance = camera_rays(
            intrinsics.float(), cam_to_world.float(), coordinates
        )
        flat_index = pixels[..., 0] * width + pixels[..., 1]
        guide_z = guide.depth.float().flatten(1).gather(1, flat_index)
        guide_valid = guide.valid.flatten(1).gather(1, flat_index) & (guide_z > 0)
        return RayBundle(
            origins=origins,
            directions=directions,
            near=near.float()[:, None] / z_per_distance,
            far=far.float()[:, None] / z_per_distance,
            pixels=pixels,
            guide_depth=guide_z / z_per_distance,
            guide_valid=guide_valid,
        )


def _random(
    draw: Callable[..., Tensor],
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    like: Tensor,
) -> Tensor:
    """``draw`` (``torch.rand`` or ``torch.randn``) of ``shape`` with ``like``'s device and dtype.

    The numbers are drawn where ``generator`` lives, then moved: the trainer's generator is a
    CPU one, so a run draws the same samples on every device (and CUDA refuses a CPU generator).
    """
    source = like.device if generator is None else generator.device
    return draw(shape, generator=generator, device=source, dtype=like.dtype).to(like.device)


def _uniform_fractions(
    count: int, like: Float[Tensor, "b rays"], stratified: bool, generator: torch.Generator | None
) -> Float[Tensor, "b rays samples"]:
    """Positions in [0, 1] of ``count`` samples: bin centres, or one uniform draw per bin."""
    bins = torch.arange(count, device=like.device, dtype=like.dtype)
    if stratified:
        shape = (*like.shape, count)
        offsets = _random(torch.rand, shape, generator, like)
    else:
        offsets = torch.full((*like.shape, count), 0.5, device=like.device, dtype=like.dtype)
    return (bins + offsets) / count


def _band_offsets(
    rays: RayBundle, cfg: SamplerCfg, training: bool, generator: torch.Generator | None
) -> Float[Tensor, "b rays samples"]:
    """Offsets of the N guided samples from the guide distance; slot ``N // 2`` is exactly 0."""
    count = cfg.num_samples
    centre = count // 2
    slots = torch.arange(count, device=rays.near.device, dtype=rays.near.dtype)
    shape = (*rays.near.shape, count)
    mode = BandMode(cfg.band)
    if mode is BandMode.GAUSSIAN:
        if training:
            noise = _random(torch.randn, shape, generator, slots)
            offsets = cfg.band_width * noise
        else:
            grid = 2 * centre + 1
            probabilities = (slots + 0.5) / grid
            quantiles = math.sqrt(2.0) * torch.erfinv(2.0 * probabilities - 1.0)
            offsets = (cfg.band_width * quantiles).expand(shape)
        return torch.where(slots == centre, torch.zeros_like(offsets), offsets)

    unit = (slots - centre) / max(centre, 1)
    if mode is BandMode.FIXED:
        half_width = torch.full_like(rays.guide_depth, cfg.band_width)
    else:
        half_width = cfg.band_relative * rays.guide_depth
    offsets = half_width[..., None] * unit
    if training and Jitter(cfg.jitter) is Jitter.STRATIFIED and centre > 0:
        shift = _random(torch.rand, shape, generator, slots)
        shift = torch.where(slots == centre, torch.zeros_like(shift), shift - 0.5)
        offsets = offsets + shift * (half_width[..., None] / centre)
    return offsets


def sample_along_rays(
    rays: RayBundle, cfg: SamplerCfg, training: bool, generator: torch.Generator | None = None
) -> RaySamples:
    """``num_samples + num_uniform`` sorted distances per ray inside [near, far] (module doc)."""
    near, far = rays.near[..., None], rays.far[..., None]
    stratified = training and Jitter(cfg.jitter) is Jitter.STRATIFIED
    total = cfg.num_samples + cfg.num_uniform
    centre = cfg.num_samples // 2

    guided = rays.guide_depth[..., None] + _band_offsets(rays, cfg, training, generator)
    uniform = near + (far - near) * _uniform_fractions(
        cfg.num_uniform, rays.near, stratified, generator
    )
    depths = torch.cat([guided, uniform], dim=-1)
    depths = torch.minimum(torch.maximum(depths, near), far)
    depths, order = depths.sort(dim=-1, stable=True)
    guide_index = (order == centre).long().argmax(dim=-1)

    # Rays without a guide: uniform samples only, the middle one standing in for D_T.
    fallback = near + (far - near) * _uniform_fractions(total, rays.near, stratified, generator)
    has_guide = rays.guide_valid
    depths = torch.where(has_guide[..., None], depths, fallback)
    guide_index = torch.where(has_guide, guide_index, torch.full_like(guide_index, total // 2))
    return RaySamples(depths=depths, guide_index=guide_index)
