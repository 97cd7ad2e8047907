"""One report directory from experiment folders: pooled, its tables in every format, its plots and its HTML page."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import experiment as experiment_mod
from . import html as html_mod
from . import render
from . import report as report_mod
from .errors import UserError
from .report import Report


@dataclass
class Published:
    report: Report
    folder: Path  # the report directory
    page: Path  # its report.html
    images: list[tuple[str, Path]] = field(default_factory=list)  # (title, PNG)
    notes: list[str] = field(default_factory=list)  # plots that could not be drawn, and why


def publish(experiments: list[str] | None, *, out: Path | None = None, plots: bool = True,
            data_root: Path | None = None) -> Published:
    """Read (and pool) the experiment folders or URIs, default the newest one in ./tune_results, and write the
    report directory: ``out``, default EXPERIMENT/report (./reports/NAME for a URI). Without ``plots`` neither
    checkpoints nor data are read; the data folder defaults to the one the search recorded."""
    if experiments and len(experiments) > 1 and out is None:
        raise UserError("several experiments are pooled into one report: pass --out for its folder")
    folders = experiments or [experiment_mod.newest()]
    exp = experiment_mod.pool([experiment_mod.load(p) for p in folders])
    rep = report_mod.from_experiment(exp)
    folder = (out or experiment_mod.report_folder(exp)).resolve()
    render.write_files(rep, folder)
    images: list[tuple[str, Path]] = []
    notes: list[str] = []
    if plots:
        from . import plots as plots_mod  # matplotlib, only when plotting

        root = data_root or (Path(exp.data_root) if exp.data_root else None)
        checkpoints = dict(zip(exp.trials["trial_id"], exp.trials["checkpoint"]))
        images, notes = plots_mod.write_all(rep, exp.epochs, checkpoints, folder, data_root=root, spec=exp.spec)
    page = html_mod.write(rep, folder / "report.html", images, notes)
    return Published(report=rep, folder=folder, page=page, images=images, notes=notes)
