"""Ctrl-C between training steps: the first Ctrl-C takes effect when the current step ends, so that
nothing the step writes (a checkpoint, the log, TensorBoard's event file) is cut mid-write; a second
one takes effect at once."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator


@contextmanager
def interrupt_between_steps() -> Iterator[Callable[[], None]]:
    """Yield `check`: call it between steps; it raises KeyboardInterrupt if Ctrl-C (SIGINT) came since.
    A second SIGINT raises KeyboardInterrupt where it lands. Outside the main thread (where Python
    cannot install handlers), or where SIGINT is ignored, `check` does nothing and SIGINT behaves as before."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield lambda: None  # no handler possible, or SIGINT ignored on purpose (a background job): leave it so
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
