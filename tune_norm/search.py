"""Ray Tune + Optuna: the trainable, the Tuner built from a SearchSpec, resume. The only module importing Ray."""

from __future__ import annotations

import ctypes
import json
import logging
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import __version__, faults
from . import storage as storage_mod  # run() takes a `storage` argument
from .config import from_mapping
from .errors import UserError
from .experiment import (  # the on-disk format lives with its reader
    CHECKPOINT_FILE,
    PROVENANCE,
    REPORTED_FILE,
    RESULTS_ROOT,
    flat_config,
    mend_checkpoints,
    mend_results,
    mend_searcher,
    restorable,
    set_orphans_aside,
)
from .guard import RunGuard
from .space import SearchSpec
from .study import STUDY_FILE

PARAM_COLUMNS = ("norm", "groups", "l1", "l2", "lr", "batch_size", "dropout", "seed")
METRIC_COLUMNS = ("epoch", "val_acc", "test_acc", "train_loss", "diverged")


@dataclass(frozen=True)
class RunSettings:
    """What every trial needs besides its sampled config."""

    data_root: str
    threads: int = 1
    epoch_timeout_s: float = 1800.0


class TrialHung(RuntimeError):
    """Raised inside a trial whose epoch took longer than epoch_timeout_s."""


class Watchdog:
    """Ends a trial whose epoch runs past the timeout: an exception in its thread, then a hard exit."""

    def __init__(self, timeout_s: float, grace_s: float = 30.0):
        self.timeout_s, self.grace_s = timeout_s, grace_s
        self.target = threading.get_ident()
        self.last = time.monotonic()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def beat(self) -> None:
        self.last = time.monotonic()

    def stop(self) -> None:
        self.done.set()

    def _watch(self) -> None:
        fired_at = None
        while not self.done.wait(min(1.0, self.timeout_s / 4)):
            idle = time.monotonic() - self.last
            if fired_at is None and idle > self.timeout_s:
                fired_at = time.monotonic()
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.target), ctypes.py_object(TrialHung))
            elif fired_at is not None and time.monotonic() - fired_at > self.grace_s:
                os._exit(3)  # stuck in native code: the worker dies and Ray records the failure


def trainable(config: dict, settings: RunSettings) -> None:
    """Ray Tune function trainable: one TrainConfig, one report (and checkpoint) per epoch."""
    from ray import tune

    from . import data
    from .train import Trainer

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # not a "Checkpoint successfully created" per epoch
    values = flat_config(config)
    cfg = from_mapping({**values, "threads": values.get("threads") or settings.threads})
    mnist = data.for_config(cfg, settings.data_root)  # raw files cached per worker
    trainer = Trainer(cfg, mnist)
    checkpoint, unreported = tune.get_checkpoint(), []
    if checkpoint:
        with checkpoint.as_directory() as d:
            trainer.load(Path(d) / CHECKPOINT_FILE)
            if (Path(d) / REPORTED_FILE).exists():  # a mended checkpoint (resume): newer than Ray's snapshot
                known = json.loads((Path(d) / REPORTED_FILE).read_text()).get("epoch") or 0
                unreported = [row for row in trainer.history if row["epoch"] > known]
    trial_id = tune.get_context().get_trial_id()
    where = _placement(trainer)

    def report(metrics: dict) -> None:
        with tempfile.TemporaryDirectory() as d:
            trainer.save(Path(d) / CHECKPOINT_FILE)
            tune.report({**metrics, **where}, checkpoint=tune.Checkpoint.from_directory(d))

    for i, row in enumerate(unreported, 1):  # epochs trained before the driver died, after its last snapshot
        # result.json may hold it already: the same wall_time says so, and resume.dedupe keeps the first report
        if i < len(unreported):
            tune.report({**row, **where})
        else:
            report(row)
    dog = Watchdog(settings.epoch_timeout_s)
    try:
        for metrics in trainer.epochs():
            faults.inject(values, metrics["epoch"], trial_id)  # tests only: $TUNE_NORM_FAULT
            report(metrics)
            dog.beat()
    except TrialHung:
        raise TrialHung(
            f"trial hung: no epoch finished within epoch_timeout_s={settings.epoch_timeout_s:g} s") from None
    finally:
        dog.stop()


def _placement(trainer) -> dict[str, Any]:
    """Where a trial runs: node, process, device and the GPU ids Ray gave it (for packing checks)."""
    import ray

    ctx = ray.get_runtime_context()
    return {"device": str(trainer.device), "pid": os.getpid(), "node_ip": ray.util.get_node_ip_address(),
            "node_id": ctx.get_node_id(), "gpu_ids": ",".join(map(str, ray.get_gpu_ids())),
            "threads": trainer.threads}


# -- building the search ---------------------------------------------------------------------------
class DefineByRun:
    """Optuna define-by-run space (picklable, for Ray's searcher checkpoints): conditional keys such as
    groups are sampled only when their condition holds (norm: group)."""

    def __init__(self, spec: SearchSpec):
        self.params = spec.params

    def __call__(self, trial) -> dict[str, Any]:
        chosen: dict[str, Any] = {}
        inactive: list[str] = []
        for p in self.params:
            if p.kind == "const":
                chosen[p.name] = p.values[0]
            elif p.when is not None and chosen.get(p.when[0]) != p.when[1]:
                inactive.append(p.name)
            elif p.kind == "choice":
                chosen[p.name] = trial.suggest_categorical(p.name, list(p.values))
            elif p.kind == "uniform":
                chosen[p.name] = trial.suggest_float(p.name, *p.values)
            elif p.kind == "loguniform":
                chosen[p.name] = trial.suggest_float(p.name, *p.values, log=True)
            else:  # randint: [low, high)
                chosen[p.name] = trial.suggest_int(p.name, p.values[0], p.values[1] - 1)
        # sampled keys reach Ray through Optuna; constants and inactive keys (None) come back here
        return {**{p.name: p.values[0] for p in self.params if p.kind == "const"}, **dict.fromkeys(inactive)}


def _search_alg(spec: SearchSpec, path: str | None = None):
    from ray.tune.search import ConcurrencyLimiter

    if spec.search.type == "grid":
        return None
    import optuna

    from .tune_plugins import RestartableOptuna as OptunaSearch  # survives --restart-errored

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = (optuna.samplers.TPESampler(seed=spec.search.seed) if spec.search.type == "optuna"
               else optuna.samplers.RandomSampler(seed=spec.search.seed))
    # the study in the experiment folder (on s3:// it stays in Ray's searcher state)
    if path and not storage_mod.is_uri(path):
        from .searcher import StudySearch
        from .study import create

        storage = create(path, spec.name, spec.metric, spec.mode, {"experiment": path})
        alg = StudySearch(space=DefineByRun(spec), metric=spec.metric, mode=spec.mode, sampler=sampler,
                          study_name=spec.name, storage=storage)
    else:
        alg = OptunaSearch(space=DefineByRun(spec), metric=spec.metric, mode=spec.mode, sampler=sampler)
    if spec.search.max_concurrent:
        alg = ConcurrencyLimiter(alg, max_concurrent=spec.search.max_concurrent)
    return alg


def _scheduler(spec: SearchSpec):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if spec.scheduler.type == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(time_attr="training_iteration", max_t=spec.max_epochs,
                         grace_period=spec.scheduler.grace_period, reduction_factor=spec.scheduler.reduction_factor)


def _param_space(spec: SearchSpec) -> dict[str, Any]:
    from ray import tune

    if spec.search.type == "grid":
        return {"cell": tune.grid_search(spec.cells())}
    return {}


def _trainable(spec: SearchSpec, settings: RunSettings, gpus: float):
    from ray import tune

    resources = {"cpu": spec.resources.cpus_per_trial, "gpu": gpus}
    return tune.with_resources(tune.with_parameters(trainable, settings=settings), resources)


def _reporter(spec: SearchSpec):
    from ray import tune

    if spec.search.type == "grid":
        params = {f"cell/{k}": k for k in PARAM_COLUMNS if all(k in c for c in spec.cells())}
    else:
        keys = {p.name for p in spec.params}
        params = {k: k for k in PARAM_COLUMNS if k in keys}
    return tune.CLIReporter(parameter_columns=params, metric_columns=list(METRIC_COLUMNS),
                            max_report_frequency=30, sort_by_metric=True,
                            max_progress_rows=40)


def start_ray(address: str | None, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic table honours our columns
    if address:
        from .preflight import CONNECT_TIMEOUT_S, Deadline

        with Deadline(CONNECT_TIMEOUT_S, f"no Ray cluster answered at {address} within {CONNECT_TIMEOUT_S:g} s; "
                                         "check the address and that the cluster runs (ray status)"):
            try:
                ray.init(address=address, log_to_driver=True)
            except (ConnectionError, RuntimeError, ValueError) as e:  # no cluster there, or not a Ray one
                raise UserError(f"cannot connect to a Ray cluster at {address}: {str(e).splitlines()[0]}") from None
    else:
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, dashboard_host="127.0.0.1", include_dashboard=False,
                 log_to_driver=True)


def default_gpus(spec: SearchSpec, cluster=None) -> float:
    """gpus_per_trial: the spec's, else a quarter GPU when Ray sees one (four small trials pack on a GPU).

    On a cluster (``cluster``, a clusterview.ClusterView) GPU workers may not be up yet: then the node types
    its autoscaler can launch decide, and where those are unknown the search refuses (UserError)."""
    import ray

    if spec.resources.gpus_per_trial is not None:
        return spec.resources.gpus_per_trial
    if cluster is None:
        return 0.25 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    gpus, why = cluster.gpus_per_trial()
    if why:
        print(f"note: {why}", file=sys.stderr)
    return gpus


def experiment_path(spec: SearchSpec, location: str | None) -> str:
    """The experiment folder, absolute (trials run in other working directories); URIs pass through
    (file:// ones become their local path)."""
    return storage_mod.normalized(location or RESULTS_ROOT / spec.name)


def _split(path: str) -> tuple[str, str]:
    return storage_mod.split(path)


def _git_commit() -> str | None:
    """HEAD of the checkout this package runs from, with ' (uncommitted changes)' when tracked files differ."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True,
                              timeout=5).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        if not commit:
            return None
        return commit + (" (uncommitted changes)" if git("status", "--porcelain", "-uno") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def write_provenance(path: str, spec: SearchSpec, settings: RunSettings, gpus: float) -> None:
    """Record the resolved space, versions, git commit and command line in the experiment folder; a resume keeps
    the original record and adds itself under ``resumes``."""
    import optuna
    import ray
    import torch

    record = {
        "spec": spec.to_dict(),
        "settings": asdict(settings),
        "gpus_per_trial": gpus,
        "command": shlex.join(sys.argv),
        "git_commit": _git_commit(),
        "versions": {"tune_norm": __version__, "python": platform.python_version(), "torch": torch.__version__,
                     "ray": ray.__version__, "optuna": optuna.__version__},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "path": path,
    }
    folder = storage_mod.path(path)  # local folders and s3:// alike
    folder.mkdir(parents=True, exist_ok=True)
    history = folder / PROVENANCE
    first = json.loads(history.read_text()) if history.exists() else None
    runs = first.get("runs", []) if isinstance(first, dict) else []
    if isinstance(first, dict) and first.get("spec"):  # a resume: the original record stays, the run is added
        resumed = {k: record[k] for k in ("command", "started", "path", "settings", "gpus_per_trial", "git_commit")}
        resumed["resources"] = asdict(spec.resources)
        record = {**first, "resumes": first.get("resumes", []) + [resumed]}
    history.write_text(json.dumps({**record, "runs": runs + [shlex.join(sys.argv)]}, indent=2, default=str) + "\n")


def run(spec: SearchSpec, *, data_root: str, storage: str | None = None, address: str | None = None,
        resume: bool = False, restart_errored: bool = False, num_cpus: int | None = None,
        num_gpus: int | None = None, verbose: int = 1, mlflow: str | None = None, wandb: str | None = None):
    """Run (or resume) the search described by ``spec``; returns Ray's ResultGrid. ``verbose`` 0: our progress
    lines only; 1: Ray's table too. ``mlflow`` (tracking URI) and ``wandb`` (project) add those trackers."""
    path = experiment_path(spec, storage)
    guard = RunGuard(path, spec, storage=storage, resume=resume, restart_errored=restart_errored, address=address,
                     num_cpus=num_cpus, num_gpus=num_gpus)
    guard.check()  # nothing is written before this passes
    if resume and not restorable(path):
        raise UserError(f"{path} is not a tune-norm experiment (no experiment state in it); nothing to resume")
    if not resume and restorable(path):
        raise UserError(f"{path} already holds an experiment; pass --resume to continue it or choose another --storage")
    if storage_mod.is_uri(path):
        storage_mod.path(path).mkdir(parents=True, exist_ok=True)  # a missing bucket fails here, before Ray
    from . import data, progress, trackers

    data.load_raw(Path(data_root))  # fail on missing or corrupt data before Ray starts
    trackers.check(mlflow=mlflow, wandb=wandb)
    progress.quiet_ray(verbose=bool(verbose))
    guard.start()
    try:
        return _run_guarded(spec, path, guard, data_root=data_root, storage=storage, address=address, resume=resume,
                            restart_errored=restart_errored, num_cpus=num_cpus, num_gpus=num_gpus, verbose=verbose,
                            mlflow=mlflow, wandb=wandb)
    finally:
        guard.finish()


def _run_guarded(spec: SearchSpec, path: str, guard: RunGuard, *, data_root: str, storage: str | None,
                 address: str | None, resume: bool, restart_errored: bool, num_cpus: int | None,
                 num_gpus: int | None, verbose: int, mlflow: str | None, wandb: str | None):
    start_ray(address, num_cpus, num_gpus)
    guard.watch_signals()
    from ray import tune

    from . import progress, trackers

    progress.hear_workers()  # an earlier search in this process muted them at its end

    cluster = None
    if address:  # nodes that do not share this machine's disk need a shared storage, GPU workers may come later
        from . import clusterview

        cluster = clusterview.read()
        shared = storage_mod.is_uri(path) or storage_mod.is_file_uri(storage)
        problem = None if shared else cluster.storage_problem(path)
        if problem:
            raise UserError(problem)
    gpus = default_gpus(spec, cluster)
    if not address:  # the local Ray this search started: its size is known, so what can never run is refused
        import ray

        from .preflight import check_fits

        check_fits(ray.cluster_resources(), spec.resources.cpus_per_trial, gpus)
    settings = RunSettings(data_root=str(data_root), threads=max(1, math.floor(spec.resources.cpus_per_trial)),
                           epoch_timeout_s=spec.epoch_timeout_s)
    write_provenance(path, spec, settings, gpus)
    fn = _trainable(spec, settings, gpus)
    if resume:
        for name in mend_checkpoints(path):
            print(f"{name}: Ray's last snapshot names a checkpoint the trial replaced after it; its newest checkpoint "
                  "takes that name, so the trial goes on from its newest state", file=sys.stderr)
        for moved in set_orphans_aside(path):
            print(f"{moved.name} started after Ray's last snapshot of the experiment, so the resume does not know "
                  f"it; moved to {moved} and kept", file=sys.stderr)
        mismatch = mend_searcher(path)
        if mismatch:
            print(f"Ray's snapshot was cut mid-upload: {mismatch}; the searcher now follows the snapshot, so the "
                  "search still makes the planned number of trials", file=sys.stderr)
        for name in mend_results(path):
            print(f"{name}: its result.json lacked the last epoch Ray's snapshot records; added from the snapshot",
                  file=sys.stderr)
        if not storage_mod.is_uri(path):
            from .searcher import StudySearch

            StudySearch.folder = path  # the study file is the one in the folder given, not the recorded one
        tuner = tune.Tuner.restore(path, trainable=fn, resume_errored=not restart_errored,
                                   restart_errored=restart_errored)
    else:
        from .tune_plugins import FrozenTrials, frozen_limit_s

        storage_path, name = _split(path)
        search_alg = _search_alg(spec, path)
        plan = progress.Plan(name=spec.name, path=path, trials=spec.planned,
                             max_epochs=spec.max_epochs, metric=spec.metric, mode=spec.mode,
                             early_stopping=spec.scheduler.type == "asha",
                             study_file=(str(Path(path) / STUDY_FILE) if search_alg and not storage_mod.is_uri(path)
                                         else None),
                             searcher=spec.search.type)
        callbacks = [progress.Progress(plan), *trackers.callbacks(spec.name, path, mlflow=mlflow, wandb=wandb),
                     FrozenTrials(frozen_limit_s(spec.epoch_timeout_s))]
        tuner = tune.Tuner(
            fn,
            param_space=_param_space(spec),
            tune_config=tune.TuneConfig(
                metric=spec.metric, mode=spec.mode, search_alg=search_alg, scheduler=_scheduler(spec),
                num_samples=1 if spec.search.type == "grid" else spec.num_samples, reuse_actors=True,
                # a searcher gets a ConcurrencyLimiter above; a grid is limited here
                max_concurrent_trials=(spec.search.max_concurrent or None) if spec.search.type == "grid" else None,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=name, storage_path=storage_path, verbose=verbose, progress_reporter=_reporter(spec),
                callbacks=callbacks,
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.num_to_keep),
            ),
        )
    try:
        results = tuner.fit()
    finally:
        if not verbose:
            progress.mute_workers()
    guard.raise_if_stopped()
    return results


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"

