"""Around the search: the Optuna study file, MLflow, progress lines, train --from, the CLI's manners, plot titles."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import CLI, DATA, ROOT, run_cli, trial_results
from tune_norm import retrain, study
from tune_norm.errors import UserError

SMOKE = ROOT / "search_spaces" / "smoke.yaml"
SAMPLED = ("norm", "groups", "l1", "l2", "lr")  # what smoke.yaml samples


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke search (4 trials) with the MLflow tracker, its study read while it runs; shared by the tests."""
    tmp = tmp_path_factory.mktemp("eco")
    exp, mlruns = tmp / "smoke", tmp / "mlruns"
    env = {**os.environ, "TUNE_NORM_DATA": str(DATA)}
    started = time.monotonic()
    proc = subprocess.Popen([*CLI, "search", str(SMOKE), "--storage", str(exp), "--num-cpus", "2",
                             "--mlflow", str(mlruns)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)
    during = None  # the study as optuna-dashboard would see it mid-search
    while proc.poll() is None and during is None:
        time.sleep(0.5)
        if study.study_file(exp).exists():
            try:
                trials = study.load(exp).trials
            except UserError:  # the file is made a moment before the study in it
                continue
            if trials and any(t.state.name == "COMPLETE" for t in trials) and proc.poll() is None:
                during = [(t.number, t.state.name, t.user_attrs.get(study.RAY_TRIAL_ID)) for t in trials]
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return {"exp": exp, "mlruns": mlruns, "stdout": out, "stderr": err, "during": during,
            "seconds": time.monotonic() - started}


def _last_results(exp: Path) -> dict[str, dict]:
    return {name.removeprefix("trial_"): rows[-1] for name, rows in trial_results(exp).items()}


@pytest.mark.slow
def test_the_study_is_readable_while_the_search_runs_and_matches_ray_after(smoke):
    exp = smoke["exp"]
    assert smoke["during"], "the study file never showed a finished trial while the search ran"
    assert any(state == "RUNNING" for _, state, _ in smoke["during"]) or len(smoke["during"]) < 4
    loaded = study.load(exp)
    assert loaded.study_name == "smoke" and loaded.metric_names == ["val_acc"]
    assert loaded.direction.name == "MAXIMIZE" and loaded.user_attrs["experiment"] == str(exp)
    ray = _last_results(exp)
    by_ray_id = {t.user_attrs[study.RAY_TRIAL_ID]: t for t in loaded.trials}
    assert set(by_ray_id) == set(ray) and len(loaded.trials) == 4
    for trial_id, last in ray.items():
        ot = by_ray_id[trial_id]
        config = last["config"]
        assert ot.state.name == "COMPLETE"
        assert ot.params == {k: config[k] for k in SAMPLED if config.get(k) is not None}
        assert ot.value == last["val_acc"]  # Ray's final result is what Optuna was told
        # per-epoch values, for the dashboard's curves (Ray passes a trial's final result to on_trial_complete only)
        epochs = {r["training_iteration"]: r["val_acc"] for r in trial_results(exp)[f"trial_{trial_id}"]}
        assert ot.intermediate_values.items() <= epochs.items() and len(ot.intermediate_values) >= len(epochs) - 1
    # the plain Optuna API reads it too (what optuna-dashboard and a notebook use)
    import optuna

    plain = optuna.load_study(study_name=None, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(exp / study.STUDY_FILE))))
    assert len(plain.trials_dataframe()) == 4 and plain.best_value == max(r["val_acc"] for r in ray.values())


@pytest.mark.slow
def test_mlflow_file_store_holds_one_run_per_trial(smoke, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps file stores behind this switch

    client = mlflow.MlflowClient(tracking_uri=smoke["mlruns"].resolve().as_uri())
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    ray = _last_results(smoke["exp"])
    assert len(runs) == 4
    for run in runs:
        trial_id = run.data.tags["trial_name"].rsplit("_", 1)[-1]
        assert run.data.tags["tune_norm.experiment"] == str(smoke["exp"])
        assert float(run.data.params["lr"]) == pytest.approx(ray[trial_id]["config"]["lr"])
        assert run.data.metrics["val_acc"] == ray[trial_id]["val_acc"]
        assert "lr_epoch_start" in run.data.metrics and "lr" not in run.data.metrics  # no shadowed config key


@pytest.mark.slow
def test_a_search_prints_progress_lines_not_rays_table(smoke):
    out, err, exp = smoke["stdout"], smoke["stderr"], smoke["exp"]
    lines = out.splitlines()
    assert lines[0].startswith("search smoke: 4 trials") and lines[0].endswith(f"results in {exp}")
    assert f"optuna-dashboard {exp / study.STUDY_FILE}" in out and f"tensorboard --logdir {exp}" in out
    assert "trials 4 done, 0 running, 0 pending, 0 errored of 4" in out and "| best val_acc " in out
    assert any("eta <= " in line for line in lines)
    assert f"results in {exp}" in lines[-2]  # the folder again at the end
    for noise in ("== Status ==", "snapshotting", "driver_artifacts", "Checkpoint successfully created",
                  "Token authentication", "ExperimentalWarning"):
        assert noise not in out + err, noise
    events = list(exp.glob("trial_*/events.out.tfevents.*"))  # TensorBoard's files, as the README says
    assert len(events) == 4 and all(b"ray/tune/lr_epoch_start" in e.read_bytes() for e in events)
    assert all("lr" not in row and "lr_epoch_start" in row for row in _last_results(exp).values())


@pytest.mark.slow
def test_after_the_search_the_workers_output_is_no_longer_printed(tmp_path):
    """What a worker prints once the search is over (Ray's teardown) does not reach the user, and a next search in
    the same process hears its workers again: a real local Ray, an actor that prints around mute and hear."""
    script = tmp_path / "mute.py"
    script.write_text(
        "import time, ray\n"
        "from tune_norm import progress\n"
        "ray.init(num_cpus=1, include_dashboard=False, log_to_driver=True)\n"
        "@ray.remote\n"
        "class Talker:\n"
        "    def say(self, word):\n"
        "        print(word, flush=True)\n"
        "t = Talker.remote()\n"
        "ray.get(t.say.remote('WORKER-BEFORE'))\n"
        "time.sleep(3)\n"
        "progress.mute_workers()\n"
        "ray.get(t.say.remote('WORKER-AFTER'))\n"
        "time.sleep(3)\n"
        "progress.hear_workers()\n"
        "ray.get(t.say.remote('WORKER-AGAIN'))\n"
        "time.sleep(3)\n"
        "ray.shutdown()\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    said = done.stdout + done.stderr
    assert "WORKER-BEFORE" in said and "WORKER-AFTER" not in said and "WORKER-AGAIN" in said, said[-2000:]


@pytest.mark.slow
def test_train_from_the_best_trial_reproduces_it(smoke, tmp_path):
    exp = smoke["exp"]
    best = study.load(exp).best_trial.user_attrs[study.RAY_TRIAL_ID]  # Optuna's best is the report's best
    res = run_cli("train", "--from", exp, "--threads", "1", "--out", tmp_path / "best")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"best trial of {exp}: {best}" in res.stdout
    source = json.loads((tmp_path / "best" / "source.json").read_text())
    assert source["trial_id"] == best and source["best"] and source["experiment"] == str(exp)
    rows = json.loads((tmp_path / "best" / "metrics.json").read_text())
    trial = trial_results(exp)[f"trial_{best}"]
    assert [r["val_acc"] for r in rows] == [r["val_acc"] for r in trial]  # same config, same seed, same numbers
    assert [r["train_loss"] for r in rows] == pytest.approx([r["train_loss"] for r in trial], rel=1e-6)


@pytest.mark.slow
def test_train_from_a_named_trial_on_the_full_training_set_with_seeds(smoke, tmp_path):
    from typer.testing import CliRunner

    from tune_norm.cli import app

    exp = smoke["exp"]
    batchnorm = next(k for k, r in _last_results(exp).items() if r["config"]["norm"] != "group")
    res = CliRunner().invoke(app, ["train", "--from", str(exp), "--trial", f"trial_{batchnorm}", "--full-train",
                                   "--seeds", "3,4", "--epochs", "1", "--subset", "1000", "--out", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    params = json.loads((exp / f"trial_{batchnorm}" / "params.json").read_text())
    for seed in (3, 4):
        cfg = json.loads((tmp_path / "m" / f"seed_{seed}" / "config.json").read_text())
        assert (tmp_path / "m" / f"seed_{seed}" / "model.pt").stat().st_size > 10_000
        assert cfg["val_size"] == 0 and cfg["seed"] == seed and cfg["epochs"] == 1 and cfg["subset"] == 1000
        assert {k: cfg[k] for k in ("norm", "lr", "l1", "l2", "batch_size")} == {
            k: params[k] for k in ("norm", "lr", "l1", "l2", "batch_size")}
    # the trial's params.json (groups None: it does not apply to this norm) is a --config too
    assert params["groups"] is None
    res = CliRunner().invoke(app, ["train", "--config", str(exp / f"trial_{batchnorm}" / "params.json"),
                                   "--epochs", "1", "--subset", "1000", "--out", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "p" / "config.json").read_text())["lr"] == params["lr"]
    bad = CliRunner().invoke(app, ["train", "--from", str(exp), "--trial", "nope"])
    assert bad.exit_code == 2 and "has no trial 'nope'" in bad.stderr and bad.stderr.count("\n") == 1


@pytest.mark.slow
def test_plots_are_titled_with_metric_and_seeds_and_lr_is_on_a_log_axis(smoke, tmp_path):
    res = run_cli("report", smoke["exp"], "--out", tmp_path / "report")
    assert res.returncode == 0, res.stderr[-3000:]
    pngs = {p.name: Image.open(p).text for p in (tmp_path / "report").glob("*.png")}
    assert "accuracy_vs_lr.png" in pngs and "learning_curves.png" in pngs
    for name, text in pngs.items():
        assert "ranked by val_acc; 1 seed" in text["Title"], (name, text["Title"])
    # smoke.yaml samples lr log-uniformly from [0.01, 0.05]: too narrow to look logarithmic, so only the spec says so
    assert pngs["accuracy_vs_lr.png"]["Description"] == "x axis lr: log"


def test_grid_params_json_nests_under_cell_and_drops_inactive_keys():
    params = {"cell": {"norm": "batch", "groups": None, "lr": 0.02, "seed": 3}, "threads": 1, "device": "cuda"}
    assert retrain.trial_config(params) == {"norm": "batch", "lr": 0.02, "seed": 3}
    assert retrain.runs({"lr": 0.02, "val_size": 5000}, full_train=True, seeds=(1, 2)) == [
        {"lr": 0.02, "val_size": 0, "seed": 1}, {"lr": 0.02, "val_size": 0, "seed": 2}]


@pytest.mark.slow
def test_version_and_python_m():
    res = subprocess.run([sys.executable, "-m", "tune_norm", "--version"], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert res.returncode == 0
    import optuna
    import ray
    import torch

    for package, version in (("tune-norm", "0.1.0"), ("torch", torch.__version__.split("+")[0]),
                             ("ray", ray.__version__), ("optuna", optuna.__version__)):
        assert f"{package} {version}" in res.stdout
    helped = subprocess.run([sys.executable, "-m", "tune_norm", "--help"], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert helped.returncode == 0 and "--install-completion" in helped.stdout and "search" in helped.stdout
    # what the installed bash completion asks the program: the options that complete "--sch"
    env = {**os.environ, "_TUNE_NORM_COMPLETE": "complete_bash", "COMP_WORDS": "tune-norm search x --sch",
           "COMP_CWORD": "3"}
    completed = subprocess.run([sys.executable, "-m", "tune_norm"], capture_output=True, text=True, cwd=ROOT,
                               timeout=60, env=env)
    assert completed.stdout.split() == ["--scheduler"], completed.stdout + completed.stderr


@pytest.mark.parametrize("command,option,choices", [
    ("search", "--scheduler", "asha|fifo"), ("search", "--searcher", "optuna|random|grid"),
    ("search", "--mode", "max|min"), ("train", "--device", "auto|cpu|cuda"), ("bench", "--device", "auto|cpu|cuda"),
    ("train", "--norm", "batch|"), ("report", "--format", "markdown|csv|json|latex")])
def test_enumerated_options_show_their_choices(command, option, choices):
    from typer.testing import CliRunner

    from tune_norm.cli import app

    text = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "250"}).output
    line = next(line for line in text.splitlines() if option + " " in line)
    assert f"<{choices}" in line, line


def test_bad_choice_and_bad_set_are_one_line_naming_the_option(tmp_path):
    from typer.testing import CliRunner

    from tune_norm.cli import app

    bad = CliRunner().invoke(app, ["search", str(SMOKE), "--scheduler", "hyperband"])
    assert bad.exit_code == 2 and "hyperband" in bad.stderr and "asha" in bad.stderr
    for value, says in (("epochz=3", "--set epochz=3: unknown config key 'epochz'"),
                        ("lr=-1", "--set lr=-1: space: lr must be greater than 0"),
                        ("batch_size=100000", "--set batch_size=100000: space: batch_size must be between")):
        res = CliRunner().invoke(app, ["search", str(SMOKE), "--set", value, "--storage", str(tmp_path / "x")])
        assert res.exit_code == 2 and res.stderr.startswith(f"error: {says}"), res.stderr
        assert "smoke.yaml" not in res.stderr and res.exception is None or isinstance(res.exception, SystemExit)
    assert not (tmp_path / "x").exists()  # refused before any work


def test_a_missing_study_is_one_sentence(tmp_path):
    with pytest.raises(UserError) as e:
        study.load(tmp_path)
    assert "has no optuna_study.log" in str(e.value)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_wandb_without_its_package_is_refused_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from tune_norm.cli import app

    res = CliRunner().invoke(app, ["search", str(SMOKE), "--wandb", "tune-norm", "--storage", str(tmp_path / "x")])
    assert res.exit_code == 2
    assert res.stderr == "error: --wandb needs the wandb package: pip install 'tune-norm[wandb]'\n"
    assert not (tmp_path / "x").exists()


def test_on_remote_storage_the_search_says_where_its_study_is():
    from io import StringIO

    from tune_norm.progress import Plan, Progress

    out = StringIO()
    Progress(Plan(name="full", path="s3://bucket/tune-norm/full", trials=8, max_epochs=20, metric="val_acc",
                  mode="max", early_stopping=True), out=out).setup()
    text = out.getvalue()
    assert "results in s3://bucket/tune-norm/full" in text and "up to 160 epochs" in text
    assert "the Optuna study stays in Ray's searcher state" in text and "optuna-dashboard s3" not in text
