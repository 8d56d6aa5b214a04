"""The cost volumes' plane-sweep warp and group correlation in one Triton kernel on CUDA, with
its backward pass.

:func:`gsnerf.model.cost_volume.correlation_volume` warps each MVS neighbour's features onto
every depth hypothesis of the reference view with ``grid_sample`` (a ``[b, c, d, h, w]`` volume
per neighbour), sums them and correlates the mean with the reference, channel group by channel
group. In an H100 bf16 paper frame the compiled warp took 5.4 ms and the correlation's
reduction 1.4 ms of the cost volumes' 45 ms (benchmarks/README.md): every warped volume is
written once and read back, c floats per voxel and neighbour, for g floats of result.

Here each program takes :data:`BLOCK` voxels ``(d, y, x)`` of one reference view, projects
each voxel's pixel at its hypothesis into every neighbour (the same float32 products as the
PyTorch warp: the ray ``M (x, y, 1)``, times ``z``, plus ``t``), reads the neighbour's channels
bilinearly at its four corners (channels-last, zero outside the image, nothing behind the
camera), sums them in registers, and writes the ``g`` correlations of their mean with the
reference. No warped volume is stored, as in the CPU's C++ kernel
(:mod:`gsnerf.model.cpu_correlation`). The volume comes out channels-last, the layout the
Triton volume convolutions read (:mod:`gsnerf.model.fused_volume_conv`, behind the same
switch).

The backward pass (:func:`_correlation_grad_kernel`) takes :data:`BLOCK` reference pixels per
program and loops over the hypotheses and neighbours: it recomputes each projection and read,
sums the reference's gradient in registers, and adds each read's share to the four corners of
the neighbour's gradient with float32 atomic adds (in an order that varies: not bitwise
reproducible, like ``grid_sample``'s CUDA backward).

Sums are float32 whatever the features' dtype; the volume comes back in autocast's dtype where
autocast is on (as the PyTorch correlation's ``einsum`` would), else in the features' dtype.

Conditions (:func:`fused_correlation_applies`): ``enabled`` (``eval.fused_volumes``,
``train.fused_volumes``, the benchmark's ``fused_volumes``), Triton, CUDA tensors of one float
dtype, channels and groups powers of two (the pyramid's 32, 16 and 8 channels in 8 groups) with
at most :data:`MAX_CHANNELS` channels. Called as the operator ``gsnerf::fused_correlation``, so
that compiled code calls it within its graph. Not yet timed on a GPU: off by default.
"""

from typing import no_type_check

import torch
from jaxtyping import Float
from torch import Tensor

from gsnerf.geometry.homography import pair_projections
from gsnerf.model.attention_kernel import as_triton_operator

try:
    import triton
    import triton.language as tl
except ImportError:  # A CPU-only torch comes without Triton; the kernel is then never used.
    triton = None

# Voxels (forward) or reference pixels (backward) per program, and warps per program; twice
# the warps for the backward of 32 channels or more (with 4 it spilled registers on sm_90).
BLOCK = 128
NUM_WARPS = 4
WIDE_NUM_WARPS = 8
# Widest feature maps: the pyramid's are 8 to 32 channels (spec 2.2).
MAX_CHANNELS = 64

# The module's switch (set_fused_kernels).
enabled = False


if triton is not None:

    @triton.jit
    @no_type_check  # keeps jaxtyping's import hook off the kernel (attention_kernel.py)
    def _source_point(projection_ptr, x, y, z, height, width):
        """``(u, v, seen)``: where reference pixels ``(x, y)`` at z-depth ``z`` project into the
        neighbour of ``projection_ptr`` (``M`` row by row, then ``t``), and whether any of the
        four corners read there lies on its ``height x width`` image. Unseen points (behind the
        camera, beyond one pixel outside the image, NaN) are parked at ``(-1, -1)``."""
        ray_x = tl.load(projection_ptr) * x + (
            tl.load(projection_ptr + 1) * y + tl.load(projection_ptr + 2)
        )
        ray_y = tl.load(projection_ptr + 3) * x + (
            tl.load(projection_ptr + 4) * y + tl.load(projection_ptr + 5)
        )
        ray_z = tl.load(projection_ptr + 6) * x + (
            tl.load(projection_ptr + 7) * y + tl.load(projection_ptr + 8)
        )
        p_z = ray_z * z + tl.load(projection_ptr + 11)
        in_front = p_z > 0.0
        # A divisor of 1 behind the camera keeps the lanes finite.
        safe_z = tl.where(in_front, p_z, 1.0)
        u = (ray_x * z + tl.load(projection_ptr + 9)) / safe_z
        v = (ray_y * z + tl.load(projection_ptr + 10)) / safe_z
        seen = in_front & (u > -1.0) & (v > -1.0) & (u < tl.cast(width, tl.float32))
        seen = seen & (v < tl.cast(height, tl.float32))
        return tl.where(seen, u, -1.0), tl.where(seen, v, -1.0), seen

    @triton.jit
    @no_type_check
    def _corner(u, v, seen, DY: tl.constexpr, DX: tl.constexpr, height, width):
        """``(pixel, inside, weight)`` of the bilinear corner ``(floor(v) + DY, floor(u) + DX)``
        of points ``(u, v)``: its flat pixel index, whether it lies on the image (zero padding)
        and its weight."""
        column0 = tl.floor(u)
        line0 = tl.floor(v)
        fx = u - column0
        fy = v - line0
        column = column0.to(tl.int32) + DX
        line = line0.to(tl.int32) + DY
        inside = seen & (column >= 0) & (column < width) & (line >= 0) & (line < height)
        weight = (fx if DX == 1 else 1.0 - fx) * (fy if DY == 1 else 1.0 - fy)
        return line * width + column, inside, weight

    @triton.jit
    @no_type_check
    def _correlation_kernel(
        cost_ptr, reference_ptr, neighbours_ptr, hypotheses_ptr, projections_ptr, depths,
        height, width, num_neighbours, CHANNELS: tl.constexpr, GROUPS: tl.constexpr,
        BLOCK: tl.constexpr,
    ):  # fmt: skip
        """Voxels ``[BLOCK i, BLOCK (i + 1))`` of reference view ``b``, program ``(i, b)``.
        ``reference`` ``(b, h, w, c)``, ``neighbours`` ``(b, n, h, w, c)``, ``hypotheses``
        ``(b, d, h, w)`` float32, ``projections`` ``(b n, 12)`` float32, ``cost`` ``(b, d, h,
        w, g)``."""
        b = tl.program_id(1).to(tl.int64)
        voxel = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        pixels = height * width
        mask = voxel < depths * pixels
        pixel = voxel % pixels
        x = tl.cast(pixel % width, tl.float32)
        y = tl.cast(pixel // width, tl.float32)
        z = tl.load(hypotheses_ptr + b * depths * pixels + voxel, mask=mask, other=1.0)
        channel = tl.arange(0, CHANNELS)
        summed = tl.zeros((BLOCK, CHANNELS), dtype=tl.float32)
        for n in range(num_neighbours):
            pair = b * num_neighbours + n
            u, v, seen = _source_point(projections_ptr + pair * 12, x, y, z, height, width)
            seen = seen & mask
            image = neighbours_ptr + pair * pixels * CHANNELS
            for corner in tl.static_range(4):
                at, inside, weight = _corner(u, v, seen, corner // 2, corner % 2, height, width)
                read = tl.load(
                    image + (at * CHANNELS)[:, None] + channel[None, :],
                    mask=inside[:, None],
                    other=0.0,
                )
                summed += weight[:, None] * read.to(tl.float32)
        reference = tl.load(
            reference_ptr + ((b * pixels + pixel) * CHANNELS)[:, None] + channel[None, :],
            mask=mask[:, None],
            other=0.0,
        )
        product = summed * reference.to(tl.float32)
        grouped = tl.sum(tl.reshape(product, (BLOCK, GROUPS, CHANNELS // GROUPS)), axis=2)
        # The neighbours' mean, then the mean over each group's channels.
        grouped = grouped * (1.0 / tl.cast(num_neighbours * (CHANNELS // GROUPS), tl.float32))
        group = tl.arange(0, GROUPS)
        out = cost_ptr + ((b * depths * pixels + voxel) * GROUPS)[:, None] + group[None, :]
        tl.store(out, grouped.to(cost_ptr.dtype.element_ty), mask=mask[:, None])

    @triton.jit
    @no_type_check
    def _correlation_grad_kernel(
        grad_reference_ptr, grad_neighbours_ptr, grad_cost_ptr, reference_ptr, neighbours_ptr,
        hypotheses_ptr, projections_ptr, depths, height, width, num_neighbours,
        CHANNELS: tl.constexpr, GROUPS: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """Reference pixels ``[BLOCK i, BLOCK (i + 1))`` of view ``b``, program ``(i, b)``:
        with ``s = 1 / (n c / g)`` and ``m_c`` the neighbours' summed reads at a voxel,
        ``d reference_c += s d cost_g(c) m_c`` (summed here over the hypotheses, stored once)
        and each read corner's ``d neighbour += s d cost_g(c) reference_c weight`` (atomic).
        Layouts of :func:`_correlation_kernel`; ``grad_neighbours`` float32, zeroed."""
        b = tl.program_id(1).to(tl.int64)
        pixel = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        pixels = height * width
        mask = pixel < pixels
        x = tl.cast(pixel % width, tl.float32)
        y = tl.cast(pixel // width, tl.float32)
        channel = tl.arange(0, CHANNELS)
        rows = ((b * pixels + pixel) * CHANNELS)[:, None] + channel[None, :]
        reference = tl.load(reference_ptr + rows, mask=mask[:, None], other=0.0).to(tl.float32)
        scale = 1.0 / tl.cast(num_neighbours * (CHANNELS // GROUPS), tl.float32)
        group_of_channel = channel // (CHANNELS // GROUPS)
        grad_reference = tl.zeros((BLOCK, CHANNELS), dtype=tl.float32)
        for d in range(depths):
            cell = (b * depths + d) * pixels + pixel
            z = tl.load(hypotheses_ptr + cell, mask=mask, other=1.0)
            grad_channel = tl.load(
                grad_cost_ptr + (cell * GROUPS)[:, None] + group_of_channel[None, :],
                mask=mask[:, None],
                other=0.0,
            )
            grad_channel = grad_channel.to(tl.float32) * scale
            spread = grad_channel * reference
            summed = tl.zeros((BLOCK, CHANNELS), dtype=tl.float32)
            for n in range(num_neighbours):
                pair = b * num_neighbours + n
                u, v, seen = _source_point(projections_ptr + pair * 12, x, y, z, height, width)
                seen = seen & mask
                # Offsets within one image fit 32 bits (64-bit ones cost registers).
                image = pair * pixels * CHANNELS
                neighbour, grad_neighbour = neighbours_ptr + image, grad_neighbours_ptr + image
                for corner in tl.static_range(4):
                    at, inside, weight = _corner(u, v, seen, corner // 2, corner % 2, height, width)
                    offsets = (at * CHANNELS)[:, None] + channel[None, :]
                    read = tl.load(neighbour + offsets, mask=inside[:, None], other=0.0)
                    summed += weight[:, None] * read.to(tl.float32)
                    tl.atomic_add(
                        grad_neighbour + offsets,
                        weight[:, None] * spread,
                        mask=inside[:, None],
                        sem="relaxed",
                    )
            grad_reference += grad_channel * summed
        out = grad_reference_ptr + rows
        tl.store(out, grad_reference.to(grad_reference_ptr.dtype.element_ty), mask=mask[:, None])


def _channels_last(features: Tensor) -> Tensor:
    """``(..., c, h, w)`` features as ``(..., h, w, c)``, contiguous."""
    return features.movedim(-3, -1).contiguous()


def _level_arguments(
    reference: Tensor, neighbours: Tensor, hypotheses: Tensor, projections: Tensor, groups: int
) -> tuple[tuple, dict[str, int]]:
    """The two kernels' arguments after their outputs: the level's tensors in the kernels'
    layouts and its sizes, then the compile-time constants."""
    _, num_neighbours, channels, height, width = neighbours.shape
    tensors = (
        _channels_last(reference),
        _channels_last(neighbours),
        hypotheses.float().contiguous(),
        projections.float().contiguous(),
    )
    sizes = (hypotheses.shape[1], height, width, num_neighbours)
    return (*tensors, *sizes), {"CHANNELS": channels, "GROUPS": groups, "BLOCK": BLOCK}


def launch_correlation(
    reference: Tensor,
    neighbours: Tensor,
    hypotheses: Tensor,
    projections: Tensor,
    groups: int,
    dtype: torch.dtype,
    launcher: object | None = None,
) -> Tensor:
    """The correlation volume ``(b, g, d, h, w)`` in ``dtype``, channels-last, of ``reference``
    ``(b, c, h, w)`` with ``neighbours`` ``(b, n, c, h, w)`` at ``hypotheses`` ``(b, d, h, w)``
    through ``projections`` ``(b n, 12)`` (:func:`gsnerf.geometry.homography.pair_projections`).
    ``launcher``: ``wrap_triton`` of the kernel (unset), or a stand-in that records the launch
    (:mod:`gsnerf.evaluation.kernel_report`)."""
    batch, _, _, height, width = neighbours.shape
    depths = hypotheses.shape[1]
    cost = torch.empty((batch, depths, height, width, groups), dtype=dtype, device=reference.device)
    level, constants = _level_arguments(reference, neighbours, hypotheses, projections, groups)
    launcher = launcher or torch.library.wrap_triton(_correlation_kernel)
    launcher[(triton.cdiv(depths * height * width, BLOCK), batch)](
        cost, *level, **constants, num_warps=NUM_WARPS
    )
    return cost.permute(0, 4, 1, 2, 3)


def launch_correlation_grad(
    grad_cost: Tensor,
    reference: Tensor,
    neighbours: Tensor,
    hypotheses: Tensor,
    projections: Tensor,
    launcher: object | None = None,
) -> tuple[Tensor, Tensor]:
    """The gradients of :func:`launch_correlation`'s volume with respect to ``reference`` and
    ``neighbours`` given its gradient ``grad_cost`` ``(b, g, d, h, w)``, in their dtypes and
    layouts ``(b, c, h, w)``, ``(b, n, c, h, w)``."""
    batch, num_neighbours, channels, height, width = neighbours.shape
    groups = grad_cost.shape[1]
    grad_reference = torch.empty(
        (batch, height, width, channels), dtype=reference.dtype, device=reference.device
    )
    # Float32 for the atomic adds, cast at the end.
    grad_neighbours = torch.zeros(
        (batch, num_neighbours, height, width, channels),
        dtype=torch.float32,
        device=neighbours.device,
    )
    level, constants = _level_arguments(reference, neighbours, hypotheses, projections, groups)
    launcher = launcher or torch.library.wrap_triton(_correlation_grad_kernel)
    launcher[(triton.cdiv(height * width, BLOCK), batch)](
        grad_reference,
        grad_neighbours,
        grad_cost.permute(0, 2, 3, 4, 1).contiguous(),
        *level,
        **constants,
        num_warps=WIDE_NUM_WARPS if channels >= 32 else NUM_WARPS,
    )
    grad_neighbours = grad_neighbours.to(neighbours.dtype).movedim(-1, -3)
    return grad_reference.movedim(-1, -3), grad_neighbours


def _fused_correlation(
    reference: Tensor,
    neighbours: Tensor,
    hypotheses: Tensor,
    projections: Tensor,
    groups: int,
    dtype: torch.dtype,
) -> Tensor:
    return launch_correlation(reference, neighbours, hypotheses, projections, groups, dtype)


def _fused_correlation_grad(
    grad_cost: Tensor,
    reference: Tensor,
    neighbours: Tensor,
    hypotheses: Tensor,
    projections: Tensor,
) -> tuple[Tensor, Tensor]:
    return launch_correlation_grad(grad_cost, reference, neighbours, hypotheses, projections)


# The kernels as torch operators, with the launch functions' arguments and results.
fused_correlation = as_triton_operator("fused_correlation", _fused_correlation)
fused_correlation_grad = as_triton_operator("fused_correlation_grad", _fused_correlation_grad)


def _setup_context(ctx: object, inputs: tuple, output: Tensor) -> None:
    reference, neighbours, hypotheses, projections, _, _ = inputs
    ctx.save_for_backward(reference, neighbours, hypotheses, projections)


def _backward(ctx: object, grad_cost: Tensor) -> tuple:
    reference, neighbours, hypotheses, projections = ctx.saved_tensors
    grad_reference, grad_neighbours = fused_correlation_grad(
        grad_cost, reference, neighbours, hypotheses, projections
    )
    return grad_reference, grad_neighbours, None, None, None, None


if triton is not None:
    fused_correlation.register_autograd(_backward, setup_context=_setup_context)


def _power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def fused_correlation_applies(
    ref_features: Tensor, neighbour_features: Tensor, hypotheses: Tensor, groups: int
) -> bool:
    """Whether :func:`fused_correlation_volume` computes this level (module doc)."""
    channels = ref_features.shape[1]
    return (
        enabled
        and triton is not None
        and all(t.is_cuda for t in (ref_features, neighbour_features, hypotheses))
        and ref_features.dtype in (torch.float32, torch.bfloat16, torch.float16)
        and neighbour_features.dtype == ref_features.dtype
        and _power_of_two(channels)
        and _power_of_two(groups)
        and groups <= channels <= MAX_CHANNELS
    )


def fused_correlation_volume(
    ref_features: Float[Tensor, "b c h w"],
    neighbour_features: Float[Tensor, "b n c h w"],
    ref_intrinsics: Float[Tensor, "b 3 3"],
    ref_cam_to_world: Float[Tensor, "b 4 4"],
    neighbour_intrinsics: Float[Tensor, "b n 3 3"],
    neighbour_cam_to_world: Float[Tensor, "b n 4 4"],
    hypotheses: Float[Tensor, "b d h w"],
    groups: int,
) -> Float[Tensor, "b g d h w"]:
    """:func:`gsnerf.model.cost_volume.correlation_volume` by the kernel, channels-last;
    gradients flow to both feature maps (the hypotheses are detached upstream)."""
    projections = pair_projections(
        ref_intrinsics, ref_cam_to_world, neighbour_intrinsics, neighbour_cam_to_world
    )
    device = ref_features.device.type
    autocast = torch.is_autocast_enabled(device)
    dtype = torch.get_autocast_dtype(device) if autocast else ref_features.dtype
    return fused_correlation(
        ref_features, neighbour_features, hypotheses.detach(), projections, groups, dtype
    )
