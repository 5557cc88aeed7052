"""How the threshold runs of a bench reached their sparsity: the controller's interventions, how far
each component's threshold score moved by its own learning, and the learned allocation next to the one
a single global threshold gives at the same overall sparsity (AdapMTL, Xiang et al., ACM MM 2024,
Sec. 3.2: one learnable soft threshold per component). Read from each run's `result.json`
(`controller`, `allocation`, written by `adapmtl.engine.trainer`); runs without them (the mask
methods) are left out.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

from adapmtl.report.table import markdown_table


def _mean(values: list[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def mechanism_rows(runs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, target) over its seeds, for the runs (aggregate()'s {method, target, seed,
    result}) whose result.json has a `controller` record: `interventions` (mean count of measurements
    at which the controller shifted every score, out of `measurements`), `total shift` (mean of the
    summed |shift|, logits), `learned` (the smallest and largest movement of a component's score by its
    own gradient steps over the run, logits, over components and seeds), and per component
    `<component>` = (mean learned sparsity, mean global-threshold sparsity) in %."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for run in runs:
        if isinstance(run["result"].get("controller"), dict):
            groups.setdefault((run["method"], run["target"]), []).append(run["result"])
    rows = []
    for (method, target), results in groups.items():
        controllers = [r["controller"] for r in results]
        learned = [abs(v) for c in controllers for v in (c.get("learned") or {}).values()]
        row: dict[str, Any] = {
            "method": method, "target": target, "seeds": len(results),
            "interventions": _mean([c["interventions"] for c in controllers]),
            "measurements": _mean([c["measurements"] for c in controllers]),
            "total shift": _mean([c["total_shift"] for c in controllers]),
            "learned": (min(learned), max(learned)) if learned else None,
            "components": {},
        }
        for component in (results[0].get("allocation") or {}):
            pairs = [r["allocation"][component] for r in results if component in (r.get("allocation") or {})]
            row["components"][component] = (100 * _mean([p["sparsity"] for p in pairs]),
                                            100 * _mean([p["global"] for p in pairs]))
        rows.append(row)
    return rows


def mechanism_table(runs: Iterable[dict[str, Any]]) -> str:
    """bench.md's section on the threshold runs (see `mechanism_rows`) as Markdown, or "" without such runs.
    A component cell reads "learned / global" sparsity in %, means over seeds."""
    rows = mechanism_rows(runs)
    if not rows:
        return ""
    components = list(dict.fromkeys(c for row in rows for c in row["components"]))
    shown = []
    for row in rows:
        low_high = row["learned"]
        shown.append({
            "method": row["method"], "target": f"{row['target']:g}", "seeds": str(row["seeds"]),
            "interventions": f"{row['interventions']:.1f} of {row['measurements']:.0f}",
            "total shift": f"{row['total shift']:.2f}",
            "scores' own learning": "n/a" if low_high is None else f"{low_high[0]:.2f}–{low_high[1]:.2f}",
            **{c: "–" if c not in row["components"] else
               f"{row['components'][c][0]:.1f} / {row['components'][c][1]:.1f}" for c in components},
        })
    columns = ["method", "target", "seeds", "interventions", "total shift", "scores' own learning", *components]
    return ("The controller's interventions (measurements at which it shifted every threshold score; mean "
            "over seeds) and their summed shift (logits); how far each component's score moved by its own "
            "learning (logits, smallest–largest over components and seeds); each component's sparsity, "
            "learned / one global threshold at the same overall sparsity (%, mean over seeds).\n\n"
            + markdown_table(shown, columns=columns))
