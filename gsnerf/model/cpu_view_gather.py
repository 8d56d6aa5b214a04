"""The radiance head's inputs of every sample in every source view in one C++ pass, for CPU
inference.

:func:`gsnerf.model.feature_gather.project_to_sources` and
:func:`~gsnerf.model.feature_gather.gather_features` project each sample into each source view
and read there, per cascade level, the depth window and the regularised volume, then the
full-resolution image features and colours, and compute the occlusion test and the view-angle
encoding: dozens of operators, each a pass over ``(rays, samples, views, channels)`` tensors,
then cats and transposes into the heads' layouts. ``csrc/view_gather.cpp`` does all of it per
sample and view in registers, vectorised across points (the corners' reads become vector
gathers), and writes each output once, in the layout the heads read. One tiny-model chunk (1024
rays, 4 samples, 8 views) took 3.7-3.8 ms against 9.0-9.3 ms for the PyTorch functions run
eagerly (one thread of this project's CPU; 5.1-5.9 ms as a scalar loop); whole frames are in
benchmarks/README.md.

The numbers are the PyTorch functions' up to float32 rounding (sums and interpolation weights
may be rounded in another order), so a sample within rounding of a mask's threshold (the image
edge, the occlusion tolerance) could fall on the other side; the tests' masks agree exactly.
Conditions (:func:`cpu_view_gather_applies`): :data:`enabled` (``eval.cpu_kernels``, the
benchmark's ``cpu_kernels``), float32 CPU tensors, no gradient wanted, every level's volume of
its depth window's size and of fewer than 2^31 cells a view, as many channels in every level
and at most :data:`MAX_CHANNELS`, and a library that builds for the sizes (without a C++
compiler, a warning and the PyTorch functions). Eager and compiled code call it as the
operator ``gsnerf::cpu_view_gather``; points are split among ``torch.get_num_threads()``
threads.
"""

import ctypes
import functools

import torch
from torch import Tensor

from gsnerf.model import view_gather
from gsnerf.model.feature_gather import GatherCfg
from gsnerf.model.native_library import INT64, POINTER, native_function, native_function_builds
from gsnerf.model.view_gather import empty_outputs, levels_fit
from gsnerf.types import SourceGeometry, Views

SOURCE = "view_gather.cpp"
# 8 outputs, points, directions, cameras, centres, image features, images, level table;
# batch, points per batch element, views, height, width; tolerance; tolerance in spans; threads.
ARGUMENTS = (POINTER,) * 15 + (INT64,) * 5 + (ctypes.c_double,) + (INT64,) * 2
# Widest volumes and image features with a library of their own (one per size).
MAX_CHANNELS = 64

# Set by gsnerf.model.fused_kernels.set_fused_kernels (evaluation, render.py, the benchmark).
enabled = False


def _defines(levels: int, volume: int, image: int, frequencies: int) -> tuple:
    return (
        ("FREQUENCIES", frequencies),
        ("IMAGE_CHANNELS", image),
        ("LEVELS", levels),
        ("VOLUME_CHANNELS", volume),
    )


@torch.compiler.assume_constant_result
def kernel_available(levels: int, volume: int, image: int, frequencies: int) -> bool:
    """Whether the kernel for these sizes builds; tried (and warned about) once per sizes. A
    constant to ``torch.compile``: it runs while tracing, not in the compiled graph."""
    defines = _defines(levels, volume, image, frequencies)
    return native_function_builds(SOURCE, "view_gather", ARGUMENTS, defines)


def cpu_view_gather_applies(
    points: Tensor, sources: Views, geometry: SourceGeometry, cfg: GatherCfg
) -> bool:
    """Whether :func:`gather_views` gathers for these inputs (module doc)."""
    tensors = [points, sources.images, sources.intrinsics, sources.cam_to_world]
    tensors += [geometry.image_features, *geometry.volume_features, *geometry.depths]
    tensors += list(geometry.depth_ranges)
    if not (
        enabled
        and not torch.is_grad_enabled()
        and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
        and levels_fit(geometry, MAX_CHANNELS)
    ):
        return False
    return kernel_available(
        len(geometry.volume_features),
        geometry.volume_features[0].shape[2],
        geometry.image_features.shape[2],
        cfg.angle_frequencies,
    )


@torch.library.custom_op("gsnerf::cpu_view_gather", mutates_args=())
def cpu_view_gather(
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
    """The kernel's outputs for ``points`` and their rays' unit ``directions``, both ``(b, rays,
    samples, 3)``, and ``cameras`` ``(b, v, 21)`` (world-to-camera rows, then the intrinsics):
    ``grid`` ``(b v, rays, samples, 2)``, ``depth`` ``(b v, rays, samples)``, then ``volume``,
    ``image``, ``colours``, ``angle``, ``in_frustum`` and ``visible``, each ``(b, rays,
    samples, v, ...)``. Plain ``Tensor`` annotations: an operator's schema takes no others."""
    outputs = empty_outputs(points, cameras, image_features, volumes, frequencies)
    batch, rays, samples, _ = points.shape
    views = cameras.shape[1]
    height, width = images.shape[-2:]
    inputs = [points, directions, cameras, centres, image_features, images]
    inputs = [tensor.contiguous() for tensor in inputs]
    # The levels' maps, kept referenced until the kernel has read them through the table.
    level_maps = [
        (window.contiguous(), depth.contiguous(), volume.contiguous())
        for window, depth, volume in zip(depth_ranges, depths, volumes, strict=True)
    ]
    table = [
        [window.data_ptr(), depth.data_ptr(), volume.data_ptr(), *volume.shape[-3:]]
        for window, depth, volume in level_maps
    ]
    level_table = torch.tensor(table, dtype=torch.int64)
    defines = _defines(len(volumes), volumes[0].shape[2], image_features.shape[2], frequencies)
    kernel = native_function(SOURCE, "view_gather", ARGUMENTS, defines)
    pointers = [tensor.data_ptr() for tensor in (*outputs, *inputs)]
    sizes = (batch, rays * samples, views, height, width)
    threads = torch.get_num_threads()
    kernel(*pointers, level_table.data_ptr(), *sizes, tolerance, int(tolerance_in_span), threads)
    return outputs


@cpu_view_gather.register_fake
def _cpu_view_gather_shapes(*arguments: object) -> tuple[Tensor, ...]:
    """The outputs' shapes and types for tracing; ``arguments`` as :func:`cpu_view_gather`'s."""
    points, _, cameras, _, image_features, _, _, _, volumes, _, _, frequencies = arguments
    return empty_outputs(points, cameras, image_features, volumes, frequencies)


# project_to_sources and gather_features in the kernel (module doc), with their arguments:
# points, target ray directions, sources, geometry, GatherCfg.
gather_views = functools.partial(view_gather.gather_views, cpu_view_gather)
