"""Optimiser and learning-rate schedule of spec 4: Adam, linear warm-up, cosine decay."""

import math
from dataclasses import dataclass, field

import torch


@dataclass
class OptimCfg:
    # Peak learning rate of Adam (spec 4: 5e-4).
    lr: float = 5e-4
    # Adam betas (spec 4: 0.9, 0.999).
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    # Adam weight decay (spec 4: 1e-5).
    weight_decay: float = 1e-5
    # Steps of linear warm-up from lr/warmup_steps to lr (spec 4: 500).
    warmup_steps: int = 500
    # Learning rate at the end of the cosine decay (spec 4: 1e-5).
    lr_min: float = 1e-5
    # Adam's one-kernel implementation (torch.optim.Adam(fused=True), CPU and CUDA): the same
    # update up to float32 rounding, in one pass over all parameters instead of about ten
    # operators per parameter tensor; the tiny model's optimizer phase took 5 against 17 ms of
    # a 300 ms CPU training step (benchmarks/README.md). false: torch's default, the per-tensor
    # loop on a CPU and the multi-tensor one on CUDA.
    fused: bool = True


def build_optimizer(parameters, cfg: OptimCfg) -> torch.optim.Optimizer:
    """Adam with ``cfg``'s settings (spec 4); ``cfg.fused`` picks the implementation only.

    A checkpoint's optimizer state loads into either: ``load_state_dict`` keeps the saved
    run's implementation along with its other settings.
    """
    return torch.optim.Adam(
        parameters,
        lr=cfg.lr,
        betas=tuple(cfg.betas),
        weight_decay=cfg.weight_decay,
        # None, not False: torch then picks its multi-tensor loop on CUDA, False forces the
        # per-tensor one.
        fused=cfg.fused or None,
    )


def lr_factor(step: int, total_steps: int, cfg: OptimCfg) -> float:
    """Multiplier of ``cfg.lr`` at ``step``: ``(step+1)/warmup`` during warm-up, then a cosine
    from 1 to ``lr_min/lr`` over the remaining steps. Example: warmup 500, step 0 -> 0.002."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(total_steps - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    floor = cfg.lr_min / cfg.lr
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, cfg: OptimCfg
) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up + cosine as one LambdaLR, so its state dict resumes exactly."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, cfg)
    )
