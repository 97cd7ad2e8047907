"""An experiment folder on disk (Ray's files plus ours) read into pandas DataFrames, without importing Ray."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from . import lock, storage
from .config import TrainConfig
from .errors import UserError
from .space import Resources, SearchSpec

PROVENANCE = "tune_norm.json"  # written into every experiment folder by the search
RESULTS_ROOT = Path("tune_results")  # where experiments go by default: ./tune_results/<name>
CHECKPOINT_FILE = "state.pt"  # inside each checkpoint_00000N/ folder
REPORTED_FILE = "reported.json"  # beside it in a mended checkpoint: {"epoch": the last epoch Ray's snapshot knows}
SEARCHER_GLOB = "search_gen_state-*.json"  # Ray's search generator: how many trials it made, which are live
STATE_GLOB = "experiment_state-*.json"
RESULTS = "result.json"  # Ray: one JSON object per reported epoch
PROGRESS = "progress.csv"  # Ray: the same rows as CSV
ANSI = re.compile(r"\x1b\[[0-9;]*m")
RUNNING = ("RUNNING", "PENDING", "PAUSED")  # statuses of a trial that has not finished (or was interrupted)


def flat_config(config: dict) -> dict:
    """A trial's config as TrainConfig keys: grid cells come nested under 'cell'."""
    merged = {**config.get("cell", {}), **{k: v for k, v in config.items() if k != "cell"}}
    return {k: v for k, v in merged.items() if v is not None}  # None: a conditional key that does not apply


def full_config(config: dict) -> dict:
    """The flat config with TrainConfig defaults for every key the trial did not set."""
    return {**TrainConfig().as_dict(), **flat_config(config)}


@dataclass
class Experiment:
    """Everything on disk about one search.

    ``trials``: one row per trial (trial_id, status, dir, error, checkpoint, num_failures and every config key).
    ``epochs``: one row per reported epoch (trial_id plus the metrics in result.json).
    ``missing``: sentences naming what is absent (trials with no results, errored or unfinished trials).
    """

    path: Path | storage.UriPath
    provenance: dict[str, Any]
    trials: pd.DataFrame
    epochs: pd.DataFrame
    missing: list[str] = field(default_factory=list)
    sources: list[Path] = field(default_factory=list)  # the folders pooled into this one (see pool)
    spec: SearchSpec | None = None  # the recorded search spec (default: read from provenance); None: unknown

    def __post_init__(self) -> None:
        if self.spec is None:
            self.spec = recorded_spec(self.provenance)

    @property
    def name(self) -> str:
        return str(self.spec.name if self.spec and self.spec.name else self.path.name)

    @property
    def metric(self) -> str:
        return self.spec.metric if self.spec else "val_acc"

    @property
    def mode(self) -> str:
        return self.spec.mode if self.spec else "max"

    @property
    def scheduler(self) -> str:
        return self.spec.scheduler.type if self.spec else "asha"

    @property
    def resources(self) -> tuple[float, float]:
        """(CPUs, GPUs) each trial held: the spec's CPUs and the GPU fraction the search resolved."""
        res = self.spec.resources if self.spec else Resources()
        gpus = self.provenance.get("gpus_per_trial", res.gpus_per_trial)
        return float(res.cpus_per_trial or 1.0), float(gpus or 0.0)

    @property
    def planned(self) -> int | None:
        """Trials the search meant to run: every grid cell, or num_samples; None without provenance."""
        return (self.spec.planned or None) if self.spec else None

    @property
    def data_root(self) -> str | None:
        return (self.provenance.get("settings") or {}).get("data_root")

    def checkpoint(self, trial_id: str) -> Path | None:
        row = self.trials.loc[self.trials["trial_id"] == trial_id]
        if row.empty or not row.iloc[0]["checkpoint"]:
            return None
        return storage.path(row.iloc[0]["checkpoint"])


def recorded_spec(provenance: dict[str, Any]) -> SearchSpec | None:
    """The search spec recorded in a provenance record (tune_norm.json), or None where it has none."""
    recorded = provenance.get("spec")
    return SearchSpec.from_dict(recorded) if isinstance(recorded, dict) and recorded else None


def report_folder(exp: Experiment) -> Path:
    """Where the report goes by default: EXPERIMENT/report, or ./reports/NAME (local) for an experiment in a URI."""
    return Path("reports") / exp.path.name if isinstance(exp.path, storage.UriPath) else Path(exp.path) / "report"


def is_experiment(path: Path | storage.UriPath) -> bool:
    """True where there is an experiment to read: Ray's experiment state or trial folders."""
    path = storage.path(path)
    return path.is_dir() and (any(path.glob(STATE_GLOB)) or bool(_trial_dirs(path)))


def restorable(path: str | Path | storage.UriPath) -> bool:
    """True where Ray can restore (resume) an experiment: its experiment state or its tuner.pkl is there."""
    folder = storage.path(path)
    return any(folder.glob(STATE_GLOB)) or (folder / "tuner.pkl").exists()


def newest(root: Path = RESULTS_ROOT) -> Path:
    """The most recently updated experiment folder directly under ``root``."""
    root = Path(root)
    found = [p for p in (sorted(root.iterdir()) if root.is_dir() else []) if is_experiment(p)]
    if not found:
        raise UserError(f"no experiment given and none found in {root}; pass the experiment folder")

    def updated(p: Path) -> float:
        return max([f.stat().st_mtime for f in p.glob(STATE_GLOB)] + [p.stat().st_mtime])

    return max(found, key=updated)


ORPHANED = "orphaned"  # trial folders Ray's record does not know, moved here by a resume


def orphaned_trials(path: Path) -> list[Path]:
    """Trial folders the newest experiment state does not name: trials started after Ray's last snapshot
    when the driver died. A resume does not know them, so its searcher samples new trials in their place."""
    path = storage.path(path)
    state = _state(path, [])
    if not state:
        return []
    known = {str(info["dir"]) for info in state.values() if info["dir"]}
    return [d for d in _trial_dirs(path) if d.name not in known]


def set_orphans_aside(path: Path) -> list[Path]:
    """Move orphaned trial folders into ``path/orphaned/`` (kept, not deleted) so the report counts only the
    trials of the resumed experiment. Returns where they went."""
    moved = []
    for d in orphaned_trials(path):
        target = storage.path(path) / ORPHANED / d.name
        target.parent.mkdir(exist_ok=True)
        d.rename(target)
        moved.append(target)
    return moved


def mend_checkpoints(path) -> list[str]:
    """Ray's last snapshot of the experiment names each trial's checkpoint at that moment. A trial that saved a newer
    one afterwards deleted the old one (num_to_keep), so a driver killed before the next snapshot leaves a resume
    that cannot restore that trial ("does not exist on storage anymore"): it errors and loses its epochs. Move the
    trial's newest checkpoint to the name the snapshot expects, so the trial goes on from its newest state. Returns
    the trial folders so mended."""
    folder = storage.path(path)
    mended = []
    for trial, runtime in _snapshot(folder):
        last = runtime.get("last_result") if isinstance(runtime.get("last_result"), dict) else {}
        name, logdir = last.get("checkpoint_dir_name"), trial.get("relative_logdir")
        if not name or not logdir:
            continue
        trial_dir = folder / str(logdir)
        newest = sorted(trial_dir.glob("checkpoint_*")) if trial_dir.is_dir() else []
        if newest and not (trial_dir / str(name)).exists():
            newest[-1].rename(trial_dir / str(name))
            # the epochs after the snapshot's are in the checkpoint but maybe not in result.json: the trial
            # reports them again when it resumes (search.trainable)
            (trial_dir / str(name) / REPORTED_FILE).write_text(json.dumps({"epoch": last.get("epoch")}))
            mended.append(trial_dir.name)
    return mended


def _snapshot(folder) -> list[tuple[dict, dict]]:
    """(trial, runtime) of each trial in Ray's newest experiment_state file; [] when there is none or it is
    unreadable."""
    files = sorted(folder.glob(STATE_GLOB))
    state = _read_json(files[-1]) if files else None
    return _entries(state) if isinstance(state, dict) else []


def _entries(state: dict) -> list[tuple[dict, dict]]:
    """(trial, runtime) of each parseable trial entry of an experiment_state's data."""
    out = []
    for entry in state.get("trial_data") or []:
        try:
            trial, runtime = json.loads(entry[0]), json.loads(entry[1]) if len(entry) > 1 else {}
        except (ValueError, TypeError, IndexError):
            continue
        if isinstance(trial, dict) and isinstance(runtime, dict):
            out.append((trial, runtime))
    return out


def mend_searcher(path) -> str | None:
    """Ray uploads its snapshot as separate files (experiment_state, the search generator's state, each trial's
    result.json), so a driver killed during an upload leaves them from different moments. The generator's count
    of trials made then disagrees with the trials the snapshot holds: a resume makes one trial too many or too
    few, and a trial its concurrency limiter still counts as live, but that finished, holds a slot for ever.
    Make the generator agree with the snapshot. Returns what was changed, or None. (Imports Ray: only a resume
    calls it.)"""
    import pickle

    folder = storage.path(path)
    gens = sorted(folder.glob(SEARCHER_GLOB))
    trials = _snapshot(folder)
    if not gens or not trials:
        return None
    from ray import cloudpickle  # the state holds Ray objects; Ray wrote it with cloudpickle

    state = pickle.loads(gens[-1].read_bytes())
    live = {str(t.get("trial_id")) for t, _ in trials if t.get("status") in RUNNING}
    limiter = state.get("name:ConcurrencyLimiter")
    changes = []
    if state.get("counter") != len(trials):
        changes.append(f"its searcher counted {state.get('counter')} trials made, the snapshot holds {len(trials)}")
        state["counter"] = len(trials)
    if isinstance(limiter, dict) and set(limiter.get("live_trials") or ()) != live:
        changes.append(f"its concurrency limiter held {', '.join(sorted(limiter.get('live_trials') or ())) or 'none'} "
                       f"as live, the snapshot {', '.join(sorted(live)) or 'none'}")
        limiter["live_trials"], limiter["num_unfinished_live_trials"] = live, len(live)
    if changes:
        storage.write_whole(gens[-1], cloudpickle.dumps(state))
    return "; ".join(changes) or None


def mend_results(path) -> list[str]:
    """A trial's result.json uploaded before Ray's snapshot was can lack the last epoch the snapshot records
    (a finished trial is not run again, so it would stay short). Append the snapshot's last result to it.
    Returns the trial folders so mended."""
    folder = storage.path(path)
    mended = []
    for trial, runtime in _snapshot(folder):
        last, logdir = runtime.get("last_result") or {}, trial.get("relative_logdir")
        if not logdir or not isinstance(last, dict) or not isinstance(last.get("epoch"), int):
            continue
        f = folder / str(logdir) / RESULTS
        if not f.parent.is_dir():
            continue
        text = f.read_bytes().decode("utf-8", errors="replace") if f.exists() else ""
        text = text[:text.rfind("\n") + 1]  # a cut last line (Ray was writing it) goes
        if all(result_row(line).get("epoch") != last["epoch"] for line in text.splitlines()):
            storage.write_whole(f, (text + json.dumps(last) + "\n").encode())
            mended.append(str(logdir))
    return mended


def result_row(line: str) -> dict[str, Any]:
    """One result.json line as a dict; {} for a line that is not a JSON object (cut, or not a result)."""
    try:
        row = json.loads(line)
    except ValueError:
        return {}
    return row if isinstance(row, dict) else {}


def _trial_dirs(path: Path) -> list[Path]:
    return sorted(d for d in path.iterdir() if d.is_dir() and d.name != ORPHANED and (
        d.name.startswith("trial_") or (d / RESULTS).exists() or (d / "params.json").exists()))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _state(path: Path, missing: list[str]) -> dict[str, dict[str, Any]]:
    """Ray's record of each trial (status, config, folder, failures), from the newest experiment_state file."""
    files = sorted(path.glob(STATE_GLOB))
    if not files:
        missing.append("no experiment_state-*.json (Ray's record of trial status): statuses are guessed "
                       "from the trial folders")
        return {}
    data = _read_json(files[-1])
    if not isinstance(data, dict):
        missing.append(f"{files[-1].name} is unreadable (perhaps mid-write): statuses are guessed "
                       "from the trial folders")
        return {}
    trials = {}
    for meta, run in _entries(data):
        trials[str(meta.get("trial_id"))] = {
            "status": meta.get("status") or "UNKNOWN",
            "config": meta.get("config") if isinstance(meta.get("config"), dict) else {},
            "dir": meta.get("relative_logdir") or meta.get("custom_dirname"),
            "num_failures": int(run.get("num_failures") or 0),
        }
    return trials


def _results(trial_dir: Path, notes: list[str] | None = None) -> list[dict[str, Any]]:
    """Every complete line of result.json (a trial still running may have written half a line); lines that are
    not JSON objects are skipped, and named in ``notes``."""
    try:
        lines = (trial_dir / RESULTS).read_bytes().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return []
    rows, bad = [], []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        elif line.strip():
            bad.append(number)
    if bad and notes is not None:
        torn = bad == [len(lines)]
        notes.append(f"{trial_dir.name}/{RESULTS}: " + (
            f"its last line ({len(lines)}) is cut off (written while the search was stopped?) and was left out"
            if torn else f"{len(bad)} of {len(lines)} lines are not JSON results (first: line {bad[0]}) and were "
            "left out"))
    return rows


def _error(trial_dir: Path) -> str:
    """The last line of error.txt: the exception of the latest failure."""
    try:
        text = (trial_dir / "error.txt").read_bytes().decode("utf-8", errors="replace")
        lines = [ANSI.sub("", line).strip() for line in text.splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line]
    return lines[-1] if lines else "failed (empty error.txt)"


FAILURE = re.compile(r"^Failure # (\d+)", re.MULTILINE)  # Ray numbers each failure it appends to error.txt
NUMERIC = ("epoch", "val_acc", "test_acc", "train_acc", "val_loss", "test_loss", "train_loss", "best_val_acc",
           "test_acc_at_best_val", "best_test_acc", "best_test_loss", "time_total_s", "epoch_seconds")


def _failures(trial_dir: Path) -> int:
    """How many times the trial failed, from the numbered entries of its error.txt."""
    try:
        text = (trial_dir / "error.txt").read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return 0
    return max((int(n) for n in FAILURE.findall(text)), default=0)


def _numeric(epochs: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Metric columns as numbers; a row whose epoch is not a number is left out, and named."""
    for column in NUMERIC:
        if column in epochs and epochs[column].dtype == object:
            epochs[column] = pd.to_numeric(epochs[column].map(lambda v: None if isinstance(v, bool) else v),
                                           errors="coerce")
    bad = epochs["epoch"].isna()
    if bad.any():
        notes.append(f"{int(bad.sum())} result row(s) without a numeric epoch left out (trial "
                     f"{epochs.loc[bad, 'trial_id'].iloc[0]})")
        epochs = epochs.loc[~bad].copy()
    return epochs


def _checkpoint(trial_dir: Path) -> str:
    found = sorted(trial_dir.glob(f"checkpoint_*/{CHECKPOINT_FILE}"))
    return str(found[-1]) if found else ""


def _scalar(value: Any) -> Any:
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value)


def load(path: Path | str) -> Experiment:
    """Read the experiment in ``path`` (a folder or a URI such as s3://bucket/key); finished, running or
    interrupted. Raises UserError for other folders."""
    path = storage.path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist")
    if not path.is_dir():
        raise UserError(f"{path} is a file, not an experiment folder")
    if (path / RESULTS).exists() and not any(path.glob(STATE_GLOB)):
        raise UserError(f"{path} is the folder of one trial; pass the experiment folder above it, {path.parent}")
    if not is_experiment(path):
        raise UserError(f"{path} is not a tune-norm experiment: it holds no {STATE_GLOB} and no trial folders")
    missing: list[str] = []
    provenance = _read_json(path / PROVENANCE)
    if not isinstance(provenance, dict):
        provenance = {}
        missing.append(f"no readable {PROVENANCE}: the spec is unknown, so each trial is taken to hold "
                       "1 CPU and no GPU")
    state = _state(path, missing)
    # a driver is writing the folder right now (only local folders are locked: a bucket has no flock)
    live = not storage.is_uri(str(path)) and lock.holder(path) is not None
    spec = recorded_spec(provenance)
    max_failures = spec.max_failures if spec else -1
    dirs = {d.name: d for d in _trial_dirs(path)}
    by_id: dict[str, Path | None] = {}
    for trial_id, info in state.items():
        by_id[trial_id] = dirs.get(str(info["dir"])) if info["dir"] else None
    seen = {d for d in by_id.values() if d is not None}
    for d in dirs.values():
        if d not in seen:
            trial_id = (_results(d)[:1] or [{}])[0].get("trial_id") or d.name.removeprefix("trial_")
            by_id.setdefault(str(trial_id), d)

    trial_rows, epoch_rows = [], []
    for trial_id, d in by_id.items():
        info = state.get(trial_id, {})
        results = _results(d, missing) if d else []
        config = info.get("config") or (results[-1].get("config") if results else None)
        if not config and d is not None:
            config = _read_json(d / "params.json")
        error = _error(d) if d else ""
        status = info.get("status") or ("ERROR" if error else "UNKNOWN")
        failures = max(info.get("num_failures", 0), _failures(d) if d else 0)
        if status in RUNNING and error and not live and 0 <= max_failures < failures:
            status = "ERROR"  # Ray's last snapshot predates the final failure; its retries were used up
        trial_rows.append({
            "trial_id": trial_id, "status": status, "dir": str(d) if d else "", "error": error,
            "checkpoint": _checkpoint(d) if d else "", "num_failures": failures,
            **{k: _scalar(v) for k, v in full_config(config if isinstance(config, dict) else {}).items()},
        })
        for row in results:
            epoch_rows.append({**{k: _scalar(v) for k, v in row.items() if k != "config"}, "trial_id": trial_id})

    trials = pd.DataFrame(trial_rows, columns=["trial_id", "status", "dir", "error", "checkpoint", "num_failures",
                                                *TrainConfig().as_dict()])
    trials = trials.sort_values("trial_id", kind="stable").reset_index(drop=True)
    epochs = pd.DataFrame(epoch_rows)
    if not epochs.empty:
        if "epoch" not in epochs:
            epochs["epoch"] = epochs.get("training_iteration", pd.Series(range(1, len(epochs) + 1)))
        epochs = _numeric(epochs, missing)
        # a trial restored from a checkpoint can report an epoch twice; the later report wins
        epochs = epochs.drop_duplicates(["trial_id", "epoch"], keep="last")
        epochs = epochs.sort_values(["trial_id", "epoch"], kind="stable").reset_index(drop=True)
    else:
        epochs = pd.DataFrame(columns=["trial_id", "epoch"])
    missing += _missing(trials, epochs, spec.planned if spec else None)
    restarted = sorted((path / "restarted").glob("trial_*"))
    if restarted:
        missing.append(f"{_plural(len(restarted), 'errored trial folder')} set aside in restarted/ by "
                       "--restart-errored (their configs were rerun as new trials; kept, not reported): "
                       + ", ".join(d.name for d in restarted))
    orphans = sorted((path / ORPHANED).glob("trial_*"))
    if orphans:
        missing.append(f"{_plural(len(orphans), 'trial folder')} set aside in {ORPHANED}/ by a resume (started after "
                       f"Ray's last snapshot, so the resumed search replaced them; kept, not reported): "
                       + ", ".join(d.name for d in orphans))
    return Experiment(path=path, provenance=provenance, trials=trials, epochs=epochs, missing=missing, spec=spec)


# keys of a spec that decide what a trial is; experiments agreeing on these (seeds aside) may be pooled
COMPARABLE = ("metric", "mode", "params", "grid", "search", "scheduler")


def pool(experiments: list[Experiment]) -> Experiment:
    """One experiment from several runs of the same space, e.g. seeds 1-3 and later seeds 4-6 of a grid.

    Raises UserError when they rank by different metrics, searched different spaces, or share a trial."""
    if len(experiments) == 1:
        return experiments[0]
    first = experiments[0]
    paths = [e.path for e in experiments]
    if len(set(paths)) < len(paths):
        raise UserError("the same experiment folder is given twice")
    for other in experiments[1:]:
        if not (first.spec and other.spec):
            raise UserError(f"cannot pool {other.path}: without {PROVENANCE} its space is unknown")
        differ = [k for k in COMPARABLE if getattr(first.spec, k) != getattr(other.spec, k)]
        if differ:
            raise UserError(f"cannot pool {first.path.name} and {other.path.name}: they differ in "
                            f"{', '.join(differ)}; pool only runs of one space (with other seeds)")
    trials = pd.concat([e.trials for e in experiments], ignore_index=True)
    shared = trials["trial_id"][trials["trial_id"].duplicated()].tolist()
    if shared:
        raise UserError(f"cannot pool: trial {shared[0]} appears in more than one folder")
    _refuse_repeated_seeds(experiments)
    trials = trials.sort_values("trial_id", kind="stable").reset_index(drop=True)
    epochs = pd.concat([e.epochs for e in experiments if not e.epochs.empty] or [first.epochs], ignore_index=True)
    spec = first.spec
    if spec.search.type == "grid":
        spec = replace(spec, seeds=tuple(sorted({s for e in experiments for s in e.spec.seeds})))
    else:
        spec = replace(spec, num_samples=sum(e.spec.num_samples for e in experiments))
    spec = replace(spec, name=" + ".join(e.name for e in experiments))
    provenance = {**first.provenance, "spec": spec.to_dict()}
    for key in ("command", "git_commit", "started"):
        values = list(dict.fromkeys(str(e.provenance[key]) for e in experiments if e.provenance.get(key)))
        if values:
            provenance[key] = values[0] if len(values) == 1 else " | ".join(values)
    missing = [f"{e.path.name}: {m}" for e in experiments for m in e.missing]
    if len({e.resources for e in experiments}) > 1:
        missing.append("the pooled experiments gave trials different resources; cost uses the first one's "
                       f"({first.resources[0]:g} CPU, {first.resources[1]:g} GPU per trial)")
    return Experiment(path=first.path, provenance=provenance, trials=trials, epochs=epochs, missing=missing,
                      sources=paths, spec=spec)


def _refuse_repeated_seeds(experiments: list[Experiment]) -> None:
    """Two runs of one config with one seed are one replicate counted twice (zero variance): refuse to pool them."""
    keys = list(TrainConfig().as_dict())
    seen: dict[tuple, str] = {}
    for e in experiments:
        for row in e.trials[keys].astype(str).itertuples(index=False):
            config = tuple(row)
            if config in seen and seen[config] != e.path.name:
                setup = dict(zip(keys, config))
                raise UserError(f"cannot pool {seen[config]} and {e.path.name}: both ran {setup['norm']} norm "
                                f"(l1 {setup['l1']}, l2 {setup['l2']}, lr {setup['lr']}, batch {setup['batch_size']}) "
                                f"with seed {setup['seed']}; a repeated seed is not a new replicate, so run other "
                                "seeds (--seeds) and pool those")
            seen.setdefault(config, e.path.name)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _missing(trials: pd.DataFrame, epochs: pd.DataFrame, planned: int | None) -> list[str]:
    """Sentences about what the folder lacks: unstarted, unfinished and errored trials, absent checkpoints."""
    notes = []
    reported = set(epochs["trial_id"]) if not epochs.empty else set()
    last = epochs.groupby("trial_id")["epoch"].max().to_dict() if not epochs.empty else {}
    if planned and len(trials) < planned:
        notes.append(f"{len(trials)} of {planned} planned trials exist; the search has not started the rest "
                     "(still running, or interrupted)")
    empty = [t for t in trials["trial_id"] if t not in reported]
    if empty:
        notes.append(f"{_plural(len(empty), 'trial')} with no results yet: {', '.join(empty)}")
    unfinished = trials[trials["status"].isin(RUNNING) & trials["trial_id"].isin(reported)]
    for _, t in unfinished.iterrows():
        notes.append(f"trial {t['trial_id']} is still running or was interrupted "
                     f"(epoch {int(last[t['trial_id']])} of {t['epochs']})")
    for _, t in trials[trials["status"] == "ERROR"].iterrows():
        after = f" after {_plural(int(t['num_failures']), 'failure')}" if t["num_failures"] > 1 else ""
        notes.append(f"trial {t['trial_id']} errored{after}: {t['error'] or 'no error.txt'}")
    retried = trials[(trials["status"] != "ERROR") & (trials["num_failures"] > 0)]
    for _, t in retried.iterrows():
        notes.append(f"trial {t['trial_id']} failed {_plural(int(t['num_failures']), 'time')} and was retried from "
                     "its last checkpoint (see its error.txt)")
    no_ckpt = [t for t in trials.loc[trials["checkpoint"] == "", "trial_id"] if t in reported]
    if no_ckpt:
        notes.append(f"{_plural(len(no_ckpt), 'trial')} with results but no checkpoint: {', '.join(no_ckpt)}")
    return notes
