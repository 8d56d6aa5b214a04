"""Per sample, per source view: features, colours, visibility masks and view angle (spec 2.5).

Every sample point ``X`` is projected into every source view with that view's full-resolution
camera, ``(x, y) = K (R^T (X - t))`` divided by ``z``. Pixel centres sit at integer coordinates,
so pixel ``x`` of a width-``W`` image is at the normalised coordinate ``g = (2x + 1) / W - 1`` of
``grid_sample(align_corners=False)``. The same ``g`` addresses the same scene point in every
lower-resolution map made by :func:`gsnerf.geometry.camera.scale_intrinsics` (the cascade's
convention), so one normalised grid serves every level. Example: W = 4, x = 0 -> g = -0.75, the
centre of the first of four cells of [-1, 1].

Per level ``l`` the regularised volume (``d_l`` hypotheses) is sampled at ``(x, y, z_n)`` with
``z_n = (z - first_l) / (last_l - first_l)`` from the level's hypothesis range at that pixel, so
``z_n = k / (d_l - 1)`` lands exactly on hypothesis ``k``. All views go through one
``grid_sample`` per map: ``b`` and ``v`` are folded into the batch axis.
"""

from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from jaxtyping import Bool, Float, Int64
from torch import Tensor

from gsnerf.geometry.camera import camera_centers, project_points
from gsnerf.model import cpu_patch_read, cpu_volume_read, fused_patch_read
from gsnerf.types import SourceGeometry, Views


class OcclusionUnit(str, Enum):
    """Unit of the tolerance behind the source depth within which a sample still counts as seen."""

    # Fraction of the finest level's first-to-last hypothesis span at the pixel (spec 2.5, 7.12).
    HYPOTHESIS_SPAN = "hypothesis_span"
    # Metres.
    METRES = "metres"


@dataclass
class GatherCfg:
    # Side of the square of semantic features gathered around each projection, pixels: 1 or 3
    # (spec 2.5, 7.16: 3, rows major, then columns).
    semantic_patch: int = 3
    # Spacing of the semantic patch samples, full-resolution pixels (spec 2.5: about 1).
    semantic_patch_spacing: float = 1.0
    # Unit of occlusion_tolerance: "hypothesis_span" or "metres". The span is the finest
    # cascade window, so the tolerance follows both the scene's depth range and the resolution at
    # which the cascade can place a surface (spec 2.5: 7 cm on ScanNet, 4 cm on Replica).
    occlusion_unit: str = OcclusionUnit.HYPOTHESIS_SPAN.value
    # How far behind the source view's finest predicted depth a sample still counts as visible,
    # in occlusion_unit (spec 2.5: 0.2 hypothesis spans).
    occlusion_tolerance: float = 0.2
    # Frequencies 2^0 .. 2^(F-1) of the view-angle encoding (spec 2.5: 4).
    angle_frequencies: int = 4

    def __post_init__(self) -> None:
        if self.semantic_patch not in (1, 3):
            raise ValueError(f"GatherCfg.semantic_patch must be 1 or 3, got {self.semantic_patch}")
        if self.occlusion_unit not in {unit.value for unit in OcclusionUnit}:
            raise ValueError(
                f"GatherCfg.occlusion_unit: unknown value {self.occlusion_unit!r}, expected one "
                f"of {[unit.value for unit in OcclusionUnit]}"
            )
        if self.angle_frequencies < 1:
            raise ValueError(
                f"GatherCfg.angle_frequencies must be >= 1, got {self.angle_frequencies}"
            )

    @property
    def angle_channels(self) -> int:
        return 2 * self.angle_frequencies


@dataclass
class SourceProjection:
    """Sample points seen from every source view, ``b`` and ``v`` folded into ``bv``."""

    grid: Float[Tensor, "bv rays samples 2"]  # normalised (x, y), align_corners=False convention
    depth: Float[Tensor, "bv rays samples"]  # z in the source camera, metres
    in_frustum: Bool[Tensor, "bv rays samples"]  # inside the image and in front of the camera
    num_views: int
    image_size: tuple[int, int]  # (height, width) of the full-resolution source images


@dataclass
class GatheredFeatures:
    """Ingredients of the view tokens of every sample (spec 2.5)."""

    volume: Float[Tensor, "b rays samples v c_vol"]  # volume features of all levels, coarse first
    image: Float[Tensor, "b rays samples v c_img"]  # full-resolution image features
    colours: Float[Tensor, "b rays samples v 3"]  # source RGB at the projection
    angle: Float[Tensor, "b rays samples v c_angle"]  # encoding of the target-to-source angle
    in_frustum: Bool[Tensor, "b rays samples v"]
    visible: Bool[Tensor, "b rays samples v"]  # not behind the source view's predicted surface


def project_to_sources(
    points: Float[Tensor, "b rays samples 3"], sources: Views
) -> SourceProjection:
    """Project the points into every source view (module doc for the normalised coordinates).

    ``in_frustum``: ``z > 0`` and ``-0.5 <= x <= W - 0.5``, ``-0.5 <= y <= H - 0.5`` (the image
    extent with pixel centres at integers). Grid coordinates are clamped to [-2, 2]: with border
    padding every point outside [-1, 1] reads the border anyway, and points near the camera plane
    cannot overflow. Computed in float32 with autocast disabled: under bf16 autocast the
    projection's matrix products would give pixel coordinates with an 8-bit mantissa, a quarter
    of a pixel off at x = 64 (0.4 dB of PSNR on the synthetic test views).
    """
    batch, rays, samples, _ = points.shape
    num_views = sources.intrinsics.shape[1]
    height, width = sources.images.shape[-2:]
    flat = repeat(points.float(), "b r s c -> b v (r s) c", v=num_views)
    with torch.autocast(device_type=points.device.type, enabled=False):
        pixels, depth = project_points(
            flat, sources.intrinsics.float(), sources.cam_to_world.float()
        )
    x, y = pixels[..., 0], pixels[..., 1]
    # Inside the image's pixel area, in front of the camera; the reference's test is strict
    # between the first and last pixel centres (spec 2.5), half a pixel narrower.
    in_frustum = (depth > 0) & (x >= -0.5) & (x <= width - 0.5) & (y >= -0.5) & (y <= height - 0.5)
    grid = torch.stack([(2 * x + 1) / width - 1, (2 * y + 1) / height - 1], dim=-1).clamp(-2, 2)
    unfold = {"r": rays, "s": samples}
    return SourceProjection(
        grid=rearrange(grid, "b v (r s) c -> (b v) r s c", **unfold),
        depth=rearrange(depth, "b v (r s) -> (b v) r s", **unfold),
        in_frustum=rearrange(in_frustum, "b v (r s) -> (b v) r s", **unfold),
        num_views=num_views,
        image_size=(height, width),
    )


def select_samples(
    projection: SourceProjection, index: Int64[Tensor, "b rays k"]
) -> SourceProjection:
    """The projections of samples ``index`` of each ray, taken from ``projection``.

    The same numbers as projecting those samples' points again, without the work. Example: the
    guide sample of every ray, ``index = guide_index[..., None]`` (k = 1).
    """
    by_view = repeat(index, "b r k -> (b v) r k", v=projection.num_views)
    return SourceProjection(
        grid=projection.grid.gather(2, by_view[..., None].expand(-1, -1, -1, 2)),
        depth=projection.depth.gather(2, by_view),
        in_frustum=projection.in_frustum.gather(2, by_view),
        num_views=projection.num_views,
        image_size=projection.image_size,
    )


def _library_grid_read(values: Tensor, grid: Tensor) -> Tensor:
    return F.grid_sample(values, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _inference_grid_read(values: Tensor, grid: Tensor) -> Tensor:
    """The C++ volume read where it applies (:mod:`gsnerf.model.cpu_volume_read`), else the
    library's."""
    if cpu_volume_read.cpu_volume_read_applies(values, grid):
        return cpu_volume_read.cpu_volume_read(values, grid)
    return _library_grid_read(values, grid)


@torch.library.custom_op("gsnerf::border_grid_read", mutates_args=())
def border_grid_read(values: Tensor, grid: Tensor) -> Tensor:
    """``F.grid_sample`` bilinear (trilinear for 5-D ``values``), border-padded, align_corners
    False: the read of every map and volume here, as an operator the compiler cannot see into.

    Compiled CPU inference calls it (:func:`grid_read`): inductor otherwise replaces the
    library's vectorised CPU kernel with its own lowering of the read, and the compiled
    gathering took 257 ms of a tiny-model frame against 89-101 ms eager; with this operator the
    compiler fuses only the arithmetic around the reads (79 against 85 ms, benchmarks/). No
    autograd formula: training calls the library.
    """
    return _inference_grid_read(values, grid)


@border_grid_read.register_fake
def _border_grid_read_shape(values: Tensor, grid: Tensor) -> Tensor:
    return values.new_empty((values.shape[0], values.shape[1], *grid.shape[1:-1]))


def grid_read(values: Tensor, grid: Tensor) -> Tensor:
    """:func:`border_grid_read`'s numbers. CPU inference: that operator in compiled code, and
    the C++ volume reads where they apply; CUDA keeps inductor's own lowering (what was timed
    there), training the library's call."""
    if values.device.type != "cpu" or torch.is_grad_enabled():
        return _library_grid_read(values, grid)
    if torch.compiler.is_compiling():
        return border_grid_read(values, grid)
    return _inference_grid_read(values, grid)


def sample_maps(
    maps: Float[Tensor, "b v c h w"], grid: Float[Tensor, "bv rays samples 2"]
) -> Float[Tensor, "b rays samples v c"]:
    """Bilinear, border-padded read of per-view maps at normalised points, all views at once."""
    num_views = maps.shape[1]
    # Coordinates stay in their own precision: in bf16 they would be off by up to half a pixel.
    sampled = grid_read(rearrange(maps, "b v c h w -> (b v) c h w").to(grid.dtype), grid)
    return rearrange(sampled, "(b v) c r s -> b r s v c", v=num_views)


def sample_volume(
    volume: Float[Tensor, "b v c d h w"],
    grid: Float[Tensor, "bv rays samples 2"],
    depth_fraction: Float[Tensor, "bv rays samples"],
) -> Float[Tensor, "b rays samples v c"]:
    """Trilinear read of per-view volumes at ``(x, y)`` and a fraction of the hypothesis range.

    ``depth_fraction`` 0 is the first hypothesis, 1 the last; with align_corners=False index
    ``k = f (d - 1)`` sits at the normalised coordinate ``(2k + 1) / d - 1``.
    """
    num_views, count = volume.shape[1], volume.shape[3]
    index = depth_fraction * (count - 1)
    z = ((2 * index + 1) / count - 1).clamp(-2, 2)
    grid_3d = torch.cat([grid, z[..., None]], dim=-1)[:, :, :, None]
    sampled = grid_read(
        rearrange(volume, "b v c d h w -> (b v) c d h w").to(grid_3d.dtype), grid_3d
    )
    return rearrange(sampled[..., 0], "(b v) c r s -> b r s v c", v=num_views)


def angle_encoding(
    target_directions: Float[Tensor, "b rays 3"],
    points: Float[Tensor, "b rays samples 3"],
    source_centres: Float[Tensor, "b v 3"],
    frequencies: int,
) -> Float[Tensor, "b rays samples v c_angle"]:
    """``[sin(2^k theta), cos(2^k theta)]``, k < F, theta = angle(target ray, source centre -> X).

    ``theta`` in [0, pi] (``cos theta`` keeps the sign that the reference's ``|sin theta|``
    loses, spec 2.5). ``sin theta`` and ``cos theta`` are the normalised length of the cross
    product and the dot product of the two directions, and each doubling of the angle is
    ``sin 2a = 2 sin a cos a``, ``cos 2a = (cos a - sin a)(cos a + sin a)``: the numbers of
    ``atan2`` followed by ``sin`` and ``cos`` of its multiples, without evaluating any of them
    (in a compiled CPU frame those took 8.6 of about 220 ms). A point at a source centre has
    theta = 0. Example: a source looking along the target ray gives (0, 1, 0, 1, ...). No
    gradient flows through the angle.
    """
    offsets = points.detach()[:, :, :, None] - source_centres[:, None, None]
    direction = target_directions.detach()[:, :, None, None].expand_as(offsets)
    # |d| |offset| cos theta and |d| |offset| sin theta (sin theta >= 0 on [0, pi]).
    cosine = (direction * offsets).sum(dim=-1)
    sine = torch.linalg.cross(direction, offsets, dim=-1).norm(dim=-1)
    radius = torch.sqrt(sine * sine + cosine * cosine)
    seen = radius > 0
    safe_radius = torch.where(seen, radius, torch.ones_like(radius))
    sine = torch.where(seen, sine / safe_radius, torch.zeros_like(sine))
    cosine = torch.where(seen, cosine / safe_radius, torch.ones_like(cosine))
    terms = []
    for _ in range(frequencies):
        terms += [sine, cosine]
        sine, cosine = 2 * sine * cosine, (cosine - sine) * (cosine + sine)
    return torch.stack(terms, dim=-1)


def _kernel_layout(tensor: Tensor) -> Tensor:
    """``tensor`` contiguous in CPU inference, unchanged elsewhere.

    The heads' CPU kernel reads the image, colours and masks contiguous
    (:mod:`gsnerf.model.cpu_token_heads`) and otherwise copied the slices and the permuted masks
    of every chunk (2.3 ms of a compiled tiny-model frame); compiled gathering writes them so
    directly. Training and CUDA keep the views they had.
    """
    if tensor.device.type == "cpu" and not torch.is_grad_enabled():
        return tensor.contiguous()
    return tensor


def check_gather_inputs(sources: Views, geometry: SourceGeometry) -> None:
    """A ValueError unless ``geometry`` has one depth, window and volume per level and image
    features of the source images' size."""
    levels = len(geometry.volume_features)
    if not len(geometry.depths) == len(geometry.depth_ranges) == levels:
        raise ValueError(
            "gather_features: geometry.depths, depth_ranges and volume_features need one entry "
            f"per level, got {len(geometry.depths)}, {len(geometry.depth_ranges)}, {levels}"
        )
    if geometry.image_features.shape[-2:] != sources.images.shape[-2:]:
        raise ValueError(
            "gather_features: geometry.image_features must have the source images' size "
            f"{tuple(sources.images.shape[-2:])}, got {tuple(geometry.image_features.shape[-2:])}"
        )


def gather_features(
    projection: SourceProjection,
    points: Float[Tensor, "b rays samples 3"],
    target_directions: Float[Tensor, "b rays 3"],
    sources: Views,
    geometry: SourceGeometry,
    cfg: GatherCfg,
) -> GatheredFeatures:
    """Volume and image features, colours, masks and angle of every sample in every view."""
    check_gather_inputs(sources, geometry)
    levels = len(geometry.volume_features)
    z = rearrange(projection.depth, "(b v) r s -> b r s v", v=projection.num_views)
    volumes = []
    for level in range(levels):
        # The hypothesis windows come from detached depths (spec 2.5); they only place the read.
        maps = torch.cat(
            [geometry.depth_ranges[level], geometry.depths[level][:, :, None]], dim=2
        ).detach()
        first, last, source_depth = sample_maps(maps, projection.grid).unbind(dim=-1)
        fraction = (z - first) / (last - first).clamp_min(torch.finfo(first.dtype).tiny)
        volumes.append(
            sample_volume(
                geometry.volume_features[level],
                projection.grid,
                rearrange(fraction, "b r s v -> (b v) r s"),
            )
        )

    # In float32, as the read is: a 16-bit cat would round the colours (by up to 2e-3 in bf16).
    maps = torch.cat([geometry.image_features.float(), sources.images.float()], dim=2)
    full_res = sample_maps(maps, projection.grid)
    image_channels = geometry.image_features.shape[2]

    # Occlusion against the predicted depth of the finest level, the loop's last (spec 2.5).
    if OcclusionUnit(cfg.occlusion_unit) is OcclusionUnit.HYPOTHESIS_SPAN:
        tolerance = cfg.occlusion_tolerance * (last - first)
    else:
        tolerance = torch.full_like(z, cfg.occlusion_tolerance)
    visible = (z - source_depth) < tolerance

    return GatheredFeatures(
        volume=torch.cat(volumes, dim=-1),
        image=_kernel_layout(full_res[..., :image_channels]),
        colours=_kernel_layout(full_res[..., image_channels:]),
        angle=angle_encoding(
            target_directions, points, camera_centers(sources.cam_to_world), cfg.angle_frequencies
        ),
        in_frustum=_kernel_layout(
            rearrange(projection.in_frustum, "(b v) r s -> b r s v", v=projection.num_views)
        ),
        visible=_kernel_layout(visible),
    )


def gather_semantic_features(
    projection: SourceProjection,
    semantic_features: Float[Tensor, "b v c_sem h w"],
    cfg: GatherCfg,
) -> Float[Tensor, "b rays samples v c_patch"]:
    """Semantic features on a ``p x p`` patch around each projection, ``p^2 c_sem`` channels.

    Patch offsets are ``spacing * (-1, 0, 1)`` full-resolution pixels, rows major, then columns,
    one block of ``c_sem`` channels each (spec 2.5). One ``grid_sample`` reads every offset; in
    CPU inference a 3 x 3 patch of one-pixel spacing is read by a C++ kernel
    (:mod:`gsnerf.model.cpu_patch_read`), in CUDA inference any patch by a Triton kernel where
    that is switched on (:mod:`gsnerf.model.fused_patch_read`).
    """
    height, width = projection.image_size
    maps = rearrange(semantic_features, "b v c h w -> (b v) c h w")
    one_pixel_patch = cfg.semantic_patch == 3 and cfg.semantic_patch_spacing == 1.0
    if one_pixel_patch and cpu_patch_read.cpu_patch_read_applies(maps, projection.grid):
        # Semantic maps at full resolution, as the patch's one-pixel offsets assume.
        if maps.shape[-2:] == (height, width):
            return cpu_patch_read.cpu_patch_read(maps, projection.grid, projection.num_views)
    if fused_patch_read.fused_patch_read_applies(maps, projection.grid):
        return fused_patch_read.fused_patch_read(
            maps,
            projection.grid,
            projection.num_views,
            cfg.semantic_patch,
            cfg.semantic_patch_spacing,
            [height, width],
        )
    half = cfg.semantic_patch // 2
    steps = torch.arange(
        -half, half + 1, device=projection.grid.device, dtype=projection.grid.dtype
    )
    rows, cols = torch.meshgrid(steps, steps, indexing="ij")
    # A one-pixel step is 2 / W (x) or 2 / H (y) in normalised coordinates.
    offsets = (
        torch.stack([cols.flatten() * 2 / width, rows.flatten() * 2 / height], dim=-1)
        * cfg.semantic_patch_spacing
    )
    grid = projection.grid[:, :, :, None] + offsets
    patch_size = offsets.shape[0]
    sampled = sample_maps(semantic_features, rearrange(grid, "bv r s p c -> bv r (s p) c"))
    return rearrange(sampled, "b r (s p) v c -> b r s v (p c)", p=patch_size)


def attention_view_mask(
    in_frustum: Bool[Tensor, "*batch v"], visible: Bool[Tensor, "*batch v"]
) -> Bool[Tensor, "*batch v"]:
    """Views a sample's tokens may attend to and blend from (spec 2.6 mask rules, simplified).

    In-frustum and unoccluded views; if there are none, the in-frustum views; if none either,
    every view, so that masked softmaxes stay finite. The reference keeps occlusion flags of
    out-of-frustum views in the second case, which read the depth map's border; they are dropped.
    Example: in (1, 1, 0), visible (0, 0, 1) -> (1, 1, 0).
    """
    both = in_frustum & visible
    mask = torch.where(both.any(dim=-1, keepdim=True), both, in_frustum)
    return mask | ~mask.any(dim=-1, keepdim=True)
