"""Adaptive weighting fed loss values that carry no information: zero, underflowed, negative, non-finite."""
import math

import pytest

from adapmtl.weighting import AdaptiveWeighting

TASKS = ("segment_semantic", "normal", "depth_zbuffer")
# A loss sequence L(i) = L(0) / (1 + r)^i has the relative change |L(i-1) - L(i)| / L(i) = r at every step.
RATES = {"segment_semantic": 0.19, "normal": 0.30, "depth_zbuffer": 0.51}
WINDOW = 4
BAD = [0.0, 1e-45, -0.5, math.nan, math.inf, -math.inf]  # 1e-45: a float32 subnormal


def geometric(step: int) -> dict[str, float]:
    return {t: 2.0 / (1 + r) ** step for t, r in RATES.items()}


def expected_weights(means: dict[str, float]) -> dict[str, float]:
    """w_t = T * m_t / sum(m): the renormalised window means."""
    return {t: len(means) * m / sum(means.values()) for t, m in means.items()}


def warmed_up() -> tuple[AdaptiveWeighting, int]:
    """A weighting whose windows are full of the constant rates (WINDOW + 1 steps)."""
    w = AdaptiveWeighting(TASKS, total_steps=100, begin=0, window=WINDOW)
    for step in range(WINDOW + 1):
        w.update(geometric(step))
    return w, WINDOW + 1


def test_the_issue_one_batch_without_valid_depth_no_longer_takes_over():
    w, step = warmed_up()
    before = expected_weights(RATES)  # 0.57, 0.90, 1.53
    assert w.weights() == pytest.approx(before)
    assert before == pytest.approx({"segment_semantic": 0.57, "normal": 0.90, "depth_zbuffer": 1.53})
    # the step with no valid depth pixel: DepthTask.loss is exactly 0; the others move as before
    w.update({**geometric(step), "depth_zbuffer": 0.0})
    assert w.weights() == pytest.approx(before)
    assert w.weights()["depth_zbuffer"] < 2.0  # what the issue saw: about 3.0
    # depth's next loss continues from its last informative one, so its ratio is its usual 0.51
    w.update({**geometric(step + 1), "depth_zbuffer": geometric(step)["depth_zbuffer"]})
    assert w.weights() == pytest.approx(before)


@pytest.mark.parametrize("bad", BAD)
def test_a_step_without_information_neither_enters_the_window_nor_becomes_the_previous_loss(bad):
    w, step = warmed_up()
    last_depth = geometric(step - 1)["depth_zbuffer"]
    w.update({**geometric(step), "depth_zbuffer": bad})
    assert list(w.history["depth_zbuffer"]) == pytest.approx([0.51] * WINDOW)
    assert w.previous["depth_zbuffer"] == last_depth
    assert w.weights() == pytest.approx(expected_weights(RATES))
    # next depth loss is last_depth / 3: ratio |last - last/3| / (last/3) = 2 against the last informative loss
    w.update({**geometric(step + 1), "depth_zbuffer": last_depth / 3})
    assert w.history["depth_zbuffer"][-1] == pytest.approx(2.0)
    means = {**RATES, "depth_zbuffer": (0.51 * (WINDOW - 1) + 2.0) / WINDOW}
    assert w.weights() == pytest.approx(expected_weights(means))


@pytest.mark.parametrize("bad", BAD)
def test_bad_values_for_every_task_at_once_change_nothing_but_the_step(bad):
    w, step = warmed_up()
    state = w.state_dict()
    w.update({t: bad for t in TASKS})
    assert {**w.state_dict(), "step": state["step"]} == state and w.step == step + 1


def test_a_task_without_any_informative_loss_keeps_all_weights_at_one():
    w = AdaptiveWeighting(TASKS, total_steps=100, begin=0, window=2)
    for step in range(6):
        w.update({**geometric(step), "depth_zbuffer": 0.0})
    assert len(w.history["normal"]) == 2 and len(w.history["depth_zbuffer"]) == 0
    assert w.weights() == {t: 1.0 for t in TASKS}


def test_state_round_trip_is_exact_across_a_skipped_step():
    a, step = warmed_up()
    a.update({**geometric(step), "normal": math.nan})
    b = AdaptiveWeighting(TASKS, total_steps=100, begin=0, window=WINDOW)
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == a.state_dict()
    for losses in ({**geometric(step + 1), "normal": 0.7}, {**geometric(step + 2), "depth_zbuffer": 0.0}):
        a.update(losses)
        b.update(losses)
        assert b.weights() == a.weights() and b.state_dict() == a.state_dict()
    assert a.weights() != pytest.approx(expected_weights(RATES))  # normal's 0.7 did move the weights


def test_a_state_saved_before_the_first_step_loads():
    fresh = AdaptiveWeighting(TASKS, total_steps=100, begin=0, window=2)
    fresh.load_state_dict({"step": 0, "previous": None, "history": {t: [] for t in TASKS},
                           "weights": {t: 1.0 for t in TASKS}})
    fresh.update(geometric(0))
    fresh.update(geometric(1))
    assert {t: h[0] for t, h in fresh.history.items()} == pytest.approx(RATES)
