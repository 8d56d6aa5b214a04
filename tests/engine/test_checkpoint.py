import os
from pathlib import Path

import pytest
import torch

from gsnerf.engine.checkpoint import (
    checkpoint_file,
    load_checkpoint,
    load_model_weights,
    resolve_resume_path,
    save_checkpoint,
    step_checkpoint_name,
)
from gsnerf.engine.seeding import capture_rng_state, restore_rng_state


def _state(model: torch.nn.Module, step: int) -> dict:
    return {
        "step": step,
        "model": model.state_dict(),
        "optimizer": {},
        "scheduler": {},
        "scaler": None,
        "rng": capture_rng_state(),
        "best_metric": 0.5,
    }


def test_save_is_atomic_and_round_trips(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    path = tmp_path / "checkpoints" / step_checkpoint_name(7)
    save_checkpoint(_state(model, 7), path)
    assert path.name == "step-000000007.pt"
    assert not list(path.parent.glob("*.tmp"))
    other = torch.nn.Linear(3, 2)
    assert load_model_weights(other, path) == 7
    torch.testing.assert_close(other.weight, model.weight)


def test_weights_for_another_class_table_are_refused(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    path = tmp_path / "trained.pt"
    save_checkpoint({**_state(model, 3), "class_names": ["wall", "floor", "chair"]}, path)
    with pytest.raises(ValueError, match=r"trained\.pt: trained on 3 classes, .*2: chair -> table"):
        load_model_weights(torch.nn.Linear(3, 2), path, ["wall", "floor", "table"])
    with pytest.raises(ValueError, match="trained on 3 classes, the data has 2"):
        load_model_weights(torch.nn.Linear(3, 2), path, ["wall", "floor"])
    assert load_model_weights(torch.nn.Linear(3, 2), path, ["wall", "floor", "chair"]) == 3
    # A checkpoint that does not name its classes loads as before.
    save_checkpoint(_state(model, 4), tmp_path / "unnamed.pt")
    assert load_model_weights(torch.nn.Linear(3, 2), tmp_path / "unnamed.pt", ["a"]) == 4


def test_weights_of_another_model_config_name_the_file_and_the_first_mismatches(
    tmp_path: Path,
) -> None:
    trained = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    save_checkpoint({**_state(trained, 5), "model_name": "tiny"}, path)
    wider = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.Linear(6, 2))
    expected = (
        r"last\.pt: weights do not fit this model \(3 tensors of another shape \(first: 0\.weight: "
        r"\[4, 3\] in the checkpoint, \[6, 3\] in the model\)\); it was trained with model=tiny"
    )
    with pytest.raises(RuntimeError, match=expected):
        load_model_weights(wider, path)
    deeper = torch.nn.Sequential(*trained, torch.nn.Linear(2, 2))
    with pytest.raises(RuntimeError, match=r"2 tensors missing \(first: 2\.weight\)"):
        load_model_weights(deeper, path)
    shallower = torch.nn.Sequential(torch.nn.Linear(3, 4))
    with pytest.raises(RuntimeError, match=r"2 tensors the model lacks \(first: 1\.weight\)"):
        load_model_weights(shallower, path)
    # A run directory stands for its last.pt, as for resume=.
    assert checkpoint_file(tmp_path / "run") == path
    assert load_model_weights(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)),
                              tmp_path / "run") == 5  # fmt: skip


def test_incomplete_state_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="scaler"):
        save_checkpoint({"step": 1, "model": {}}, tmp_path / "x.pt")


def test_corrupt_checkpoint_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="last.pt"):
        load_checkpoint(path)


def test_rng_state_restores_the_same_draws() -> None:
    state = capture_rng_state()
    first = torch.rand(4)
    restore_rng_state(state)
    torch.testing.assert_close(torch.rand(4), first)


def test_resume_true_finds_the_newest_sibling_run(tmp_path: Path) -> None:
    model = torch.nn.Linear(1, 1)
    # The newer run sorts first by name: only the times tell them apart.
    older = tmp_path / "runs" / "b" / "checkpoints" / "last.pt"
    newer = tmp_path / "runs" / "a" / "checkpoints" / "last.pt"
    save_checkpoint(_state(model, 1), older)
    save_checkpoint(_state(model, 2), newer)
    os.utime(older, (1, 1))
    current_run = tmp_path / "runs" / "c"
    assert resolve_resume_path("true", current_run) == newer
    assert resolve_resume_path("", current_run) is None
    assert resolve_resume_path(str(tmp_path / "runs" / "b"), current_run) == older
    with pytest.raises(FileNotFoundError, match="nothing|no checkpoints"):
        resolve_resume_path("true", tmp_path / "elsewhere" / "run")
