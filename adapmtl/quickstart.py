"""`adapmtl quickstart`: a small, real run end to end on CPU.

Trains the dense multitask baseline and AdapMTL at 90 % sparsity on synthetic scenes
with the same budget, evaluates both on the test split, and prints the paper's table and the
learned allocation: each component's sparsity next to what one global threshold gives at the
same overall sparsity, how far each threshold score moved by its own learning, and how often
the controller stepped in (AdapMTL (Xiang et al., ACM MM 2024); docs/method.md §1-§2).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from adapmtl.engine import load_config, resume, train
from adapmtl.engine.rundir import RunDir
from adapmtl.report import comparison_rows, markdown_table
from adapmtl.report.build import allocation_rows


def quickstart(out_dir: str | Path = "runs/quickstart", overrides: Sequence[str] = (), echo=print) -> str:
    """Run dense and adapmtl under `out_dir` (reusing finished runs, resuming interrupted ones); return the table.

    Also writes table.md (the comparison, then the learned allocation) under `out_dir`.
    Raises what `train`/`resume` raise (ConfigError, CheckpointError, ...)."""
    out_dir = Path(out_dir)
    results = {}
    for method in ("dense", "adapmtl"):
        run_dir = out_dir / method
        folder = RunDir(run_dir)
        config = load_config("quickstart", [*overrides, f"method.name={method}"])
        if folder.finished or folder.last.is_file():
            folder.require_same_config(config)
        if folder.finished:
            echo(f"{method}: finished run found in {run_dir}, reusing it")
            results[method] = folder.result()
            continue
        if folder.last.is_file():
            echo(f"{method}: resuming the interrupted run in {run_dir}")
            results[method] = resume(run_dir)
            continue
        echo(f"{method}: training {config.train.steps} steps into {run_dir}")
        results[method] = train(config, run_dir)
    table = markdown_table(comparison_rows(results, baseline="dense"), transpose=True)
    allocation = learned_allocation(results["adapmtl"])
    if allocation:
        table += "\n\n" + allocation
    summary = (
        f"\nTest split, synthetic scenes; ΔT in % against the dense model (positive = better).\n\n{table}\n\n"
        f"Run folders: {out_dir / 'dense'}, {out_dir / 'adapmtl'}; the finalized sparse model: "
        f"{RunDir(out_dir / 'adapmtl').model_file}"
    )
    (out_dir / "table.md").write_text(table + "\n")
    echo(summary)
    return table


def learned_allocation(result: dict) -> str:
    """The learned allocation of an adapmtl result as Markdown: one row per component (sparsity, one
    global threshold's at the same overall sparsity, their difference in pp, the score's own learning
    in logits) and a line on the controller's interventions; "" for a result without them."""
    rows = allocation_rows(result)
    if not rows:
        return ""
    controller = result.get("controller") or {}
    note = (f"Learned allocation (adapmtl). The controller stepped in at {controller['interventions']} of "
            f"{controller['measurements']} measurements (total shift {controller['total_shift']:.2f} logits); "
            "the scores' own learning is in logits.\n\n") if controller else "Learned allocation (adapmtl).\n\n"
    return note + markdown_table(rows)
