"""Ctrl-C between training steps (adapmtl.engine.interrupt)."""
import os
import signal

import pytest

from adapmtl.engine.interrupt import interrupt_between_steps


def test_a_first_ctrl_c_waits_for_the_step_to_end_and_a_second_stops_at_once():
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # another test (Lightning, say) may have set its own
    try:
        _first_waits_second_stops()
    finally:
        signal.signal(signal.SIGINT, before)


def _first_waits_second_stops():
    with interrupt_between_steps() as interrupted:
        interrupted()  # nothing pending: no effect
        os.kill(os.getpid(), signal.SIGINT)  # mid-step: recorded, not raised
        with pytest.raises(KeyboardInterrupt):
            interrupted()  # the step boundary
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # the second one: at once
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler before it, restored


def test_an_ignored_ctrl_c_stays_ignored():
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a background job
    try:
        with interrupt_between_steps() as interrupted:
            os.kill(os.getpid(), signal.SIGINT)
            interrupted()  # nothing raised: the process ignores SIGINT
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
