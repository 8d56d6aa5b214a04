"""Training speed of the benchmark: steps/s and rays/s of full training steps (spec 9).

A step is what the trainer does: random target pixels, forward, losses (spec 4 defaults: L2
colour, cross-entropy, supervised depth), backward, clipping by value, Adam. One warm-up step,
then the median of the timed ones. A step that raises (a CUDA kernel refusing the shapes, say)
becomes a record with the error, so that the rendering figures of the same run are kept.
"""

import logging
import statistics
from collections.abc import Sequence

import torch

from gsnerf.engine.schedule import build_optimizer
from gsnerf.engine.step import sample_pixels, training_losses
from gsnerf.engine.trainer import TrainCfg
from gsnerf.evaluation.pass_timing import repeat_passes
from gsnerf.losses import LossCfg
from gsnerf.model.compiled_heads import CompileMode, compile_heads
from gsnerf.model.gsnerf import GSNeRF
from gsnerf.types import Example

log = logging.getLogger(__name__)


def measure_training(
    model: GSNeRF,
    example: Example,
    rays: int,
    steps: int,
    precision: str,
    budget_s: float,
    seed: int,
    compile_mode: str = CompileMode.NONE.value,
    compile_parts: Sequence[str] = (),
) -> dict:
    """``{"steps_per_s", "rays_per_s", "step_ms"}`` of ``steps`` timed steps of ``rays`` rays.

    ``precision``: "fp32" or "bf16" (autocast, as training's AMP). ``compile_mode`` and
    ``compile_parts``: the training's ``train.compile`` and ``train.compile_parts``, applied to
    ``model`` in place; two untimed steps then compile. On failure
    ``{"error": "<type>: <first line>"}``, logged as an error.
    """
    device = example.target.images.device
    model.train()
    train_cfg = TrainCfg()
    optimizer = build_optimizer(model.parameters(), train_cfg.optim)
    loss_cfg = LossCfg()
    generator = torch.Generator().manual_seed(seed)

    def step() -> None:
        pixels = sample_pixels(example.target, rays, generator).to(device)
        losses = training_losses(model, example, pixels, loss_cfg, generator, precision, device)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), train_cfg.grad_clip_threshold)
        optimizer.step()

    compiling = compile_mode != CompileMode.NONE.value
    try:
        if compiling:
            compile_heads(model, compile_mode, compile_parts)
            step()
        step()
        median = statistics.median(repeat_passes(step, steps, budget_s, device))
    except RuntimeError as error:
        first_line = (str(error).strip().splitlines() or ["no message"])[0]
        log.error("training step failed (%d rays, %s): %s", rays, precision, first_line)
        return {"error": f"{type(error).__name__}: {first_line}"}
    return {"steps_per_s": 1 / median, "rays_per_s": rays / median, "step_ms": 1000 * median}
