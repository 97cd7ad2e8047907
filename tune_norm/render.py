"""The report as text: markdown, LaTeX, CSV and JSON tables (the HTML page is html.py's), and their files."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from . import stats
from .errors import UserError
from .report import COMPARED, LOSS, TEST_AT_VAL, TRIAL_METRICS, Report, _num

FORMATS = ("markdown", "csv", "json", "latex")
AT_VAL_LABEL = COMPARED[TEST_AT_VAL].capitalize()  # 'Test acc @ val epoch', the compared column's header


# -- text formats ------------------------------------------------------------------------------------
def _fmt(digits: int) -> Callable[[Any], str]:
    return lambda v: "" if not math.isfinite(_num(v)) else f"{_num(v):.{digits}f}"


def _factor(v: Any) -> str:
    return "0" if _num(v) == 0 else f"{_num(v):g}"


def _int(v: Any) -> str:
    return "" if not math.isfinite(_num(v)) else str(int(_num(v)))


def _seconds(v: Any) -> str:
    return "" if not math.isfinite(_num(v)) else f"{_num(v):,.0f}" if _num(v) >= 100 else f"{_num(v):.1f}"


def _text(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def table_columns(value: str) -> list[tuple[str, Callable[[pd.Series], str]]]:
    """(label, row -> text) for the main table."""
    pct = _fmt(2)
    return [
        ("Group", lambda r: r["group"]),
        ("baseline: best train acc", lambda r: pct(r["train_acc_last"])),
        ("baseline: best test acc", lambda r: pct(r["best_test_acc"])),
        ("baseline: best test loss", lambda r: _fmt(4)(r["best_test_loss"])),
        ("L1", lambda r: _factor(r["l1"])),
        ("L2", lambda r: _factor(r["l2"])),
        ("Val acc", lambda r: pct(r["best_val_acc"])),
        (AT_VAL_LABEL, lambda r: pct(r[TEST_AT_VAL])),
        ("Val epoch", lambda r: _int(r["best_val_epoch"])),
        ("Epochs run", lambda r: f"{int(r['epochs_run'])}/{int(r['epochs'])}"),
        ("Trial", lambda r: str(r["trial_id"])),
        ("Trials", lambda r: str(int(r["trials"]))),
        ("Diverged", lambda r: str(int(r["diverged"]))),
        ("Errored", lambda r: str(int(r["errored"]))),
        ("Seeds", lambda r: str(int(r["seeds"]))),
        (f"{COMPARED[value]}: mean ± std", lambda r: "" if r["seeds"] < 2 else f"{r['mean']:.2f} ± {r['std']:.2f}"),
        ("95% CI", lambda r: "" if r["seeds"] < 2 else f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]"),
    ]


def comparison_columns() -> list[tuple[str, Callable[[pd.Series], str]]]:
    def num(r: pd.Series, key: str, sign: str = "") -> str:
        digits = 4 if r["metric"] == COMPARED[LOSS] else 2
        return "" if not math.isfinite(_num(r[key])) else f"{_num(r[key]):{sign}.{digits}f}"

    def p(key: str) -> Callable[[pd.Series], str]:
        return lambda r: ("" if not math.isfinite(_num(r[key])) else
                          stats.format_p(r[key]).removeprefix("p ").lstrip("= "))

    return [
        ("Compared", lambda r: _text(r["metric"])),
        ("Within", lambda r: r["stratum"]),
        ("A", lambda r: r["a"]),
        ("B", lambda r: r["b"]),
        ("Mean A", lambda r: num(r, "mean_a")),
        ("Mean B", lambda r: num(r, "mean_b")),
        ("A − B (95% CI)", lambda r: "" if not math.isfinite(r["diff_low"]) else
         f"{num(r, 'diff', '+')} [{num(r, 'diff_low', '+')}, {num(r, 'diff_high', '+')}]"),
        ("p", p("p")),
        ("Holm p", p("p_holm")),
        ("Verdict", lambda r: r["verdict"]),
    ]


def cost_columns(scheduler: str) -> list[tuple[str, Callable[[pd.Series], str]]]:
    saved = "Epochs saved by ASHA" if scheduler == "asha" else "Epochs saved by early stopping"
    return [
        ("Group", lambda r: r["group"]),
        ("Trials", lambda r: str(r["trials"])),
        ("Stopped early", lambda r: str(r["stopped_early"])),
        ("Diverged", lambda r: str(r["diverged"])),
        ("Errored", lambda r: str(r["errored"])),
        ("Epochs run", lambda r: str(r["epochs_run"])),
        ("Epochs if all ran to the end", lambda r: str(r["epochs_full"])),
        (saved, lambda r: str(r["epochs_saved"])),
        ("Trial wall s", lambda r: _seconds(r["wall_s"])),
        ("CPU-s", lambda r: _seconds(r["cpu_s"])),
        ("GPU-s", lambda r: _seconds(r["gpu_s"])),
        ("Est. s saved", lambda r: _seconds(r["saved_s"])),
    ]



def _param_text(key: str) -> Callable[[pd.Series], str]:
    def text(r: pd.Series) -> str:
        if key == "groups" and r["norm"] != "group":
            return ""  # the group count means nothing to other norms
        return _factor(r[key]) if key in ("l1", "l2", "lr") else _text(r[key])

    return text


def trial_columns(frame: pd.DataFrame) -> list[tuple[str, Callable[[pd.Series], str]]]:
    """(label, row -> text) for the per-trial table: id, group, status, its hyperparameters, its results."""
    pct = _fmt(2)
    params = [c for c in frame.columns if c not in ("trial_id", "group", "status") + TRIAL_METRICS]
    return [
        ("Trial", lambda r: _text(r["trial_id"])),
        ("Group", lambda r: _text(r["group"])),
        ("Status", lambda r: _text(r["status"])),
        *[(k, _param_text(k)) for k in params],
        ("Epochs run", lambda r: f"{_int(r['epochs_run'])}/{_int(r['epochs'])}"),
        ("Val acc", lambda r: pct(r["best_val_acc"])),
        (AT_VAL_LABEL, lambda r: pct(r[TEST_AT_VAL])),
        ("baseline: best test acc", lambda r: pct(r["best_test_acc"])),
        ("Diverged", lambda r: "yes" if r["diverged"] else ""),
        ("Stopped early", lambda r: "yes" if r["stopped_early"] else ""),
        ("Wall s", lambda r: _seconds(r["wall_s"])),
        ("Error", lambda r: _text(r["error"])),
    ]


def display(frame: pd.DataFrame, columns) -> pd.DataFrame:
    """The frame as strings under their labels, in order."""
    data = {label: [fn(r) for _, r in frame.iterrows()] for label, fn in columns}
    return pd.DataFrame(data, columns=[c[0] for c in columns], dtype=object)


def sections(report: Report) -> list[tuple[str, pd.DataFrame]]:
    """(heading, display frame) of each table, in reading order."""
    return [
        ("Groups", display(report.table, table_columns(report.compared_value))),
        ("Comparisons", display(report.comparisons, comparison_columns())),
        ("Cost", display(report.cost, cost_columns(report.scheduler))),
        ("All trials", display(report.trials, trial_columns(report.trials))),
    ]


def markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(none)"
    cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(cell(c) for c in frame.columns) + " |",
             "|" + "|".join("---" for _ in frame.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def markdown(report: Report, *, all_trials: bool = True) -> str:
    out = [f"# Report: {report.title}", ""]
    out += [f"- {label}: {value}" for label, value in report.facts] + [""]
    for heading, frame in sections(report):
        if heading == "All trials" and not all_trials:
            continue
        out += [f"## {heading}", "", markdown_table(frame), ""]
        if heading == "Groups":
            out += [f"- {n}" for n in report.notes] + [""]
    if report.missing:
        out += ["## Missing", ""] + [f"- {m}" for m in report.missing] + [""]
    return "\n".join(out)


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                 "±": r"$\pm$", "−": "--", "<": r"$<$", ">": r"$>$"}


def latex_escape(text: Any) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def latex_table(frame: pd.DataFrame, caption: str) -> str:
    """A booktabs tabular in a table float."""
    head = " & ".join(latex_escape(c) for c in frame.columns) + r" \\"
    body = [" & ".join(latex_escape(v) for v in row) + r" \\" for row in frame.itertuples(index=False)]
    return "\n".join([r"\begin{table}[ht]", r"\centering", r"\small", f"\\caption{{{latex_escape(caption)}}}",
                      r"\begin{tabular}{" + "l" * max(len(frame.columns), 1) + "}", r"\toprule", head, r"\midrule",
                      *body, r"\bottomrule", r"\end{tabular}", r"\end{table}"])


def latex(report: Report) -> str:
    """Tables for a document using booktabs; notes and missing parts as comments."""
    out = [f"% Report: {latex_escape(report.title)}  (needs \\usepackage{{booktabs}})"]
    out += [f"% {label}: {value}" for label, value in report.facts]
    for heading, frame in sections(report):
        out += ["", latex_table(frame, f"{report.title}: {heading.lower()}")]
    out += [""] + [f"% note: {n}" for n in report.notes] + [f"% missing: {m}" for m in report.missing]
    return "\n".join(out) + "\n"


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(frame.to_json(orient="records", double_precision=10))  # NaN -> null


def as_json(report: Report) -> str:
    data = {"title": report.title, "facts": dict(report.facts), "compared_value": report.compared_value,
            "table": _records(report.table), "comparisons": _records(report.comparisons),
            "cost": _records(report.cost), "trials": _records(report.trials), "notes": report.notes,
            "missing": report.missing}
    return json.dumps(data, indent=2) + "\n"


def as_csv(report: Report) -> str:
    """The main table, machine-readable (raw numbers, snake_case columns)."""
    return report.table.to_csv(index=False)


def render(report: Report, fmt: str = "markdown") -> str:
    """The report as text in ``fmt``: markdown (without the per-trial table), csv (the main table), json, latex."""
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "markdown":
        return markdown(report, all_trials=False)
    if fmt == "csv":
        return as_csv(report)
    if fmt == "json":
        return as_json(report)
    return latex(report)


def write_files(report: Report, out: Path) -> list[Path]:
    """Every format into ``out``: report.md, report.json, report.tex and one CSV per table."""
    files = {
        "report.md": markdown(report), "report.json": as_json(report), "report.tex": latex(report),
        "table.csv": report.table.to_csv(index=False), "comparisons.csv": report.comparisons.to_csv(index=False),
        "cost.csv": report.cost.to_csv(index=False), "trials.csv": report.trials.to_csv(index=False),
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (out / name).write_text(text, encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot write the report into {out}: {e.strerror or e}; "
                        "choose another folder with --out") from None
    return [out / name for name in files]
