"""The report's analysis: pure functions from trial and epoch DataFrames to tables, verdicts and costs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from . import stats
from .config import TrainConfig
from .norms import DISPLAY, NORMS
from .space import SearchSpec

TEST_AT_VAL = "test_acc_at_best_val"  # test acc at the validation-chosen epoch: what comparisons use
BASELINE_SCORE = "best_test_acc"  # the baseline study's convention: best test accuracy over all epochs
BASELINE_ORDER = ("batch", "group", "layer")  # the baseline study's comparisons: BN vs GN, BN vs LN, GN vs LN
NOT_REPLICATE_KEYS = ("seed", "device", "threads")  # trials equal in every other key are seeds of one setup
FINISHED = "TERMINATED"
DEFAULTS = TrainConfig().as_dict()
NAN = float("nan")


# -- groups ------------------------------------------------------------------------------------------
def norm_label(norm: str) -> str:
    return DISPLAY.get(norm, str(norm))


def regularization_label(l1: float, l2: float) -> str:
    """'' or ' + L1', ' + L2', ' + L1 + L2': the baseline study's way of naming its regularized runs."""
    return (" + L1" if _num(l1) > 0 else "") + (" + L2" if _num(l2) > 0 else "")


def group_label(norm: str, l1: float = 0.0, l2: float = 0.0, batch_size: int | None = None) -> str:
    """'BatchNorm + L1', 'LayerNorm + L2', ...; with ', batch 128' when the experiment varies the batch size."""
    label = norm_label(norm) + regularization_label(l1, l2)
    return label if batch_size is None else f"{label}, batch {int(batch_size)}"


def group_order(frame: pd.DataFrame) -> dict[str, int]:
    """Group -> position: the baseline study's norm order, then regularization, then batch size."""
    norms = {n: i for i, n in enumerate(dict.fromkeys(BASELINE_ORDER + tuple(NORMS)))}
    rows = frame.drop_duplicates("group")
    regs = {"": 0, " + L1": 1, " + L2": 2, " + L1 + L2": 3}
    keys = {g: (norms.get(n, len(norms)), str(n), regs[regularization_label(a, b)], _num(bs))
            for g, n, a, b, bs in zip(rows["group"], rows["norm"], rows["l1"], rows["l2"], rows["batch_size"])}
    return {g: i for i, g in enumerate(sorted(keys, key=keys.get))}


def varies(trials: pd.DataFrame, column: str) -> bool:
    return column in trials and trials[column].nunique(dropna=True) > 1


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return NAN


def with_defaults(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials with every TrainConfig key (defaults where absent) and a status (TERMINATED where absent)."""
    out = trials.copy()
    for key, value in {**DEFAULTS, "status": FINISHED}.items():
        if key not in out:
            out[key] = value
        else:
            out[key] = out[key].where(out[key].notna(), value)
    return out


def add_groups(trials: pd.DataFrame) -> pd.DataFrame:
    """Add 'group' (norm + regularization [+ batch size]) and 'stratum' (the label without the norm)."""
    out = with_defaults(trials)
    by_batch = varies(out, "batch_size")
    out["group"] = [group_label(n, a, b, bs if by_batch else None)
                    for n, a, b, bs in zip(out["norm"], out["l1"], out["l2"], out["batch_size"])]
    out["stratum"] = [regularization_label(a, b).removeprefix(" + ") + (f", batch {int(bs)}" if by_batch else "")
                      for a, b, bs in zip(out["l1"], out["l2"], out["batch_size"])]
    out["stratum"] = out["stratum"].str.removeprefix(", ").replace("", "no regularization")
    return out


# -- one row per trial -------------------------------------------------------------------------------
def selection(epochs: pd.DataFrame, metric: str = "val_acc", mode: str = "max") -> tuple[str, str]:
    """The metric that ranks trials: the experiment's own when it was recorded, else val_acc, else test_acc."""
    for name, direction in ((metric, mode), ("val_acc", "max"), ("test_acc", "max")):
        if name in epochs and pd.to_numeric(epochs[name], errors="coerce").notna().any():
            return name, direction
    return "test_acc", "max"


def _col(e: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(e[name], errors="coerce") if name in e else pd.Series(NAN, index=e.index)


def _trial_metrics(e: pd.DataFrame, metric: str, mode: str, validation: bool = True) -> dict[str, Any]:
    """Best-over-epochs values of one trial's epoch rows (sorted by epoch).

    A diverged epoch reports stand-ins (0% accuracy, a 1e9 loss, even a 0% val acc without a validation
    split); they never count as a best loss, nor as validation where the trial has no validation split.
    """
    if e.empty:
        return {"epochs_run": 0, "train_acc_last": NAN, "best_test_acc": NAN, "best_test_loss": NAN,
                "best_val_acc": NAN, TEST_AT_VAL: NAN, "best_val_epoch": NAN, "score": NAN, "diverged": False,
                "wall_s": 0.0}
    diverged_rows = e["diverged"].fillna(False).astype(bool) if "diverged" in e else pd.Series(False, index=e.index)
    val, test, epoch = _col(e, "val_acc"), _col(e, "test_acc"), _col(e, "epoch")
    if validation and val.notna().any():
        at = val.idxmax()  # the first epoch with the highest validation accuracy, as the trainer records it
        best_val, at_val, best_epoch = float(val[at]), float(test[at]), float(epoch[at])
    else:
        best_val = at_val = best_epoch = NAN
    scores = _col(e, metric)
    score = scores.max() if mode == "max" else scores.min()
    wall = _col(e, "time_total_s").max()
    if not math.isfinite(wall):
        wall = _col(e, "epoch_seconds").sum()
    return {
        "epochs_run": int(epoch.max()),
        "train_acc_last": float(_col(e, "train_acc").iloc[-1]),
        "best_test_acc": float(test.max()),
        "best_test_loss": float(_col(e, "test_loss")[~diverged_rows].min()),
        "best_val_acc": best_val,
        TEST_AT_VAL: at_val,
        "best_val_epoch": best_epoch,
        "score": float(score),
        "diverged": bool(diverged_rows.any()),
        "wall_s": float(wall),
    }


def summarize_trials(trials: pd.DataFrame, epochs: pd.DataFrame, metric: str = "val_acc",
                     mode: str = "max") -> pd.DataFrame:
    """One row per trial: its config, group, status and best-over-epochs metrics.

    'score' is ``metric`` at its best epoch (max or min by ``mode``) and ranks the trials.
    'stopped_early' marks a finished, undiverged trial that ran fewer epochs than its config asked for.
    """
    out = add_groups(trials)
    by_trial = {k: g.sort_values("epoch", kind="stable") for k, g in epochs.groupby("trial_id")} if len(epochs) else {}
    rows = [_trial_metrics(by_trial.get(t, epochs.iloc[0:0]), metric, mode, validation=int(v) > 0)
            for t, v in zip(out["trial_id"], out["val_size"])]
    metrics = pd.DataFrame(rows, index=out.index)
    out = pd.concat([out, metrics], axis=1)
    out["stopped_early"] = ((out["status"] == FINISHED) & ~out["diverged"] & (out["epochs_run"] > 0)
                            & (out["epochs_run"] < out["epochs"].astype(int)))
    return out


def setup_key(row: pd.Series | dict) -> tuple:
    """What makes two trials seeds of the same setup: every config key but the seed (and device/threads)."""
    return tuple((k, _hashable(row[k])) for k in DEFAULTS if k not in NOT_REPLICATE_KEYS)


def _hashable(value: Any) -> Any:
    number = _num(value)
    return number if isinstance(value, (int, float, np.number)) and not isinstance(value, bool) else str(value)


def _ranked(rows: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Rows best first by 'score' (NaN last), ties by trial id."""
    key = rows["score"] if mode == "max" else -rows["score"]
    return rows.assign(_key=key).sort_values(["_key", "trial_id"], ascending=[False, True],
                                             na_position="last", kind="stable").drop(columns="_key")


def best_setups(summary: pd.DataFrame, mode: str = "max") -> dict[str, pd.DataFrame]:
    """For each group, every trial of its best setup (highest mean score over its seeds), best seed first."""
    out = {}
    ran = summary[summary["epochs_run"] > 0]
    for group, rows in ran.groupby("group", sort=True):
        keys = rows.apply(setup_key, axis=1)
        means = rows.groupby(keys)["score"].mean()
        means = means if mode == "max" else -means
        best = means.sort_values(ascending=False, kind="stable", na_position="last").index[0]
        out[group] = _ranked(rows[keys == best], mode)
    return out


def complete(rows: pd.DataFrame) -> pd.Series:
    """Trials that count as seeds: ran every epoch (or diverged) and did not error."""
    return (rows["status"] != "ERROR") & (rows["diverged"] | (rows["epochs_run"] >= rows["epochs"].astype(int)))


def compared_value(summary: pd.DataFrame) -> str:
    """The column that seed statistics and comparisons use: TEST_AT_VAL, or the baseline study's best test acc
    (BASELINE_SCORE) where no trial has a validation split."""
    validated = TEST_AT_VAL in summary and summary[TEST_AT_VAL].notna().any()  # any validation at all
    return TEST_AT_VAL if validated else BASELINE_SCORE


def best_table(summary: pd.DataFrame, mode: str = "max") -> pd.DataFrame:
    """One row per group from its best trial, with the group's counts and its best setup's seed statistics."""
    value = compared_value(summary)
    rows = []
    for group, seeds in best_setups(summary, mode).items():
        best = seeds.iloc[0]
        members = summary[summary["group"] == group]
        s = stats.summarize(seeds.loc[complete(seeds), value])
        rows.append({
            "group": group, "stratum": best["stratum"], "norm": best["norm"], "batch_size": int(best["batch_size"]),
            "train_acc_last": best["train_acc_last"], "best_test_acc": best["best_test_acc"],
            "best_test_loss": best["best_test_loss"], "l1": _num(best["l1"]), "l2": _num(best["l2"]),
            "best_val_acc": best["best_val_acc"], TEST_AT_VAL: best[TEST_AT_VAL],
            "best_val_epoch": best["best_val_epoch"],
            "epochs_run": int(best["epochs_run"]), "epochs": int(best["epochs"]), "trial_id": best["trial_id"],
            "score": best["score"], "trials": len(members), "diverged": int(members["diverged"].sum()),
            "errored": int((members["status"] == "ERROR").sum()), "seeds": s.n,
            "mean": s.mean, "std": s.std, "ci_low": s.low, "ci_high": s.high,
        })
    table = pd.DataFrame(rows, columns=TABLE_KEYS)
    if table.empty:
        return table
    key = table["score"] if mode == "max" else -table["score"]
    return (table.assign(_key=key).sort_values(["_key", "group"], ascending=[False, True], na_position="last",
                                               kind="stable").drop(columns="_key").reset_index(drop=True))


TABLE_KEYS = ["group", "stratum", "norm", "batch_size", "train_acc_last", "best_test_acc", "best_test_loss", "l1",
              "l2", "best_val_acc", TEST_AT_VAL, "best_val_epoch", "epochs_run", "epochs", "trial_id", "score",
              "trials", "diverged", "errored", "seeds", "mean", "std", "ci_low", "ci_high"]


# -- comparisons -------------------------------------------------------------------------------------
def comparisons(summary: pd.DataFrame, mode: str = "max") -> pd.DataFrame:
    """Welch's t-test between every two norms with the same regularization (and batch size), over the seeds
    of each group's best setup: on accuracy (the compared value) and on the lowest test loss, each p also
    Holm-adjusted over every test of the table (the family this report tests)."""
    value = compared_value(summary)
    setups = best_setups(summary, mode)
    order = group_order(summary)
    tests = []
    groups = summary.drop_duplicates("group").set_index("group")
    first = {s: min(order[g] for g in groups.index[groups["stratum"] == s]) for s in groups["stratum"].unique()}
    strata = sorted(first, key=first.get)
    for metric, column, lower in ((COMPARED[value], value, False), (COMPARED[LOSS], LOSS, True)):
        for stratum in strata:
            names = sorted((g for g in groups.index[groups["stratum"] == stratum] if g in setups), key=order.get)
            for a, b in combinations(names, 2):
                a_seeds, b_seeds = (setups[g].loc[complete(setups[g]), column] for g in (a, b))
                c = stats.compare(a_seeds, b_seeds, a, b, lower_is_better=lower,
                                  what="test loss" if lower else "accuracy")
                tests.append((metric, stratum, c))
    rows = [{"metric": metric, "stratum": stratum, "a": c.a, "b": c.b, "n_a": c.n_a, "n_b": c.n_b,
             "mean_a": c.mean_a, "mean_b": c.mean_b, "diff": c.diff, "diff_low": c.low, "diff_high": c.high,
             "t": c.t, "df": c.df, "p": c.p, "significant": c.significant, "p_holm": c.p_holm,
             "significant_holm": bool(c.p_holm < stats.ALPHA), "verdict": c.verdict}
            for (metric, stratum, _), c in zip(tests, stats.adjust(c for _, _, c in tests))]
    return pd.DataFrame(rows, columns=COMPARISON_KEYS)


LOSS = "best_test_loss"  # the loss that comparisons test: the lowest test loss over epochs (the baseline study's)
COMPARED = {TEST_AT_VAL: "test acc @ val epoch", BASELINE_SCORE: "baseline: best test acc",
            LOSS: "baseline: best test loss"}
COMPARISON_KEYS = ["stratum", "a", "b", "n_a", "n_b", "mean_a", "mean_b", "diff", "diff_low", "diff_high", "t", "df",
                   "p", "significant", "verdict", "metric", "p_holm", "significant_holm"]


def comparison_note(comparisons: pd.DataFrame) -> str:
    """How to read the comparisons: the test, the two measures, and the family Holm corrects over."""
    m = int(comparisons["p"].notna().sum()) if len(comparisons) else 0
    return (f"Comparisons: Welch's t-test, two-sided, alpha = {stats.ALPHA}, on accuracy and on the lowest test loss "
            f"over epochs (lower is better); 'Holm p' is Holm-adjusted over the {m} testable comparisons of this "
            "table, both accuracy and loss, and the verdicts are judged on it; 'seeds' are the seeds of each "
            "group's best setup.")


# -- cost --------------------------------------------------------------------------------------------
def cost(summary: pd.DataFrame, cpus: float = 1.0, gpus: float = 0.0) -> pd.DataFrame:
    """Per group and in all: trials, epochs run, epochs to run every trial to its end, epochs saved by early
    stopping (finished, undiverged trials only), wall seconds of the trials, CPU- and GPU-seconds."""
    rows = []
    order = group_order(summary)
    for group, g in sorted(summary.groupby("group"), key=lambda kv: order[kv[0]]) + [("All groups", summary)]:
        run = int(g["epochs_run"].sum())
        full = int(g["epochs"].astype(int).sum())
        saved = int((g["epochs"].astype(int) - g["epochs_run"])[g["stopped_early"]].sum())
        wall = float(g["wall_s"].sum())
        per_epoch = wall / run if run else NAN
        rows.append({"group": group, "trials": len(g), "stopped_early": int(g["stopped_early"].sum()),
                     "diverged": int(g["diverged"].sum()), "errored": int((g["status"] == "ERROR").sum()),
                     "epochs_run": run, "epochs_full": full, "epochs_saved": saved,
                     "wall_s": wall, "cpu_s": wall * cpus, "gpu_s": wall * gpus,
                     "saved_s": saved * per_epoch if saved else 0.0})
    return pd.DataFrame(rows, columns=COST_KEYS)


COST_KEYS = ["group", "trials", "stopped_early", "diverged", "errored", "epochs_run", "epochs_full", "epochs_saved",
             "wall_s", "cpu_s", "gpu_s", "saved_s"]


def searched(trials: pd.DataFrame, spec: SearchSpec | None = None) -> list[tuple[str, tuple | None]]:
    """The hyperparameters the search varied, with their condition ('groups', ('norm', 'group')) if any:
    the spec's sampled keys and grid keys, else every config key whose value differs between trials."""
    names: list[tuple[str, tuple | None]] = []
    for p in spec.params if spec else ():
        if p.kind != "const":
            names.append((p.name, tuple(p.when) if p.when else None))
    for row in spec.grid if spec else ():
        for k in row:
            if k not in [n for n, _ in names] and varies(trials, k):
                names.append((k, None))
    if not spec:
        names = [(k, None) for k in DEFAULTS if k not in NOT_REPLICATE_KEYS and varies(trials, k)]
    return [(k, w) for k, w in names if k != "seed" and k in trials]


# -- the whole report --------------------------------------------------------------------------------
@dataclass
class Report:
    title: str
    facts: list[tuple[str, str]]  # (label, value) lines about the experiment
    table: pd.DataFrame
    comparisons: pd.DataFrame
    cost: pd.DataFrame
    trials: pd.DataFrame  # every trial, one row each, for display
    summary: pd.DataFrame  # every trial with all its config keys and metrics (see summarize_trials)
    notes: list[str]  # how to read the table
    missing: list[str]  # what the folder lacks
    compared_value: str  # the column compared across seeds and groups (compared_value(summary))
    scheduler: str = "asha"
    searched: list[tuple[str, tuple | None]] = field(default_factory=list)
    metric: str = "val_acc"  # what ranked the trials (the experiment's metric when it was recorded)


def column_notes(value: str) -> list[str]:
    """How to read the 'baseline:' columns and the compared column ``value`` (see compared_value)."""
    notes = ["Columns marked 'baseline:' follow the baseline study's convention: 'best train acc' is the running "
             "training accuracy of the last epoch, 'best test acc' and 'best test loss' are the best over all epochs "
             "on the test set. The test set picks that epoch, so these numbers flatter."]
    if value == TEST_AT_VAL:
        notes.append(f"'{COMPARED[TEST_AT_VAL].capitalize()}' is the test accuracy at the epoch with the best "
                     "validation accuracy (the validation-chosen epoch); seed statistics and comparisons use it.")
    else:
        notes.append("There is no validation split (val_size 0), so seed statistics and comparisons use the "
                     "baseline study's best test accuracy over epochs, which flatters.")
    return notes


def build(trials: pd.DataFrame, epochs: pd.DataFrame, *, title: str = "experiment", metric: str = "val_acc",
          mode: str = "max", cpus: float = 1.0, gpus: float = 0.0, scheduler: str = "asha",
          spec: SearchSpec | None = None, facts: list[tuple[str, str]] | None = None,
          missing: list[str] | None = None) -> Report:
    """The report of an experiment given as DataFrames (see tune_norm.experiment for their columns)."""
    metric, mode = selection(epochs, metric, mode)
    summary = summarize_trials(trials, epochs, metric, mode)
    table = best_table(summary, mode)
    value = compared_value(summary)
    notes = [
        f"One row per group; its trial is the group's best by {metric} ({'highest' if mode == 'max' else 'lowest'} "
        "over epochs, averaged over seeds where a setup has several); rows are sorted the same way.",
        *column_notes(value),
    ]
    compared = comparisons(summary, mode)
    notes.append(comparison_note(compared))
    diverged = int(summary["diverged"].sum())
    if diverged:
        notes.append(f"{diverged} {'trial' if diverged == 1 else 'trials'} diverged (non-finite loss) and stopped "
                     "there; the epoch that diverged counts as 0% accuracy, and its loss is left out of the lowest "
                     "losses.")
    missing = list(missing or [])
    if not len(table):
        missing.append("no trial has reported an epoch yet, so there is nothing to compare")
    return Report(title=title, facts=list(facts or []), table=table, comparisons=compared,
                  cost=cost(summary, cpus, gpus), trials=trial_table(summary, table, mode, spec), summary=summary,
                  notes=notes, missing=missing, compared_value=value, scheduler=scheduler,
                  searched=searched(trials, spec), metric=metric)


def experiment_facts(exp) -> list[tuple[str, str]]:
    """(label, value) lines about a tune_norm.experiment.Experiment: where, what, how many, how long, with what."""
    spec, prov, trials, epochs = exp.spec, exp.provenance, exp.trials, exp.epochs
    counts = trials["status"].value_counts()
    statuses = ", ".join(f"{n} {s.lower()}" for s, n in counts.items())
    planned = f" of {exp.planned} planned" if exp.planned else ""
    where = ("Folders", ", ".join(map(str, exp.sources))) if exp.sources else ("Folder", str(exp.path))
    facts = [where, ("Trials", f"{len(trials)}{planned} ({statuses or 'none'})")]
    if spec:
        sched = spec.scheduler
        how = f"{spec.search.type} search, {sched.type} scheduler"
        if sched.type == "asha":
            how += f" (grace period {sched.grace_period}, reduction factor {sched.reduction_factor})"
        facts.append(("Search", how))
    facts.append(("Ranked by", f"{exp.metric} ({exp.mode})"))
    cpus, gpus = exp.resources
    facts.append(("Resources per trial", f"{cpus:g} CPU, {gpus:g} GPU"))
    if len(epochs) and {"timestamp", "time_this_iter_s"} <= set(epochs.columns):
        end = pd.to_numeric(epochs["timestamp"], errors="coerce")
        start = end - pd.to_numeric(epochs["time_this_iter_s"], errors="coerce")
        facts.append(("Wall time", f"{end.max() - start.min():,.0f} s from the first trial's start to the last result"))
    for key, label in (("command", "Command"), ("git_commit", "Git commit"), ("started", "Started")):
        if prov.get(key):
            facts.append((label, str(prov[key])))
    if prov.get("versions"):
        facts.append(("Versions", ", ".join(f"{k} {v}" for k, v in prov["versions"].items())))
    return facts


def from_experiment(exp) -> Report:
    """The report of a loaded tune_norm.experiment.Experiment."""
    cpus, gpus = exp.resources
    return build(exp.trials, exp.epochs, title=exp.name, metric=exp.metric, mode=exp.mode, cpus=cpus, gpus=gpus,
                 scheduler=exp.scheduler, spec=exp.spec, facts=experiment_facts(exp), missing=exp.missing)


TRIAL_METRICS = ("epochs_run", "epochs", "best_val_acc", TEST_AT_VAL, "best_val_epoch", "best_test_acc",
                 "best_test_loss", "train_acc_last", "diverged", "stopped_early", "wall_s", "error")


def trial_table(summary: pd.DataFrame, table: pd.DataFrame, mode: str,
                spec: SearchSpec | None = None) -> pd.DataFrame:
    """Every trial, grouped in the main table's order and best first within a group."""
    order = {g: i for i, g in enumerate(table["group"])}
    params = ["norm", "groups", "l1", "l2", "lr", "batch_size", "seed"]
    params += [k for k, _ in searched(summary, spec) if k not in params]
    ranked = _ranked(summary, mode)
    ranked = ranked.assign(_g=ranked["group"].map(order).fillna(len(order))).sort_values("_g", kind="stable")
    keys = ["trial_id", "group", "status", *params, *TRIAL_METRICS]
    return ranked.reindex(columns=keys).reset_index(drop=True)
