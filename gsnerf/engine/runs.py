"""What each entry point does, given the typed config: train, evaluate, fine-tune."""

import dataclasses
import logging
from pathlib import Path

import torch
from omegaconf import OmegaConf

from gsnerf.config import RootCfg
from gsnerf.data.dataset import MultiViewDataset, open_split, scene_names
from gsnerf.data.scene_reader import IGNORE_INDEX
from gsnerf.engine.checkpoint import checkpoint_file, load_checkpoint, load_weights
from gsnerf.engine.device import resolve_device
from gsnerf.engine.logging import setup_file_logging
from gsnerf.engine.seeding import seed_everything
from gsnerf.engine.trainer import Trainer
from gsnerf.evaluation.evaluator import apply_inference_options, evaluate, format_table

log = logging.getLogger(__name__)


def save_resolved_config(cfg: RootCfg, run_dir: Path) -> None:
    """Write the fully resolved, typed config of the run as ``<run_dir>/config.yaml``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))


def require_scene(cfg: RootCfg, purpose: str) -> str:
    """``cfg.scene``; unset, an error that names the test scenes of the configured dataset."""
    if cfg.scene:
        return cfg.scene
    message = f"scene=NAME is required: {purpose}"
    try:
        names = scene_names(cfg.dataset, "test")
    except (OSError, ValueError) as error:
        # A synthetic set is written on its first use, and a real one may be missing.
        raise ValueError(f"{message} (no test scenes found: {error})") from None
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    raise ValueError(f"{message}; test scenes of {cfg.dataset.kind} in {cfg.dataset.root}: {shown}")


def _evaluate_test_split(
    cfg: RootCfg,
    model: torch.nn.Module,
    class_names: list[str],
    ignore_index: int,
    out_dir: Path,
    device: torch.device,
    title: str,
) -> dict:
    """Score ``model`` on the test split; the eval options apply from here on.

    The one place eval.py and the evaluation after training share, so both render the same way;
    validation during training calls :func:`evaluate` directly, with plain heads. With
    eval.compile the first view compiles the heads; the reported fps leaves the first view out.
    """
    apply_inference_options(model, cfg.eval, device)
    test_scenes = open_split(cfg.dataset, "test")
    _check_classes(test_scenes[0].class_names, class_names)
    dataset = MultiViewDataset(test_scenes, cfg.dataset, "test", seed=cfg.seed)
    log.info("evaluating %d views of %d held-out scenes", len(dataset), len(test_scenes))
    metrics = evaluate(model, dataset, cfg.eval, class_names, ignore_index, out_dir, device)
    table = format_table(metrics, title)
    (out_dir / "table.md").write_text(table + "\n")
    log.info("metrics of %s (written to %s):\n%s", title, out_dir / "metrics.json", table)
    return metrics


def _check_classes(dataset_classes: list[str], model_classes: list[str]) -> None:
    if dataset_classes != model_classes:
        raise ValueError(
            f"the dataset's classes {dataset_classes} differ from the model's {model_classes}; "
            "use the same dataset.label_mapping as in training"
        )


def run_training(cfg: RootCfg) -> dict | None:
    """Train, then (by default) evaluate on every view of the held-out scenes."""
    run_dir = Path(cfg.paths.output_dir)
    # The trainer first: it refuses a run directory that holds another run, whose config stays.
    trainer = Trainer(cfg, run_dir)
    save_resolved_config(cfg, run_dir)
    try:
        trainer.fit()
        if not (trainer.context.is_main and cfg.eval.after_training):
            return None
        title = f"{cfg.dataset.kind} held-out, N={cfg.model.sampler.num_samples}"
        return _evaluate_test_split(
            cfg,
            trainer.model.module if hasattr(trainer.model, "module") else trainer.model,
            trainer.class_names,
            trainer.ignore_index,
            run_dir / "eval",
            trainer.device,
            title,
        )
    finally:
        trainer.close()


def _load_for_evaluation(cfg: RootCfg, device: torch.device) -> tuple[torch.nn.Module, list[str]]:
    from gsnerf.model import build_model

    if not cfg.ckpt:
        raise ValueError("ckpt=PATH is required: the checkpoint to evaluate or fine-tune")
    # A run directory stands for its latest checkpoint, as for resume=.
    path = checkpoint_file(Path(cfg.ckpt))
    state = load_checkpoint(path, map_location=device)
    class_names = state.get("class_names")
    if class_names is None:
        raise ValueError(f"{path}: checkpoint has no class_names entry")
    model = build_model(cfg.model, len(class_names)).to(device)
    load_weights(model, state, path)
    return model, class_names


def run_evaluation(cfg: RootCfg) -> dict:
    """Evaluate ``cfg.ckpt`` on the test split of ``cfg.dataset``."""
    run_dir = Path(cfg.paths.output_dir)
    setup_file_logging(run_dir, "eval")
    save_resolved_config(cfg, run_dir)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.train.device)
    model, class_names = _load_for_evaluation(cfg, device)
    title = f"{cfg.dataset.kind}, N={cfg.model.sampler.num_samples}"
    return _evaluate_test_split(cfg, model, class_names, IGNORE_INDEX, run_dir, device, title)


def run_finetuning(cfg: RootCfg) -> dict | None:
    """Fine-tune ``cfg.ckpt`` on the source pool of ``cfg.scene``, then evaluate that scene."""
    scene = require_scene(cfg, "the scene to fine-tune on")
    if not cfg.ckpt:
        raise ValueError("ckpt=PATH is required: the generalizable checkpoint to start from")
    dataset = dataclasses.replace(
        cfg.dataset, train_scenes=[scene], test_scenes=[scene], train_frames="source_pool"
    )
    train = dataclasses.replace(cfg.train, init_weights=cfg.ckpt)
    return run_training(dataclasses.replace(cfg, dataset=dataset, train=train))
