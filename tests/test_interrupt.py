"""Ctrl-C between training steps (adapmtl.engine.interrupt)."""
import os
import signal

import pytest

from adapmtl.engine.interrupt import interrupt_between_steps


def test_a_first_ctrl_c_waits_for_the_step_to_end_and_a_second_stops_at_once():
    with interrupt_between_steps() as interrupted:
        interrupted()  # nothing pending: no effect
        os.kill(os.getpid(), signal.SIGINT)  # mid-step: recorded, not raised
        with pytest.raises(KeyboardInterrupt):
            interrupted()  # the step boundary
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # the second one: at once
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
