"""Runs that stop early: steps skipped for a non-finite loss, interruptions, reused directories.

The data is the tiny synthetic set of ``test_train.py`` (two rooms, 16 frames at 64x48).
"""

import logging
import os
import signal
from pathlib import Path

import pytest
import torch
from test_train import _compose, _synthetic_overrides, _weights

from gsnerf.engine import trainer as trainer_module
from gsnerf.engine.checkpoint import load_checkpoint
from gsnerf.engine.runs import run_training
from gsnerf.engine.trainer import Trainer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


def _overrides(data_root: Path, *extra: str) -> list[str]:
    return _synthetic_overrides(data_root) + ["train.steps=4", "eval.after_training=false", *extra]


def _act_at_batch(monkeypatch: pytest.MonkeyPatch, batch: int, act) -> None:
    """Call ``act(losses)`` inside the training losses of the ``batch``-th item taken (0-based)."""
    real_losses, real_step = trainer_module.training_losses, Trainer.train_step
    current = {"batch": -1}

    def train_step(self: Trainer, example):
        current["batch"] = self.batches_done
        return real_step(self, example)

    def training_losses(*args, **kwargs):
        losses = real_losses(*args, **kwargs)
        return act(losses) if current["batch"] == batch else losses

    monkeypatch.setattr(Trainer, "train_step", train_step)
    monkeypatch.setattr(trainer_module, "training_losses", training_losses)


def _assert_resumes_to(straight: Path, stopped: Path, data_root: Path) -> None:
    """Resumed into a new directory, ``stopped`` must end with ``straight``'s weights exactly."""
    resumed = stopped.parent / f"{stopped.name}_resumed"
    run_training(_compose("train", _overrides(data_root, f"resume={stopped}"), resumed))
    expected = _weights(straight)
    for name, value in _weights(resumed).items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0, msg=name)


def test_a_skipped_step_takes_the_next_item_and_resumes_exactly(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    def poison(losses: dict) -> dict:
        return {**losses, "total": losses["total"] * float("nan")}

    _act_at_batch(monkeypatch, 1, poison)
    caplog.set_level(logging.WARNING)
    straight = tmp_path / "straight"
    run_training(_compose("train", _overrides(data_root), straight))
    last = load_checkpoint(straight / "checkpoints" / "last.pt")
    # Four steps trained although one item was skipped: five items taken.
    assert (last["step"], last["batches_done"]) == (4, 5)
    assert "step 2 skipped: non-finite loss" in caplog.text
    assert "1 steps were skipped for a non-finite loss and redone" in caplog.text

    half = tmp_path / "half"
    run_training(_compose("train", _overrides(data_root, "train.stop_at_step=2"), half))
    assert load_checkpoint(half / "checkpoints" / "last.pt")["batches_done"] == 3
    _assert_resumes_to(straight, half, data_root)


def test_sigterm_saves_the_last_finished_step_and_the_run_resumes_exactly(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = tmp_path / "straight"
    run_training(_compose("train", _overrides(data_root), straight))

    def terminate(losses: dict) -> dict:
        os.kill(os.getpid(), signal.SIGTERM)
        return losses

    # The third step is stopped before its update; no periodic checkpoint holds step 2.
    _act_at_batch(monkeypatch, 2, terminate)
    stopped = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        run_training(_compose("train", _overrides(data_root, "train.checkpoint_every=3"), stopped))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored after the run
    assert load_checkpoint(stopped / "checkpoints" / "last.pt")["step"] == 2
    log_text = (stopped / "train.log").read_text()
    assert "training interrupted at step 2" in log_text and "step 2 saved to" in log_text

    monkeypatch.undo()
    _assert_resumes_to(straight, stopped, data_root)


def test_a_stop_after_a_periodic_checkpoint_saves_the_steps_since(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(losses: dict) -> dict:
        raise KeyboardInterrupt

    # debug=fast writes a checkpoint every 2 steps: step 2 is saved, step 3 finishes, step 4 is
    # interrupted. last.pt must move on to step 3, not stay at 2.
    _act_at_batch(monkeypatch, 3, interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_training(_compose("train", _overrides(data_root), tmp_path))
    assert load_checkpoint(tmp_path / "checkpoints" / "step-000000002.pt")["step"] == 2
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 3


# Replacing optimizer.step makes the scheduler warn that it may have been skipped.
@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_an_error_during_the_update_leaves_no_torn_checkpoint_and_is_logged(
    data_root: Path, tmp_path: Path
) -> None:
    trainer = Trainer(_compose("train", _overrides(data_root), tmp_path), tmp_path)
    real_update, updates = trainer.optimizer.step, []

    def failing_update(*args, **kwargs):
        updates.append(trainer.step)
        if len(updates) == 2:
            raise RuntimeError("device lost")
        return real_update(*args, **kwargs)

    trainer.optimizer.step = failing_update
    with pytest.raises(RuntimeError, match="device lost"):
        trainer.fit()
    trainer.close()
    # Step 1 finished, step 2 failed half-way through its update: saving now would write
    # weights that match no step, and step 1 predates the first periodic checkpoint.
    assert trainer.step == 1 and not (tmp_path / "checkpoints" / "last.pt").exists()
    log_text = (tmp_path / "train.log").read_text()
    assert "training stopped at step 1 by an error" in log_text and "device lost" in log_text


def test_a_run_directory_that_holds_a_run_is_not_overwritten(
    data_root: Path, tmp_path: Path
) -> None:
    run_training(_compose("train", _overrides(data_root, "train.steps=2"), tmp_path))
    last = tmp_path / "checkpoints" / "last.pt"
    before = (last.read_bytes(), (tmp_path / "config.yaml").read_text())
    again = _compose("train", _overrides(data_root, "train.steps=3"), tmp_path)
    with pytest.raises(FileExistsError, match="already holds checkpoints of a run; pass resume"):
        run_training(again)
    assert (last.read_bytes(), (tmp_path / "config.yaml").read_text()) == before
