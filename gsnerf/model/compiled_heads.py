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
"""

import dataclasses
import types
from collections.abc import Callable
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


def _with_own_memory(forward: Callable[..., object]) -> Callable[..., object]:
    """``forward`` whose tensor outputs are copied out of the CUDA-graph output buffers.

    With CUDA graphs every call of a compiled head writes its outputs into the same static
    memory, so the next call would overwrite them; a chunk's guide-sample logits are a view of
    that memory and are kept until all chunks of the image are joined.
    """

    def call(*args: object, **kwargs: object) -> object:
        output = forward(*args, **kwargs)
        if isinstance(output, Tensor):
            return output.clone()
        if isinstance(output, tuple):
            return tuple(item.clone() for item in output)
        fields = dataclasses.fields(output)
        return dataclasses.replace(
            output, **{item.name: getattr(output, item.name).clone() for item in fields}
        )

    return call


def compile_heads(model: GSNeRF, mode: str, cost_volumes: bool = False) -> None:
    """Replace the radiance and semantic heads' ``forward`` with compiled ones, in place.

    ``cost_volumes``: compile the 3-D U-Nets of the cost volumes too (one graph per cascade
    level), whose GroupNorm + LeakyReLU pairs the compiler fuses; the convolutions stay
    cuDNN's (or the CPU library's). Encoding-side, so it only pays where sources are encoded
    per view (no scene-encoding cache).

    ``mode``: ``"none"`` (leaves the model untouched), ``"default"``, ``"reduce-overhead"`` or
    ``"max-autotune"`` (:class:`CompileMode`; config keys ``eval.compile`` and the benchmark's
    ``compile``). An inference-time option for evaluation, render.py and the benchmark: call it
    once per model, after loading the weights. The first render compiles (tens of seconds on a
    CPU, which needs a C++ compiler; Triton on CUDA); later calls reuse the compiled code for
    every image of that size (chunks of one size, ``model.equal_chunks``); another image
    size or chunk size compiles again. Parameters and state_dict keys are unchanged. A second
    call with another mode compiles the class's plain ``forward`` again; ``"none"`` never
    changes anything.

    Example: ``compile_heads(model, "default")`` then ``model.render_image(...)`` renders the
    same image as before, up to float32 rounding of the fused kernels.
    """
    choice = check_compile_mode(mode, "eval.compile (benchmark: compile)")
    if choice is CompileMode.NONE:
        if cost_volumes:
            raise ValueError(
                "eval.compile_cost_volumes (benchmark: compile_cost_volumes) needs a compile mode "
                "other than none (eval.compile / compile)"
            )
        return
    heads: list[nn.Module] = [model.radiance_head, model.semantic_head]
    if cost_volumes:
        heads += [level.regularizer for level in model.geo_reasoner.cost_volumes]
    for head in heads:
        plain = types.MethodType(type(head).forward, head)
        compiled = torch.compile(plain, mode=choice.value, dynamic=False)
        if choice is CompileMode.REDUCE_OVERHEAD:
            compiled = _with_own_memory(compiled)
        # An instance attribute, not a submodule: nn.Module.__call__ finds it, state_dict does not.
        head.forward = compiled
    model.equal_chunks = True
