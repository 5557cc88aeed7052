"""The paper's comparison table: per-task metrics, ΔT per task, sparsity per component, ΔT."""
from __future__ import annotations

import csv
import html
import io
from typing import Any, Mapping, Sequence

from adapmtl.metrics import MetricError, run_delta_t
from adapmtl.report.runs import ReportError

SHORT_NAMES = {"segment_semantic": "seg", "normal": "normal", "depth_zbuffer": "depth",
               "keypoints2d": "keypoint", "edge_texture": "edge"}


def comparison_rows(results: Mapping[str, Mapping[str, Any]], baseline: str | None, split: str = "test") -> list[dict[str, Any]]:
    """One flat row per run: its metrics on `split`, ΔT against `baseline`, sparsities (in %).

    `results` maps a run label to its result.json content; `baseline` names the dense run
    (None: no ΔT columns). Raises ReportError if `baseline` is not among `results` or a result
    lacks `split` or "sparsity"; a ΔT that MetricError refuses becomes n/a with a "note".
    """
    if baseline is not None and baseline not in results:
        raise ReportError(f"baseline run {baseline!r} is not among the runs: {list(results)}")
    missing = [label for label, result in results.items() if split not in result or "sparsity" not in result]
    if missing:
        raise ReportError(f"the results of {missing} have no {split!r} metrics or no sparsity (not finished runs?)")
    base = results[baseline] if baseline is not None else None
    rows = []
    for label, result in results.items():
        d, note = None, None
        if base is not None:
            try:
                d = run_delta_t(result, base, split)
            except MetricError as error:  # e.g. a baseline metric of 0: ΔT undefined, the rest still reported
                note = str(error)
        row: dict[str, Any] = {"run": label}
        for task, metrics in result[split].items():
            for metric, value in metrics.items():
                row[f"{SHORT_NAMES.get(task, task)} {metric}"] = value
            if base is not None:
                row[f"ΔT {SHORT_NAMES.get(task, task)}"] = d.per_task[task] if d else None
        for component, value in result["sparsity"]["components"].items():
            row[f"sparsity {SHORT_NAMES.get(component, component)}"] = 100 * value
        row["sparsity overall"] = 100 * result["sparsity"]["overall"]
        if base is not None:
            row["ΔT"] = d.overall if d else None
        if note is not None:
            row["note"] = f"ΔT n/a: {note}"
        rows.append(row)
    return rows


def format_cell(column: str, value: Any, digits: int = 2, std: float | None = None) -> str:
    """One table cell: a float to `digits` decimals, signed (+/-) in ΔT columns so that gains read
    as gains; with `std`, "value ± std" (a mean over seeds); None as "n/a"; anything else as str()."""
    if isinstance(value, float):
        cell = f"{value:+.{digits}f}" if column.startswith("ΔT") else f"{value:.{digits}f}"
        return cell if std is None else f"{cell} ± {std:.{digits}f}"
    return "n/a" if value is None else str(value)


def _grid(rows: list[dict[str, Any]], digits: int, transpose: bool,
          columns: Sequence[str] | None) -> tuple[list[str], list[list[str]]]:
    """(header, body) of formatted cells: one row per run, or with `transpose`, one row per
    quantity and one column per run; columns by default: the union of keys, first-seen order."""
    columns = list(dict.fromkeys(key for row in rows for key in row)) if columns is None else list(columns)
    if transpose:
        header = ["", *(str(row.get("run", "")) for row in rows)]
        return header, [[c, *(format_cell(c, row.get(c), digits) for row in rows)] for c in columns if c != "run"]
    return columns, [[format_cell(c, row.get(c), digits) for c in columns] for row in rows]


def markdown_table(rows: list[dict[str, Any]], digits: int = 2, transpose: bool = False,
                   columns: Sequence[str] | None = None) -> str:
    """A Markdown table: one row per run, or with `transpose`, one row per quantity and one column
    per run (for terminals). `columns`: which keys to show, in order (default: the union of the
    rows' keys, first-seen order; a key a row lacks shows "n/a"). Cells as `format_cell` writes them."""
    header, body = _grid(rows, digits, transpose, columns)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def html_table(rows: list[dict[str, Any]], digits: int = 2, transpose: bool = False) -> str:
    """The same table as an HTML <table> (cells escaped)."""
    header, body = _grid(rows, digits, transpose, None)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    lines = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{lines}</tbody></table>"


def csv_table(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV with full-precision numbers (empty cell = not available), for spreadsheets."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: ("" if row.get(c) is None else row.get(c)) for c in columns} for row in rows)
    return buffer.getvalue()
