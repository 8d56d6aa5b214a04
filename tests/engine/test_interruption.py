"""SIGTERM raised as Ctrl-C inside training, and how an interrupted command exits."""

import os
import signal
import time

import pytest

from gsnerf.engine.interruption import exit_quietly_when_interrupted, sigterm_as_interrupt


def test_sigterm_raises_keyboard_interrupt_inside_the_block_only() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match="signal SIGTERM"):
        with sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5.0)  # the signal ends the sleep by raising
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize(
    ("stop", "status"),
    [(KeyboardInterrupt(), 130), (KeyboardInterrupt("signal SIGTERM"), 143)],
)
def test_an_interruption_exits_with_the_shells_status(stop: KeyboardInterrupt, status: int) -> None:
    with pytest.raises(SystemExit) as exit_info:
        with exit_quietly_when_interrupted():
            raise stop
    assert exit_info.value.code == status
    # No chained traceback: the trainer has logged where it stopped.
    assert exit_info.value.__suppress_context__


def test_other_errors_pass_through_unchanged() -> None:
    with pytest.raises(ValueError, match="bad input"):
        with exit_quietly_when_interrupted():
            raise ValueError("bad input")
