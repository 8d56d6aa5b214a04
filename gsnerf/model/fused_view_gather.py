"""The radiance head's inputs of every sample in every source view in one Triton kernel, for
CUDA inference: the CUDA counterpart of :mod:`gsnerf.model.cpu_view_gather`, with the same
interface (:mod:`gsnerf.model.view_gather`).

In a compiled bf16 H100 frame of the paper model, sampling and gathering took 12 ms of the
cached frame's 35 ms (benchmarks/README.md), for arithmetic the FLOP counter puts at 0.09
GFLOP: it is launches and passes over ``(rays, samples, views, channels)`` tensors, one per
level map, volume, mask and encoding, then cats into the heads' layouts. Here each program
takes :data:`BLOCK` points of one source view and computes, per point, the projection, the
cascade levels' depth windows and trilinear volume reads, the full-resolution bilinear read of
image features and colours, the occlusion test and the view-angle encoding, reading every map
once and writing each output once, in the heads' layout. Maps and volumes may be float32 or
16-bit (bf16 autocast); reads and arithmetic are float32, as in the PyTorch path, which reads
them converted to float32.

The numbers are those of :func:`gsnerf.model.feature_gather.project_to_sources` and
:func:`~gsnerf.model.feature_gather.gather_features` up to float32 rounding (sums in another
order), so a sample within rounding of a mask's threshold could fall on the other side; in the
tests, run in Triton's interpreter on a CPU, the masks agree exactly. Divisions and square roots
are IEEE-rounded (``/``, ``sqrt_rn``), not the GPU's approximations.

Conditions (:func:`fused_view_gather_applies`): ``enabled`` (``eval.fused_gather``, the
benchmark's ``fused_gather``), Triton, CUDA tensors, no gradient wanted, float32 points and
cameras, 1 to :data:`MAX_LEVELS` levels of one channel count, at most :data:`MAX_CHANNELS`
channels, every volume of its depth window's size and of fewer than 2^31 cells a view. Called
as the operator ``gsnerf::fused_view_gather``, so that compiled gathering calls it within its
graph. Not yet timed on a GPU: off by default.
"""

import functools
from typing import no_type_check

import torch
from torch import Tensor

from gsnerf.model import view_gather
from gsnerf.model.attention_kernel import as_triton_operator
from gsnerf.model.feature_gather import GatherCfg
from gsnerf.model.view_gather import Outputs, empty_outputs, levels_fit
from gsnerf.types import SourceGeometry, Views

try:
    import triton
    import triton.language as tl

    # The kernel calls these by name: Triton resolves them in this module's globals.
    from gsnerf.model.triton_grid_read import (
        TINY,
        border_position,
        clamp_grid,
        corners,
        read_channels,
        read_plane,
    )
except ImportError:  # A CPU-only torch comes without Triton; the kernel is then never used.
    triton = None

# Points per program (one source view each) and warps per program.
BLOCK = 128
NUM_WARPS = 4
# Cascade levels the kernel takes (the paper's cascade has 3), and the widest volumes and image
# features (a tile of that many channels per point).
MAX_LEVELS = 3
MAX_CHANNELS = 64

# The module's switch (set_fused_kernels): True makes CUDA inference gather with the kernel.
enabled = False


if triton is not None:

    @triton.jit
    @no_type_check  # keeps jaxtyping's import hook off the kernel (attention_kernel.py)
    def _read_level(
        out_ptr,
        ranges_ptr,
        depth_ptr,
        volume_ptr,
        count,
        height,
        width,
        view,
        grid_x,
        grid_y,
        z,
        mask,
        LEVEL: tl.constexpr,
        LEVELS: tl.constexpr,
        CHANNELS: tl.constexpr,
        TILE: tl.constexpr,
    ):
        """One level for every point of the tile: its window ``(first, last)`` and source depth
        at the projection, returned, and the trilinear read of its volume at the depth's place
        in the window, stored at this level's channels of ``out_ptr`` (the tile's rows)."""
        plane = height * width
        base, step_x, step_y, fraction_x, fraction_y = corners(grid_x, grid_y, height, width)
        ranges = ranges_ptr + view * 2 * plane
        first = read_plane(ranges, base, step_x, step_y, fraction_x, fraction_y, mask)
        last = read_plane(ranges + plane, base, step_x, step_y, fraction_x, fraction_y, mask)
        depth = read_plane(
            depth_ptr + view * plane, base, step_x, step_y, fraction_x, fraction_y, mask
        )
        # (last - first).clamp_min(tiny), NaN kept; then the fraction's hypothesis index.
        span = last - first
        span = tl.where(span > TINY, span, tl.where(span == span, TINY, span))
        index = (z - first) / span * (count - 1.0)
        position = border_position(clamp_grid((2.0 * index + 1.0) / count - 1.0), count)
        slice_index = position.to(tl.int32)
        fraction_z = position - slice_index.to(tl.float32)
        step_z = tl.where(slice_index + 1 < count, plane, 0)

        channels = tl.arange(0, TILE)
        tile_mask = mask[:, None] & (channels < CHANNELS)[None, :]
        volume = volume_ptr + view * CHANNELS * count * plane + channels[None, :] * (count * plane)
        near = slice_index * plane + base
        # The two depth planes' bilinear reads, blended: trilinear interpolation.
        lower = read_channels(volume, near, step_x, step_y, fraction_x, fraction_y, tile_mask)
        upper = read_channels(
            volume, near + step_z, step_x, step_y, fraction_x, fraction_y, tile_mask
        )
        values = (1.0 - fraction_z)[:, None] * lower + fraction_z[:, None] * upper
        tl.store(out_ptr + LEVEL * CHANNELS + channels[None, :], values, mask=tile_mask)
        return first, last, depth

    @triton.jit
    @no_type_check
    def _affine_row(row_ptr, x, y, z):
        """``r0 x + r1 y + r2 z + r3`` for the four numbers at ``row_ptr``."""
        r0 = tl.load(row_ptr)
        r1 = tl.load(row_ptr + 1)
        r2 = tl.load(row_ptr + 2)
        r3 = tl.load(row_ptr + 3)
        return r0 * x + r1 * y + r2 * z + r3

    @triton.jit
    @no_type_check
    def _linear_row(row_ptr, x, y, z):
        """``k0 x + k1 y + k2 z`` for the three numbers at ``row_ptr``."""
        return tl.load(row_ptr) * x + tl.load(row_ptr + 1) * y + tl.load(row_ptr + 2) * z

    @triton.jit
    @no_type_check
    def _view_gather_kernel(
        grid_ptr, depth_out_ptr, volume_out_ptr, image_out_ptr, colour_out_ptr, angle_out_ptr,
        in_frustum_ptr, visible_ptr,
        points_ptr, directions_ptr, cameras_ptr, centres_ptr, features_ptr, images_ptr,
        ranges_0, depth_0, volume_0, count_0, height_0, width_0,
        ranges_1, depth_1, volume_1, count_1, height_1, width_1,
        ranges_2, depth_2, volume_2, count_2, height_2, width_2,
        per_batch, views, height, width, tolerance,
        LEVELS: tl.constexpr, VOLUME_CHANNELS: tl.constexpr, VOLUME_TILE: tl.constexpr,
        IMAGE_CHANNELS: tl.constexpr, IMAGE_TILE: tl.constexpr, FREQUENCIES: tl.constexpr,
        IN_SPAN: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """Points ``[BLOCK i, BLOCK (i + 1))`` of batch element ``b`` in view ``v``, program
        ``(i, b views + v)``. Layouts as csrc/view_gather.cpp's (its header); the levels'
        arguments past ``LEVELS`` are unused."""
        # Inductor passes Python floats to user kernels as fp64 (fused_transformer.py).
        tolerance = tl.cast(tolerance, tl.float32)
        n = tl.program_id(1).to(tl.int64)
        q = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = q < per_batch
        flat = (n // views) * per_batch + q
        out_row = flat * views + n % views
        px = tl.load(points_ptr + flat * 3, mask=mask, other=0.0)
        py = tl.load(points_ptr + flat * 3 + 1, mask=mask, other=0.0)
        pz = tl.load(points_ptr + flat * 3 + 2, mask=mask, other=0.0)

        # p = K (R^T (X - t)), R^T and -R^T t precomputed (project_points).
        camera = cameras_ptr + n * 21
        cx = _affine_row(camera, px, py, pz)
        cy = _affine_row(camera + 4, px, py, pz)
        z = _affine_row(camera + 8, px, py, pz)
        safe_z = tl.where(tl.abs(z) < 1e-8, 1e-8, z)
        x = _linear_row(camera + 12, cx, cy, z) / safe_z
        y = _linear_row(camera + 15, cx, cy, z) / safe_z
        in_frustum = (z > 0.0) & (x >= -0.5) & (x <= width - 0.5)
        in_frustum = in_frustum & (y >= -0.5) & (y <= height - 0.5)
        grid_x = clamp_grid((2.0 * x + 1.0) / width - 1.0)
        grid_y = clamp_grid((2.0 * y + 1.0) / height - 1.0)
        tl.store(grid_ptr + (n * per_batch + q) * 2, grid_x, mask=mask)
        tl.store(grid_ptr + (n * per_batch + q) * 2 + 1, grid_y, mask=mask)
        tl.store(depth_out_ptr + n * per_batch + q, z, mask=mask)
        tl.store(in_frustum_ptr + out_row, in_frustum, mask=mask)

        volume_rows = volume_out_ptr + (out_row * (LEVELS * VOLUME_CHANNELS))[:, None]
        first, last, source_depth = _read_level(
            volume_rows, ranges_0, depth_0, volume_0, count_0, height_0, width_0, n,
            grid_x, grid_y, z, mask, 0, LEVELS, VOLUME_CHANNELS, VOLUME_TILE,
        )  # fmt: skip
        if LEVELS > 1:
            first, last, source_depth = _read_level(
                volume_rows, ranges_1, depth_1, volume_1, count_1, height_1, width_1, n,
                grid_x, grid_y, z, mask, 1, LEVELS, VOLUME_CHANNELS, VOLUME_TILE,
            )  # fmt: skip
        if LEVELS > 2:
            first, last, source_depth = _read_level(
                volume_rows, ranges_2, depth_2, volume_2, count_2, height_2, width_2, n,
                grid_x, grid_y, z, mask, 2, LEVELS, VOLUME_CHANNELS, VOLUME_TILE,
            )  # fmt: skip
        # Occlusion against the finest level, the last read.
        if IN_SPAN:
            visible = (z - source_depth) < tolerance * (last - first)
        else:
            visible = (z - source_depth) < tolerance
        tl.store(visible_ptr + out_row, visible, mask=mask)

        base, step_x, step_y, fraction_x, fraction_y = corners(grid_x, grid_y, height, width)
        plane = height * width
        channels = tl.arange(0, IMAGE_TILE)
        tile_mask = mask[:, None] & (channels < IMAGE_CHANNELS)[None, :]
        features = features_ptr + n * IMAGE_CHANNELS * plane + channels[None, :] * plane
        values = read_channels(features, base, step_x, step_y, fraction_x, fraction_y, tile_mask)
        image_rows = image_out_ptr + (out_row * IMAGE_CHANNELS)[:, None]
        tl.store(image_rows + channels[None, :], values, mask=tile_mask)
        rgb = tl.arange(0, 4)
        rgb_mask = mask[:, None] & (rgb < 3)[None, :]
        colours = images_ptr + n * 3 * plane + rgb[None, :] * plane
        values = read_channels(colours, base, step_x, step_y, fraction_x, fraction_y, rgb_mask)
        tl.store(colour_out_ptr + (out_row * 3)[:, None] + rgb[None, :], values, mask=rgb_mask)

        # [sin(2^k theta), cos(2^k theta)], theta between the target ray and the source centre
        # -> point direction (feature_gather.angle_encoding).
        ox = px - tl.load(centres_ptr + n * 3)
        oy = py - tl.load(centres_ptr + n * 3 + 1)
        oz = pz - tl.load(centres_ptr + n * 3 + 2)
        dx = tl.load(directions_ptr + flat * 3, mask=mask, other=0.0)
        dy = tl.load(directions_ptr + flat * 3 + 1, mask=mask, other=0.0)
        dz = tl.load(directions_ptr + flat * 3 + 2, mask=mask, other=0.0)
        cosine = dx * ox + dy * oy + dz * oz
        cross_x = dy * oz - dz * oy
        cross_y = dz * ox - dx * oz
        cross_z = dx * oy - dy * ox
        sine = tl.sqrt_rn(cross_x * cross_x + cross_y * cross_y + cross_z * cross_z)
        radius = tl.sqrt_rn(sine * sine + cosine * cosine)
        seen = radius > 0.0
        safe_radius = tl.where(seen, radius, 1.0)
        sine = tl.where(seen, sine / safe_radius, 0.0)
        cosine = tl.where(seen, cosine / safe_radius, 1.0)
        angle_row = angle_out_ptr + out_row * (2 * FREQUENCIES)
        for k in tl.static_range(FREQUENCIES):
            tl.store(angle_row + 2 * k, sine, mask=mask)
            tl.store(angle_row + 2 * k + 1, cosine, mask=mask)
            doubled_sine = 2.0 * sine * cosine
            cosine = (cosine - sine) * (cosine + sine)
            sine = doubled_sine


def launch_view_gather(
    points: Tensor,
    directions: Tensor,
    cameras: Tensor,
    centres: Tensor,
    image_features: Tensor,
    images: Tensor,
    depth_ranges: list[Tensor],
    depths: list[Tensor],
    volumes: list[Tensor],
    tolerance: float,
    tolerance_in_span: bool,
    frequencies: int,
    launcher: object | None = None,
) -> Outputs:
    """Run the kernel; arguments and outputs as :func:`gsnerf.model.view_gather.gather_views`
    passes and reads them. ``launcher``: ``wrap_triton`` of the kernel (unset; compiled code can
    then call it), or a stand-in that records the launch
    (:mod:`gsnerf.evaluation.kernel_report`)."""
    outputs = empty_outputs(points, cameras, image_features, volumes, frequencies)
    batch, rays, samples, _ = points.shape
    views = cameras.shape[1]
    height, width = images.shape[-2:]
    levels = []
    for window, depth, volume in zip(depth_ranges, depths, volumes, strict=True):
        levels += [window.contiguous(), depth.contiguous(), volume.contiguous(), *volume.shape[-3:]]
    # The unused levels' arguments repeat the first level's.
    levels += levels[:6] * (MAX_LEVELS - len(volumes))
    per_batch = rays * samples
    inputs = [points, directions, cameras, centres, image_features, images]
    launcher = launcher or torch.library.wrap_triton(_view_gather_kernel)
    launcher[(triton.cdiv(per_batch, BLOCK), batch * views)](
        *outputs,
        *[tensor.contiguous() for tensor in inputs],
        *levels,
        per_batch,
        views,
        height,
        width,
        tolerance,
        LEVELS=len(volumes),
        VOLUME_CHANNELS=volumes[0].shape[2],
        VOLUME_TILE=triton.next_power_of_2(volumes[0].shape[2]),
        IMAGE_CHANNELS=image_features.shape[2],
        IMAGE_TILE=triton.next_power_of_2(image_features.shape[2]),
        FREQUENCIES=frequencies,
        IN_SPAN=tolerance_in_span,
        BLOCK=BLOCK,
        num_warps=NUM_WARPS,
    )
    return outputs


def _fused_view_gather(
    points: Tensor,
    directions: Tensor,
    cameras: Tensor,
    centres: Tensor,
    image_features: Tensor,
    images: Tensor,
    depth_ranges: list[Tensor],
    depths: list[Tensor],
    volumes: list[Tensor],
    tolerance: float,
    tolerance_in_span: bool,
    frequencies: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    return launch_view_gather(
        points,
        directions,
        cameras,
        centres,
        image_features,
        images,
        depth_ranges,
        depths,
        volumes,
        tolerance,
        tolerance_in_span,
        frequencies,
    )


# The kernel as a torch operator, with launch_view_gather's arguments and outputs.
fused_view_gather_operator = as_triton_operator("fused_view_gather", _fused_view_gather)


def kernel_fits(points: Tensor, sources: Views, geometry: SourceGeometry) -> bool:
    """Whether the kernel takes these inputs on any device: float32 points and cameras, float32
    or 16-bit maps, at most :data:`MAX_LEVELS` levels that :func:`levels_fit`."""
    maps = [geometry.image_features, *geometry.volume_features, *geometry.depths]
    maps += [*geometry.depth_ranges, sources.images]
    cameras = [points, sources.intrinsics, sources.cam_to_world]
    return (
        all(tensor.dtype == torch.float32 for tensor in cameras)
        and all(tensor.dtype in (torch.float32, torch.bfloat16, torch.float16) for tensor in maps)
        and len(geometry.volume_features) <= MAX_LEVELS
        and levels_fit(geometry, MAX_CHANNELS)
    )


def fused_view_gather_applies(
    points: Tensor, sources: Views, geometry: SourceGeometry, cfg: GatherCfg
) -> bool:
    """Whether :func:`gather_views` gathers for these inputs (module doc); ``cfg`` any."""
    tensors = [points, sources.images, sources.cam_to_world, geometry.image_features]
    tensors += [*geometry.volume_features, *geometry.depths, *geometry.depth_ranges]
    return (
        enabled
        and triton is not None
        and not torch.is_grad_enabled()
        and all(tensor.is_cuda for tensor in tensors)
        and kernel_fits(points, sources, geometry)
    )


# project_to_sources and gather_features in the kernel (module doc); on CPU tensors
# in Triton's interpreter (TRITON_INTERPRET=1: the tests), with their arguments:
# points, target ray directions, sources, geometry, GatherCfg.
gather_views = functools.partial(view_gather.gather_views, fused_view_gather_operator)
