"""Checkpoints: an explicit dict written atomically, full resume, and weights-only loading.

A checkpoint holds ``step``, ``model``, ``optimizer``, ``scheduler``, ``scaler``, ``rng`` and
``best_metric``; training also writes ``batches_done`` (training items taken, skipped steps
included), ``class_names`` and ``model_name`` (the ``model=`` config it was trained with).
Files are ``step-000005000.pt`` plus ``last.pt`` (and ``best.pt`` for the best validation mIoU,
higher is better; the reference keeps the two worst, spec 7.19), each written to a temporary
file first and renamed, so a killed run never leaves a half-written checkpoint.
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


def checkpoint_file(path: Path) -> Path:
    """``path``, or the latest checkpoint of the run directory ``path`` names."""
    return path / "checkpoints" / "last.pt" if path.is_dir() else path


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
    path = checkpoint_file(path)
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
    load_weights(model, state, path)
    log.info("loaded weights of step %d from %s", state.get("step", -1), path)
    return int(state.get("step", 0))


def _weights_mismatch(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> str:
    """A short account of how ``weights`` differ from the model's own tensors."""
    own = model.state_dict()
    resized = [
        f"{key}: {list(weights[key].shape)} in the checkpoint, {list(value.shape)} in the model"
        for key, value in own.items()
        if key in weights and weights[key].shape != value.shape
    ]
    missing = [key for key in own if key not in weights]
    unexpected = [key for key in weights if key not in own]
    parts = []
    for label, keys in (("of another shape", resized), ("missing", missing)):
        if keys:
            parts.append(f"{len(keys)} tensors {label} (first: {keys[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} tensors the model lacks (first: {unexpected[0]})")
    return "; ".join(parts)


def load_weights(model: torch.nn.Module, state: dict, path: Path) -> None:
    """``model.load_state_dict(state["model"])``; weights of another model config raise an
    error naming the file, the config the checkpoint was trained with and a few mismatches,
    instead of torch's list of every tensor."""
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        trained_with = state.get("model_name")
        hint = (
            f"it was trained with model={trained_with}"
            if trained_with
            else "use the model config it was trained with"
        )
        account = _weights_mismatch(model, state["model"]) or str(error).splitlines()[0]
        raise RuntimeError(f"{path}: weights do not fit this model ({account}); {hint}") from None


def latest_checkpoint(runs_root: Path) -> Path | None:
    """The most recently written ``last.pt`` of any run directory under ``runs_root``."""
    candidates = sorted(runs_root.glob("*/checkpoints/last.pt"), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def resume_requested(resume: str) -> bool:
    """Whether the ``resume`` setting asks to continue a run (anything but empty/false/none)."""
    return resume.lower() not in ("", "false", "none")


def resolve_resume_path(resume: str, run_dir: Path) -> Path | None:
    """Which checkpoint ``resume`` names.

    ``""``/``false``: none. ``true``/``last``: this run directory's ``checkpoints/last.pt``,
    else the newest ``last.pt`` among its sibling run directories (Hydra gives every launch a
    new directory). Otherwise a checkpoint file or a run directory.
    """
    if not resume_requested(resume):
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
    path = checkpoint_file(Path(resume))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint to resume from not found")
    return path
