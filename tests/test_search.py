"""Searches against a real local Ray through the real CLI: smoke, packing, crash retry, divergence, hangs, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import CLI, DATA, ROOT, run_cli, trial_results, wait_for, write_space
from tune_norm import experiment

pytestmark = pytest.mark.slow


def grid_space(path: Path, rows: list[dict], **extra) -> Path:
    """A small grid (FIFO, no early stopping) over ``rows`` on 2,000 training images."""
    data = {"name": "grid", "metric": "val_acc", "mode": "max", "search": {"type": "grid"},
            "scheduler": {"type": "fifo"}, "resources": {"cpus_per_trial": 1}, "num_to_keep": 1, "grid": rows,
            "space": {"epochs": 3, "subset": 2000, "val_size": 1000, **extra.pop("space", {})}, **extra}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_smoke_search_end_to_end(tmp_path):
    exp = tmp_path / "smoke"
    home = tmp_path / "home"
    home.mkdir()
    res = run_cli("search", ROOT / "search_spaces" / "smoke.yaml", "--storage", exp, "--num-cpus", "2", "--verbose",
                  env={"HOME": str(home)})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "4 trials, 0 errored" in res.stdout
    trials = trial_results(exp)
    assert len(trials) == 4
    for rows in trials.values():
        assert rows and rows[-1]["epoch"] <= 2 and 0 <= rows[-1]["val_acc"] <= 100
        assert {"norm", "lr", "l1", "l2"} <= set(rows[-1]["config"])
    assert any(len(rows) == 2 for rows in trials.values())  # someone ran to max_t
    # the live table shows the columns a user cares about
    assert all(col in res.stdout for col in ("norm", "groups", "l1", "l2", "lr", "epoch", "val_acc", "test_acc"))
    prov = json.loads((exp / "tune_norm.json").read_text())
    assert prov["spec"]["name"] == "smoke" and prov["versions"]["ray"] and "search" in prov["command"]
    assert not (home / "ray_results").exists()
    # a second run into the same folder refuses instead of mixing experiments
    again = run_cli("search", ROOT / "search_spaces" / "smoke.yaml", "--storage", exp)
    assert again.returncode == 2 and "already holds an experiment" in again.stderr


def test_fractional_gpus_pack_four_trials_at_once(tmp_path):
    space = grid_space(tmp_path / "pack.yaml", [{"norm": "batch", "lr": lr} for lr in (0.01, 0.02, 0.03, 0.04)],
                       space={"epochs": 4, "subset": 3000})
    exp = tmp_path / "pack"
    res = run_cli("search", space, "--storage", exp, "--num-cpus", "2", "--num-gpus", "1",
                  "--gpus-per-trial", "0.25", "--cpus-per-trial", "0.5")
    assert res.returncode == 0, res.stderr[-3000:]
    trials = trial_results(exp)
    assert len(trials) == 4 and all(len(r) == 4 for r in trials.values())
    assert all(r[0]["gpu_ids"] == "0" for r in trials.values())  # Ray gave each a quarter of GPU 0
    spans = [(r[0]["wall_time"] - r[0]["epoch_seconds"], r[-1]["wall_time"]) for r in trials.values()]
    assert max(s for s, _ in spans) < min(e for _, e in spans), spans  # all four ran at the same time


def test_crashed_trial_is_retried_from_its_checkpoint(tmp_path):
    space = grid_space(tmp_path / "crash.yaml", [{"norm": "batch", "seed": 1}, {"norm": "batch", "seed": 2}],
                       max_failures=1)
    exp = tmp_path / "crash"
    fault = {"kind": "crash", "epoch": 2, "once_dir": str(tmp_path), "match": {"seed": 2}}
    res = run_cli("search", space, "--storage", exp, "--num-cpus", "2", env={"TUNE_NORM_FAULT": json.dumps(fault)})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "injected crash after epoch 2" in res.stdout + res.stderr
    trials = trial_results(exp)
    by_seed = {rows[0]["config"]["cell"]["seed"]: rows for rows in trials.values()}
    # epoch 1 was checkpointed; the retry restored it and went on with 2 and 3 (no restart from 0)
    assert [r["epoch"] for r in by_seed[2]] == [1, 2, 3]
    assert [r["epoch"] for r in by_seed[1]] == [1, 2, 3]
    assert "2 trials, 0 errored" in res.stdout
    assert len(list(tmp_path.glob("fault-fired-*"))) == 1  # it did crash once


def test_diverging_trials_end_finite_and_the_search_goes_on(tmp_path):
    space = write_space(tmp_path / "div.yaml", num_samples=4, search={"type": "optuna", "max_concurrent": 2, "seed": 1},
                        scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2},
                        space={"norm": "none", "groups": 4, "lr": {"loguniform": [1e30, 1e32]},
                               "l1": 0, "l2": 0, "epochs": 3})
    exp = tmp_path / "div"
    res = run_cli("search", space, "--storage", exp, "--num-cpus", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    trials = trial_results(exp)
    assert len(trials) == 4 and "4 trials, 0 errored" in res.stdout  # none stuck RUNNING, none errored
    for rows in trials.values():  # each diverged in its first epoch and handed Optuna/ASHA a finite worst value
        assert len(rows) == 1 and rows[0]["diverged"] is True and rows[0]["val_acc"] == 0.0


def test_hung_trial_is_ended_and_the_experiment_finishes(tmp_path):
    space = grid_space(tmp_path / "hang.yaml", [{"norm": "batch", "seed": 1}, {"norm": "batch", "seed": 2}],
                       max_failures=0, epoch_timeout_s=6)
    exp = tmp_path / "hang"
    fault = {"kind": "hang", "epoch": 1, "match": {"seed": 2}}
    res = run_cli("search", space, "--storage", exp, "--num-cpus", "2", env={"TUNE_NORM_FAULT": json.dumps(fault)})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 trials, 1 errored" in res.stdout
    errors = list(exp.glob("trial_*/error.txt"))
    assert len(errors) == 1 and "no epoch finished within epoch_timeout_s=6" in errors[0].read_text()
    assert any(len(rows) == 3 for rows in trial_results(exp).values())


def _wait_until_quiet(exp: Path, quiet_s: float = 3.0, timeout: float = 60.0) -> None:
    """Wait until no file under ``exp`` has been added, removed or grown for ``quiet_s`` seconds."""
    def snapshot() -> dict:
        sizes = {}
        for p in exp.rglob("*"):
            try:
                sizes[str(p)] = p.stat().st_size
            except FileNotFoundError:  # removed while we looked: not quiet yet
                sizes[str(p)] = -1
        return sizes

    deadline, last, since = time.time() + timeout, snapshot(), time.time()
    while time.time() < deadline and time.time() - since < quiet_s:
        time.sleep(0.5)
        now = snapshot()
        if now != last:
            last, since = now, time.time()


def test_resume_after_the_driver_is_killed(tmp_path):
    space = write_space(tmp_path / "resume.yaml", num_samples=6,
                        search={"type": "optuna", "max_concurrent": 2, "seed": 3},
                        scheduler={"type": "fifo"}, num_to_keep=1,
                        space={"epochs": 3, "subset": 3000})
    exp = tmp_path / "resume"
    args = [*CLI, "search", str(space), "--storage", str(exp), "--num-cpus", "2"]
    env = {**os.environ, "TUNE_NORM_DATA": str(DATA)}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True, cwd=ROOT)
    finished = lambda: sum(len(r) == 3 for r in trial_results(exp).values())  # noqa: E731
    wait_for(lambda: finished() >= 2 and list(exp.glob("experiment_state-*.json")), 240, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    _wait_until_quiet(exp)  # Ray's workers outlive their killed driver for a moment and may still write
    # a trial that started after Ray's last snapshot of the experiment is unknown to the resume; CI once saw
    # one (7 folders for 6 trials). Make one every time, beside any real ones.
    fake = exp / "trial_0rphan"
    fake.mkdir()
    (fake / "result.json").write_text(json.dumps({"epoch": 1, "val_acc": 50.0, "timestamp": 1}) + "\n")
    orphans = {d.name for d in experiment.orphaned_trials(exp)}
    assert fake.name in orphans
    before = {name: rows for name, rows in trial_results(exp).items() if len(rows) == 3 and name not in orphans}
    assert before and len(trial_results(exp)) < 6 or any(len(r) < 3 for r in trial_results(exp).values())

    res = run_cli("search", space, "--storage", exp, "--num-cpus", "2", "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    # set aside: every orphan seen here, and any folder a worker of the killed run made in the seconds after the
    # kill (Ray's workers outlive their driver briefly; CI saw one)
    moved = {d.name for d in (exp / "orphaned").glob("trial_*")}
    assert orphans <= moved and "trial_0rphan" in res.stderr, (orphans, moved)
    after = trial_results(exp)
    assert len(after) == 6 and all(len(r) >= 1 and r[-1]["epoch"] == 3 for r in after.values())
    for name, rows in before.items():  # finished trials were not rerun
        assert [r["timestamp"] for r in after[name]] == [r["timestamp"] for r in rows]
    for name, rows in after.items():  # no trial restarted from epoch 1 after the resume
        epochs = [r["epoch"] for r in rows]
        assert epochs == sorted(set(epochs)), (name, epochs)
    # num_to_keep holds after the resume: one checkpoint per trial, so the folder does not grow with epochs
    assert all(len(list((exp / name).glob("checkpoint_*"))) == 1 for name in after)
