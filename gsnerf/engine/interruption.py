"""SIGTERM, the signal of a cluster's pre-emption or a job's time limit, as Ctrl-C; and how an
interrupted command exits.

Python ends a process on SIGTERM without unwinding, so the training loop would not get to write
its checkpoint; raised as ``KeyboardInterrupt`` it takes the same path as Ctrl-C.
"""

import contextlib
import signal
import threading
from collections.abc import Iterator


def _raise_interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``KeyboardInterrupt`` in the main thread.

    Signal handlers can only be set from the main thread; elsewhere the block changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def exit_quietly_when_interrupted() -> Iterator[None]:
    """An interrupted command ends with the shell's status (130 after Ctrl-C, 143 after SIGTERM)
    instead of a traceback from deep inside torch: the trainer has already logged the step it
    stopped at and the checkpoint it wrote."""
    try:
        yield
    except KeyboardInterrupt as stop:
        raise SystemExit(143 if "SIGTERM" in str(stop) else 130) from None
