"""The cost volumes' plane-sweep warp and group correlation in one C++ kernel on a CPU, with
gradients.

:func:`gsnerf.model.cost_volume.correlation_volume` warps each MVS neighbour's features onto every
depth hypothesis of the reference view (a ``[b, c, d, h, w]`` volume per neighbour, written by
``grid_sample``), sums them and correlates the mean with the reference, channel group by channel
group. ``csrc/group_correlation.cpp`` does the same per reference pixel and hypothesis without
storing a warped volume: it projects the pixel into each neighbour, reads the neighbour's
channels bilinearly (channels-last, so one pixel's channels are contiguous), accumulates their
mean in registers and writes the ``g`` correlations. The numbers are the PyTorch formulation's
up to float32 rounding (the same projection matrices, composed in float64 by
:func:`gsnerf.geometry.homography.reference_to_source_pixels`).

Its backward pass (``group_correlation_backward``) recomputes each pixel and hypothesis's
projections and reads, adds the reads to the reference's gradient and splats the reference's
share onto the four corners of each neighbour's gradient, where torch's CPU ``grid_sample``
backward took 33 ms of a quickstart training step (4 views, 512 rays; its forward warps 7
ms). Training steps took 371 against 442 ms with it (with the GroupNorm kernel of
:mod:`gsnerf.model.cpu_volume_norm` in both; 373 against 477 ms with both kernels against
neither; alternating, one thread); the gradients
are float64 autograd's of the PyTorch formulation up to float32 rounding (tests).

Conditions (:func:`cpu_correlation_applies`): :data:`enabled` (``eval.cpu_kernels`` and the
benchmark's ``cpu_kernels`` for inference, ``train.cpu_kernels`` for training), float32 CPU
tensors, hypotheses that need no gradient (they are detached upstream), and a library that
builds for the level's shape (:mod:`gsnerf.model.native_library`; without a C++ compiler, a
warning and the PyTorch formulation). Rows of the ``(b, d, h)`` axis are split among
``torch.get_num_threads()`` threads, the backward pass's items (whose neighbour gradients
never overlap) likewise.
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float
from torch import Tensor

from gsnerf.geometry.homography import pair_projections
from gsnerf.model.native_library import (
    INT64,
    POINTER,
    native_function,
    native_functions_build,
)

SOURCE = "group_correlation.cpp"
# cost, reference, neighbours, hypotheses, projections, depths, height, width, rows, threads.
ARGUMENTS = (POINTER,) * 5 + (INT64,) * 5
# grad reference, grad neighbours, grad cost, reference, neighbours, hypotheses, projections,
# depths, height, width, items, threads.
BACKWARD_ARGUMENTS = (POINTER,) * 7 + (INT64,) * 5

# Set by gsnerf.model.fused_kernels.set_fused_kernels (evaluation, render.py, the benchmark,
# training).
enabled = False


def _defines(channels: int, groups: int, neighbours: int) -> tuple[tuple[str, int], ...]:
    return (("CHANNELS", channels), ("GROUPS", groups), ("NEIGHBOURS", neighbours))


def kernel_available(channels: int, groups: int, neighbours: int) -> bool:
    """Whether the kernel and its backward pass build for this shape; tried (and warned
    about) once per shape."""
    signatures = {"group_correlation": ARGUMENTS, "group_correlation_backward": BACKWARD_ARGUMENTS}
    return native_functions_build(SOURCE, signatures, _defines(channels, groups, neighbours))


def cpu_correlation_applies(
    ref_features: Tensor, neighbour_features: Tensor, hypotheses: Tensor, groups: int
) -> bool:
    """Whether :func:`cpu_correlation_volume` computes this level (module doc)."""
    tensors = (ref_features, neighbour_features, hypotheses)
    if not (
        enabled
        and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
        and not hypotheses.requires_grad
        and ref_features.shape[1] % groups == 0
    ):
        return False
    return kernel_available(ref_features.shape[1], groups, neighbour_features.shape[1])


def cpu_correlation_volume(
    ref_features: Float[Tensor, "b c h w"],
    neighbour_features: Float[Tensor, "b n c h w"],
    ref_intrinsics: Float[Tensor, "b 3 3"],
    ref_cam_to_world: Float[Tensor, "b 4 4"],
    neighbour_intrinsics: Float[Tensor, "b n 3 3"],
    neighbour_cam_to_world: Float[Tensor, "b n 4 4"],
    hypotheses: Float[Tensor, "b d h w"],
    groups: int,
) -> Float[Tensor, "b g d h w"]:
    """:func:`gsnerf.model.cost_volume.correlation_volume` in the kernel; the result is stored
    channels-last (``torch.channels_last_3d``), the layout the CPU regulariser reads. Gradients
    flow to both feature maps (the hypotheses are detached upstream)."""
    # Every (reference, neighbour) pair's p = z M x + t, flattened over b and n.
    projections = pair_projections(
        ref_intrinsics, ref_cam_to_world, neighbour_intrinsics, neighbour_cam_to_world
    )
    return _Correlation.apply(
        ref_features, neighbour_features, hypotheses.detach(), projections.detach(), groups
    )


def _kernel(name: str, arguments: tuple, channels: int, groups: int, neighbours: int):
    return native_function(SOURCE, name, arguments, _defines(channels, groups, neighbours))


class _Correlation(torch.autograd.Function):
    """The kernel and its backward pass (``group_correlation_backward``)."""

    @staticmethod
    def forward(ctx, ref_features, neighbour_features, hypotheses, projections, groups):
        batch, num_neighbours, channels, height, width = neighbour_features.shape
        depths = hypotheses.shape[1]
        reference = rearrange(ref_features, "b c h w -> b h w c").contiguous()
        # A one-pixel border of zeros: the kernel reads the corners of points near the edge
        # unchecked.
        neighbours = rearrange(neighbour_features, "b n c h w -> b n h w c")
        neighbours = F.pad(neighbours, (0, 0, 1, 1, 1, 1)).contiguous()
        hypotheses = hypotheses.contiguous()
        cost = ref_features.new_empty(batch, depths, height, width, groups)
        kernel = _kernel("group_correlation", ARGUMENTS, channels, groups, num_neighbours)
        pointers = [t.data_ptr() for t in (cost, reference, neighbours, hypotheses, projections)]
        kernel(*pointers, depths, height, width, batch * depths * height, torch.get_num_threads())
        ctx.save_for_backward(reference, neighbours, hypotheses, projections)
        ctx.groups = groups
        return rearrange(cost, "b d h w g -> b g d h w")

    @staticmethod
    def backward(ctx, grad_cost):
        reference, neighbours, hypotheses, projections = ctx.saved_tensors
        batch, num_neighbours, *_, channels = neighbours.shape
        depths, height, width = hypotheses.shape[1:]
        grad_cost = rearrange(grad_cost, "b g d h w -> b d h w g").contiguous()
        grad_reference = torch.zeros_like(reference)
        grad_neighbours = torch.zeros_like(neighbours)
        kernel = _kernel(
            "group_correlation_backward", BACKWARD_ARGUMENTS, channels, ctx.groups, num_neighbours
        )
        tensors = (grad_reference, grad_neighbours, grad_cost, reference, neighbours)
        pointers = [t.data_ptr() for t in (*tensors, hypotheses, projections)]
        # Split by item: the neighbours' gradients of different items never overlap.
        kernel(*pointers, depths, height, width, batch, torch.get_num_threads())
        grad_neighbours = rearrange(grad_neighbours[:, :, 1:-1, 1:-1], "b n h w c -> b n c h w")
        return rearrange(grad_reference, "b h w c -> b c h w"), grad_neighbours, None, None, None
