"""The training loop: optimiser, warm-up + cosine, clipping, AMP, NaN guard, validation, resume.

Reproducibility: the weights are initialised from ``seed``; training item ``i`` and the rays of
step ``s`` come from generators seeded by ``(seed, i)`` and ``(seed, s)``, so a run resumed from
a checkpoint continues exactly as if it had never stopped. A step skipped for a non-finite loss
takes the next item and keeps its step number, so every run trains ``steps`` steps; the
checkpoint counts the items taken. A run stopped between steps (Ctrl-C, SIGTERM, an unreadable
frame) writes ``last.pt`` before it ends, so no finished step is lost.
"""

import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset

from gsnerf.data.dataset import MultiViewDataset, collate_examples, open_split
from gsnerf.engine.checkpoint import (
    load_checkpoint,
    load_model_weights,
    load_weights,
    resolve_resume_path,
    resume_requested,
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
    check_replicas,
    init_distributed,
    shared_run_dir,
    shutdown,
)
from gsnerf.engine.interruption import sigterm_as_interrupt
from gsnerf.engine.logging import RunLogger, setup_file_logging
from gsnerf.engine.schedule import build_optimizer, build_scheduler
from gsnerf.engine.seeding import capture_rng_state, restore_rng_state, seed_everything
from gsnerf.engine.step import sample_pixels, training_losses
from gsnerf.engine.train_config import TrainCfg
from gsnerf.model.compiled_heads import CompileMode, compile_heads
from gsnerf.model.fused_kernels import current_fused_kernels, use_fused_kernels

log = logging.getLogger(__name__)


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
        if not resume_requested(cfg.resume) and any(self.checkpoint_dir.glob("*.pt")):
            # A new run would overwrite last.pt and mix its step files with the old run's.
            raise FileExistsError(
                f"{self.checkpoint_dir} already holds checkpoints of a run; pass resume=true to "
                "continue it, or another hydra.run.dir for a new run"
            )
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
        # Twice the items the steps take: skipped steps take the next ones (seeded by index).
        self.train_set = MultiViewDataset(
            train_scenes, cfg.dataset, "train", seed=cfg.seed, length=2 * items
        )
        self.model = build_model(cfg.model, len(self.class_names)).to(self.device)
        self.optimizer = build_optimizer(self.model.parameters(), self.train_cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, self.train_cfg.steps, self.train_cfg.optim)
        self.scaler = make_grad_scaler(self.train_cfg.precision, self.device)
        self.step = 0
        # Loader batches taken: steps done plus steps skipped for a non-finite loss.
        self.batches_done = 0
        self.best_metric = float("-inf")
        # The newest checkpoint with this run's state, as (path, step); None before the first.
        self.last_saved: tuple[Path, int] | None = None
        # True while the optimiser updates the weights: a stop then would save a torn state.
        self.updating = False
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
        load_weights(self.model, state, path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        self.step = int(state["step"])
        self.batches_done = int(state.get("batches_done", self.step))
        self.best_metric = float(state["best_metric"])
        self.last_saved = (path, self.step)
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
            "batches_done": self.batches_done,
            "class_names": self.class_names,
            "model_name": self.cfg.model.name,
        }

    def save(self, numbered: bool) -> None:
        if not self.context.is_main:
            return
        state = self._state()
        if numbered:
            save_checkpoint(state, self.checkpoint_dir / step_checkpoint_name(self.step))
        save_checkpoint(state, self.checkpoint_dir / "last.pt")
        self.last_saved = (self.checkpoint_dir / "last.pt", self.step)

    def _loader(self) -> DataLoader:
        # Item indices continue after the items taken, one disjoint slice per rank (every
        # world_size-th item; ``start`` is a multiple of world_size).
        per_step = self.train_cfg.batch_size * self.context.world_size
        start = self.batches_done * per_step
        indices = range(start + self.context.rank, len(self.train_set), self.context.world_size)
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
        """One optimiser step, counted in ``self.step``; returns the loss terms, or None when
        the step was skipped (weights, optimiser and step count unchanged)."""
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
            self.updating = True
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total.backward()
            if not all_ranks_finite(self._gradient_sum(), self.context):
                self.optimizer.zero_grad(set_to_none=True)
                return None
            self._clip_gradients()
            self.updating = True
            self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self.updating = False
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
        """Train to ``train.steps`` (or ``train.stop_at_step``), then write the last checkpoint.

        A stop between steps (Ctrl-C, SIGTERM, an error such as an unreadable frame) first
        writes ``last.pt``, so ``resume=true`` continues from the last finished step; after too
        many non-finite steps the last checkpoint is kept as it is.
        """
        try:
            with sigterm_as_interrupt():
                self._train_loop()
        except FloatingPointError:
            log.exception("training stopped at step %d", self.step)
            raise
        except BaseException as error:
            self._save_on_stop(error)
            raise
        self.save(numbered=True)
        check_replicas(self.model, self.context)
        barrier(self.context)

    def _save_on_stop(self, error: BaseException) -> None:
        if isinstance(error, KeyboardInterrupt):
            log.warning("training interrupted at step %d", self.step)
        else:
            log.exception("training stopped at step %d by an error", self.step)
        if not self.context.is_main or self.updating:
            return
        if self.last_saved is not None and self.last_saved[1] == self.step:
            log.info("%s already holds step %d", self.last_saved[0], self.step)
            return
        try:
            self.save(numbered=False)
        except Exception:  # the stop's own error is the one to raise
            log.exception("could not write the checkpoint of step %d", self.step)
            return
        log.warning(
            "step %d saved to %s: resume=true continues from it", self.step, self.last_saved[0]
        )

    def _nonfinite_error(self, in_a_row: int) -> FloatingPointError:
        saved = (
            f"the last checkpoint is {self.last_saved[0]} (step {self.last_saved[1]})"
            if self.last_saved is not None
            else "no checkpoint was written yet"
        )
        return FloatingPointError(
            f"{in_a_row} consecutive steps had a non-finite loss or gradient (last at step "
            f"{self.step}); lower train.optim.lr or use train.precision=fp32; {saved}"
        )

    def _train_loop(self) -> None:
        cfg = self.train_cfg
        nonfinite_in_a_row, skipped = 0, 0
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
                log.warning("out of items at step %d after %d skipped steps", self.step, skipped)
                break
            step_start = time.perf_counter()
            waiting_s += step_start - wait_start
            terms = self.train_step(example)
            self.batches_done += 1
            # train_step returns Python floats of the losses, so the device has finished.
            stepping_s += time.perf_counter() - step_start
            if terms is None:
                nonfinite_in_a_row += 1
                skipped += 1
                log.warning(
                    "step %d skipped: non-finite loss or gradient (scenes %s, target frames %s, "
                    "source frames %s); the next item takes its place",
                    self.step + 1,
                    example.scenes,
                    example.target.frame_ids.tolist(),
                    example.sources.frame_ids.tolist(),
                )
                if nonfinite_in_a_row >= cfg.max_nonfinite_steps:
                    raise self._nonfinite_error(nonfinite_in_a_row)
                continue
            nonfinite_in_a_row = 0
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
        if skipped:
            log.warning("%d steps were skipped for a non-finite loss and redone", skipped)
        if waiting_s + stepping_s > 0:
            log.info(
                "data loading: %.1f s waiting for batches, %.1f s in training steps (%.1f %% of "
                "the step time; %d loader workers)",
                waiting_s,
                stepping_s,
                100 * waiting_s / (waiting_s + stepping_s),
                self.num_workers,
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
