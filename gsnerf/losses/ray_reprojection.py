"""Source depths taught by the rendered rays, without ground truth (spec 3.5a, GeoNeRF's term).

Each training ray's rendered depth gives a 3-D point ``P = o + d * dir`` (detached). Seen from
source view ``v``, ``P`` lands at pixel ``x_v`` with z-depth ``z_v``: a pseudo ground truth for
that source's predicted depth at ``x_v``. A pair (ray, view) is trusted only where the point is
likely right:

- ``P`` is in front of the source and inside its image;
- photo-consistency: the source colour at ``x_v`` is within ``photo_threshold`` (mean absolute
  difference over RGB) of the target's colour at the ray;
- the rendered colour is within ``render_threshold`` of the target's colour;
- texture: the grey values of the source's ``patch`` x ``patch`` window around ``x_v`` vary
  (standard deviation above ``texture_threshold``): on a flat colour, photo-consistency says
  nothing about depth.

Per cascade level ``l`` the predicted depth ``D_l,v`` is read bilinearly at ``x_v`` and::

    L_reproj = sum_l level_weights[l] * mean over trusted (ray, view) pairs of SL1(D_l,v(x_v), z_v)

Differences from the reference: the mean runs over the trusted pairs (the reference divides by
all rays, spec 7.17), and the maps are read at the projected pixel centres at every level (the
reference's grid uses x / W with ``align_corners=True``, a slight misalignment).
"""

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from jaxtyping import Bool, Float
from torch import Tensor

from gsnerf.geometry.camera import project_points
from gsnerf.losses.depth_supervised import masked_smooth_l1
from gsnerf.types import Views


def read_at_pixels(
    maps: Float[Tensor, "n c h w"], pixels: Float[Tensor, "n p 2"], image_size: tuple[int, int]
) -> Float[Tensor, "n c p"]:
    """Bilinear reads of ``maps`` at full-resolution pixel coordinates ``(x, y)`` (pixel
    centres at integers) of an image of ``image_size = (height, width)``, whatever the maps'
    own resolution: a pixel centre maps to the same relative position at every level."""
    height, width = image_size
    scale = pixels.new_tensor([width, height])
    grid = 2.0 * (pixels + 0.5) / scale - 1.0
    read = F.grid_sample(
        maps, grid[:, None], mode="bilinear", padding_mode="border", align_corners=False
    )
    return read[:, :, 0]


def patch_deviation(images: Float[Tensor, "n 3 h w"], patch: int) -> Float[Tensor, "n 1 h w"]:
    """Standard deviation of the grey values (RGB mean) in each ``patch`` x ``patch`` window,
    clipped at the image border. Example: a constant image -> 0 everywhere."""
    grey = images.mean(dim=1, keepdim=True)
    # Centred first: E[g^2] - E[g]^2 loses the small variances to rounding otherwise.
    grey = grey - grey.mean(dim=(2, 3), keepdim=True)
    window = dict(kernel_size=patch, stride=1, padding=patch // 2, count_include_pad=False)
    mean = F.avg_pool2d(grey, **window)
    mean_square = F.avg_pool2d(grey * grey, **window)
    return (mean_square - mean * mean).clamp_min(0.0).sqrt()


def reprojected_targets(
    points: Float[Tensor, "b rays 3"],
    rendered_rgb: Float[Tensor, "b rays 3"],
    target_rgb: Float[Tensor, "b rays 3"],
    sources: Views,
    photo_threshold: float,
    render_threshold: float,
    texture_threshold: float,
    patch: int,
) -> tuple[Float[Tensor, "b v rays 2"], Float[Tensor, "b v rays"], Bool[Tensor, "b v rays"]]:
    """Where each ray's rendered point lands in each source view: pixel ``(x, y)``, its z-depth
    there, and whether the pair is trusted (module doc). Nothing here carries gradients."""
    with torch.no_grad():
        batch, views = sources.images.shape[:2]
        height, width = sources.images.shape[-2:]
        pixels, z = project_points(
            repeat(points.float(), "b r xyz -> b v r xyz", v=views),
            sources.intrinsics.float(),
            sources.cam_to_world.float(),
        )
        x, y = pixels[..., 0], pixels[..., 1]
        trusted = (z > 0) & (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
        flat_images = rearrange(sources.images.float(), "b v c h w -> (b v) c h w")
        flat_pixels = rearrange(pixels, "b v r xy -> (b v) r xy")
        colours = read_at_pixels(flat_images, flat_pixels, (height, width))
        colours = rearrange(colours, "(b v) c r -> b v r c", b=batch)
        target = target_rgb.float()[:, None]
        trusted &= (colours - target).abs().mean(-1) < photo_threshold
        rendered_ok = (rendered_rgb.float() - target_rgb.float()).abs().mean(-1) < render_threshold
        trusted &= rendered_ok[:, None]
        texture = read_at_pixels(patch_deviation(flat_images, patch), flat_pixels, (height, width))
        trusted &= rearrange(texture, "(b v) 1 r -> b v r", b=batch) > texture_threshold
    return pixels, z, trusted


def ray_reprojection_loss(
    depths: list[Float[Tensor, "b v _ _"]],
    pixels: Float[Tensor, "b v rays 2"],
    z: Float[Tensor, "b v rays"],
    trusted: Bool[Tensor, "b v rays"],
    image_size: tuple[int, int],
    level_weights: list[float],
    beta: float,
) -> Float[Tensor, ""]:
    """``sum_l level_weights[l] * SL1(D_l,v(x_v), z_v)`` averaged over the trusted pairs
    (module doc); 0 with a zero gradient where no pair is trusted."""
    if len(depths) != len(level_weights):
        raise ValueError(
            f"ray_reprojection_loss: the geo-reasoner gives {len(depths)} depth levels but "
            f"loss.self_supervised.level_weights has {len(level_weights)} (coarse -> fine)"
        )
    batch = pixels.shape[0]
    flat_pixels = rearrange(pixels, "b v r xy -> (b v) r xy")
    total = depths[0].new_zeros((), dtype=torch.float32)
    for level_depth, level_weight in zip(depths, level_weights, strict=True):
        flat_depth = rearrange(level_depth.float(), "b v h w -> (b v) 1 h w")
        read = read_at_pixels(flat_depth, flat_pixels, image_size)
        predicted = rearrange(read, "(b v) 1 r -> b v r", b=batch)
        total = total + level_weight * masked_smooth_l1(predicted, z.detach(), trusted, beta)
    return total
