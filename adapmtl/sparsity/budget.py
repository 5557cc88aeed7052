"""How far a threshold score can move over a run, and the learning-rate scale that keeps it.

With Adam, a parameter moves by at most about its learning rate per step, so over a run a
threshold score s can move at most B = Σ_t lr(t) logits (its *budget*). The paper's NYU-v2
recipe (AdapMTL (Xiang et al., ACM MM 2024); docs/method.md §5: lr 1e-3 halved every 4,000
of 20,000 steps) gives B = 1e-3 · 4000 · (1 + ½ + ¼ + ⅛ + 1/16) = 7.75 logits. A 500-step run
at the same lr gives under 0.5: the thresholds cannot learn an allocation, and the
controller's common shift does all the work. Scaling the threshold group's learning rate by
k = max(1, B_paper / B_run) gives every shorter run the paper's budget, and is exactly 1 at
the paper's recipe (docs/method.md §2).
"""
from __future__ import annotations

PAPER_LR = 1e-3
PAPER_LR_STEP = 4000
PAPER_LR_GAMMA = 0.5
PAPER_STEPS = 20_000


def lr_budget(lr: float, lr_step: int, lr_gamma: float, steps: int) -> float:
    """Σ over `steps` optimizer steps of StepLR's rate lr · lr_gamma^⌊t / lr_step⌋, in lr units
    (logits, for a threshold score under Adam).

    Raises ValueError when lr ≤ 0, lr_step < 1, lr_gamma not in (0, 1] or steps < 0.
    """
    if lr <= 0 or lr_step < 1 or not 0 < lr_gamma <= 1 or steps < 0:
        raise ValueError(f"lr_budget needs lr > 0, lr_step >= 1, 0 < lr_gamma <= 1 and steps >= 0; got "
                         f"lr={lr}, lr_step={lr_step}, lr_gamma={lr_gamma}, steps={steps}")
    periods, rest = divmod(int(steps), int(lr_step))
    full = periods if lr_gamma == 1 else (1 - lr_gamma ** periods) / (1 - lr_gamma)  # geometric sum
    return lr * (lr_step * full + rest * lr_gamma ** periods)


PAPER_BUDGET = lr_budget(PAPER_LR, PAPER_LR_STEP, PAPER_LR_GAMMA, PAPER_STEPS)
"""7.75 logits: how far a threshold score can move over the paper's NYU-v2 recipe."""


def threshold_lr_scale(lr: float, lr_step: int, lr_gamma: float, steps: int) -> float:
    """k = max(1, PAPER_BUDGET / lr_budget(run)): the factor on the threshold group's learning rate
    that gives a run of any length (at least) the paper's threshold budget. 1 at the paper's recipe
    and for any run whose own budget is larger (so a long run is never slowed down).

    Raises ValueError as `lr_budget` does; steps must be at least 1.
    """
    if steps < 1:
        raise ValueError(f"threshold_lr_scale needs a run of at least one step, got steps={steps}")
    return max(1.0, PAPER_BUDGET / lr_budget(lr, lr_step, lr_gamma, steps))
