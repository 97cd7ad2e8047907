"""Reliability against a real local Ray (issue 13): errored searches, --restart-errored on a moved copy, a clean
stop on SIGTERM/SIGINT with the lock held meanwhile, a frozen worker. One small search is shared where it can be."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from test_reliability import cli, refused, snapshot

from conftest import CLI, DATA, ROOT, run_cli, trial_results, wait_for
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


OLD_SESSIONS = [f"session_2020-01-0{i}_00-00-00_000000_1" for i in range(1, 5)]


@pytest.fixture(scope="module")
def errored(tmp_path_factory):
    """An Optuna search whose every trial crashes, on each retry too (max_failures 1). Its Ray runs in a temp dir
    (short: Ray's socket paths are limited) that holds four old sessions of earlier runs."""
    root = tmp_path_factory.mktemp("errored")
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    for name in OLD_SESSIONS:
        (ray_tmp / "ray" / name / "logs").mkdir(parents=True)
    space = space_file(root / "crash.yaml")
    fault = {"kind": "crash", "epoch": 1}
    res = run_cli("search", space, "--storage", root / "exp", "--num-cpus", "2",
                  env={"TUNE_NORM_FAULT": json.dumps(fault), "RAY_TMPDIR": str(ray_tmp)})
    sessions_left = sorted(p.name for p in (ray_tmp / "ray").glob("session_*") if p.name != "session_latest")
    shutil.rmtree(ray_tmp, ignore_errors=True)
    return root, space, res, sessions_left


def test_a_search_whose_trials_all_errored_exits_non_zero_and_the_report_agrees(errored):
    """10, 11: every trial errored after its retry; the search exited 0, the report must say errored, 2 failures."""
    root, _, res, _ = errored
    assert res.returncode == 1, res.stderr[-3000:]
    assert "2 trials, 2 errored" in res.stdout and "error: all 2 trials errored" in res.stderr
    exp = experiment.load(root / "exp")
    assert list(exp.trials["status"]) == ["ERROR", "ERROR"] and list(exp.trials["num_failures"]) == [2, 2]
    assert sum("errored after 2 failures: RuntimeError: injected crash after epoch 1" in m for m in exp.missing) == 2


def test_a_cut_state_or_pickle_of_a_real_search_is_refused(errored, tmp_path):
    """5, 6: Ray's own files, cut: the state resumed 3 of 6 trials, the searcher pickle hung."""
    root, space, _, _ = errored
    for pattern in ("experiment_state-*.json", "searcher-state-*.pkl", "tuner.pkl"):
        copy = tmp_path / pattern.split("-")[0].replace("*", "").replace(".", "_")
        shutil.copytree(root / "exp", copy)
        target = sorted(copy.glob(pattern))[-1]
        target.write_bytes(target.read_bytes()[: target.stat().st_size * 2 // 3])
        refused(cli("search", space, "--storage", copy, "--resume"), target.name, "truncated or corrupt")


def test_restart_errored_resumes_a_moved_copy_in_place(errored, tmp_path):
    """2, 3: --restart-errored ended in KeyError (Optuna) and lost the experiment; a copy must resume in place,
    never in the recorded folder, and the errored folders are set aside with the right explanation."""
    root, space, _, _ = errored
    copy, gone = tmp_path / "copy", tmp_path / "gone"
    shutil.copytree(root / "exp", copy)
    shutil.copytree(root / "exp", gone)  # stands for the original, which the copy's record names
    prov = json.loads((copy / "tune_norm.json").read_text())
    prov["path"] = str(gone)
    (copy / "tune_norm.json").write_text(json.dumps(prov))
    for day in range(1, 5):  # 16: the state files of four earlier runs, superseded
        old = copy / f"experiment_state-2020-01-0{day}_00-00-00.json"
        shutil.copy(next(copy.glob("experiment_state-*.json")), old)
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
    assert len(list(copy.glob("experiment_state-*.json"))) == 3  # the newest three, this run's among them
    assert not list(copy.glob("experiment_state-2020-01-0[1-3]*"))
    record = json.loads((copy / "tune_norm.json").read_text())
    assert record["command"] == prov["command"] and record["resumes"][-1]["path"] == str(copy)


def test_old_ray_sessions_are_pruned_after_a_search(errored):
    """16: every local Ray left a session folder in the temp dir, never removed."""
    left = errored[3]
    assert len(left) == 3 and OLD_SESSIONS[0] not in left and OLD_SESSIONS[1] not in left, left
    assert any(not name.startswith("session_2020") for name in left)  # this search's own session is kept


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "TUNE_NORM_DATA": str(DATA)}, start_new_session=True)


def _wait_for_rows(exp: Path, count: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    wait_for(lambda: sum(len(r) for r in trial_results(exp).values()) >= count, timeout, proc)


def _signal_after_rows(proc: subprocess.Popen, exp: Path, rows: int, sig: int, meanwhile=None) -> tuple[str, str]:
    """Once ``exp`` holds ``rows`` result rows, run ``meanwhile`` and send ``sig`` to the driver; its output."""
    try:
        _wait_for_rows(exp, rows, proc)
        if meanwhile:
            meanwhile()
        os.kill(proc.pid, sig)
        return proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_sigterm_and_sigint_stop_cleanly_and_say_how_to_resume(tmp_path):
    """1, 11, 2: while a search runs, a --resume is refused (it used to write the same folder); SIGTERM exited 1
    with a stack dump and SIGINT exited 0; both now stop cleanly, exit 143/130 and print the --resume command;
    the stopped folder, moved, resumes where it now is."""
    space = space_file(tmp_path / "stop.yaml", num_samples=2,
                       search={"type": "optuna", "max_concurrent": 1, "seed": 0},
                       space={"lr": {"loguniform": [0.01, 0.05]}, "epochs": 6, "subset": 2000, "val_size": 500})
    exp = tmp_path / "exp"
    proc = _start(["search", str(space), "--storage", str(exp), "--num-cpus", "2"])

    def second_driver_refused():
        refused(cli("search", space, "--storage", exp, "--resume"), "is being written by a running search",
                f"pid {proc.pid}")

    out, err = _signal_after_rows(proc, exp, 1, signal.SIGTERM, meanwhile=second_driver_refused)
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
    out, err = _signal_after_rows(proc, moved, rows + 1, signal.SIGINT)
    assert proc.returncode == 130, err[-3000:]
    assert "stopped by SIGINT" in err and command in err and "Traceback" not in err, err[-3000:]
    assert f"was started in {exp}; it is resumed here" in err
    assert not exp.exists() and not (moved / ".tune_norm.lock").read_text()  # nothing written there; lock released
    for name, epochs in trial_results(moved).items():  # trials went on from their checkpoints, no epoch twice
        numbers = [r["epoch"] for r in epochs]
        assert numbers == sorted(set(numbers)), (name, numbers)


def test_a_frozen_worker_is_killed_by_the_driver_and_retried(tmp_path):
    """9: a worker stopped from outside (SIGSTOP) froze its own watchdog too, and the search waited forever."""
    space = space_file(tmp_path / "freeze.yaml", num_samples=1, epoch_timeout_s=4,
                       space={"lr": 0.02, "epochs": 6, "subset": 1000, "val_size": 500})
    exp = tmp_path / "exp"
    proc = _start(["search", str(space), "--storage", str(exp), "--num-cpus", "2"])
    try:
        _wait_for_rows(exp, 1, proc)
        (rows,) = trial_results(exp).values()
        os.kill(rows[0]["pid"], signal.SIGSTOP)  # the trial's worker, watchdog thread and all
        frozen_at = len(rows)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-3000:]
    assert "its worker is frozen; the driver killed it" in err and "1 trials, 0 errored" in out
    (rows,) = trial_results(exp).values()
    epochs = [r["epoch"] for r in rows]
    assert epochs == list(range(1, 7)) and epochs[frozen_at - 1] <= frozen_at, epochs  # went on from a checkpoint
    assert len({r["pid"] for r in rows}) == 2  # a new worker finished it


def test_restart_errored_with_a_grid(tmp_path):
    """3 (grid): --restart-errored reruns the errored cell from scratch; the finished one is kept."""
    space = space_file(tmp_path / "grid.yaml", search={"type": "grid", "max_concurrent": 2}, max_failures=0,
                       grid=[{"seed": 1}, {"seed": 2}], num_samples=1,
                       space={"lr": 0.02, "epochs": 1, "subset": 1000, "val_size": 500})
    exp = tmp_path / "exp"
    fault = {"kind": "crash", "epoch": 1, "match": {"seed": 2}}
    first = run_cli("search", space, "--storage", exp, "--num-cpus", "2", env={"TUNE_NORM_FAULT": json.dumps(fault)})
    assert first.returncode == 0 and "2 trials, 1 errored" in first.stdout, first.stderr[-3000:]
    kept = {name: rows for name, rows in trial_results(exp).items() if rows}  # the crash came before a report
    res = run_cli("search", space, "--storage", exp, "--num-cpus", "2", "--resume", "--restart-errored")
    assert res.returncode == 0 and "2 trials, 0 errored" in res.stdout, res.stderr[-3000:]
    assert len(list((exp / "restarted").iterdir())) == 1
    after = trial_results(exp)
    assert len(after) == 2 and sorted(r[-1]["config"]["cell"]["seed"] for r in after.values()) == [1, 2]
    assert len(kept) == 1
    for name, rows in kept.items():  # the finished cell was not rerun
        assert [r["timestamp"] for r in after[name]] == [r["timestamp"] for r in rows]


def _rewound(pickled: dict, result: dict) -> dict:
    """Ray's checkpoint record of a trial (pickled in its snapshot) set back to the checkpoint of ``result``."""
    import copy
    import pickle

    from ray import cloudpickle

    manager = pickle.loads(bytes.fromhex(pickled["value"]))
    latest = manager._latest_checkpoint_result
    checkpoint = copy.copy(latest.checkpoint)
    checkpoint.path = str(Path(checkpoint.path).with_name(result["checkpoint_dir_name"]))
    manager._latest_checkpoint_result = type(latest)(checkpoint=checkpoint, metrics=result)
    manager._checkpoint_results = [manager._latest_checkpoint_result]
    return {**pickled, "value": cloudpickle.dumps(manager).hex()}


def test_a_driver_killed_between_upload_and_snapshot_loses_no_epoch_and_no_trial(tmp_path):
    """kill -9 while Ray uploads its snapshot (on S3 its files go up one by one) leaves the pieces from different
    moments. Made here by hand from a finished search: Ray's snapshot has trial A at epoch 1 (its checkpoint since
    replaced by epoch 2's), trial B finished but its result.json without epoch 2, the search generator counting a
    third trial and a live one that finished. The resume trains no epoch twice, reports every epoch once, and
    makes exactly the planned trials."""
    space = space_file(tmp_path / "cut.yaml", num_samples=3, space={"lr": {"loguniform": [0.01, 0.05]}, "epochs": 2,
                                                                   "subset": 1000, "val_size": 500})
    exp = tmp_path / "exp"
    first = run_cli("search", space, "--storage", exp, "--num-cpus", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    import pickle

    from ray import cloudpickle

    state_file = max(exp.glob(experiment.STATE_GLOB))
    state = json.loads(state_file.read_text())
    trials = [[json.loads(t), json.loads(r)] for t, r in state["trial_data"]]
    rows = {t["trial_id"]: [json.loads(x) for x in (exp / t["relative_logdir"] / "result.json").read_text().split("\n")
                            if x] for t, _ in trials}
    (a, a_run), (b, b_run), (c, _) = trials  # C: made after the snapshot, so the resume sets it aside
    a["status"] = "RUNNING"
    a_run["last_result"] = {**rows[a["trial_id"]][0], "checkpoint_dir_name": "checkpoint_000000"}
    a_run["checkpoint_manager"] = _rewound(a_run["checkpoint_manager"], a_run["last_result"])
    a_results = exp / a["relative_logdir"] / "result.json"
    a_results.write_text(json.dumps(rows[a["trial_id"]][0]) + "\n")
    b_results = exp / b["relative_logdir"] / "result.json"
    b_results.write_text(json.dumps(rows[b["trial_id"]][0]) + "\n" + '{"epoch": 2, "val')  # cut mid-line too
    state["trial_data"] = [[json.dumps(t), json.dumps(r)] for t, r in ((a, a_run), (b, b_run))]
    state_file.write_text(json.dumps(state))
    gen_file = max(exp.glob(experiment.SEARCHER_GLOB))
    gen = pickle.loads(gen_file.read_bytes())
    gen["counter"], gen["name:ConcurrencyLimiter"]["live_trials"] = 3, {a["trial_id"], b["trial_id"]}
    gen_file.write_bytes(cloudpickle.dumps(gen))

    res = run_cli("search", space, "--storage", exp, "--num-cpus", "2", "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"{a['relative_logdir']}: Ray's last snapshot names a checkpoint the trial replaced" in res.stderr
    held, live = ", ".join(sorted([a["trial_id"], b["trial_id"]])), a["trial_id"]
    assert (f"its searcher counted 3 trials made, the snapshot holds 2; its concurrency limiter held {held} as live, "
            f"the snapshot {live}") in res.stderr, res.stderr[-3000:]
    assert f"{b['relative_logdir']}: its result.json lacked the last epoch" in res.stderr
    after = trial_results(exp)
    assert len(after) == 3 and c["relative_logdir"] not in after, after.keys()  # C set aside; a new third trial
    assert all([r["epoch"] for r in rs] == [1, 2] for rs in after.values()), {k: [r["epoch"] for r in v]
                                                                              for k, v in after.items()}
    # A's epoch 2 is the one trained before the kill, reported again from its checkpoint, not trained again
    assert after[a["relative_logdir"]][1]["val_acc"] == rows[a["trial_id"]][1]["val_acc"]
    assert after[a["relative_logdir"]][1]["wall_time"] == rows[a["trial_id"]][1]["wall_time"]
    assert after[b["relative_logdir"]][1]["val_acc"] == rows[b["trial_id"]][1]["val_acc"]
    rep = run_cli("report", exp)
    assert rep.returncode == 0 and "Trials: 3 of 3 planned (3 terminated)" in rep.stdout, rep.stdout[-2000:]
