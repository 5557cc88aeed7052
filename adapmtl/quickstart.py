"""`adapmtl quickstart`: a small, real run end to end on CPU.

Trains the dense multitask baseline and AdapMTL at 90 % sparsity on synthetic scenes
with the same budget, evaluates both on the test split, and prints the paper's table.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from adapmtl.engine import load_config, resume, train
from adapmtl.engine.rundir import RunDir
from adapmtl.report import comparison_rows, markdown_table


def quickstart(out_dir: str | Path = "runs/quickstart", overrides: Sequence[str] = (), echo=print) -> str:
    """Run dense and adapmtl under `out_dir` (reusing finished runs, resuming interrupted ones); return the table."""
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
    summary = (
        f"\nTest split, synthetic scenes; ΔT in % against the dense model (positive = better).\n\n{table}\n\n"
        f"Run folders: {out_dir / 'dense'}, {out_dir / 'adapmtl'}; the finalized sparse model: "
        f"{RunDir(out_dir / 'adapmtl').model_file}"
    )
    (out_dir / "table.md").write_text(table + "\n")
    echo(summary)
    return table
