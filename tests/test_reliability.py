"""Reliability without Ray (issue 13): refusals that must happen before Ray starts, one writer per folder, pruning,
what the report says about broken or unusual folders. Each test names the numbered failure it reproduces."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from conftest import ROOT, run_cli, write_space
from test_report import fake_experiment
from tune_norm import experiment, lock, resume, sessions
from tune_norm import space as space_mod
from tune_norm.cli import app

SMOKE = ROOT / "search_spaces" / "smoke.yaml"


def fake_ray_folder(path: Path) -> Path:
    """A hand-made experiment folder with the files Ray's resume reads (state, tuner.pkl, a searcher pickle)."""
    fake_experiment(path)
    (path / "tuner.pkl").write_bytes(pickle.dumps({"not": "ray"}))
    (path / "searcher-state-2026-01-01_00-00-00.pkl").write_bytes(pickle.dumps(list(range(100))))
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(*args) -> SimpleNamespace:
    """The real CLI in this process (fast: no imports per call), for commands that end before Ray starts."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr)


def refused(res, *words: str) -> None:
    """One sentence on stderr (besides warnings about the space), exit code 2, no traceback."""
    assert res.returncode == 2, (res.returncode, res.stdout[-2000:], res.stderr[-3000:])
    lines = [line for line in res.stderr.splitlines() if line.strip() and not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-3000:]
    assert "Traceback" not in res.stderr and all(w in lines[0] for w in words), lines


# -- 1. one writer per folder ----------------------------------------------------------------------------
HOLD = ("import sys, time; from tune_norm.lock import ExperimentLock; "
        "ExperimentLock(sys.argv[1], 'tune-norm search held.yaml').acquire(); print('held', flush=True); "
        "time.sleep(120)")


def test_a_second_driver_is_refused_and_a_stale_lock_is_taken_over(tmp_path):
    """1: a second search or --resume on a folder a running driver writes is refused, naming that driver."""
    exp = fake_ray_folder(tmp_path / "exp")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(exp)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(exp)
        for extra in (["--resume"], []):  # a plain second search gets the same answer, not "pass --resume"
            res = run_cli("search", SMOKE, "--storage", exp, *extra)
            refused(res, "is being written by a running search", f"pid {holder.pid}", "tune-norm search held.yaml")
        assert snapshot(exp) == before
        assert lock.holder(exp).pid == holder.pid
    finally:
        holder.kill()
        holder.wait()
    # the driver was killed: its lock file stays, but nobody holds it any more
    assert lock.holder(exp) is None and (exp / lock.LOCK_FILE).read_text()
    taken = lock.ExperimentLock(exp).acquire()
    try:
        assert taken.took_over is not None and taken.took_over.pid == holder.pid
        assert lock.holder(exp).pid == os.getpid()
    finally:
        taken.release()
    assert lock.holder(exp) is None


# -- 4. pickles of others --------------------------------------------------------------------------------
def test_resume_refuses_pickles_others_can_write_or_own(tmp_path):
    """4: resuming unpickles tuner.pkl and searcher-state; refuse files writable by others, or not the user's."""
    exp = fake_ray_folder(tmp_path / "exp")
    (exp / "searcher-state-2026-01-01_00-00-00.pkl").chmod(0o666)
    before = snapshot(exp)
    refused(cli("search", SMOKE, "--storage", exp, "--resume"), "searcher-state-2026-01-01_00-00-00.pkl",
            "writable by others", "runs code")
    assert snapshot(exp) == before
    (exp / "searcher-state-2026-01-01_00-00-00.pkl").chmod(0o644)
    if os.getuid() != 0:
        pytest.skip("chown to another user needs root")
    os.chown(exp / "tuner.pkl", 65534, 65534)
    refused(cli("search", SMOKE, "--storage", exp, "--resume"), "tuner.pkl belongs to uid 65534", "runs code")


# -- 5, 6. incomplete state --------------------------------------------------------------------------------
def test_resume_refuses_a_truncated_state_or_pickle(tmp_path):
    """5, 6: a cut experiment_state or searcher pickle is refused (old code: partial resume, or a hang)."""
    exp = fake_ray_folder(tmp_path / "exp")
    state = next(exp.glob("experiment_state-*.json"))
    whole = state.read_bytes()
    state.write_bytes(whole[: len(whole) // 2])
    refused(cli("search", SMOKE, "--storage", exp, "--resume"), state.name, "truncated or corrupt")
    state.write_bytes(whole)
    pkl = exp / "searcher-state-2026-01-01_00-00-00.pkl"
    pkl.write_bytes(pkl.read_bytes()[:-40])
    refused(cli("search", SMOKE, "--storage", exp, "--resume"), pkl.name, "truncated or corrupt")
    with pytest.raises(Exception, match="truncated"):
        resume.check_complete(exp)


# -- 7, 8. no hangs on resources or addresses ----------------------------------------------------------------
@pytest.mark.parametrize("args, words", [
    (["--cpus-per-trial", "4", "--num-cpus", "2"], ["asks for 4 CPUs", "has 2"]),
    (["--gpus-per-trial", "0.5", "--num-gpus", "0"], ["asks for 0.5 GPU", "has 0 GPU"]),
    (["--num-cpus", "0"], ["--num-cpus must be at least 1"]),
    (["--num-cpus", "-1"], ["--num-cpus must be at least 1"]),
])
def test_resources_a_local_ray_can_never_give_are_refused(tmp_path, args, words):
    """7 (and 14: --num-cpus -1): refused before Ray starts instead of waiting forever."""
    exp = tmp_path / "exp"
    refused(cli("search", SMOKE, "--storage", exp, *args), *words)
    assert not exp.exists()


def test_an_unreachable_address_is_one_sentence_in_bounded_time(tmp_path):
    """8: --address 127.0.0.1:1 retried for minutes; now one sentence within seconds."""
    exp = tmp_path / "exp"
    started = time.monotonic()
    refused(cli("search", SMOKE, "--storage", exp, "--address", "127.0.0.1:1"),
            "cannot reach a Ray cluster at 127.0.0.1:1")
    assert time.monotonic() - started < 30 and not exp.exists()
    refused(cli("search", SMOKE, "--storage", exp, "--address", "nohost"), "host:port")


# -- 12. the record of a resumed experiment ------------------------------------------------------------------
def test_resume_with_another_space_or_overrides_is_refused(tmp_path):
    """12: --resume with other overrides rewrote tune_norm.json (the report then named the wrong space)."""
    exp = fake_ray_folder(tmp_path / "exp")
    space = write_space(tmp_path / "s.yaml")
    prov = json.loads((exp / "tune_norm.json").read_text())
    prov["spec"] = json.loads(json.dumps(asdict(space_mod.load(space)), default=str))
    (exp / "tune_norm.json").write_text(json.dumps(prov))
    before = snapshot(exp)
    refused(cli("search", space, "--storage", exp, "--resume", "--num-samples", "6"),
            "num_samples differ from the record", "recorded 4, given 6")
    refused(cli("search", space, "--storage", exp, "--resume", "--set", "epochs=5"), "params differ",
            "epochs: recorded 2, given 5")
    assert snapshot(exp) == before


# -- 13. pooling ---------------------------------------------------------------------------------------------
def test_pooling_refuses_a_repeated_setup_and_seed(tmp_path):
    """13: two runs of one config with one seed were pooled as two replicates (zero variance)."""
    a = fake_experiment(tmp_path / "a", name="a", prefix="a")
    b = fake_experiment(tmp_path / "b", name="b", prefix="b")
    result = CliRunner().invoke(app, ["report", str(a), str(b), "--no-plots", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "a repeated seed is not a new replicate" in result.output, result.output
    assert "with seed 1" in result.output and not (tmp_path / "o").exists()


# -- 14, 15. bad inputs are one sentence, exit 2, nothing written --------------------------------------------
def test_bad_search_inputs_are_one_sentence(tmp_path):
    """14, 15: storage that is a file or cannot be written, binary and empty space files, --name, --storage ''."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    refused(cli("search", SMOKE, "--storage", afile), "is a file, not a folder")
    refused(cli("search", SMOKE, "--storage", afile / "exp"), "is a file, not a folder")
    refused(cli("search", SMOKE, "--storage", "/proc/tune_norm_exp"), "is not writable")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    refused(cli("search", binary, "--storage", tmp_path / "b"), "is not a text file")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    refused(cli("search", empty, "--storage", tmp_path / "e"), "is empty")
    refused(cli("search", SMOKE, "--name", "../evil", "--storage", tmp_path / "n"), "name",
            "letters, digits, - and _ only")
    refused(cli("search", SMOKE, "--storage", ""), "--storage is empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "binary.yaml", "empty.yaml"]


def test_train_out_that_is_a_file_or_read_only_is_one_sentence(tmp_path):
    """14: train --out a file or an unwritable folder gave a traceback after training."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    refused(run_cli("train", "--out", afile, "--subset", "500", "--epochs", "1"), "--out", "is a file")
    refused(run_cli("train", "--out", "/proc/tune_norm_run", "--subset", "500", "--epochs", "1"), "not writable")


def test_report_reads_binary_and_odd_files_with_notes(tmp_path):
    """14, 15: a binary result.json or error.txt, a non-numeric epoch, a torn last line: notes, not tracebacks."""
    exp = fake_experiment(tmp_path / "exp")
    (exp / "trial_t3" / "error.txt").write_bytes(b"\xff\xfe\x00binary\x80\n")
    rows = (exp / "trial_t1" / "result.json").read_text().splitlines()
    odd = json.loads(rows[0]) | {"epoch": "three"}
    (exp / "trial_t1" / "result.json").write_text("\n".join([*rows, json.dumps(odd)]) + "\n")
    (exp / "trial_t2" / "result.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary\xff" * 20)
    res = run_cli("report", exp, "--no-plots")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert "without a numeric epoch left out" in res.stdout and "are not JSON results" in res.stdout
    torn = fake_experiment(tmp_path / "torn")  # trial t2's last line is cut off mid-write
    assert any("trial_t2/result.json: its last line (2) is cut off" in m for m in experiment.load(torn).missing)


# -- 10. status of a trial errored after its retries ---------------------------------------------------------
def test_a_trial_errored_after_its_retries_is_errored_and_retries_are_counted(tmp_path):
    """10: Ray's last snapshot said RUNNING for a trial that then failed its last retry; the report said running."""
    exp = fake_experiment(tmp_path / "exp")
    prov = json.loads((exp / "tune_norm.json").read_text())
    prov["spec"]["max_failures"] = 1
    (exp / "tune_norm.json").write_text(json.dumps(prov))
    (exp / "trial_t2" / "error.txt").write_text("Failure # 1 (occurred at x)\nRuntimeError: a\n"
                                                "Failure # 2 (occurred at y)\nRuntimeError: b\n")
    (exp / "trial_t1" / "error.txt").write_text("Failure # 1 (occurred at x)\nRuntimeError: once\n")
    loaded = experiment.load(exp)
    by_id = loaded.trials.set_index("trial_id")
    assert by_id.loc["t2", "status"] == "ERROR" and by_id.loc["t2", "num_failures"] == 2
    assert any(m == "trial t2 errored after 2 failures: RuntimeError: b" for m in loaded.missing), loaded.missing
    assert any("trial t1 failed 1 time and was retried" in m for m in loaded.missing)
    # while a driver still writes the folder, RUNNING is believed (the retry may be under way)
    with lock.ExperimentLock(exp):
        assert experiment.load(exp).trials.set_index("trial_id").loc["t2", "status"] == "RUNNING"


# -- 16. pruning -----------------------------------------------------------------------------------------------
def test_old_ray_sessions_and_superseded_state_files_are_pruned(tmp_path):
    """16: a session folder per run and a state file per resume were never removed."""
    root = tmp_path / "ray"
    names = [f"session_2026-11-2{i}_00-00-00_00000{i}_1" for i in range(6)]
    for name in names:
        (root / name / "logs").mkdir(parents=True)
    (root / "session_latest").symlink_to(root / names[1])
    removed = sessions.prune(root, keep=3)
    assert sorted(p.name for p in removed) == [names[0], names[2]]  # the latest link's target is kept
    assert sorted(p.name for p in root.iterdir()) == sorted([names[1], *names[3:], "session_latest"])
    exp = fake_ray_folder(tmp_path / "exp")
    for i in range(5):
        (exp / f"experiment_state-2026-01-0{i + 2}_00-00-00.json").write_text("{}")
        (exp / f"searcher-state-2026-01-0{i + 2}_00-00-00.pkl").write_bytes(b"x")
    resume.prune_states(exp)
    progress = exp / "trial_t1" / "progress.csv"  # 15: a resumed trial reported epoch 2 again
    progress.write_text("epoch,val_acc\n1,90\n2,91\n2,92\n3,93\n")
    results = exp / "trial_t1" / "result.json"  # the same in Ray's result.json; a cut line is left for the reader
    rows = [{"epoch": 1, "val_acc": 90}, {"epoch": 2, "val_acc": 91}, {"epoch": 2, "val_acc": 92}]
    results.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"epoch": 3, "val_')
    assert resume.dedupe_results(exp) == [progress, results]
    assert progress.read_text().splitlines() == ["epoch,val_acc", "1,90", "2,92", "3,93"]
    assert results.read_text().splitlines() == [json.dumps(rows[0]), json.dumps(rows[2]), '{"epoch": 3, "val_']
    assert resume.dedupe_results(exp) == []  # nothing left to mend
    assert len(list(exp.glob("experiment_state-*.json"))) == 3 and len(list(exp.glob("searcher-state-*"))) == 3
    assert (exp / "experiment_state-2026-01-06_00-00-00.json").exists()


def test_an_epoch_reported_again_keeps_its_first_report_and_one_trained_again_its_last(tmp_path):
    """Epoch 2 reported again from a mended checkpoint (the same wall_time: trained once) keeps the first report;
    epoch 3 trained again after a restore from an older checkpoint keeps the last."""
    f = tmp_path / "trial_a" / "result.json"
    f.parent.mkdir()
    rows = [(1, 10, 1), (2, 20, 2), (2, 20, 3), (3, 31, 4), (3, 32, 5)]
    f.write_text("".join(json.dumps({"epoch": e, "wall_time": w, "timestamp": t}) + "\n" for e, w, t in rows))
    assert resume.dedupe_results(tmp_path) == [f]
    assert [json.loads(line)["timestamp"] for line in f.read_text().splitlines()] == [1, 2, 5]


def test_a_checkpoint_replaced_after_rays_last_snapshot_is_mended_for_the_resume(tmp_path):
    """kill -9 between a trial's new checkpoint (which deletes the old one, num_to_keep: 1) and Ray's next snapshot:
    the snapshot names a checkpoint that is gone, and the resumed trial errored ("does not exist on storage anymore")
    and lost its epochs. The newest checkpoint now takes the name the snapshot expects."""
    from tune_norm.experiment import mend_checkpoints

    exp = tmp_path / "exp"
    trial = exp / "trial_a"
    (trial / "checkpoint_000001").mkdir(parents=True)
    (trial / "checkpoint_000001" / "state.pt").write_bytes(b"epoch 2")
    (exp / "trial_b" / "checkpoint_000003").mkdir(parents=True)  # in step with the snapshot: left alone
    runtime = {"last_result": {"checkpoint_dir_name": "checkpoint_000000", "epoch": 1}}
    in_step = {"last_result": {"checkpoint_dir_name": "checkpoint_000003"}}
    state = {"trial_data": [[json.dumps({"relative_logdir": "trial_a"}), json.dumps(runtime)],
                            [json.dumps({"relative_logdir": "trial_b"}), json.dumps(in_step)]]}
    (exp / "experiment_state-2026-11-29_00-00-00.json").write_text(json.dumps(state))
    assert mend_checkpoints(exp) == ["trial_a"]
    assert [p.name for p in trial.iterdir()] == ["checkpoint_000000"]
    assert (trial / "checkpoint_000000" / "state.pt").read_bytes() == b"epoch 2"
    # the trial reports again what it trained after epoch 1 (test_reliability_search.py runs it)
    assert json.loads((trial / "checkpoint_000000" / "reported.json").read_text()) == {"epoch": 1}
    assert (exp / "trial_b" / "checkpoint_000003").is_dir() and mend_checkpoints(exp) == []
