"""Explicit seeds: one global seed per run, one derived seed per data-loader worker and item.

Nothing here reads the clock (the reference re-seeds from ``time.time()``, spec 7.26).
"""

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def worker_init_fn(worker_id: int) -> None:
    """Give each data-loader worker its own NumPy / Python seed, derived from torch's.

    torch already seeds every worker with ``base_seed + worker_id``; NumPy and ``random`` are
    not, so workers would otherwise share the parent's state.
    """
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def capture_rng_state() -> dict:
    """Every random generator's state, for a checkpoint."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Undo :func:`capture_rng_state`: the run continues with the same random draws."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
