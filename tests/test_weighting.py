"""Task weighting on hand-made loss sequences."""
import pytest

from adapmtl.weighting import AdaptiveWeighting, WeightingError, create_weighting


def test_adaptive_defaults_scale_with_the_run_length():
    assert (AdaptiveWeighting(["a"], 20_000).begin, AdaptiveWeighting(["a"], 20_000).window) == (5000, 500)
    assert (AdaptiveWeighting(["a"], 2_000).begin, AdaptiveWeighting(["a"], 2_000).window) == (500, 50)


def test_adaptive_weights_by_hand():
    w = AdaptiveWeighting(["seg", "depth", "normal"], total_steps=100, begin=1, window=2)
    sequence = [
        {"seg": 1.0, "depth": 2.0, "normal": 4.0},   # step 1: before begin, nothing recorded
        {"seg": 0.5, "depth": 2.0, "normal": 2.0},   # r = 1.0, 0.0, 1.0  (window not full)
        {"seg": 0.25, "depth": 1.0, "normal": 2.0},  # r = 1.0, 1.0, 0.0  -> means 1.0, 0.5, 0.5
    ]
    w.update(sequence[0])
    w.update(sequence[1])
    assert w.weights() == {"seg": 1.0, "depth": 1.0, "normal": 1.0}
    w.update(sequence[2])
    # renormalised to sum to the number of tasks (3): 3 * (1, .5, .5) / 2
    assert w.weights() == pytest.approx({"seg": 1.5, "depth": 0.75, "normal": 0.75})
    w.update({"seg": 0.25, "depth": 0.5, "normal": 1.0})  # r = 0, 1, 1 -> window: seg (1,0) depth (1,1) normal (0,1)
    assert w.weights() == pytest.approx({"seg": 0.75, "depth": 1.5, "normal": 0.75})
    assert sum(w.weights().values()) == pytest.approx(3.0)


def test_adaptive_state_round_trip():
    a = AdaptiveWeighting(["x", "y"], total_steps=100, begin=0, window=2)
    for losses in ({"x": 1.0, "y": 1.0}, {"x": 2.0, "y": 1.5}, {"x": 1.0, "y": 1.0}):
        a.update(losses)
    b = AdaptiveWeighting(["x", "y"], total_steps=100, begin=0, window=2)
    b.load_state_dict(a.state_dict())
    a.update({"x": 0.5, "y": 0.9})
    b.update({"x": 0.5, "y": 0.9})
    assert a.weights() == b.weights() != {"x": 1.0, "y": 1.0}


def test_equal_and_errors():
    assert create_weighting("equal", ["a", "b"], 10).weights() == {"a": 1.0, "b": 1.0}
    with pytest.raises(WeightingError, match="unknown weighting 'uncertainty'"):
        create_weighting("uncertainty", ["a"], 10)
    with pytest.raises(WeightingError, match="takes no options"):
        create_weighting("equal", ["a"], 10, begin=3)
