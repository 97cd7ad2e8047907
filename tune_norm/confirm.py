"""Confirmation: a search's top configs and a baseline rerun over fresh seeds as their own experiment, side by side."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from . import stats, storage
from .config import TrainConfig, from_mapping
from .errors import UserError
from .experiment import Experiment, restorable
from .render import markdown_table
from .report import (
    COMPARED,
    LOSS,
    TEST_AT_VAL,
    complete,
    setup_key,
    summarize_trials,
)
from .retrain import as_pick, ranking
from .space import Scheduler, Searcher, SearchSpec, check_spec

BASELINES = ("recipe", "none")  # recipe: the baseline study's BatchNorm recipe (TrainConfig defaults); none: none
OLD_BASELINES = {"seed": "recipe"}  # earlier names, still accepted (not listed in --help)
# the baseline takes these from the reference config
LIKE_FOR_LIKE = ("val_size", "subset", "full_eval", "epochs", "channels_last", "fast_dropout", "amp")
FIRST_SEED = 1001  # fresh seeds start here (then 2001, 3001, ... where the search used one of them)
PLAN_FILE = "confirm.json"  # in the confirmation's experiment folder: source, trials, configs, seeds
RESULT_FILE = "confirmation.md"  # the side-by-side tables, written after the run
DEFAULTS = TrainConfig().as_dict()
ACCURACY = COMPARED[TEST_AT_VAL]  # the accuracy the tests compare, by its report label ('test acc @ val epoch')


@dataclass(frozen=True)
class Candidate:
    """One row of the confirmation: a config of the source search (all its seeds there), or the baseline."""

    label: str  # "#1", "#2", ... by the source's ranking, or "baseline"
    config: dict[str, Any]  # TrainConfig keys without seed (and device/threads)
    trial_ids: tuple[str, ...] = ()  # the source trials that ran this config (one per seed), best first
    score: float = math.nan  # mean over those trials of the source's metric at its best epoch
    seeds: tuple[int, ...] = ()  # the seeds the source ran it with

    @property
    def key(self) -> tuple:
        return setup_key({**DEFAULTS, **self.config})


@dataclass(frozen=True)
class Plan:
    """What a confirmation runs: the candidates and the baseline, each over the same fresh seeds."""

    source: str  # the source experiment's folder (or URI)
    metric: str  # what ranked the source's trials
    mode: str
    candidates: tuple[Candidate, ...]
    baseline: Candidate | None
    baseline_kind: str
    seeds: tuple[int, ...]
    spec: SearchSpec = field(repr=False)

    @property
    def rows(self) -> list[Candidate]:
        return [*self.candidates, *([self.baseline] if self.baseline else [])]

    def record(self) -> dict[str, Any]:
        """The plan as JSON-able provenance (confirm.json)."""
        return {"source": self.source, "metric": self.metric, "mode": self.mode, "baseline": self.baseline_kind,
                "seeds": list(self.seeds), "experiment": self.spec.name,
                "rows": [{**asdict(c), "trial_ids": list(c.trial_ids), "seeds": list(c.seeds),
                          "score": None if math.isnan(c.score) else c.score} for c in self.rows]}


# -- choosing ---------------------------------------------------------------------------------------
def top_configs(exp: Experiment, top: int) -> tuple[str, str, list[Candidate]]:
    """(metric, mode, the ``top`` best distinct configs) of a search, ranked as ``retrain.pick`` ranks trials
    (the experiment's metric at each trial's best epoch; diverged trials and trials without a result never
    count). Trials that differ only in seed are one config, scored by the mean over its seeds; ties go to the
    config whose best trial id sorts first."""
    if top < 1:
        raise UserError(f"--top must be at least 1, got {top}")
    metric, mode, summary = ranking(exp)
    eligible = summary[summary["eligible"]]
    configs: dict[tuple, list[Any]] = {}
    for _, row in eligible.iterrows():
        configs.setdefault(setup_key(row), []).append(row)
    if len(configs) < top:
        raise UserError(f"{exp.path} has {len(configs)} distinct config{'' if len(configs) == 1 else 's'} with a "
                        f"finite {metric} (diverged trials left out), fewer than --top {top}")
    sign = 1 if mode == "max" else -1
    ordered = []
    for rows in configs.values():
        rows = sorted(rows, key=lambda r: (-sign * float(r["score"]), str(r["trial_id"])))
        mean = sum(float(r["score"]) for r in rows) / len(rows)
        ordered.append((-sign * mean, str(rows[0]["trial_id"]), rows))
    ordered.sort(key=lambda t: (t[0], t[1]))
    out = []
    for i, (_, _, rows) in enumerate(ordered[:top]):
        picks = [as_pick(r, metric, best=True) for r in rows]
        config = {k: v for k, v in picks[0].config.items() if k != "seed"}
        out.append(Candidate(label=f"#{i + 1}", config=config, trial_ids=tuple(p.trial_id for p in picks),
                             score=sum(p.score for p in picks) / len(picks),
                             seeds=tuple(int(p.config.get("seed", DEFAULTS["seed"])) for p in picks)))
    return metric, mode, out


def baseline(kind: str, reference: dict[str, Any]) -> Candidate | None:
    """The baseline row: ``recipe`` is the baseline study's BatchNorm recipe (TrainConfig defaults) with the
    reference config's validation split, subset, epochs and implementation switches, so that it runs like for like."""
    kind = check_baseline(kind)
    if kind == "none":
        return None
    return Candidate(label="baseline", config={k: reference[k] for k in LIKE_FOR_LIKE if k in reference})


def fresh_seeds(count: int, used: set[int], first: int | None = None) -> tuple[int, ...]:
    """``count`` seeds the source never used: first, first + 1, ... (default 1001.., else 2001.., ...)."""
    if count < 2:
        raise UserError(f"--seeds must be at least 2 (a spread needs two seeds), got {count}")
    if first is not None:
        seeds = tuple(range(first, first + count))
        clash = sorted(used & set(seeds))
        if clash:
            raise UserError(f"--first-seed {first} gives seed {clash[0]}, which the search already used; "
                            "a confirmation needs fresh seeds")
        return seeds
    start = FIRST_SEED
    while used & set(range(start, start + count)):
        start += 1000
    return tuple(range(start, start + count))


def check_baseline(kind: str) -> str:
    """``kind`` checked, under its current name (``seed`` was ``recipe``'s name)."""
    kind = OLD_BASELINES.get(kind, kind)
    if kind not in BASELINES:
        raise UserError(f"--baseline must be one of {', '.join(BASELINES)}, got {kind!r}")
    return kind


def plan(exp: Experiment, *, top: int, seeds: int, baseline_kind: str = "recipe", first_seed: int | None = None,
         name: str | None = None) -> Plan:
    """Everything a confirmation will run, checked before any work: the top configs, the baseline, fresh seeds
    and the grid SearchSpec (FIFO, every config to its own epochs) that runs them."""
    if seeds < 2:
        raise UserError(f"--seeds must be at least 2 (a spread needs two seeds), got {seeds}")
    baseline_kind = check_baseline(baseline_kind)
    if name is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise UserError(f"--name takes letters, digits, - and _ only, got {name!r}")
    metric, mode, candidates = top_configs(exp, top)
    no_val = [c for c in candidates if int(c.config.get("val_size", DEFAULTS["val_size"])) == 0]
    if no_val:
        raise UserError(f"{exp.path}'s config {no_val[0].label} (trial {no_val[0].trial_ids[0]}) has val_size 0 "
                        "(the baseline study's convention), so no validation split can choose its epoch; confirm a "
                        "search that held out a validation split")
    base = baseline(baseline_kind, {**DEFAULTS, **candidates[0].config})
    used = {int(s) for s in pd.to_numeric(exp.trials.get("seed", pd.Series(dtype=float)), errors="coerce").dropna()}
    chosen = fresh_seeds(seeds, used, first_seed)
    rows: list[dict[str, Any]] = []
    for c in candidates + ([base] if base else []):
        if c.key not in [setup_key({**DEFAULTS, **r}) for r in rows]:  # a baseline equal to a candidate runs once
            rows.append(dict(c.config))
    for row in rows:
        from_mapping({**row, "seed": chosen[0]})
    source = exp.spec or SearchSpec.from_dict({})  # without a record: the defaults
    spec = SearchSpec(
        name=name or _name(f"{exp.path.name}-confirm"),
        params=(),
        grid=tuple(rows),
        seeds=chosen,
        metric=metric,
        mode=mode,
        num_samples=1,
        scheduler=Scheduler(type="fifo"),
        search=Searcher(type="grid", max_concurrent=source.search.max_concurrent),
        resources=source.resources,
        max_failures=source.max_failures,
        num_to_keep=source.num_to_keep,
        epoch_timeout_s=source.epoch_timeout_s,
        description=(f"confirmation of {exp.path}: configs of trials "
                     f"{', '.join(c.trial_ids[0] for c in candidates)}"
                     f"{' and the baseline recipe' if base else ''} over seeds {chosen[0]}-{chosen[-1]}"),
        source=f"confirmation of {exp.path}",
    )
    return Plan(source=str(exp.path), metric=metric, mode=mode, candidates=tuple(candidates), baseline=base,
                baseline_kind=baseline_kind, seeds=chosen, spec=check_spec(spec))


def _name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", text)


def write_plan(p: Plan, folder: str) -> None:
    """confirm.json in the confirmation's folder; a resumed confirmation must plan the same runs."""
    path = storage.path(folder) / PLAN_FILE
    record = p.record()
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = {}
        same = ("rows", "seeds", "source")
        if {k: old.get(k) for k in same} != {k: record[k] for k in same}:
            raise UserError(f"{path} planned other configs or seeds than this command would run now; "
                            "confirm into another --storage")
    storage.path(folder).mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


# -- the source search's epochs ---------------------------------------------------------------------
def source_epochs(exp: Experiment, threshold: float) -> pd.DataFrame:
    """Per source trial: epochs it ran against its full budget, whether the scheduler stopped it early, its best
    val acc and the first epoch whose val acc reached ``threshold`` (NaN: never)."""
    _, mode, summary = ranking(exp)
    first = first_epochs(exp.epochs, threshold)
    out = pd.DataFrame({
        "trial_id": summary["trial_id"].astype(str), "status": summary["status"],
        "epochs_run": summary["epochs_run"].astype(int), "epochs": summary["epochs"].astype(int),
        "stopped_early": summary["stopped_early"].astype(bool), "diverged": summary["diverged"].astype(bool),
        "best_val_acc": summary["best_val_acc"], "score": summary["score"],
    })
    out["first_epoch_at_threshold"] = out["trial_id"].map(first).astype(float)
    key = out["score"] if mode == "max" else -out["score"]
    return (out.assign(_k=key).sort_values(["_k", "trial_id"], ascending=[False, True], na_position="last")
            .drop(columns="_k").reset_index(drop=True))


def first_epochs(epochs: pd.DataFrame, threshold: float) -> dict[str, float]:
    """trial id -> the first epoch whose val_acc is at least ``threshold`` (trials that never do are absent)."""
    if epochs.empty or "val_acc" not in epochs:
        return {}
    val = pd.to_numeric(epochs["val_acc"], errors="coerce")
    hit = epochs[val >= threshold]
    return {str(t): float(pd.to_numeric(g["epoch"]).min()) for t, g in hit.groupby("trial_id")}


# -- results ----------------------------------------------------------------------------------------
@dataclass
class Result:
    """The confirmation read back: one row per candidate (and the baseline), the tests, the verdict lines."""

    rows: pd.DataFrame
    comparisons: pd.DataFrame
    verdicts: list[str]
    source: pd.DataFrame  # source_epochs
    threshold: float


def results(p: Plan, confirmation: Experiment, source: Experiment, threshold: float = 99.4) -> Result:
    """Each row's seeds in ``confirmation`` (its complete trials), their test acc at the validation-chosen epoch
    and lowest test loss, and Welch tests of every candidate against the baseline (without one: against #1),
    Holm-corrected over the whole family, accuracy and loss together."""
    summary = summarize_trials(confirmation.trials, confirmation.epochs, p.metric, p.mode)
    keys = summary.apply(setup_key, axis=1) if len(summary) else pd.Series(dtype=object)
    first = first_epochs(confirmation.epochs, threshold)
    seeds: dict[str, pd.DataFrame] = {}
    records = []
    for c in p.rows:
        mine = summary[(keys == c.key) & summary["seed"].astype(int).isin(p.seeds)] if len(summary) else summary
        done = mine[complete(mine)] if len(mine) else mine
        seeds[c.label] = done
        acc, loss = stats.summarize(done[TEST_AT_VAL]), stats.summarize(done[LOSS])
        reached = [first[t] for t in done["trial_id"].astype(str) if t in first]
        records.append({
            "label": c.label, "config": describe(c.config), "source_trials": ", ".join(c.trial_ids),
            "source_score": c.score, "seeds": acc.n, "planned": len(p.seeds),
            "acc_mean": acc.mean, "acc_low": acc.low, "acc_high": acc.high,
            "loss_mean": loss.mean, "loss_low": loss.low, "loss_high": loss.high,
            "reached": len(reached), "first_epoch_median": float(pd.Series(reached).median()) if reached else math.nan,
        })
    reference = p.baseline or p.candidates[0]
    tests = []
    for c in p.rows:
        if c is reference:
            continue
        a, b = seeds[c.label], seeds[reference.label]
        tests.append(stats.compare(a[TEST_AT_VAL], b[TEST_AT_VAL], c.label, reference.label, what="accuracy"))
        tests.append(stats.compare(a[LOSS], b[LOSS], c.label, reference.label, lower_is_better=True,
                                   what="test loss"))
    adjusted = stats.adjust(tests)
    comparisons = pd.DataFrame([{
        "candidate": c.a, "against": c.b, "measure": ACCURACY if c.what == "accuracy" else "lowest test loss",
        "n_a": c.n_a, "n_b": c.n_b, "mean_a": c.mean_a, "mean_b": c.mean_b, "diff": c.diff, "diff_low": c.low,
        "diff_high": c.high, "p": c.p, "p_holm": c.p_holm,
        "better": _better(c), "verdict": c.verdict} for c in adjusted])
    return Result(rows=pd.DataFrame(records), comparisons=comparisons, verdicts=_verdicts(p, comparisons),
                  source=source_epochs(source, threshold), threshold=threshold)


def _better(c: stats.Comparison) -> bool:
    """The candidate (side a) is better than the reference after Holm's correction."""
    if not math.isfinite(c.p_holm) or c.p_holm >= stats.ALPHA:
        return False
    return c.diff < 0 if c.lower_is_better else c.diff > 0


def _verdicts(p: Plan, comparisons: pd.DataFrame) -> list[str]:
    against = "the baseline recipe" if p.baseline else f"{p.candidates[0].label} (the search's best)"
    if comparisons.empty:
        return ["Nothing to compare: one config and no baseline."]
    lines = []
    phrases = ((ACCURACY, "{} beats {} on test accuracy at the validation-chosen epoch"),
               ("lowest test loss", "{} has a lower test loss (lowest over epochs) than {}"))
    for measure, phrase in phrases:
        rows = comparisons[comparisons["measure"] == measure]
        wins = rows[rows["better"]]
        if len(wins):
            lines.append("; ".join(f"{phrase.format(r.candidate, against)}: {r.diff:+.4g} "
                                   f"({stats.format_p(r.p)}, Holm {stats.format_p(r.p_holm)})"
                                   for r in wins.itertuples()) + ".")
        else:
            lines.append(f"{phrase.format('No candidate', against)} after Holm's correction "
                         f"(alpha {stats.ALPHA}, {len(comparisons)} tests).")
    return lines


def describe(config: dict[str, Any]) -> str:
    """The config by what differs from the baseline study's recipe ('norm group, groups 2, lr 0.0213'),
    like-for-like keys left out; 'the baseline recipe' when nothing differs."""
    full = {**DEFAULTS, **config}
    parts = []
    for k, v in full.items():
        if k in LIKE_FOR_LIKE or k in ("seed", "device", "threads") or v == DEFAULTS[k]:
            continue
        if k == "groups" and full["norm"] != "group":
            continue
        parts.append(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}")
    return ", ".join(parts) or "the baseline recipe (BatchNorm, lr 0.015, batch 64)"


# -- text -------------------------------------------------------------------------------------------
def _ci(mean: float, low: float, high: float, digits: int) -> str:
    if not math.isfinite(mean):
        return ""
    if not math.isfinite(low):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _p(value: float) -> str:
    return "" if not math.isfinite(value) else stats.format_p(value).removeprefix("p ").lstrip("= ")


def render(p: Plan, r: Result, folder: str, *, all_source_trials: bool = False) -> str:
    """The side-by-side tables as markdown: rows, tests, verdicts, and the source search's epochs."""
    thr = f"{r.threshold:g}%"
    rows = pd.DataFrame({
        "": r.rows["label"],
        "Config": r.rows["config"],
        "Source trials": r.rows["source_trials"],
        f"Source {p.metric}": [f"{v:.4g}" if math.isfinite(v) else "" for v in r.rows["source_score"]],
        "Seeds": [f"{n}/{m}" for n, m in zip(r.rows["seeds"], r.rows["planned"])],
        f"{ACCURACY.capitalize()}, mean [95% CI]": [_ci(*v, 2) for v in
                                                zip(r.rows["acc_mean"], r.rows["acc_low"], r.rows["acc_high"])],
        "Lowest test loss, mean [95% CI]": [_ci(*v, 4) for v in
                                            zip(r.rows["loss_mean"], r.rows["loss_low"], r.rows["loss_high"])],
        f"Val acc ≥ {thr}: seeds, median first epoch": [
            f"{n}/{s}" + (f", epoch {e:g}" if n else "") for n, s, e in
            zip(r.rows["reached"], r.rows["seeds"], r.rows["first_epoch_median"])],
    })
    tests = pd.DataFrame({
        "Candidate": r.comparisons.get("candidate", []), "vs": r.comparisons.get("against", []),
        "Measure": r.comparisons.get("measure", []),
        "Difference [95% CI]": [
            "" if not math.isfinite(d) else (f"{d:+.{k}f}" if not math.isfinite(lo) else
                                             f"{d:+.{k}f} [{lo:+.{k}f}, {hi:+.{k}f}]")
            for d, lo, hi, k in zip(r.comparisons.get("diff", []), r.comparisons.get("diff_low", []),
                                    r.comparisons.get("diff_high", []),
                                    [2 if m == ACCURACY else 4 for m in r.comparisons.get("measure", [])])],
        "Welch p": [_p(v) for v in r.comparisons.get("p", [])],
        "Holm p": [_p(v) for v in r.comparisons.get("p_holm", [])],
        "Verdict": r.comparisons.get("verdict", []),
    })
    src = r.source
    ran, full = int(src["epochs_run"].sum()), int(src["epochs"].sum())
    shown = src if all_source_trials or len(src) <= 20 else src[src["trial_id"].isin(
        [t for c in p.candidates for t in c.trial_ids])]
    source_table = pd.DataFrame({
        "Trial": shown["trial_id"], "Status": shown["status"],
        "Epochs run": [f"{a}/{b}" for a, b in zip(shown["epochs_run"], shown["epochs"])],
        "Stopped early": ["yes" if s else "" for s in shown["stopped_early"]],
        "Diverged": ["yes" if d else "" for d in shown["diverged"]],
        "Best val acc": [f"{v:.2f}" if math.isfinite(v) else "" for v in shown["best_val_acc"]],
        f"First epoch val acc ≥ {thr}": [f"{v:g}" if math.isfinite(v) else "never"
                                           for v in shown["first_epoch_at_threshold"]],
    })
    reached = src["first_epoch_at_threshold"].dropna()
    base = ("the baseline study's BatchNorm recipe as the baseline" if p.baseline else "no baseline (compared with #1)")
    lines = [
        f"# Confirmation of {p.source}",
        "",
        f"Top {len(p.candidates)} distinct configs by {p.metric} ({p.mode}) and {base}, each rerun with fresh seeds "
        f"{', '.join(map(str, p.seeds))} to its full epochs (FIFO, no early stopping); experiment {folder}.",
        ("Compared on test accuracy at the epoch with the best validation accuracy, and on the lowest test loss; "
         "Welch's t-test, two-sided, Holm-corrected over all the tests below."),
        "",
        markdown_table(rows),
        "",
        markdown_table(tests),
        "",
        *r.verdicts,
        "",
        f"## Source search: epochs run against the full budget, first epoch with val acc ≥ {thr}",
        "",
        (f"{len(src)} trials ran {ran} of {full} epochs ({100 * ran / full:.0f}% of the full budget; "
         f"{int(src['stopped_early'].sum())} stopped early); {len(reached)} reached {thr} on validation"
         + (f", the first at epoch {reached.min():g}" if len(reached) else "") + "."),
        "",
        markdown_table(source_table),
    ]
    if len(shown) < len(src):
        lines += ["", f"(The candidates' trials only; all {len(src)} trials are in {RESULT_FILE}.)"]
    return "\n".join(lines) + "\n"


def write_result(p: Plan, r: Result, folder: str) -> Path | storage.UriPath:
    """confirmation.md in the confirmation's folder, with every source trial."""
    path = storage.path(folder) / RESULT_FILE
    path.write_text(render(p, r, folder, all_source_trials=True))
    return path


# -- the whole command ------------------------------------------------------------------------------
def run(source_path: str, *, top: int = 3, seeds: int = 5, baseline_kind: str = "recipe", first_seed: int | None = None,
        threshold: float = 99.4, name: str | None = None, storage_path: str | None = None, resume: bool = False,
        data_root: str, num_cpus: int | None = None, verbose: int = 0) -> tuple[Plan, Result, str]:
    """Plan (every check before any work), record the plan, run the confirmation through the normal search path
    as its own experiment, and read it back side by side. Returns (plan, result, experiment folder)."""
    from . import data, experiment, search

    if not 0 < threshold <= 100:
        raise UserError(f"--threshold is a validation accuracy in percent, in (0, 100]; got {threshold:g}")
    check_baseline(baseline_kind)
    source = experiment.load(source_path)
    p = plan(source, top=top, seeds=seeds, baseline_kind=baseline_kind, first_seed=first_seed, name=name)
    folder = search.experiment_path(p.spec, storage_path)
    if str(storage.path(folder)) == str(source.path):
        raise UserError(f"{folder} is the source experiment; confirm into another --storage")
    if resume and not restorable(folder):
        raise UserError(f"{folder} holds no confirmation to resume; run without --resume to start it")
    if not resume and restorable(folder):
        raise UserError(f"{folder} already holds an experiment; pass --resume to continue (or reread) it, "
                        "or choose another --storage")
    data.load_raw(Path(data_root))  # missing or corrupt data fails here, before anything is written
    write_plan(p, folder)
    search.run(p.spec, data_root=data_root, storage=folder, resume=resume, num_cpus=num_cpus, verbose=verbose)
    r = results(p, experiment.load(folder), source, threshold)
    write_result(p, r, folder)
    return p, r, folder
