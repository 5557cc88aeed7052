"""Tables, figures and HTML reports of run folders: reads and renders, never runs a model
(the experiments that do are in `adapmtl.experiments`)."""
from adapmtl.report.build import ReportFiles, report_summary, write_report
from adapmtl.report.plots import (delta_t_figure, delta_t_points, layer_sparsity_figure, losses_figure, save_figure,
                                  sparsity_figure, task_weights_figure, thresholds_figure)
from adapmtl.report.runs import ReportError, RunRecord, find_runs, load_run, load_runs
from adapmtl.report.sensitivity import SensitivityResult, read_sensitivity, sensitivity_figure, write_sensitivity
from adapmtl.report.table import comparison_rows, csv_table, format_cell, html_table, markdown_table

__all__ = [
    "ReportError", "ReportFiles", "RunRecord", "SensitivityResult",
    "comparison_rows", "csv_table", "delta_t_figure", "delta_t_points", "find_runs", "format_cell", "html_table",
    "layer_sparsity_figure", "load_run", "load_runs", "losses_figure", "markdown_table", "read_sensitivity",
    "report_summary", "save_figure", "sensitivity_figure", "sparsity_figure",
    "task_weights_figure", "thresholds_figure", "write_report", "write_sensitivity",
]
