"""Reliability against a real local Ray (issue 13): errored searches, --restart-errored on a moved copy, a clean
stop on SIGTERM/SIGINT with the lock held meanwhile, a frozen worker. One small search is shared where it can be."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import CLI, DATA, ROOT, run_cli, trial_results
from test_reliability import cli, refused, snapshot
from tune_norm import experiment

pytestmark = pytest.mark.slow


def space_file(path: Path, **changes) -> Path:
    data = {"name": path.stem, "metric": "val_acc", "mode": "max", "num_samples": 2, "scheduler": {"type": "fifo"},
            "search": {"type": "optuna", "max_concurrent": 2, "seed": 0}, "resources": {"cpus_per_trial": 1},
            "max_failures": 1, "num_to_keep": 1, "epoch_timeout_s": 60,
            "space": {"lr": {"loguniform": [0.01, 0.05]}, "epochs": 1, "subset": 1000, "val_size": 500}}
    data.update(changes)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def errored(tmp_path_factory):
    """An Optuna search whose every trial crashes, on each retry too (max_failures 1)."""
    root = tmp_path_factory.mktemp("errored")
    space = space_file(root / "crash.yaml")
    fault = {"kind": "crash", "epoch": 1}
    res = run_cli("search", space, "--storage", root / "exp", "--num-cpus", "2",
                  env={"TUNE_NORM_FAULT": json.dumps(fault)})
    return root, space, res


def test_a_search_whose_trials_all_errored_exits_non_zero_and_the_report_agrees(errored):
    """10, 11: every trial errored after its retry; the search exited 0, the report must say errored, 2 failures."""
    root, _, res = errored
    assert res.returncode == 1, res.stderr[-3000:]
    assert "2 trials, 2 errored" in res.stdout and "error: all 2 trials errored" in res.stderr
    exp = experiment.load(root / "exp")
    assert list(exp.trials["status"]) == ["ERROR", "ERROR"] and list(exp.trials["num_failures"]) == [2, 2]
    assert sum("errored after 2 failures: RuntimeError: injected crash after epoch 1" in m for m in exp.missing) == 2


def test_a_cut_state_or_pickle_of_a_real_search_is_refused(errored, tmp_path):
    """5, 6: Ray's own files, cut: the state resumed 3 of 6 trials, the searcher pickle hung."""
    root, space, _ = errored
    for pattern in ("experiment_state-*.json", "searcher-state-*.pkl", "tuner.pkl"):
        copy = tmp_path / pattern.split("-")[0].replace("*", "").replace(".", "_")
        shutil.copytree(root / "exp", copy)
        target = sorted(copy.glob(pattern))[-1]
        target.write_bytes(target.read_bytes()[: target.stat().st_size * 2 // 3])
        refused(cli("search", space, "--storage", copy, "--resume"), target.name, "truncated or corrupt")


def test_restart_errored_resumes_a_moved_copy_in_place(errored, tmp_path):
    """2, 3: --restart-errored ended in KeyError (Optuna) and lost the experiment; a copy must resume in place,
    never in the recorded folder, and the errored folders are set aside with the right explanation."""
    root, space, _ = errored
    copy, gone = tmp_path / "copy", tmp_path / "gone"
    shutil.copytree(root / "exp", copy)
    shutil.copytree(root / "exp", gone)  # stands for the original, which the copy's record names
    prov = json.loads((copy / "tune_norm.json").read_text())
    prov["path"] = str(gone)
    (copy / "tune_norm.json").write_text(json.dumps(prov))
    before = snapshot(gone)
    errored_dirs = sorted(d.name for d in copy.glob("trial_*"))
    res = run_cli("search", space, "--storage", copy, "--num-cpus", "2", "--resume", "--restart-errored")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "KeyError" not in res.stdout + res.stderr and "2 trials, 0 errored" in res.stdout
    assert f"was started in {gone}; it is resumed here" in res.stderr
    assert snapshot(gone) == before  # nothing written into the recorded folder
    assert sorted(d.name for d in (copy / "restarted").iterdir()) == errored_dirs
    rerun = trial_results(copy)
    assert len(rerun) == 2 and all(rows and rows[-1]["epoch"] == 1 for rows in rerun.values())
    exp = experiment.load(copy)
    assert list(exp.trials["status"]) == ["TERMINATED", "TERMINATED"]
    assert any("set aside in restarted/ by --restart-errored" in m for m in exp.missing)
    assert not any(ORPHAN in m for m in exp.missing for ORPHAN in ("orphaned/",))
    record = json.loads((copy / "tune_norm.json").read_text())
    assert record["command"] == prov["command"] and record["resumes"][-1]["path"] == str(copy)


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "TUNE_NORM_DATA": str(DATA)}, start_new_session=True)


def _wait_for_rows(exp: Path, count: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while sum(len(r) for r in trial_results(exp).values()) < count:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "no results in time"
        time.sleep(0.5)


def test_sigterm_and_sigint_stop_cleanly_and_say_how_to_resume(tmp_path):
    """1, 11, 2: while a search runs, a --resume is refused (it used to write the same folder); SIGTERM exited 1
    with a stack dump and SIGINT exited 0; both now stop cleanly, exit 143/130 and print the --resume command;
    the stopped folder, moved, resumes where it now is."""
    space = space_file(tmp_path / "stop.yaml", num_samples=2, search={"type": "optuna", "max_concurrent": 1, "seed": 0},
                       space={"lr": {"loguniform": [0.01, 0.05]}, "epochs": 6, "subset": 2000, "val_size": 500})
    exp = tmp_path / "exp"
    proc = _start(["search", str(space), "--storage", str(exp), "--num-cpus", "2"])
    try:
        _wait_for_rows(exp, 1, proc)
        refused(cli("search", space, "--storage", exp, "--resume"), "is being written by a running search",
                f"pid {proc.pid}")
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err and "Fatal Python error" not in err, err[-3000:]
    line = next(x for x in err.splitlines() if x.startswith("stopped by SIGTERM"))
    command = line.split("continue it with: ", 1)[1]
    assert command == shlex.join(["tune-norm", "search", str(space), "--storage", str(exp), "--num-cpus", "2",
                                  "--resume"])
    # 2: the folder is moved; resuming it where it now is must write there only, never in the recorded folder
    moved = tmp_path / "moved"
    exp.rename(moved)
    rows = sum(len(r) for r in trial_results(moved).values())
    command = command.replace(str(exp), str(moved))
    proc = _start(shlex.split(command)[1:])
    try:
        _wait_for_rows(moved, rows + 1, proc)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-3000:]
    assert "stopped by SIGINT" in err and command in err and "Traceback" not in err, err[-3000:]
    assert f"was started in {exp}; it is resumed here" in err
    assert not exp.exists() and not (moved / ".tune_norm.lock").read_text()  # nothing written there; lock released
    for name, epochs in trial_results(moved).items():  # trials went on from their checkpoints, no epoch twice
        numbers = [r["epoch"] for r in epochs]
        assert numbers == sorted(set(numbers)), (name, numbers)


def test_a_frozen_worker_is_killed_by_the_driver_and_retried(tmp_path):
    """9: a SIGSTOPped worker froze its own watchdog, and the search waited forever."""
    space = space_file(tmp_path / "freeze.yaml", num_samples=1, epoch_timeout_s=4,
                       space={"lr": 0.02, "epochs": 2, "subset": 1000, "val_size": 500})
    exp = tmp_path / "exp"
    fault = {"kind": "freeze", "epoch": 1, "once_dir": str(tmp_path)}
    res = run_cli("search", space, "--storage", exp, "--num-cpus", "2", env={"TUNE_NORM_FAULT": json.dumps(fault)},
                  timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "its worker is frozen; the driver killed it" in res.stderr and "1 trials, 0 errored" in res.stdout
    (rows,) = trial_results(exp).values()
    assert [r["epoch"] for r in rows] == [1, 2]  # the retry went on from the epoch-1 checkpoint
    assert len(list(tmp_path.glob("fault-fired-*"))) == 1
