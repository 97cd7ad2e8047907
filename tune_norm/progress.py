"""Search progress a person can read: one line per change (or every N seconds) instead of Ray's table."""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from ray.tune import Callback

from .experiment import flat_config

EVERY_S = 30.0  # a line at least this often while epochs finish, even when no trial changes state
SETTLE_S = 2.0  # changes closer together than this share one line


@dataclass(frozen=True)
class Plan:
    """What the search means to run, for the counts, the epoch budget and the ETA."""

    name: str
    path: str
    trials: int  # planned trials: num_samples, or every grid cell
    max_epochs: int  # epochs of a trial that is not stopped early (the largest, where epochs vary)
    metric: str
    mode: str
    early_stopping: bool  # ASHA may stop trials early: the budget and the ETA are upper bounds
    study_file: str | None = None  # the Optuna journal, when there is one
    searcher: str = "optuna"


def quiet_ray(verbose: bool) -> None:
    """Leave out what a default run always printed: the snapshot-frequency warning (a snapshot per checkpoint is
    on purpose: num_to_keep needs it for a correct resume; a user's own setting of the variable wins) and, without
    --verbose, Ray Tune's INFO lines and the token-auth notice of a local Ray (auth stays on)."""
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if not verbose:
        for name in ("ray.tune", "ray.train"):
            logging.getLogger(name).setLevel(logging.WARNING)
        logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)


_MUTED: list = []  # the Ray log handlers mute_workers took out, for hear_workers to put back


def mute_workers() -> None:
    """Once the search is over, stop printing the trial workers' output: what they say while Ray tears them down
    (a worker stopped by SIGTERM can print Python's "Exception ignored in ... SystemExit" traceback) is not about
    the search. Ray's own handle on the stream; without --verbose only, where Ray's log lines are left out anyway."""
    streams = _worker_streams()
    if streams is not None:
        _MUTED.extend(pair for pair in streams.handlers if pair[0] == "ray_print_logs")
        streams.remove_handler("ray_print_logs")


def hear_workers() -> None:
    """Undo mute_workers, for a next search in the same process (a notebook, a confirmation after a search)."""
    streams = _worker_streams()
    for name, handler in _MUTED if streams is not None else ():
        streams.add_handler(name, handler)
    _MUTED.clear()


def _worker_streams():
    """Ray's dispatcher of worker output (a private module): None if a Ray version moved it, so a search never
    fails over what it prints (tests/test_ecosystem.py would say so)."""
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher
    except ImportError:
        return None
    return global_worker_stdstream_dispatcher if hasattr(global_worker_stdstream_dispatcher, "handlers") else None


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _epochs(trial) -> int:
    result = trial.last_result or {}
    return int(result.get("epoch") or result.get("training_iteration") or 0)


def _planned_epochs(trial, default: int) -> int:
    try:
        return int(flat_config(trial.config).get("epochs", default))
    except (TypeError, ValueError, AttributeError):
        return default


class Progress(Callback):
    """Prints `[elapsed] trials D done, R running, P pending, E errored of N | epochs d/budget | best metric
    value (trial) | eta` when a trial starts, ends or errors, and at most every ``every_s`` seconds otherwise."""

    def __init__(self, plan: Plan, every_s: float = EVERY_S, out: TextIO | None = None):
        self.plan, self.every_s, self.out = plan, every_s, out
        self.started = time.monotonic()
        self.last_line, self.last_key, self.last_text = 0.0, None, ""
        self.epochs_at_start: int | None = None  # epochs already done when this run (or resume) began
        self.best: tuple[float, str] | None = None

    def _print(self, text: str) -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    def setup(self, **info: Any) -> None:
        self.started, self.epochs_at_start = time.monotonic(), None  # also after a resume
        p = self.plan
        budget = f"up to {p.trials * p.max_epochs} epochs" if p.early_stopping else f"{p.trials * p.max_epochs} epochs"
        self._print(f"search {p.name}: {p.trials} trials, {budget}, ranked by {p.metric} ({p.mode}); "
                    f"results in {p.path}")
        self._print(f"  watch: tensorboard --logdir {p.path}"
                    + (f"  |  optuna-dashboard {p.study_file}" if p.study_file else ""))
        if p.study_file is None and p.searcher != "grid":
            self._print("  the Optuna study stays in Ray's searcher state (no study file on remote storage); "
                        "optuna-dashboard needs a local --storage")

    # -- the counts ---------------------------------------------------------------------------------
    def line(self, trials: list) -> tuple[str, tuple]:
        p = self.plan
        status = [t.status for t in trials]
        done, errored = status.count("TERMINATED"), status.count("ERROR")
        running = status.count("RUNNING")
        pending = len(trials) - done - errored - running + max(p.trials - len(trials), 0)
        epochs = sum(_epochs(t) for t in trials)
        if self.epochs_at_start is None:
            self.epochs_at_start = epochs
        to_go = sum(max(_planned_epochs(t, p.max_epochs) - _epochs(t), 0) for t in trials
                    if t.status not in ("TERMINATED", "ERROR")) + max(p.trials - len(trials), 0) * p.max_epochs
        for t in trials:
            value = (t.last_result or {}).get(p.metric)
            if isinstance(value, (int, float)) and math.isfinite(value) and (
                    self.best is None or (value > self.best[0] if p.mode == "max" else value < self.best[0])):
                self.best = (float(value), t.trial_id)
        elapsed = time.monotonic() - self.started
        new = epochs - self.epochs_at_start
        if to_go == 0:
            eta = "done"
        elif new:
            eta = ("eta <= " if p.early_stopping else "eta ") + _clock(elapsed / new * to_go)
        else:
            eta = "eta: after the first epoch"
        best = f"best {p.metric} {self.best[0]:.4g} ({self.best[1]})" if self.best else f"best {p.metric}: none yet"
        text = (f"[{_clock(elapsed)}] trials {done} done, {running} running, {pending} pending, {errored} errored "
                f"of {max(p.trials, len(trials))} | epochs {epochs}/{p.trials * p.max_epochs} | {best} | {eta}")
        return text, (done, running, pending, errored)

    def _maybe(self, trials: list, force: bool = False) -> None:
        text, key = self.line(trials)
        moved = text.split(" | ")[1:3] != self.last_text.split(" | ")[1:3]  # epochs or best changed
        now = time.monotonic()
        if now - self.last_line < SETTLE_S and not force:
            return  # a trial that ends usually lets the next one start a moment later: one line for both
        if force or key != self.last_key or (moved and now - self.last_line >= self.every_s):
            self._print(text)
            self.last_key, self.last_line, self.last_text = key, now, text

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._maybe(trials)

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._print(f"trial {trial.trial_id} errored: see {self.plan.path}/trial_{trial.trial_id}/error.txt")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        text, _ = self.line(trials)
        if text.split("] ", 1)[1] != self.last_text.split("] ", 1)[-1]:
            self._print(text)
