"""The report as one static HTML file: tables, verdicts, costs and the plots embedded as base64 (opens offline)."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

import pandas as pd

from .errors import UserError
from .render import sections
from .report import Report

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1400px;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; position: sticky; top: 0; }
td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
.scroll { overflow-x: auto; }
.baseline { background: #fff6e0 !important; }
.verdict { font-weight: 600; }
.missing li { color: #a33; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-weight: 600; margin-bottom: .3em; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1em; } dt { font-weight: 600; }
dd { margin: 0; font-family: ui-monospace, monospace; font-size: .9em; overflow-wrap: anywhere; }
"""


def table(frame: pd.DataFrame) -> str:
    """A frame of strings as an HTML table; columns labelled 'baseline: ...' (that study's convention) are shaded."""
    if frame.empty:
        return "<p>(none)</p>"
    marked = [str(c).startswith("baseline:") for c in frame.columns]
    head = "".join(f'<th{" class=baseline" if s else ""}>{escape(str(c))}</th>' for c, s in zip(frame.columns, marked))
    cell = lambda v, s: f'<td{" class=baseline" if s else ""}>{escape(str(v))}</td>'  # noqa: E731
    rows = "".join("<tr>" + "".join(cell(v, s) for v, s in zip(row, marked)) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def image(title: str, path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f"<figure><figcaption>{escape(title)}</figcaption>"
            f'<img alt="{escape(title)}" src="data:image/png;base64,{data}"></figure>')


def page(report: Report, images: list[tuple[str, Path]] = (), plot_notes: list[str] = ()) -> str:
    """The whole report as one HTML document with nothing fetched from elsewhere."""
    parts = [f"<h1>Report: {escape(report.title)}</h1>", "<dl>"]
    parts += [f"<dt>{escape(label)}</dt><dd>{escape(value)}</dd>" for label, value in report.facts]
    parts.append("</dl>")
    if report.missing:
        parts.append("<h2>Missing</h2><ul class=missing>"
                     + "".join(f"<li>{escape(m)}</li>" for m in report.missing) + "</ul>")
    for heading, frame in sections(report):
        parts.append(f"<h2>{escape(heading)}</h2>")
        if heading == "Comparisons" and not report.comparisons.empty:
            parts.append("<ul>" + "".join(f"<li class=verdict>{escape(v)}</li>" for v in report.comparisons["verdict"])
                         + "</ul>")
        parts.append(table(frame))
        if heading == "Groups":
            parts.append("<ul>" + "".join(f"<li>{escape(n)}</li>" for n in report.notes) + "</ul>")
        if heading == "Cost":
            parts.append("<h2>Plots</h2>")
            parts += [image(title, path) for title, path in images]
            if not images and not plot_notes:
                parts.append("<p>No plots (--no-plots).</p>")
            if plot_notes:
                parts.append("<ul>" + "".join(f"<li>{escape(n)}</li>" for n in plot_notes) + "</ul>")
    body = "\n".join(parts)
    head = f'<meta charset="utf-8"><title>Report: {escape(report.title)}</title><style>{STYLE}</style>'
    return f'<!DOCTYPE html>\n<html lang="en"><head>{head}</head>\n<body>\n{body}\n</body></html>\n'


def write(report: Report, path: Path, images: list[tuple[str, Path]] = (), plot_notes: list[str] = ()) -> Path:
    try:
        Path(path).write_text(page(report, images, plot_notes), encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    return Path(path)
