"""From a search to a model: the config of an experiment's best (or a named) trial, ready to train again."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .experiment import Experiment, flat_config

RUN_SPECIFIC = ("device", "threads")  # where the trial ran, not what it was: the retrain picks its own


@dataclass(frozen=True)
class Pick:
    """A trial chosen from an experiment, with the config it ran."""

    trial_id: str
    config: dict[str, Any]  # TrainConfig keys (inactive conditional keys dropped, grid cells flattened)
    metric: str
    score: float  # the trial's best ``metric`` over epochs (what the report ranks by)
    best: bool  # chosen as the best rather than named


def trial_config(params: dict[str, Any]) -> dict[str, Any]:
    """A Ray trial config (params.json) as TrainConfig keys: grid cells come nested under 'cell' and keys
    that do not apply to the trial (e.g. groups for BatchNorm) are None."""
    return {k: v for k, v in flat_config(params).items() if k not in RUN_SPECIFIC}


def _python(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value  # numpy scalars from the DataFrame


def pick(exp: Experiment, trial: str | None = None) -> Pick:
    """The named trial (``trial`` with or without its trial_ prefix), else the best by the experiment's metric
    and mode (best over epochs, as the report ranks trials); diverged trials and trials without results never
    count as best."""
    metric, mode, summary = ranking(exp)
    if trial is not None:
        wanted = trial.removeprefix("trial_")
        rows = summary[summary["trial_id"] == wanted]
        if rows.empty:
            shown = ", ".join(summary["trial_id"].head(8))
            raise UserError(f"{exp.path} has no trial {trial!r}; its trials are {shown}"
                            + (", ..." if len(summary) > 8 else ""))
        row, best = rows.iloc[0], False
    else:
        ranked = summary[summary["eligible"]]
        if ranked.empty:
            raise UserError(f"no trial of {exp.path} has a finite {metric} yet, so none is best; name one with --trial")
        row = ranked.loc[ranked["score"].idxmax() if mode == "max" else ranked["score"].idxmin()]
        best = True
    return as_pick(row, metric, best)


def ranking(exp: Experiment):
    """(metric, mode, summary): what ranks the experiment's trials (its metric and mode where recorded, as the
    report ranks them) and one row per trial (report.summarize_trials) with 'eligible' marking the trials that
    may count as best: a finite score, not diverged."""
    from .report import selection, summarize_trials

    metric, mode = selection(exp.epochs, exp.metric, exp.mode)
    summary = summarize_trials(exp.trials, exp.epochs, metric, mode)
    summary["eligible"] = summary["score"].notna() & ~summary["diverged"].astype(bool)
    return metric, mode, summary


def as_pick(row, metric: str, best: bool) -> Pick:
    """The Pick of one row of ``ranking``'s summary: its trial id, the config it ran, its score."""
    return Pick(trial_id=str(row["trial_id"]), config=trial_config(_params(row)), metric=metric,
                score=float(row["score"]), best=best)


def _params(row) -> dict[str, Any]:
    """The trial's own params.json when its folder has one, else its config columns."""
    folder = Path(str(row["dir"])) if row.get("dir") else None
    if folder is not None and (folder / "params.json").is_file():
        try:
            return json.loads((folder / "params.json").read_text())
        except ValueError:
            pass
    from .config import FIELDS

    return {k: _python(row[k]) for k in FIELDS if k in row and not _missing(row[k])}


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def runs(config: dict[str, Any], *, full_train: bool = False, seeds: tuple[int, ...] | None = None,
         overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The configs to train: the trial's, with options on top; ``full_train`` trains on the validation split
    too (val_size 0); one config per seed in ``seeds``."""
    base = {**config, **(overrides or {})}
    if full_train:
        base["val_size"] = 0
    return [{**base, "seed": s} for s in seeds] if seeds else [base]


def write_source(folder: Path, experiment: Path, chosen: Pick) -> Path:
    """source.json beside the model(s): which experiment and trial they were trained from, and why."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "source.json"
    record = {"experiment": str(Path(experiment).resolve()), "trial_id": chosen.trial_id, "best": chosen.best,
              "metric": chosen.metric, "score": chosen.score, "trial_config": chosen.config}
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
