"""Inference option: the renderer's per-sample heads compiled with ``torch.compile`` (spec 9).

The radiance and semantic heads are most of a frame's time (47 % of an eager N = 4 frame and
81 % at N = 128 with the tiny model on a CPU, scripts/benchmark.py), and both are chains of
small matrix products, attention and element-wise work that a compiler can fuse. Only their
``forward`` is replaced, on the instance; the modules, their parameters and so the state_dict
keys stay as they were, and training code never calls this.

Inside compiled code the view and ray transformers always keep their tokens token-major and
write the attention as products and sums with the sets innermost
(:func:`gsnerf.model.transformer.sets_last_attention`), which the compiler fuses into full-width
vector loops (eager code does so only for short sets in inference). Shapes are compiled as
static (``dynamic=False``), so every loop bound is a constant the compiler can unroll. To keep that
one compile per image size, :meth:`GSNeRF.render_image` splits an image into chunks of one
size, the last one padded (``equal_chunks``). Each new shape (image size, chunk size, N, V)
compiles again, tens of seconds on a CPU, so the first render belongs to a warm-up. Inductor
needs a C++ compiler on the CPU and Triton on CUDA.

More parts can be compiled the same way (``parts``): the gathering of the heads' inputs
(``GSNeRF.gather``: sampling, projections, grid reads and many element-wise passes, which
eager code runs as one kernel each), the cost volumes' 3-D U-Nets (whose GroupNorm +
LeakyReLU pairs fuse; the convolutions stay the library's), the target depth D_T
(``GSNeRF.estimate_guide``: the splat's scatter, the hole filling's pooling and the filter,
about a hundred small operators eager), the 2-D feature net (its GroupNorm + LeakyReLU pairs
fuse, and on CUDA inductor may keep the convolutions' activations channels-last, the layout of
cuDNN's bf16 kernels, instead of converting around each convolution) and the compositing
(``GSNeRF.composite_samples``: a dozen small operators per chunk). On a CPU the gathering's
grid reads stay the library's kernels (``gsnerf::border_grid_read``), and the compiled
gathering is a little faster than the eager one; the compiled cost volumes were no faster
there, the compiled D_T took 3.9 against 6.7 ms a tiny-model frame (benchmarks/README.md). On
CUDA the first three are the benchmark's default.
"""

import dataclasses
import types
from collections.abc import Callable, Sequence
from enum import Enum

import torch
from torch import Tensor, nn

from gsnerf.model.gsnerf import GSNeRF


class CompileMode(str, Enum):
    """What ``torch.compile`` does with the heads (its ``mode`` argument, or nothing)."""

    # Plain eager heads.
    NONE = "none"
    # Inductor's default: fused kernels, no CUDA graphs.
    DEFAULT = "default"
    # Inductor plus CUDA graphs on CUDA (fewer kernel launches); the same as default on a CPU.
    REDUCE_OVERHEAD = "reduce-overhead"
    # Inductor with autotuned matrix-product and convolution kernels (longest compile).
    MAX_AUTOTUNE = "max-autotune"


def check_compile_mode(mode: str, key: str) -> CompileMode:
    """``mode`` as a :class:`CompileMode`; a ValueError naming the config ``key`` otherwise."""
    choices = [choice.value for choice in CompileMode]
    if mode not in choices:
        raise ValueError(f"{key}: unknown compile mode {mode!r}, expected one of {choices}")
    return CompileMode(mode)


class CompiledPart(str, Enum):
    """A part of the model that :func:`compile_heads` can compile."""

    # The radiance and semantic heads, per chunk of rays.
    HEADS = "heads"
    # Rays, samples and the heads' inputs, per chunk of rays (GSNeRF.gather).
    GATHER = "gather"
    # The 3-D U-Nets of the cascade's cost volumes, per source encoding (one graph per level).
    COST_VOLUMES = "cost_volumes"
    # The target depth D_T (splat, fill, filter), once per target view (GSNeRF.estimate_guide).
    GUIDE_DEPTH = "guide_depth"
    # The 2-D feature net, once per source encoding (one graph for the batch of source images).
    FEATURE_NET = "feature_net"
    # Alpha compositing of colour, depth and semantics, per chunk (GSNeRF.composite_samples).
    COMPOSITING = "compositing"


# What the CUDA benchmark and train.compile compile by default: the parts timed together on an
# H100 (benchmarks/README.md). guide_depth is not yet timed on CUDA.
CUDA_TIMED_PARTS = (
    CompiledPart.HEADS.value,
    CompiledPart.GATHER.value,
    CompiledPart.COST_VOLUMES.value,
)


def check_compile_parts(parts: Sequence[str], key: str) -> list[CompiledPart]:
    """``parts`` as :class:`CompiledPart` values; a ValueError naming the config ``key``."""
    choices = [choice.value for choice in CompiledPart]
    unknown = [part for part in parts if part not in choices]
    if unknown:
        raise ValueError(f"{key}: unknown parts {unknown}, expected some of {choices}")
    return [CompiledPart(part) for part in parts]


def _copied(value: object) -> object:
    """``value`` with every tensor in it (tuples and dataclasses, nested) cloned."""
    if isinstance(value, Tensor):
        return value.clone()
    if isinstance(value, tuple):
        return tuple(_copied(item) for item in value)
    if dataclasses.is_dataclass(value):
        fields = dataclasses.fields(value)
        return dataclasses.replace(
            value, **{item.name: _copied(getattr(value, item.name)) for item in fields}
        )
    return value


def _with_own_memory(forward: Callable[..., object]) -> Callable[..., object]:
    """``forward`` whose tensor outputs are copied out of the CUDA-graph output buffers.

    With CUDA graphs every call of a compiled head writes its outputs into the same static
    memory, so the next call would overwrite them; a chunk's guide-sample logits are a view of
    that memory and are kept until all chunks of the image are joined.
    """

    def call(*args: object, **kwargs: object) -> object:
        return _copied(forward(*args, **kwargs))

    return call


def compile_heads(model: GSNeRF, mode: str, parts: Sequence[str] = ("heads",)) -> None:
    """Replace the ``forward`` of the chosen parts with compiled ones, in place.

    ``parts``: some of ``"heads"`` (the radiance and semantic heads), ``"gather"`` (the
    per-chunk gathering, ``GSNeRF.gather``), ``"cost_volumes"`` (the cost volumes' 3-D
    U-Nets, which run only where sources are encoded, not from a scene-encoding cache),
    ``"guide_depth"`` (D_T, once per target view, ``GSNeRF.estimate_guide``),
    ``"feature_net"`` (the 2-D feature net, where sources are encoded) and ``"compositing"``
    (per chunk, ``GSNeRF.composite_samples``);
    :class:`CompiledPart`, config keys ``eval.compile_parts`` and the benchmark's
    ``compile_parts``.

    ``mode``: ``"none"`` (leaves the model untouched), ``"default"``, ``"reduce-overhead"`` or
    ``"max-autotune"`` (:class:`CompileMode`; config keys ``eval.compile`` and the benchmark's
    ``compile``). An inference-time option for evaluation, render.py and the benchmark: call it
    once per model, after loading the weights. The first render compiles (tens of seconds on a
    CPU, which needs a C++ compiler; Triton on CUDA); later calls reuse the compiled code for
    every image of that size (chunks of one size, ``model.equal_chunks``); another image
    size or chunk size compiles again. Parameters and state_dict keys are unchanged. A second
    call with another mode compiles the class's plain methods again; ``"none"`` never changes
    anything, and with parts other than the default it is an error.

    Example: ``compile_heads(model, "default")`` then ``model.render_image(...)`` renders the
    same image as before, up to float32 rounding of the fused kernels.
    """
    choice = check_compile_mode(mode, "eval.compile (benchmark: compile)")
    chosen = check_compile_parts(parts, "eval.compile_parts (benchmark: compile_parts)")
    if choice is CompileMode.NONE:
        if set(chosen) != {CompiledPart.HEADS}:
            raise ValueError(
                f"eval.compile_parts (benchmark: compile_parts) {list(parts)} needs a compile "
                "mode other than none (eval.compile / compile)"
            )
        return
    # (object, name of the method to replace on it)
    targets: list[tuple[nn.Module, str]] = []
    if CompiledPart.HEADS in chosen:
        targets += [(model.radiance_head, "forward"), (model.semantic_head, "forward")]
    if CompiledPart.GATHER in chosen:
        targets.append((model, "gather"))
    if CompiledPart.COST_VOLUMES in chosen:
        targets += [(level.regularizer, "forward") for level in model.geo_reasoner.cost_volumes]
    if CompiledPart.GUIDE_DEPTH in chosen:
        targets.append((model, "estimate_guide"))
    if CompiledPart.FEATURE_NET in chosen:
        targets.append((model.geo_reasoner.feature_net, "forward"))
    if CompiledPart.COMPOSITING in chosen:
        targets.append((model, "composite_samples"))
    for owner, name in targets:
        plain = types.MethodType(getattr(type(owner), name), owner)
        compiled = torch.compile(plain, mode=choice.value, dynamic=False)
        if choice is CompileMode.REDUCE_OVERHEAD:
            compiled = _with_own_memory(compiled)
        # An instance attribute, not a submodule: attribute lookup finds it before the class's
        # method (nn.Module.__call__ too), state_dict does not see it.
        setattr(owner, name, compiled)
    model.equal_chunks = True
