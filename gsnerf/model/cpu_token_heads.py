"""The view-token stage of the renderer heads in one C++ kernel, for CPU inference.

Both heads turn each sample's per-view inputs into tokens, run a transformer on them and read
the result (:mod:`gsnerf.model.radiance_head`, :mod:`gsnerf.model.semantic_head`). Compiled,
the transformer ran in its own kernel (:mod:`gsnerf.model.cpu_transformer`) while the
embeddings, the moments of the global token, the blending MLP and the softmax ran as separate
passes over ``(samples, views, channels)`` tensors of several megabytes per chunk: about as
long as the transformer itself, at a sixth of its arithmetic rate. ``csrc/token_heads.cpp``
does all of it on 16 samples at a time in the first-level cache:

- radiance (:func:`cpu_radiance_views`): view and global tokens, the view transformer, the
  blending MLP, the softmax over the attended views and the blended colour. The ray mixer and
  the density MLP, which mix the samples of a ray, stay in PyTorch;
- semantic (:func:`cpu_semantic_logits`): view and global tokens, the semantic transformer and
  the class MLP on the global token and the mean of the attended view tokens.

The numbers are those of the heads' PyTorch code up to float32 rounding: the same products and
LayerNorms; the ELU and softmax exponentials from a polynomial with about 1e-7 relative error.
Conditions (:func:`cpu_radiance_applies`, :func:`cpu_semantic_applies`): the switch of the
one-kernel transformer (``eval.fused_transformer``, the benchmark's ``fused_transformer``), a
float32 CPU input outside autocast, no gradient wanted, at most ``MAX_TOKENS - 1`` views,
transformers the kernel computes (:func:`gsnerf.model.cpu_transformer.blocks_fit`), MLPs with
two hidden layers, the semantic head's default tokens (``views_and_global``), and a library
built for the shapes (without a C++ compiler, a warning and the PyTorch code). Samples are
split among ``torch.get_num_threads()`` threads; eager and compiled code call the kernel as the
operators ``gsnerf::cpu_radiance_views`` and ``gsnerf::cpu_semantic_logits``.
"""

import ctypes
from typing import NamedTuple

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from gsnerf.model import fused_transformer, native_library
from gsnerf.model.cpu_transformer import MAX_TOKENS, MAX_WIDTH, blocks_fit, packed_weights
from gsnerf.model.feature_gather import GatheredFeatures

SOURCE = "token_heads.cpp"
# part0..part2, in_frustum, visible, mask, angle, weights, blocks, eps, out0..out2, samples,
# threads.
POINTER, INT64 = native_library.POINTER, native_library.INT64
ARGUMENTS = (POINTER,) * 8 + (ctypes.c_int, ctypes.c_float) + (POINTER,) * 3 + (INT64,) * 2
# Widest per-view inputs (the tile keeps (features + 2) x views vectors of 64 bytes on the
# stack: 93 KB for the tiny model's 180 semantic channels and 8 views).
MAX_FEATURES = 256
# Endings (the kernel's EPILOGUE).
RADIANCE, SEMANTIC = 1, 2

Defines = tuple[tuple[str, int], ...]


class HeadShape(NamedTuple):
    """The kernel's compile-time sizes for one head (a library is built per shape)."""

    views: int
    width: int  # tokens' channels
    heads: int
    ffn: int  # feed-forward width of the blocks
    part0: int  # channels of the per-view input parts (0: no such part)
    part1: int
    part2: int
    hidden1: int  # hidden widths of the ending MLP
    hidden2: int
    epilogue: int  # RADIANCE or SEMANTIC
    ending: int  # the angle encoding's width (radiance) or the class count (semantic)

    def defines(self) -> Defines:
        """The ``-D`` values of the kernel's source."""
        values = [
            ("VIEWS", self.views),
            ("WIDTH", self.width),
            ("HEADS", self.heads),
            ("FFN", self.ffn),
            ("PART0", self.part0),
            ("PART1", self.part1),
            ("PART2", self.part2),
            ("HIDDEN1", self.hidden1),
            ("HIDDEN2", self.hidden2),
            ("EPILOGUE", self.epilogue),
        ]
        if self.epilogue == RADIANCE:
            # The colours are the last part of the radiance features.
            values += [("ANGLE", self.ending), ("COLOURS_AT", self.part0 + self.part1)]
        else:
            values.append(("CLASSES", self.ending))
        return tuple(sorted(values))


@torch.compiler.assume_constant_result
def kernel_available(*shape: int) -> bool:
    """Whether the kernel for ``shape`` builds; tried (and warned about) once per shape. A
    constant to ``torch.compile``: it runs while tracing, not in the compiled graph."""
    defines = HeadShape(*shape).defines()
    return native_library.native_function_builds(SOURCE, "token_head", ARGUMENTS, defines)


def _linear_layers(sequential: nn.Sequential) -> list:
    """Its ``nn.Linear`` layers. (A bare ``list`` hint: the tests' runtime type checks draw a
    random item of a ``list[...]``, which ``torch.compile`` cannot trace.)"""
    return [layer for layer in sequential if isinstance(layer, nn.Linear)]


def head_shape(
    views: int,
    parts: tuple[int, int, int],
    embed: nn.Sequential,
    transformer: nn.Module,
    ending: nn.Sequential,
    epilogue: int,
    ending_size: int,
) -> HeadShape | None:
    """A head's shape, or None where the kernel cannot run it."""
    blocks = transformer.blocks
    hidden = _linear_layers(ending)
    if not blocks:
        return None
    first = blocks[0]
    width, heads, ffn = first.qkv.in_features, first.heads, first.ffn[0].out_features
    # What the ending MLP reads: [view token, angle] or [global token, mean view token].
    read_width = width + ending_size if epilogue == RADIANCE else 2 * width
    if not (
        1 <= views < MAX_TOKENS
        and blocks_fit(blocks, views + 1)
        and len(hidden) == 3
        and len(ending) == 5
        and sum(parts) <= MAX_FEATURES
        and embed[0].in_features == sum(parts) + 2
        and hidden[0].in_features == read_width
        and hidden[0].out_features <= MAX_WIDTH
        and hidden[1].out_features <= MAX_WIDTH
        and ending_size <= MAX_WIDTH
    ):
        return None
    sizes = (hidden[0].out_features, hidden[1].out_features)
    return HeadShape(views, width, heads, ffn, *parts, *sizes, epilogue, ending_size)


def _usable(tensor: Tensor, shape: HeadShape | None) -> bool:
    return (
        shape is not None
        and fused_transformer.enabled
        and tensor.device.type == "cpu"
        and tensor.dtype == torch.float32
        # Under bf16 autocast the heads' products run in bf16; the kernel computes in float32.
        and not torch.is_autocast_enabled("cpu")
        and not torch.is_grad_enabled()
        # As plain integers: torch.compile passes a named tuple to it as an empty tuple.
        and kernel_available(*shape)
    )


def head_weights(
    embed: nn.Sequential, global_embed: nn.Sequential, blocks: nn.ModuleList, ending: nn.Sequential
) -> Float[Tensor, " floats"]:
    """The kernel's ``weights``: embeddings, blocks, ending MLP (the order of its ``weights``)."""
    parts = []
    for linear in [*_linear_layers(embed), *_linear_layers(global_embed)]:
        parts += [linear.weight, linear.bias]
    parts.append(packed_weights(blocks))
    for linear in _linear_layers(ending):
        parts += [linear.weight, linear.bias]
    return torch.cat([part.detach().reshape(-1).float() for part in parts])


def _run(
    shape: list[int],
    inputs: list[Tensor | None],
    weights: Tensor,
    blocks: int,
    eps: float,
    outputs: list[Tensor],
) -> None:
    """The kernel on every sample, split among threads at multiples of its 16 lanes."""
    defines = HeadShape(*shape).defines()
    kernel = native_library.native_function(SOURCE, "token_head", ARGUMENTS, defines)
    inputs = [None if tensor is None else tensor.contiguous() for tensor in inputs]
    pointers = [None if tensor is None else tensor.data_ptr() for tensor in inputs]
    out_pointers = [tensor.data_ptr() for tensor in outputs]
    out_pointers += [None] * (3 - len(out_pointers))

    samples, threads = outputs[0].shape[0], torch.get_num_threads()
    kernel(*pointers, weights.data_ptr(), blocks, eps, *out_pointers, samples, threads)


def _radiance_outputs(volume: Tensor, shape: list[int]) -> tuple[Tensor, Tensor, Tensor]:
    samples, views, width = volume.shape[0], shape[0], shape[1]
    return (
        volume.new_empty(samples, width),
        volume.new_empty(samples, views),
        volume.new_empty(samples, 3),
    )


@torch.library.custom_op("gsnerf::cpu_radiance_views", mutates_args=())
def cpu_radiance_op(
    volume: Tensor,
    image: Tensor,
    colours: Tensor,
    in_frustum: Tensor,
    visible: Tensor,
    mask: Tensor,
    angle: Tensor,
    weights: Tensor,
    shape: list[int],
    blocks: int,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Global tokens ``(n, c)``, blending weights ``(n, v)`` and colours ``(n, 3)`` of samples
    given as ``(n, v, ...)`` arrays; ``shape`` from :func:`head_shape`."""
    outputs = _radiance_outputs(volume, shape)
    inputs = [volume, image, colours, in_frustum, visible, mask, angle]
    _run(shape, inputs, weights, blocks, eps, list(outputs))
    return outputs


@cpu_radiance_op.register_fake
def _radiance_fake(volume: Tensor, *rest: object) -> tuple[Tensor, Tensor, Tensor]:
    return _radiance_outputs(volume, rest[7])


@torch.library.custom_op("gsnerf::cpu_semantic_logits", mutates_args=())
def cpu_semantic_op(
    features: Tensor,
    in_frustum: Tensor,
    visible: Tensor,
    mask: Tensor,
    weights: Tensor,
    shape: list[int],
    blocks: int,
    eps: float,
) -> Tensor:
    """Class logits ``(n, k)`` of samples given as ``(n, v, ...)`` arrays."""
    logits = features.new_empty(features.shape[0], shape[-1])
    inputs = [features, None, None, in_frustum, visible, mask, None]
    _run(shape, inputs, weights, blocks, eps, [logits])
    return logits


@cpu_semantic_op.register_fake
def _semantic_fake(features: Tensor, *rest: object) -> Tensor:
    return features.new_empty(features.shape[0], rest[4][-1])


def _flat(tensor: Tensor, views: int) -> Tensor:
    """``(b, rays, samples, v[, c])`` as ``(n, v[, c])``."""
    return tensor.reshape(-1, views, *tensor.shape[4:])


def radiance_shape(head: nn.Module, gathered: GatheredFeatures) -> HeadShape | None:
    views = gathered.in_frustum.shape[-1]
    parts = (gathered.volume.shape[-1], gathered.image.shape[-1], gathered.colours.shape[-1])
    if parts[2] != 3:
        return None
    return head_shape(
        views,
        parts,
        head.view_embed,
        head.view_transformer,
        head.blend,
        RADIANCE,
        gathered.angle.shape[-1],
    )


def cpu_radiance_applies(head: nn.Module, gathered: GatheredFeatures) -> bool:
    """Whether :func:`cpu_radiance_views` runs the radiance head's view stage (module doc)."""
    return _usable(gathered.volume, radiance_shape(head, gathered))


def cpu_radiance_views(
    head: nn.Module, gathered: GatheredFeatures, view_mask: Bool[Tensor, "b rays samples v"]
) -> tuple[
    Float[Tensor, "b rays samples c"],
    Float[Tensor, "b rays samples v"],
    Float[Tensor, "b rays samples 3"],
]:
    """Global tokens after the view transformer, blending weights and blended colours."""
    views = view_mask.shape[-1]
    shape = radiance_shape(head, gathered)
    blocks = head.view_transformer.blocks
    global_tokens, blend_weights, rgb = cpu_radiance_op(
        *(_flat(part, views) for part in (gathered.volume, gathered.image, gathered.colours)),
        *(_flat(flags, views) for flags in (gathered.in_frustum, gathered.visible, view_mask)),
        _flat(gathered.angle.to(gathered.volume.dtype), views),
        head_weights(head.view_embed, head.global_embed, blocks, head.blend),
        list(shape),
        len(blocks),
        blocks[0].attention_norm.eps,
    )
    batch = view_mask.shape[:3]
    return (
        global_tokens.reshape(*batch, -1),
        blend_weights.reshape(*batch, views),
        rgb.reshape(*batch, 3),
    )


def semantic_shape(head: nn.Module, features: Tensor) -> HeadShape | None:
    if not hasattr(head, "global_embed") or head.tokens.value != "views_and_global":
        return None
    classes = _linear_layers(head.classifier)[-1].out_features
    parts = (features.shape[-1], 0, 0)
    views = features.shape[-2]
    return head_shape(
        views, parts, head.view_embed, head.transformer, head.classifier, SEMANTIC, classes
    )


def cpu_semantic_applies(head: nn.Module, features: Tensor) -> bool:
    """Whether :func:`cpu_semantic_logits` runs the semantic head (module doc)."""
    return _usable(features, semantic_shape(head, features))


def cpu_semantic_logits(
    head: nn.Module,
    features: Float[Tensor, "b rays samples v c_patch"],
    in_frustum: Bool[Tensor, "b rays samples v"],
    visible: Bool[Tensor, "b rays samples v"],
    view_mask: Bool[Tensor, "b rays samples v"],
) -> Float[Tensor, "b rays samples classes"]:
    """The semantic head's logits (its ``views_and_global`` tokens)."""
    views = view_mask.shape[-1]
    blocks = head.transformer.blocks
    logits = cpu_semantic_op(
        *(_flat(tensor, views) for tensor in (features, in_frustum, visible, view_mask)),
        head_weights(head.view_embed, head.global_embed, blocks, head.classifier),
        list(semantic_shape(head, features)),
        len(blocks),
        blocks[0].attention_norm.eps,
    )
    return logits.reshape(*view_mask.shape[:3], -1)
