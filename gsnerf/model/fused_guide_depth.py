"""The target-view guide depth D_T (:mod:`gsnerf.model.target_depth`) in Triton kernels, on CUDA.

D_T runs once per target view, cached or not: the z-buffered splat of every source depth map
into the target camera, the hole-filling passes and the bilateral filter. In PyTorch that is
about a hundred small passes (footprint indices and masks, a float ``scatter_reduce``, eight
fill passes of five each, kornia's windowed filter); in an H100 bf16 paper frame D_T took 4.8
ms of the cached frame's 35 (benchmarks/README.md). Here it is three kernels:

1. :func:`_splat_kernel`: one program per :data:`BLOCK` source pixels of one view lifts each
   pixel with its depth, moves it into the target camera and projects it (the float32 steps of
   :func:`gsnerf.geometry.splatting.reproject_depth_batched`: ``K_src^-1``, the source-to-target
   transform composed in float64, ``K_tgt``), and writes its z-depth to every target pixel of
   its footprint with an integer atomic minimum: positive float32 values order as their bit
   patterns do, so the minimum of the bits is the bits of the minimum, exactly the z-buffer of
   ``scatter_reduce(..., "amin")`` whatever the order.
2. :func:`_fill_kernel`, once per fill pass: the farthest valid depth of each invalid pixel's
   ``(2r + 1)^2`` window (invalid pixels hold 0 and valid depths are positive, so one map
   carries both). The median rule keeps the PyTorch code.
3. :func:`_bilateral_kernel`: kornia's joint bilateral filter of the depth guided by itself,
   normalised by the valid mask (:func:`gsnerf.model.target_depth.smooth_depth`), over the same
   replicate-bordered window with kornia's spatial kernel.

The splat's coordinates carry float32 rounding as the PyTorch ones do, in another order, so a
point that lies within rounding of a footprint's edge may cover one pixel more or less than
there; the tests bound how often (as rarely as the PyTorch path's own float32 rounding against
float64). Everything else is the PyTorch arithmetic.

Conditions (:func:`fused_guide_depth_applies`): ``enabled`` (``eval.fused_guide_depth``, the
benchmark's ``fused_guide_depth``), Triton, CUDA depths that need no gradient (the renderer
detaches them), the farthest-depth fill. Called as the operator ``gsnerf::fused_guide_depth``,
so that a compiled D_T (``compile_parts`` ``guide_depth``) calls it within its graph. Not yet
timed on a GPU: off by default.
"""

import math
from typing import no_type_check

import torch
from jaxtyping import Float
from kornia.filters import get_gaussian_kernel2d
from torch import Tensor

from gsnerf.geometry.camera import invert_pose
from gsnerf.model.attention_kernel import as_triton_operator
from gsnerf.types import GuideDepth

try:
    import triton
    import triton.language as tl
except ImportError:  # A CPU-only torch comes without Triton; the kernels are then never used.
    triton = None

# Pixels per program (source pixels for the splat, target pixels for the others), and warps.
BLOCK = 256
NUM_WARPS = 4
# The bits of float32 +inf: the z-buffer's empty value.
EMPTY = 0x7F800000

# The module's switch (set_fused_kernels).
enabled = False


if triton is not None:

    @triton.jit
    @no_type_check  # keeps jaxtyping's import hook off the kernel (attention_kernel.py)
    def _row_product(matrix_ptr, row: tl.constexpr, x, y, z):
        """``matrix[row] . (x, y, z)`` of a row-major 3-column matrix, in the matrix product's
        order."""
        first = tl.load(matrix_ptr + 3 * row) * x + tl.load(matrix_ptr + 3 * row + 1) * y
        return first + tl.load(matrix_ptr + 3 * row + 2) * z

    @triton.jit
    @no_type_check
    def _splat_kernel(
        buffer_ptr, depths_ptr, inverse_k_ptr, to_target_ptr, target_k_ptr, source_height,
        source_width, height, width, views, radius, tolerance, CANDIDATES: tl.constexpr,
        BLOCK: tl.constexpr,
    ):  # fmt: skip
        """Source pixels ``[BLOCK i, BLOCK (i + 1))`` of view ``p % views`` of item ``p //
        views``, program ``(i, p)``. ``depths`` ``(b, v, h_src, w_src)``, ``inverse_k`` ``(b
        v, 9)``, ``to_target`` ``(b v, 12)`` (rotation rows, then translation), ``target_k``
        ``(b, 9)``, ``buffer`` ``(b, h, w)`` int32, float32 bits, filled with :data:`EMPTY`."""
        pair = tl.program_id(1).to(tl.int64)
        b = pair // views
        pixel = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = pixel < source_height * source_width
        depth = tl.load(depths_ptr + pair * source_height * source_width + pixel, mask=mask)
        x = tl.cast(pixel % source_width, tl.float32)
        y = tl.cast(pixel // source_width, tl.float32)
        inverse_k = inverse_k_ptr + pair * 9
        # The camera point d K^-1 (x, y, 1), then R p + t into the target camera.
        p0 = _row_product(inverse_k, 0, x, y, 1.0) * depth
        p1 = _row_product(inverse_k, 1, x, y, 1.0) * depth
        p2 = _row_product(inverse_k, 2, x, y, 1.0) * depth
        to_target = to_target_ptr + pair * 12
        t0 = _row_product(to_target, 0, p0, p1, p2) + tl.load(to_target + 9)
        t1 = _row_product(to_target, 1, p0, p1, p2) + tl.load(to_target + 10)
        z = _row_product(to_target, 2, p0, p1, p2) + tl.load(to_target + 11)
        target_k = target_k_ptr + b * 9
        # Positive, finite (NaN fails both) depths in front of the target camera.
        usable = mask & (depth > 0.0) & (depth <= 3.4028234663852886e38) & (z > 0.0)
        safe_z = tl.where(usable, z, 1.0)
        u = _row_product(target_k, 0, t0, t1, z) / safe_z
        v = _row_product(target_k, 1, t0, t1, z) / safe_z
        radius = tl.cast(radius, tl.float32)
        tolerance = tl.cast(tolerance, tl.float32)
        first_column = tl.ceil(u - radius + tolerance)
        first_row = tl.ceil(v - radius + tolerance)
        bits = z.to(tl.int32, bitcast=True)
        image = buffer_ptr + b * height * width
        for i in tl.static_range(CANDIDATES):
            row = first_row + i
            row_covered = (row < v + radius - tolerance) & (row >= 0.0) & (row <= height - 1.0)
            for j in tl.static_range(CANDIDATES):
                column = first_column + j
                covered = (column < u + radius - tolerance) & (column >= 0.0)
                covered = usable & row_covered & covered & (column <= width - 1.0)
                # Uncovered (possibly huge or NaN) coordinates become 0 before the integer cast.
                at = tl.where(covered, row, 0.0).to(tl.int32) * width
                at += tl.where(covered, column, 0.0).to(tl.int32)
                tl.atomic_min(image + at, bits, mask=covered, sem="relaxed")

    @triton.jit
    @no_type_check
    def _fill_kernel(out_ptr, depth_ptr, height, width, RADIUS: tl.constexpr, BLOCK: tl.constexpr):
        """One fill pass over pixels ``[BLOCK i, BLOCK (i + 1))`` of item ``b``, program ``(i,
        b)``: an invalid pixel (0) takes the largest depth of its window, if any."""
        b = tl.program_id(1).to(tl.int64)
        pixel = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = pixel < height * width
        image = depth_ptr + b * height * width
        depth = tl.load(image + pixel, mask=mask, other=0.0)
        x = pixel % width
        y = pixel // width
        candidate = tl.zeros((BLOCK,), dtype=tl.float32)
        for dy in tl.static_range(-RADIUS, RADIUS + 1):
            for dx in tl.static_range(-RADIUS, RADIUS + 1):
                inside = mask & (depth <= 0.0) & (y + dy >= 0) & (y + dy < height)
                inside = inside & (x + dx >= 0) & (x + dx < width)
                neighbour = tl.load(image + pixel + dy * width + dx, mask=inside, other=0.0)
                candidate = tl.maximum(candidate, neighbour)
        filled = tl.where(depth > 0.0, depth, candidate)
        tl.store(out_ptr + b * height * width + pixel, filled, mask=mask)

    @triton.jit
    @no_type_check
    def _bilateral_kernel(
        out_ptr, depth_ptr, spatial_ptr, height, width, coefficient, SIZE: tl.constexpr,
        BLOCK: tl.constexpr,
    ):  # fmt: skip
        """The bilateral filter over pixels ``[BLOCK i, BLOCK (i + 1))`` of item ``b``, program
        ``(i, b)``: ``sum_q k m d / sum_q k m`` with ``k = spatial exp(coefficient (d_p -
        d_q)^2)`` over the replicate-bordered ``SIZE^2`` window (``spatial``: kornia's kernel,
        row-major), 0 where invalid."""
        b = tl.program_id(1).to(tl.int64)
        pixel = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = pixel < height * width
        image = depth_ptr + b * height * width
        centre = tl.load(image + pixel, mask=mask, other=0.0)
        valid = mask & (centre > 0.0)
        x = pixel % width
        y = pixel // width
        coefficient = tl.cast(coefficient, tl.float32)
        numerator = tl.zeros((BLOCK,), dtype=tl.float32)
        denominator = tl.zeros((BLOCK,), dtype=tl.float32)
        for tap in range(SIZE * SIZE):
            row = tl.minimum(tl.maximum(y + tap // SIZE - SIZE // 2, 0), height - 1)
            column = tl.minimum(tl.maximum(x + tap % SIZE - SIZE // 2, 0), width - 1)
            neighbour = tl.load(image + row * width + column, mask=valid, other=0.0)
            difference = neighbour - centre
            weight = tl.load(spatial_ptr + tap) * tl.exp(coefficient * (difference * difference))
            numerator += weight * neighbour
            denominator += tl.where(neighbour > 0.0, weight, 0.0)
        smoothed = numerator / tl.maximum(denominator, 1.1754943508222875e-38)
        tl.store(out_ptr + b * height * width + pixel, tl.where(valid, smoothed, 0.0), mask=mask)


def splat_parameters(
    src_intrinsics: Tensor,
    src_cam_to_world: Tensor,
    tgt_intrinsics: Tensor,
    tgt_cam_to_world: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """The splat's cameras as the kernel reads them, float32: ``K_src^-1`` ``(b v, 9)``, the
    source-to-target transforms ``(b v, 12)`` (composed in float64, as
    :func:`gsnerf.geometry.splatting.reproject_depth_batched` does) and ``K_tgt`` ``(b, 9)``."""
    world_to_target = invert_pose(tgt_cam_to_world.double())[:, None]
    to_target = (world_to_target @ src_cam_to_world.double()).float()
    rows = torch.cat([to_target[..., :3, :3].flatten(-2), to_target[..., :3, 3]], dim=-1)
    inverse_k = torch.linalg.inv(src_intrinsics.float())
    return (
        inverse_k.flatten(-2).flatten(0, 1),
        rows.flatten(0, 1),
        tgt_intrinsics.float().flatten(1),
    )


def launch_splat(
    src_depths: Tensor,
    inverse_k: Tensor,
    to_target: Tensor,
    target_k: Tensor,
    height: int,
    width: int,
    footprint_radius: float,
    snap_tolerance: float,
    launcher: object | None = None,
) -> Tensor:
    """The z-buffered splat ``(b, height, width)``, 0 where no point landed, of ``src_depths``
    ``(b, v, h_src, w_src)`` with :func:`splat_parameters`. ``launcher``: ``wrap_triton`` of
    the kernel (unset), or a stand-in that records the launch (:mod:`gsnerf.evaluation.
    kernel_report`)."""
    batch, views, source_height, source_width = src_depths.shape
    buffer = torch.full((batch, height, width), EMPTY, dtype=torch.int32, device=src_depths.device)
    launcher = launcher or torch.library.wrap_triton(_splat_kernel)
    launcher[(triton.cdiv(source_height * source_width, BLOCK), batch * views)](
        buffer,
        src_depths.float().contiguous(),
        inverse_k.contiguous(),
        to_target.contiguous(),
        target_k.contiguous(),
        source_height,
        source_width,
        height,
        width,
        views,
        footprint_radius,
        snap_tolerance,
        CANDIDATES=2 * math.ceil(footprint_radius),
        BLOCK=BLOCK,
        num_warps=NUM_WARPS,
    )
    nearest = buffer.view(torch.float32)
    return torch.where(torch.isfinite(nearest), nearest, torch.zeros_like(nearest))


def launch_fill(depth: Tensor, fill_radius: int, launcher: object | None = None) -> Tensor:
    """One farthest-depth fill pass over ``depth`` ``(b, h, w)`` (0 where invalid)."""
    batch, height, width = depth.shape
    filled = torch.empty_like(depth)
    launcher = launcher or torch.library.wrap_triton(_fill_kernel)
    launcher[(triton.cdiv(height * width, BLOCK), batch)](
        filled, depth, height, width, RADIUS=fill_radius, BLOCK=BLOCK, num_warps=NUM_WARPS
    )
    return filled


def launch_bilateral(
    depth: Tensor, spatial: Tensor, color_coefficient: float, launcher: object | None = None
) -> Tensor:
    """The bilateral filter of ``depth`` ``(b, h, w)`` (0 where invalid) with the spatial kernel
    ``spatial`` ``(k, k)`` and the colour kernel ``exp(color_coefficient diff^2)``."""
    batch, height, width = depth.shape
    smoothed = torch.empty_like(depth)
    launcher = launcher or torch.library.wrap_triton(_bilateral_kernel)
    launcher[(triton.cdiv(height * width, BLOCK), batch)](
        smoothed,
        depth,
        spatial.float().contiguous(),
        height,
        width,
        color_coefficient,
        SIZE=spatial.shape[-1],
        BLOCK=BLOCK,
        num_warps=NUM_WARPS,
    )
    return smoothed


def launch_guide_depth(
    src_depths: Tensor,
    inverse_k: Tensor,
    to_target: Tensor,
    target_k: Tensor,
    spatial: Tensor,
    height: int,
    width: int,
    footprint_radius: float,
    snap_tolerance: float,
    fill_radius: int,
    fill_iterations: int,
    color_coefficient: float,
    smooth: bool,
) -> Tensor:
    """D_T's depth ``(b, height, width)``, 0 where invalid: :func:`launch_splat`,
    ``fill_iterations`` times :func:`launch_fill`, and :func:`launch_bilateral` where
    ``smooth`` (``spatial``: kornia's ``(k, k)`` kernel, ``color_coefficient``: ``-1 / (2
    sigma_color^2)``)."""
    depth = launch_splat(
        src_depths, inverse_k, to_target, target_k, height, width, footprint_radius, snap_tolerance
    )
    for _ in range(fill_iterations):
        depth = launch_fill(depth, fill_radius)
    return launch_bilateral(depth, spatial, color_coefficient) if smooth else depth


# The kernels as one torch operator, with launch_guide_depth's arguments and result.
fused_guide_depth = as_triton_operator("fused_guide_depth", launch_guide_depth)


def fused_guide_depth_applies(src_depths: Tensor, hole_fill: str) -> bool:
    """Whether :func:`fused_estimate_guide_depth` computes D_T (module doc)."""
    return (
        enabled
        and triton is not None
        and src_depths.is_cuda
        and src_depths.dtype in (torch.float32, torch.bfloat16, torch.float16)
        and not (src_depths.requires_grad and torch.is_grad_enabled())
        and hole_fill == "farthest"
    )


def fused_estimate_guide_depth(
    src_depths: Float[Tensor, "b v h_src w_src"],
    src_intrinsics: Float[Tensor, "b v 3 3"],
    src_cam_to_world: Float[Tensor, "b v 4 4"],
    tgt_intrinsics: Float[Tensor, "b 3 3"],
    tgt_cam_to_world: Float[Tensor, "b 4 4"],
    height: int,
    width: int,
    cfg: object,
) -> GuideDepth:
    """:func:`gsnerf.model.target_depth.estimate_guide_depth` by the kernels (``cfg``: its
    :class:`~gsnerf.model.target_depth.TargetDepthCfg`)."""
    parameters = splat_parameters(
        src_intrinsics, src_cam_to_world, tgt_intrinsics, tgt_cam_to_world
    )
    size, sigma = cfg.kernel_size, cfg.sigma_space
    spatial = get_gaussian_kernel2d((size, size), (sigma, sigma), device=src_depths.device)
    depth = fused_guide_depth(
        src_depths.detach(),
        *parameters,
        spatial.reshape(size, size),
        height,
        width,
        float(cfg.footprint_radius),
        float(cfg.snap_tolerance),
        cfg.fill_radius,
        cfg.fill_iterations,
        -0.5 / cfg.sigma_color**2,
        cfg.smoothing == "bilateral",
    )
    return GuideDepth(depth=depth, valid=depth > 0)
