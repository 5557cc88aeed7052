"""The controller brings overall sparsity to the target, exactly, and holds it."""
import pytest
import torch

import adapmtl
from adapmtl.errors import SparsifyError
from tests.toy_models import ConvMultitask

STEPS = 240


def _train(policy: str, target: float = 0.9, steps: int = STEPS, init: float = -20.0, **kwargs):
    torch.manual_seed(0)
    model = adapmtl.sparsify(ConvMultitask(), init=init)  # -20: dense, tau ~ 2e-9; nothing tuned
    controller = adapmtl.SparsityController(model, target=target, total_steps=steps, policy=policy, **kwargs)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.5, 0.999), weight_decay=1e-4)
    x = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    seg_target = (x[:, 0] > 0).long()
    depth_target = x[:, 1:2].abs()
    history, measured = [], []
    for step in range(1, steps + 1):
        out = model(x)
        loss = torch.nn.functional.cross_entropy(out["seg"], seg_target) + (out["depth"] - depth_target).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        measured.append(controller.step(step))
        history.append(adapmtl.sparsity_report(model))
    return model, controller, history, measured


@pytest.mark.parametrize("interval", [1, 10])
def test_exact_policy_reaches_the_target_by_reach_at_and_holds_it(interval):
    model, controller, history, measured = _train("exact", interval=interval)
    reach = controller.reach_step
    assert reach == 160
    assert [i for i, r in enumerate(measured, start=1) if r is not None] == sorted({*range(1, STEPS + 1, interval), STEPS})
    for step, report in enumerate(history, start=1):
        if measured[step - 1] is not None:  # at a measurement: on the floor (or above), exactly
            assert measured[step - 1].overall == report.overall
            assert report.overall >= controller.floor(step) - controller.tolerance, step
            if step >= reach:
                assert abs(report.overall - 0.9) <= controller.tolerance, step  # there by reach_at, and held
        else:  # in between, only the thresholds' own learning moves it (lr 1e-2 here: fast)
            assert report.overall >= controller.floor(step) - 0.02, step
            if step >= reach:
                assert abs(report.overall - 0.9) <= 0.02, step
    assert abs(history[-1].overall - 0.9) <= controller.tolerance
    taus = adapmtl.sparsity_report(model).thresholds
    assert len({round(t, 8) for t in taus.values()}) == 3  # thresholds learned apart from one common init
    sparsities = [c.sparsity for c in history[-1].components.values()]
    assert max(sparsities) - min(sparsities) > 0.05  # allocation is not uniform
    finalized = adapmtl.finalize(model, target=0.9)
    assert abs(finalized.after.overall - 0.9) <= 0.0005


def test_floor_schedules():
    model = adapmtl.sparsify(ConvMultitask())
    cubic = adapmtl.SparsityController(model, target=0.8, total_steps=300, reach_at=0.5)
    linear = adapmtl.SparsityController(model, target=0.8, total_steps=300, reach_at=0.5, schedule="linear")
    assert cubic.floor(0) == 0.0 and cubic.floor(150) == pytest.approx(0.8) and cubic.floor(300) == pytest.approx(0.8)
    assert cubic.path(75) == pytest.approx(0.8 * (1 - 0.5 ** 3))
    assert linear.path(75) == pytest.approx(0.4)
    # the guard's floor trails the path by slack (0.1) x (1 - progress), and is never below 0
    assert cubic.floor(75) == pytest.approx(0.8 * (1 - 0.5 ** 3) - 0.05)
    assert linear.floor(75) == pytest.approx(0.35) and linear.floor(3) == 0.0


def test_freeze_policy_from_the_default_init_never_gets_there():
    _, controller, history, _ = _train("freeze", target=0.3, steps=100)
    assert history[-1].overall < 0.01 and controller.frozen_scores is None  # why "exact" exists


def test_freeze_policy_stops_the_thresholds_once_reached():
    model, controller, history, measured = _train("freeze", target=0.3, steps=200, init=-4.0)
    assert all(r is not None for r in measured)  # the paper's rule checks every step
    reached = next(i for i, r in enumerate(history) if r.overall >= 0.3)
    frozen = history[reached].thresholds
    assert all(r.thresholds == frozen for r in history[reached:])
    assert controller.frozen_scores is not None


def test_controller_state_round_trip():
    model, controller, _, _ = _train("freeze", target=0.3, steps=200, init=-4.0)
    again = adapmtl.SparsityController(model, target=0.3, total_steps=200, policy="freeze")
    again.load_state_dict(controller.state_dict())
    assert torch.equal(again.frozen_scores, controller.frozen_scores)


@pytest.mark.parametrize("kwargs, message", [
    ({"target": 1.0}, "target must be a sparsity"),
    ({"total_steps": 0}, "total_steps must be a positive"),
    ({"reach_at": 0.0}, "reach_at must be a fraction"),
    ({"schedule": "exp"}, "schedule must be one of"),
    ({"policy": "hold"}, "policy must be one of"),
    ({"interval": 0}, "interval must be a positive"),
])
def test_bad_controller_arguments(kwargs, message):
    args = {"target": 0.9, "total_steps": 100, **kwargs}
    with pytest.raises(SparsifyError, match=message):
        adapmtl.SparsityController(adapmtl.sparsify(ConvMultitask()), **args)


def test_attach_refuses_an_optimizer_built_before_sparsify():
    from adapmtl.errors import SparsifyError
    from tests.toy_models import ConvMultitask

    model = ConvMultitask()
    early = torch.optim.Adam(model.parameters())  # built before sparsify: no threshold scores in it
    adapmtl.sparsify(model)
    controller = adapmtl.SparsityController(model, target=0.5, total_steps=10)
    with pytest.raises(SparsifyError, match="does not hold the threshold scores, so they would never learn"):
        controller.attach(early)
    controller.attach(torch.optim.Adam(model.parameters()))  # built after: holds them
