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

from typing import Callable

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


def threshold_lr(
    lr: float,
    total_steps: int,
    *,
    threshold_lr: float | None = None,
    scale: float | str = "auto",
    lr_step: int | None = None,
    lr_gamma: float = 1.0,
    lr_lambda: Callable[[int], float] | None = None,
) -> float:
    """The threshold scores' learning rate: (`threshold_lr` or `lr`) × k, the engine's rule
    (`train.threshold_lr`, `train.threshold_lr_scale`; docs/method.md §2, `adapmtl.sparsity.budget`).

    With `scale="auto"`, k = 1 when `threshold_lr` is set by hand, else k = max(1, 7.75 / B_run) with
    B_run = Σ_{t < total_steps} lr(t) (logits, for a score under Adam): measured from `lr_lambda`
    (a LambdaLR factor per optimizer step: lr(t) = lr · lr_lambda(t)) when given, else that of StepLR
    (lr multiplied by `lr_gamma` every `lr_step` optimizer steps; the defaults, lr_step=None and
    lr_gamma=1, mean a constant lr). k = 1 at the paper's recipe (lr 1e-3, ×0.5 every 4,000 of 20,000
    steps). A number `scale` is used as k as is.

    Args:
        lr: the weights' base learning rate (the group the scores would otherwise share).
        total_steps: optimizer steps of the run (≥ 1).
        threshold_lr: a hand-set base learning rate for the scores (then k = 1 under "auto").
        scale: "auto" or k > 0.
        lr_step, lr_gamma: the StepLR schedule in optimizer steps, when `lr_lambda` is None.
        lr_lambda: the schedule's factor per optimizer step (e.g. a Hugging Face or LambdaLR schedule).

    Returns:
        The learning rate in the optimizer's units (float).

    Raises:
        ValueError: lr ≤ 0, total_steps < 1, a non-positive `scale` or `threshold_lr`, an invalid
            StepLR (`adapmtl.sparsity.budget.lr_budget`), or a schedule whose Σ lr(t) is not positive.
    """
    if not lr > 0 or int(total_steps) < 1:
        raise ValueError(f"threshold_lr needs lr > 0 and total_steps >= 1, got lr={lr}, total_steps={total_steps}")
    if threshold_lr is not None and not threshold_lr > 0:
        raise ValueError(f"threshold_lr must be a positive learning rate, got {threshold_lr!r}")
    if scale == "auto":
        if threshold_lr is not None:
            k = 1.0
        elif lr_lambda is not None:
            budget = lr * sum(float(lr_lambda(t)) for t in range(int(total_steps)))
            if not budget > 0:
                raise ValueError(f"the LR schedule gives a threshold budget of {budget} over {total_steps} steps; "
                                 "set threshold_lr_scale by hand")
            k = max(1.0, PAPER_BUDGET / budget)
        else:
            k = threshold_lr_scale(lr, int(lr_step or total_steps), lr_gamma, int(total_steps))
    elif isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0:
        k = float(scale)
    else:
        raise ValueError(f"threshold_lr_scale must be 'auto' or a positive number, got {scale!r}")
    return (threshold_lr if threshold_lr is not None else lr) * k
