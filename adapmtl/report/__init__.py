"""Tables (and, later, plots) of runs."""
from adapmtl.report.table import comparison_rows, markdown_table

__all__ = ["comparison_rows", "markdown_table"]
