"""Ctrl-C between training steps: a SIGINT that lands mid-step (while TensorBoard's writer or a
checkpoint is being written) can leave a lock held, and closing the writer then waits forever; so the
first Ctrl-C takes effect when the current step ends, and a second one at once."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator


@contextmanager
def interrupt_between_steps() -> Iterator[Callable[[], None]]:
    """Yield `check`: call it between steps; it raises KeyboardInterrupt if Ctrl-C (SIGINT) came since.
    A second SIGINT raises KeyboardInterrupt where it lands. Outside the main thread (where Python
    cannot install handlers) `check` does nothing and SIGINT behaves as before."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    pending: list[int] = []

    def on_sigint(signum, frame) -> None:
        if pending:
            raise KeyboardInterrupt
        pending.append(signum)

    def check() -> None:
        if pending:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, previous)
