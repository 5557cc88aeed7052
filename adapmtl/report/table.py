"""The paper's comparison table: per-task metrics, ΔT per task, sparsity per component, ΔT."""
from __future__ import annotations

from typing import Any, Mapping

from adapmtl.metrics import MetricError, delta_t

SHORT_NAMES = {"segment_semantic": "seg", "normal": "normal", "depth_zbuffer": "depth",
               "keypoints2d": "keypoint", "edge_texture": "edge"}


def comparison_rows(results: Mapping[str, Mapping[str, Any]], baseline: str, split: str = "test") -> list[dict[str, Any]]:
    """One flat row per run: its metrics on `split`, ΔT against `baseline`, sparsities.

    `results` maps a run label to its result.json content; `baseline` names the dense run.
    """
    if baseline not in results:
        raise KeyError(f"baseline run {baseline!r} is not among the runs: {list(results)}")
    base = results[baseline][split]
    rows = []
    for label, result in results.items():
        try:
            d = delta_t(result[split], base)
        except MetricError as error:  # e.g. a baseline metric of 0: ΔT undefined, the rest still reported
            d, note = None, str(error)
        row: dict[str, Any] = {"run": label}
        for task, metrics in result[split].items():
            for metric, value in metrics.items():
                row[f"{SHORT_NAMES.get(task, task)} {metric}"] = value
            row[f"ΔT {SHORT_NAMES.get(task, task)}"] = d.per_task[task] if d else None
        for component, value in result["sparsity"]["components"].items():
            row[f"sparsity {SHORT_NAMES.get(component, component)}"] = 100 * value
        row["sparsity overall"] = 100 * result["sparsity"]["overall"]
        row["ΔT"] = d.overall if d else None
        if d is None:
            row["note"] = f"ΔT n/a: {note}"
        rows.append(row)
    return rows


def _cell(column: str, value: Any, digits: int) -> str:
    if isinstance(value, float):
        return f"{value:+.{digits}f}" if column.startswith("ΔT") else f"{value:.{digits}f}"
    return "n/a" if value is None else str(value)


def markdown_table(rows: list[dict[str, Any]], digits: int = 2, transpose: bool = False) -> str:
    """A Markdown table: one row per run (columns: the union of keys, first-seen order),
    or with `transpose`, one row per quantity and one column per run (for terminals)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    if transpose:
        header = ["", *(str(row.get("run", "")) for row in rows)]
        body = [[c, *(_cell(c, row.get(c), digits) for row in rows)] for c in columns if c != "run"]
    else:
        header = columns
        body = [[_cell(c, row.get(c), digits) for c in columns] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)
