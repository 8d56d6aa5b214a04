"""Checks shared by the tests of compiled parts: renders, encodings and training steps of a
model before and after ``compile_heads``, in plain fp32 products (spec 9)."""

import contextlib
from collections.abc import Iterator, Sequence

import jaxtyping
import torch

from gsnerf.engine.device import configure_matmul_precision
from gsnerf.engine.step import sample_pixels, training_losses
from gsnerf.losses import LossCfg
from gsnerf.model import GSNeRF
from gsnerf.model.compiled_heads import compile_heads
from gsnerf.types import Example, ImageRender, SourceGeometry


def assert_same_render(fast: ImageRender, plain: ImageRender) -> None:
    """Colour and z-depth within 1e-4 (float32 rounding of fused kernels), labels >= 99.9 %."""
    torch.testing.assert_close(fast.rgb, plain.rgb, atol=1e-4, rtol=0)
    torch.testing.assert_close(fast.depth, plain.depth, atol=1e-4, rtol=0)
    agree = fast.semantic_logits.argmax(1) == plain.semantic_logits.argmax(1)
    assert agree.float().mean() >= 0.999


@contextlib.contextmanager
def fp32_matmuls(device: torch.device) -> Iterator[None]:
    """TF32 off inside the block (the flags restored after): compiled and eager in plain fp32."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    configure_matmul_precision(device, False)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@contextlib.contextmanager
def runtime_type_checks_off() -> Iterator[None]:
    """jaxtyping's runtime checks (pytest's import hook, pyproject.toml) off for a while.

    Under torch 2.11 on CUDA the compiler traced the checker too, which then rejected valid
    tensors (an H200 run); with the hook off the same tests passed there.
    """
    previous = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", previous)


def plain_and_compiled_renders(
    model: GSNeRF, example: Example, parts: Sequence[str]
) -> tuple[ImageRender, ImageRender]:
    """The target of ``example`` rendered in chunks of 200 rays, in plain fp32 products, before
    and after ``compile_heads(model, "default", parts)``."""
    with fp32_matmuls(example.target.images.device), torch.inference_mode():
        geometry = model.encode_sources(example)
        plain = model.render_image(example, geometry, 200)
        compile_heads(model, "default", parts=parts)
        with runtime_type_checks_off():
            fast = model.render_image(example, geometry, 200)
    return plain, fast


def plain_and_compiled_encodings(
    model: GSNeRF, example: Example, parts: Sequence[str]
) -> tuple[SourceGeometry, SourceGeometry]:
    """The sources of ``example`` encoded, in plain fp32 products, before and after
    ``compile_heads(model, "default", parts)``."""
    with fp32_matmuls(example.target.images.device), torch.inference_mode():
        plain = model.encode_sources(example)
        compile_heads(model, "default", parts=parts)
        with runtime_type_checks_off():
            fast = model.encode_sources(example)
    return plain, fast


Gradients = dict[str, torch.Tensor]


def loss_and_gradients(model: GSNeRF, example: Example) -> tuple[torch.Tensor, Gradients]:
    """One fp32 training step's total loss on 64 rays of ``example`` and the gradients it
    leaves on ``model``'s parameters (those that get one), by name."""
    device = example.target.images.device
    generator = torch.Generator().manual_seed(1)
    pixels = sample_pixels(example.target, 64, generator).to(device)
    losses = training_losses(model, example, pixels, LossCfg(), generator, "fp32", device)
    losses["total"].backward()
    named = model.named_parameters()
    return losses["total"].detach(), {n: p.grad for n, p in named if p.grad is not None}


def train_both(
    plain: GSNeRF, fast: GSNeRF, example: Example
) -> tuple[torch.Tensor, Gradients, torch.Tensor, Gradients]:
    """:func:`loss_and_gradients` of a plain model and of its copy with compiled parts, in plain
    fp32 matrix products and without the runtime type checks that compiled code cannot trace."""
    with fp32_matmuls(example.target.images.device), runtime_type_checks_off():
        plain_loss, plain_gradients = loss_and_gradients(plain, example)
        fast_loss, fast_gradients = loss_and_gradients(fast, example)
    assert fast_gradients.keys() == plain_gradients.keys()
    return plain_loss, plain_gradients, fast_loss, fast_gradients


def assert_close_training(
    fast_loss: torch.Tensor,
    fast_gradients: Gradients,
    plain_loss: torch.Tensor,
    plain_gradients: Gradients,
) -> None:
    """Losses within 1e-5, each gradient within 1e-2 of its plain tensor's largest entry."""
    torch.testing.assert_close(fast_loss, plain_loss, atol=1e-5, rtol=0)
    for name, gradient in fast_gradients.items():
        scale = max(plain_gradients[name].abs().max().item(), 1e-4)  # some are zero up to 1e-10
        torch.testing.assert_close(gradient, plain_gradients[name], atol=1e-2 * scale, rtol=0)
