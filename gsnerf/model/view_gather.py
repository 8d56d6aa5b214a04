"""The one-pass view gathering's interface, shared by its C++ kernel (CPU,
:mod:`gsnerf.model.cpu_view_gather`) and its Triton kernel (CUDA,
:mod:`gsnerf.model.fused_view_gather`).

Both compute what :func:`gsnerf.model.feature_gather.project_to_sources` and
:func:`~gsnerf.model.feature_gather.gather_features` compute, per sample and source view in one
pass: the projection, the cascade levels' depth windows and volume reads, the full-resolution
read of image features and colours, the occlusion test and the view-angle encoding. Both take
the same operator arguments (:func:`gather_views`) and write the same outputs
(:func:`empty_outputs`), each once, in the layout the heads read.
"""

from collections.abc import Callable

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor

from gsnerf.geometry.camera import camera_centers, invert_pose
from gsnerf.model.feature_gather import (
    GatherCfg,
    GatheredFeatures,
    OcclusionUnit,
    SourceProjection,
    check_gather_inputs,
)
from gsnerf.types import SourceGeometry, Views

# The kernel's outputs: grid, depth, volume, image, colours, angle, in_frustum, visible.
Outputs = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


def empty_outputs(
    points: Tensor, cameras: Tensor, image_features: Tensor, volumes: list[Tensor], frequencies: int
) -> Outputs:
    """The outputs for ``points`` ``(b, rays, samples, 3)`` and ``cameras`` ``(b, v, 21)``:
    ``grid`` ``(b v, rays, samples, 2)`` and ``depth`` ``(b v, rays, samples)`` (float32), then
    ``volume`` (every level's channels, coarse first), ``image``, ``colours``, ``angle`` (float32)
    and ``in_frustum``, ``visible`` (bool), each ``(b, rays, samples, v, ...)``."""
    batch, rays, samples, _ = points.shape
    views = cameras.shape[1]
    per_view = (batch, rays, samples, views)
    volume_channels = len(volumes) * volumes[0].shape[2]
    float32 = {"dtype": torch.float32, "device": points.device}
    return (
        torch.empty((batch * views, rays, samples, 2), **float32),
        torch.empty((batch * views, rays, samples), **float32),
        torch.empty((*per_view, volume_channels), **float32),
        torch.empty((*per_view, image_features.shape[2]), **float32),
        torch.empty((*per_view, 3), **float32),
        torch.empty((*per_view, 2 * frequencies), **float32),
        torch.empty(per_view, dtype=torch.bool, device=points.device),
        torch.empty(per_view, dtype=torch.bool, device=points.device),
    )


def levels_fit(geometry: SourceGeometry, max_channels: int) -> bool:
    """Whether the kernels take these levels: at least one, as many channels in each and at most
    ``max_channels`` (the image features too), every volume of its depth window's size and of
    fewer than 2^31 cells a view (the kernels' offsets within a view are 32-bit)."""
    volumes = geometry.volume_features
    if not volumes or len({volume.shape[2] for volume in volumes}) != 1:
        return False
    if max(volumes[0].shape[2], geometry.image_features.shape[2]) > max_channels:
        return False
    for volume, depth, window in zip(volumes, geometry.depths, geometry.depth_ranges, strict=False):
        if volume.shape[-2:] != depth.shape[-2:] or volume.shape[-2:] != window.shape[-2:]:
            return False
        if volume.shape[2:].numel() >= 2**31:
            return False
    return True


# An operator with the kernels' arguments: points, directions, cameras, centres, image features,
# images, depth windows, depths and volumes per level, tolerance, tolerance in spans, frequencies.
GatherOperator = Callable[..., Outputs]


def gather_views(
    operator: GatherOperator,
    points: Float[Tensor, "b rays samples 3"],
    target_directions: Float[Tensor, "b rays 3"],
    sources: Views,
    geometry: SourceGeometry,
    cfg: GatherCfg,
) -> tuple[SourceProjection, GatheredFeatures]:
    """``project_to_sources`` and ``gather_features`` through ``operator`` (module doc).

    The cameras go in as ``(b, v, 21)`` rows: world-to-camera ``[R^T | -R^T t]`` (3 x 4), then
    the intrinsics (3 x 3), row major; every point with its own ray direction.
    """
    check_gather_inputs(sources, geometry)
    world_to_camera = invert_pose(sources.cam_to_world)[..., :3, :]
    cameras = torch.cat([world_to_camera.flatten(-2), sources.intrinsics.flatten(-2)], dim=-1)
    in_span = OcclusionUnit(cfg.occlusion_unit) is OcclusionUnit.HYPOTHESIS_SPAN
    # One direction per point: a kernel's loop over points then needs no division into rays.
    directions = target_directions[:, :, None].expand_as(points)
    grid, depth, volume, image, colours, angle, in_frustum, visible = operator(
        points,
        directions,
        cameras.float(),
        camera_centers(sources.cam_to_world).float(),
        geometry.image_features,
        sources.images,
        # Inference only (no gradient), so the windows need no detaching.
        list(geometry.depth_ranges),
        list(geometry.depths),
        list(geometry.volume_features),
        cfg.occlusion_tolerance,
        in_span,
        cfg.angle_frequencies,
    )
    views = sources.intrinsics.shape[1]
    projection = SourceProjection(
        grid=grid,
        depth=depth,
        in_frustum=rearrange(in_frustum, "b r s v -> (b v) r s"),
        num_views=views,
        image_size=(sources.images.shape[-2], sources.images.shape[-1]),
    )
    gathered = GatheredFeatures(
        volume=volume,
        image=image,
        colours=colours,
        angle=angle,
        in_frustum=in_frustum,
        visible=visible,
    )
    return projection, gathered
