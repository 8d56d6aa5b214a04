"""Checkpoints: an explicit dict written atomically, full resume, and weights-only loading.

A checkpoint holds ``step``, ``model``, ``optimizer``, ``scheduler``, ``scaler``, ``rng`` and
``best_metric``. Files are ``step-000005000.pt`` plus ``last.pt`` (and ``best.pt`` for the best
validation mIoU, higher is better; the reference keeps the two worst, spec 7.19), each written
to a temporary file first and renamed, so a killed run never leaves a half-written checkpoint.
"""

import logging
import os
import pickle
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CHECKPOINT_KEYS = ("step", "model", "optimizer", "scheduler", "scaler", "rng", "best_metric")


def step_checkpoint_name(step: int) -> str:
    return f"step-{step:09d}.pt"


def save_checkpoint(state: dict, path: Path) -> None:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        raise KeyError(f"checkpoint for {path} lacks {missing}")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as error:
        raise RuntimeError(f"{path}: cannot read checkpoint ({error})") from error
    if not isinstance(state, dict) or "model" not in state:
        raise RuntimeError(f"{path}: not a gsnerf checkpoint (no 'model' entry)")
    return state


def load_model_weights(
    model: torch.nn.Module, path: Path, class_names: list[str] | None = None
) -> int:
    """Load only the model weights of a checkpoint (fine-tuning); returns its step.

    ``class_names``: the data's class table, which must be the checkpoint's. Two label
    mappings can have the same number of classes (ScanNet's benchmark and paper tables, 20
    each) with other meanings per index, so the weights would load but learn other labels.
    """
    state = load_checkpoint(path)
    trained_on = state.get("class_names")
    if class_names is not None and trained_on is not None and list(trained_on) != class_names:
        differ = [
            f"{index}: {old} -> {new}"
            for index, (old, new) in enumerate(zip(trained_on, class_names, strict=False))
            if old != new
        ]
        raise ValueError(
            f"{path}: trained on {len(trained_on)} classes, the data has {len(class_names)} "
            f"with other names ({', '.join(differ[:5]) or 'a longer or shorter table'}); use "
            "the dataset.label_mapping the checkpoint was trained with"
        )
    model.load_state_dict(state["model"])
    log.info("loaded weights of step %d from %s", state.get("step", -1), path)
    return int(state.get("step", 0))


def latest_checkpoint(runs_root: Path) -> Path | None:
    """The most recently written ``last.pt`` of any run directory under ``runs_root``."""
    candidates = sorted(runs_root.glob("*/checkpoints/last.pt"), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def resolve_resume_path(resume: str, run_dir: Path) -> Path | None:
    """Which checkpoint ``resume`` names.

    ``""``/``false``: none. ``true``/``last``: this run directory's ``checkpoints/last.pt``,
    else the newest ``last.pt`` among its sibling run directories (Hydra gives every launch a
    new directory). Otherwise a checkpoint file or a run directory.
    """
    if resume.lower() in ("", "false", "none"):
        return None
    if resume.lower() in ("true", "last"):
        own = run_dir / "checkpoints" / "last.pt"
        found = own if own.is_file() else latest_checkpoint(run_dir.parent)
        if found is None:
            raise FileNotFoundError(
                f"resume=true: no checkpoints/last.pt in {run_dir} or its sibling runs under "
                f"{run_dir.parent}; pass resume=<run dir or checkpoint file>"
            )
        return found
    path = Path(resume)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint to resume from not found")
    return path
