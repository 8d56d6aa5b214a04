"""The training loop: optimiser, warm-up + cosine, clipping, AMP, NaN guard, validation, resume.

Reproducibility: the weights are initialised from ``seed``; training item ``i`` and the rays of
step ``s`` come from generators seeded by ``(seed, i)`` and ``(seed, s)``, so a run resumed from
a checkpoint continues exactly as if it had never stopped.
"""

import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset

from gsnerf.data.dataset import MultiViewDataset, collate_examples, open_split
from gsnerf.engine.checkpoint import (
    load_checkpoint,
    load_model_weights,
    resolve_resume_path,
    save_checkpoint,
    step_checkpoint_name,
)
from gsnerf.engine.device import (
    configure_matmul_precision,
    data_workers,
    make_grad_scaler,
    resolve_device,
)
from gsnerf.engine.distributed import (
    DistributedContext,
    all_ranks_finite,
    barrier,
    init_distributed,
    replica_checksums,
    shared_run_dir,
    shutdown,
)
from gsnerf.engine.logging import RunLogger, setup_file_logging
from gsnerf.engine.schedule import OptimCfg, build_optimizer, build_scheduler
from gsnerf.engine.seeding import capture_rng_state, restore_rng_state, seed_everything
from gsnerf.engine.step import sample_pixels, training_losses
from gsnerf.model.compiled_heads import (
    CUDA_TIMED_PARTS,
    CompileMode,
    check_compile_mode,
    check_compile_parts,
    compile_heads,
)
from gsnerf.model.fused_kernels import current_fused_kernels, use_fused_kernels

log = logging.getLogger(__name__)


@dataclass
class TrainCfg:
    # Optimiser steps of the run (spec 4: 300k).
    steps: int = 300_000
    # Target rays per step and scene (spec 4: 1024).
    rays_per_step: int = 1024
    # Scenes (examples) per step and process (spec 4: 1).
    batch_size: int = 1
    # Adam and its warm-up + cosine schedule (spec 4).
    optim: OptimCfg = field(default_factory=OptimCfg)
    # Gradient clipping: "value" (clamp each entry, spec 4), "norm" (global L2) or "none".
    grad_clip: str = "value"
    # Threshold of the gradient clipping (spec 4: 2.0, by value).
    grad_clip_threshold: float = 2.0
    # Numeric precision: "auto" (bf16 autocast on CUDA if supported, else fp32), "fp32",
    # "bf16" or "fp16" (fp16 uses a gradient scaler).
    precision: str = "auto"
    # Device: "auto" (CUDA when present, else CPU), "cpu" or "cuda".
    device: str = "auto"
    # TF32 tensor-core matmuls and convolutions for the fp32 parts on CUDA (no effect on the CPU).
    allow_tf32: bool = True
    # Data-loader worker processes: 0 loads in the training process; -1 chooses (none on a
    # CPU, up to 4 with CUDA: gsnerf.engine.device.data_workers).
    num_workers: int = -1
    # Steps between validations on the held-out scenes (0 = only at the end).
    val_every: int = 5000
    # Held-out views rendered per validation during training (null = all test views).
    val_max_views: int | None = 8
    # Steps between numbered checkpoints (last.pt is rewritten at the same time).
    checkpoint_every: int = 5000
    # Steps between scalar logs.
    log_every: int = 50
    # Stop this launch after this step (checkpoint written), to split a run over job-time
    # limits; resume=true continues it exactly. null = run to ``steps``.
    stop_at_step: int | None = None
    # Consecutive steps with a non-finite loss after which training stops with an error.
    max_nonfinite_steps: int = 20
    # Checkpoint whose weights (only) start the run, e.g. per-scene fine-tuning (spec 6).
    init_weights: str = ""
    # torch.compile of parts of the model for the training steps (forward and backward; the
    # validation renders use them too): "none" or a mode of eval.compile. The same losses and
    # gradients as eager steps up to float32 rounding (tests). Off by default: on a CPU the first
    # step compiles for minutes and the steps are no faster (tiny model, 512 rays, N = 4: 1.06
    # steps/s against 1.20 eager, benchmarks/), and on a GPU it is not yet timed (the benchmark's
    # train_compile).
    compile: str = "none"
    # What train.compile compiles (of eval.compile_parts' choices): the CUDA benchmark's three.
    compile_parts: list[str] = field(default_factory=lambda: list(CUDA_TIMED_PARTS))
    # C++ kernels on a CPU, forward and backward: the cost volumes' warp and group correlation
    # (gsnerf.model.cpu_correlation), GroupNorm + LeakyReLU pairs (cpu_volume_norm), depth-logit
    # convolutions (cpu_logit_conv) and the blocks' attention (cpu_set_attention); a tiny-model
    # step (512 rays, 4 views, one thread) 322 against 355 ms with the last, 373 against 477 with
    # the first two. Validation renders: all of eval.cpu_kernels. The same numbers to float32
    # rounding; no effect on CUDA; without a C++ compiler, a warning and the PyTorch code.
    cpu_kernels: bool = True
    # CUDA, Triton kernels (also in validation), off until timed in training steps (the
    # benchmark's options of these names): the cost volumes' warp, correlation and convolutions,
    # forward and backward (gsnerf/model/fused_correlation.py, fused_volume_conv.py; the same
    # gradients to rounding, tests), and D_T (fused_guide_depth.py; detached source depths).
    fused_volumes: bool = False
    fused_guide_depth: bool = False

    def __post_init__(self) -> None:
        check_compile_mode(self.compile, "train.compile")
        check_compile_parts(self.compile_parts, "train.compile_parts")


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


class Trainer:
    """Owns the model, the optimiser state, the data and the run directory of one training run."""

    def __init__(self, cfg, run_dir: Path) -> None:
        from gsnerf.model import build_model

        self.cfg = cfg
        self.train_cfg: TrainCfg = cfg.train
        self.device = resolve_device(self.train_cfg.device)
        self.context: DistributedContext = init_distributed(self.device.type)
        self.run_dir = Path(shared_run_dir(str(run_dir), self.context))
        self.checkpoint_dir = self.run_dir / "checkpoints"
        if self.context.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.context.local_rank)
        configure_matmul_precision(self.device, self.train_cfg.allow_tf32)
        train = self.train_cfg
        kernels = replace(current_fused_kernels(), cpu_kernels=train.cpu_kernels)
        kernels = replace(kernels, volumes=train.fused_volumes, guide_depth=train.fused_guide_depth)
        use_fused_kernels(kernels, self.device)
        # Automatic loader workers share the machine's cores among the processes of a DDP run.
        cores = max((os.cpu_count() or 1) // self.context.world_size, 1)
        self.num_workers = data_workers(self.train_cfg.num_workers, self.device, cores)
        if self.context.is_main:
            setup_file_logging(self.run_dir, "train")
        self.logger = RunLogger(self.run_dir, self.context.is_main, cfg.logger.tensorboard)

        seed_everything(cfg.seed)
        # Rank 0 first: it may have to generate the synthetic rooms, which the others then read.
        if self.context.is_main:
            train_scenes = open_split(cfg.dataset, "train")
        barrier(self.context)
        if not self.context.is_main:
            train_scenes = open_split(cfg.dataset, "train")
        self.class_names = train_scenes[0].class_names
        self.ignore_index = train_scenes[0].ignore_index
        items = self.train_cfg.steps * self.train_cfg.batch_size * self.context.world_size
        self.train_set = MultiViewDataset(
            train_scenes, cfg.dataset, "train", seed=cfg.seed, length=items
        )
        self.model = build_model(cfg.model, len(self.class_names)).to(self.device)
        self.optimizer = build_optimizer(self.model.parameters(), self.train_cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, self.train_cfg.steps, self.train_cfg.optim)
        self.scaler = make_grad_scaler(self.train_cfg.precision, self.device)
        self.step = 0
        self.best_metric = float("-inf")
        if self.train_cfg.init_weights and not cfg.resume:
            load_model_weights(self.model, Path(self.train_cfg.init_weights), self.class_names)
        self._resume_if_asked()
        if self.train_cfg.compile != CompileMode.NONE.value:
            compile_heads(self.model, self.train_cfg.compile, self.train_cfg.compile_parts)
        if self.context.enabled:
            self.model = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
            )

    def _resume_if_asked(self) -> None:
        path = resolve_resume_path(self.cfg.resume, self.run_dir)
        if path is None:
            return
        state = load_checkpoint(path, map_location=self.device)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        self.step = int(state["step"])
        self.best_metric = float(state["best_metric"])
        log.info("resumed from %s at step %d", path, self.step)

    def _state(self) -> dict:
        return {
            "step": self.step,
            "model": _unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "rng": capture_rng_state(),
            "best_metric": self.best_metric,
            "class_names": self.class_names,
        }

    def save(self, numbered: bool) -> None:
        if not self.context.is_main:
            return
        state = self._state()
        if numbered:
            save_checkpoint(state, self.checkpoint_dir / step_checkpoint_name(self.step))
        save_checkpoint(state, self.checkpoint_dir / "last.pt")

    def _loader(self) -> DataLoader:
        # Item indices continue from the resumed step, one disjoint slice per rank.
        per_step = self.train_cfg.batch_size * self.context.world_size
        start = self.step * per_step
        indices = [
            i
            for i in range(start, len(self.train_set))
            if i % self.context.world_size == self.context.rank
        ]
        return DataLoader(
            Subset(self.train_set, indices),
            batch_size=self.train_cfg.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=collate_examples,
            pin_memory=self.device.type == "cuda",
            persistent_workers=self.num_workers > 0,
        )

    def train_step(self, example) -> dict[str, float] | None:
        """One optimiser step; returns the loss terms, or None when the step was skipped."""
        cfg = self.train_cfg
        example = example.to(self.device)
        seed = self.cfg.seed * 7_919 + self.step * self.context.world_size + self.context.rank
        generator = torch.Generator(device="cpu").manual_seed(seed)
        pixels = sample_pixels(example.target, cfg.rays_per_step, generator).to(self.device)
        self.model.train()
        losses = training_losses(
            self.model, example, pixels, self.cfg.loss, generator, cfg.precision, self.device
        )
        total = losses["total"]
        if not all_ranks_finite(total, self.context):
            return None
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            # The fp16 scaler skips steps with inf/NaN gradients itself and lowers its scale.
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)
            self._clip_gradients()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total.backward()
            if not all_ranks_finite(self._gradient_sum(), self.context):
                self.optimizer.zero_grad(set_to_none=True)
                return None
            self._clip_gradients()
            self.optimizer.step()
        self.scheduler.step()
        return {key: float(value.detach()) for key, value in losses.items()}

    def _gradient_sum(self) -> torch.Tensor:
        grads = [p.grad.abs().sum() for p in self.model.parameters() if p.grad is not None]
        return torch.stack(grads).sum() if grads else torch.zeros((), device=self.device)

    def _clip_gradients(self) -> None:
        cfg = self.train_cfg
        if cfg.grad_clip == "value":
            torch.nn.utils.clip_grad_value_(self.model.parameters(), cfg.grad_clip_threshold)
        elif cfg.grad_clip == "norm":
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip_threshold)
        elif cfg.grad_clip != "none":
            raise ValueError(f"train.grad_clip must be value, norm or none, got {cfg.grad_clip!r}")

    def validate(self) -> dict:
        from gsnerf.evaluation.evaluator import evaluate

        test_scenes = open_split(self.cfg.dataset, "test")
        test_set = MultiViewDataset(test_scenes, self.cfg.dataset, "test", seed=self.cfg.seed)
        limit = self.train_cfg.val_max_views
        if limit is not None and limit < len(test_set):
            # Spread the validation views over all test scenes rather than the first one.
            stride = len(test_set) / limit
            test_set = Subset(test_set, [int(i * stride) for i in range(limit)])
        return evaluate(
            _unwrap(self.model),
            test_set,
            self.cfg.eval,
            self.class_names,
            self.ignore_index,
            self.run_dir / "validation" / f"step-{self.step:09d}",
            device=self.device,
            logger=self.logger,
            step=self.step,
        )

    def fit(self) -> None:
        cfg = self.train_cfg
        nonfinite_in_a_row = 0
        bar = self.logger.progress(cfg.steps, self.step, "train")
        started = time.perf_counter()
        steps_timed = 0
        # Seconds spent waiting for the next batch and inside train_step: the loader starves the
        # device when the first is more than a small share of the sum.
        waiting_s, stepping_s = 0.0, 0.0
        last_step = cfg.steps if cfg.stop_at_step is None else min(cfg.steps, cfg.stop_at_step)
        batches = iter(self._loader())
        while self.step < last_step:
            wait_start = time.perf_counter()
            example = next(batches, None)
            if example is None:
                break
            step_start = time.perf_counter()
            waiting_s += step_start - wait_start
            terms = self.train_step(example)
            # train_step returns Python floats of the losses, so the device has finished.
            stepping_s += time.perf_counter() - step_start
            if terms is None:
                nonfinite_in_a_row += 1
                log.warning(
                    "step %d skipped: non-finite loss or gradient (scenes %s, target frames %s, "
                    "source frames %s)",
                    self.step,
                    example.scenes,
                    example.target.frame_ids.tolist(),
                    example.sources.frame_ids.tolist(),
                )
                if nonfinite_in_a_row >= cfg.max_nonfinite_steps:
                    raise FloatingPointError(
                        f"{nonfinite_in_a_row} consecutive steps had a non-finite loss or "
                        f"gradient (last at step {self.step}); lower train.optim.lr or use "
                        f"train.precision=fp32; the last good weights are in "
                        f"{self.checkpoint_dir / 'last.pt'}"
                    )
                continue
            nonfinite_in_a_row = 0
            self.step += 1
            steps_timed += 1
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                elapsed = time.perf_counter() - started
                throughput = {
                    "steps_per_s": steps_timed / elapsed,
                    "rays_per_s": steps_timed * cfg.rays_per_step * cfg.batch_size / elapsed,
                    "data_loading_share": waiting_s / max(waiting_s + stepping_s, 1e-9),
                    "lr": self.optimizer.param_groups[0]["lr"],
                }
                self.logger.scalars({**terms, **throughput}, self.step, "train")
                bar.set_postfix(loss=f"{terms['total']:.4f}")
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self.save(numbered=True)
            if cfg.val_every and self.step % cfg.val_every == 0 and self.step < cfg.steps:
                self._validate_and_keep_best()
        bar.close()
        if waiting_s + stepping_s > 0:
            log.info(
                "data loading: %.1f s waiting for batches, %.1f s in training steps (%.1f %% of "
                "the step time; %d loader workers)",
                waiting_s,
                stepping_s,
                100 * waiting_s / (waiting_s + stepping_s),
                self.num_workers,
            )
        self.save(numbered=True)
        self._check_replicas()
        barrier(self.context)

    def _check_replicas(self) -> None:
        """Under DDP every rank must end with the same weights; a mismatch is a bug, not noise."""
        checksums = replica_checksums(self.model, self.context)
        if len(set(checksums)) > 1:
            raise RuntimeError(f"ranks hold different weights after training: {checksums}")
        if self.context.enabled:
            log.info(
                "replica check: %d ranks hold identical weights (checksum %.10e)",
                self.context.world_size,
                checksums[0],
            )

    def _validate_and_keep_best(self) -> dict:
        metrics = self.validate() if self.context.is_main else {}
        miou = metrics.get("miou")
        if self.context.is_main and miou is not None and miou > self.best_metric:
            self.best_metric = miou
            save_checkpoint(self._state(), self.checkpoint_dir / "best.pt")
            log.info("new best validation mIoU %.4f at step %d", miou, self.step)
        barrier(self.context)
        return metrics

    def close(self) -> None:
        self.logger.close()
        shutdown(self.context)
