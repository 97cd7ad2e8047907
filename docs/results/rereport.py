"""Rebuild a committed report whose experiment folder is gone from its committed tables, with today's comparisons.

`tune-norm report EXPERIMENT` needs the experiment folder (every epoch of every trial); the folders behind
docs/results/ are gone with the machines they ran on, only their reports were committed. The comparisons need only
the per-seed values of each group, which the committed trials.csv holds, so this recomputes them with
tune_norm.report.comparisons (accuracy and lowest test loss, Holm-corrected) and writes every format again
(report.md, .json, .tex, .html and the CSVs) through tune_norm's own writers. The groups, cost and trial tables
are read back from their CSVs unchanged; the plots, which need the epochs, are kept from the committed report.html.
The notes that explain the columns take today's words; the other notes are kept.

    python docs/results/rereport.py docs/results/seed docs/results/seed_4_5 docs/results/batch_size
"""

import json
import sys
from pathlib import Path

import pandas as pd

from tune_norm import html, render, report

PLOTS, NEXT = "<h2>Plots</h2>", "\n<h2>All trials</h2>"
COLUMN_NOTES = ("Columns marked", "'Test acc @ val epoch'", "There is no validation split")  # their words change


def rebuild(folder: Path) -> None:
    old = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    read = lambda name: pd.read_csv(folder / name, dtype={"trial_id": str, "error": str})  # noqa: E731
    trials, table, costs = read("trials.csv"), read("table.csv"), read("cost.csv")
    trials["error"] = trials["error"].fillna("")  # written as "" by the report, read back as NaN
    summary = report.add_groups(trials)
    if list(summary["group"]) != list(trials["group"]):
        sys.exit(f"{folder}: the groups of trials.csv do not recompute; not rewriting it")
    mode = "min" if old["facts"]["Ranked by"].endswith("(min)") else "max"
    # trials.csv lists each group's trials best first but not their score: their rank stands in for it
    rank = pd.Series(range(len(summary)), index=summary.index, dtype=float)
    summary["score"] = -rank if mode == "max" else rank
    keys = [k for k in report.DEFAULTS if k not in report.NOT_REPLICATE_KEYS]
    if summary.groupby("group")[keys].nunique().gt(1).any(axis=None):
        sys.exit(f"{folder}: a group holds several setups; its best cannot be told from trials.csv")
    if report.compared_value(summary) != old["compared_value"]:
        sys.exit(f"{folder}: trials.csv does not hold the compared value {old['compared_value']}")
    compared = report.comparisons(summary, mode)
    notes, labels = [], report.column_notes(old["compared_value"])  # today's words for the columns
    for n in old["notes"]:
        if n.startswith(COLUMN_NOTES):
            notes, labels = notes + labels, []
        else:
            notes.append(report.comparison_note(compared) if n.startswith("Comparisons:") else n)
    scheduler = old["facts"].get("Search", "").split(", ")[-1].removesuffix(" scheduler").split(" ")[0]
    rep = report.Report(title=old["title"], facts=list(old["facts"].items()), table=table, comparisons=compared,
                        cost=costs, trials=trials, summary=summary, notes=notes, missing=old["missing"],
                        compared_value=old["compared_value"], scheduler=scheduler)
    page = (folder / "report.html").read_text(encoding="utf-8")
    plots = page[page.index(PLOTS):page.index(NEXT)]
    render.write_files(rep, folder)
    new = html.page(rep)
    (folder / "report.html").write_text(new[:new.index(PLOTS)] + plots + new[new.index(NEXT):], encoding="utf-8")
    print(f"{folder}: {len(compared)} comparisons, {int(compared['p'].notna().sum())} tested")


if __name__ == "__main__":
    for path in sys.argv[1:]:
        rebuild(Path(path))
