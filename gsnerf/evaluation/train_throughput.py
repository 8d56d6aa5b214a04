"""Training speed of the benchmark: steps/s and rays/s of full training steps (spec 9).

A step is what the trainer does: random target pixels, forward, losses (spec 4 defaults: L2
colour, cross-entropy, supervised depth), backward, clipping by value, Adam. One warm-up step,
then the median of the timed ones. A step that raises (a CUDA kernel refusing the shapes, say)
becomes a record with the error, so that the rendering figures of the same run are kept.

One more step runs profiled: the forward's stages as in a rendered frame
(:meth:`GSNeRF.profiled`), the losses with the forward's glue code, the backward pass, and
the optimizer (clipping + Adam), each synchronised on CUDA. Where the time of a step goes, for
the training speed target; the synchronisation makes that step a little slower than the
timed ones.
"""

import logging
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from gsnerf.engine.device import synchronize
from gsnerf.engine.schedule import build_optimizer
from gsnerf.engine.step import sample_pixels, training_losses
from gsnerf.engine.train_config import TrainCfg
from gsnerf.evaluation.pass_timing import repeat_passes
from gsnerf.losses import LossCfg
from gsnerf.model.compiled_heads import CompileMode, compile_heads
from gsnerf.model.gsnerf import GSNeRF
from gsnerf.model.stage_timer import StageTimer
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
    """``{"steps_per_s", "rays_per_s", "step_ms"}`` of ``steps`` timed steps of ``rays`` rays,
    and the phases of one profiled step (:func:`profiled_step`).

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

    def forward() -> torch.Tensor:
        pixels = sample_pixels(example.target, rays, generator).to(device)
        losses = training_losses(model, example, pixels, loss_cfg, generator, precision, device)
        return losses["total"]

    def backward(total: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        total.backward()

    def update() -> None:
        torch.nn.utils.clip_grad_value_(model.parameters(), train_cfg.grad_clip_threshold)
        optimizer.step()

    def step() -> None:
        backward(forward())
        update()

    compiling = compile_mode != CompileMode.NONE.value
    try:
        if compiling:
            compile_heads(model, compile_mode, compile_parts)
            step()
        step()
        median = statistics.median(repeat_passes(step, steps, budget_s, device))
        phases = profiled_step(model, forward, backward, update, device)
    except RuntimeError as error:
        first_line = (str(error).strip().splitlines() or ["no message"])[0]
        log.error("training step failed (%d rays, %s): %s", rays, precision, first_line)
        return {"error": f"{type(error).__name__}: {first_line}"}
    return {
        "steps_per_s": 1 / median,
        "rays_per_s": rays / median,
        "step_ms": 1000 * median,
        **phases,
    }


def profiled_step(
    model: GSNeRF,
    forward: Callable[[], torch.Tensor],
    backward: Callable[[torch.Tensor], None],
    update: Callable[[], None],
    device: torch.device,
) -> dict:
    """One training step with each phase timed: ``{"phases_ms", "profiled_step_ms"}``.

    ``phases_ms``: the forward's stages (:data:`gsnerf.evaluation.benchmark_report.STAGES`
    keys), ``losses_and_glue`` (the rest of the forward and the losses), ``backward`` and
    ``optimizer``; they add up to ``profiled_step_ms`` but for the synchronisations between
    them.
    """
    timer = StageTimer(device)
    synchronize(device)
    start = time.perf_counter()
    with model.profiled(timer):
        total = forward()
    synchronize(device)
    forward_s = time.perf_counter() - start
    losses_and_glue = forward_s - timer.total()
    with timer("backward"):
        backward(total)
    with timer("optimizer"):
        update()
    step_s = time.perf_counter() - start
    phases = {name: 1000 * seconds for name, seconds in timer.seconds.items()}
    return {
        "phases_ms": {**phases, "losses_and_glue": 1000 * losses_and_glue},
        "profiled_step_ms": 1000 * step_s,
    }
