"""One self-contained HTML page: headings, tables, text and PNG figures embedded as base64."""
from __future__ import annotations

import base64
import html
from pathlib import Path

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.1em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; max-width: 900px; }
.note { color: #555; font-size: 0.9em; }
"""


def figure_html(png: str | Path, caption: str) -> str:
    """An <figure> with the PNG file embedded (base64 data URI) and its caption.

    Raises OSError if `png` cannot be read."""
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def paragraph(text: str, css: str = "note") -> str:
    """A <p> of escaped text."""
    return f'<p class="{css}">{html.escape(text)}</p>'


def heading(text: str, level: int = 2) -> str:
    """An <h`level`> of escaped text."""
    return f"<h{level}>{html.escape(text)}</h{level}>"


def html_page(title: str, blocks: list[str]) -> str:
    """The whole page: `blocks` are HTML fragments (from the helpers above or `html_table`), in order."""
    body = "\n".join(blocks)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n{heading(title, 1)}\n{body}\n</body></html>\n")
