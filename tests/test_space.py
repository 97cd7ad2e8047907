"""Search-space files: every shipped one validates; each bad one gets its message, exit code 2, nothing written."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import ROOT, run_cli, write_space
from tune_norm import space
from tune_norm.cli import app
from tune_norm.errors import UserError

SPACES = sorted(p for p in (ROOT / "search_spaces").glob("*.yaml") if not p.is_symlink())  # seed.yaml: a link


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_every_shipped_space_validates(path):
    spec = space.load(path)
    assert spec.name == path.stem
    assert spec.metric and spec.max_epochs >= 1
    if spec.search.type == "grid":
        assert spec.cells()


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_a_spec_round_trips_through_its_json_record(path):
    spec = space.load(path)
    record = json.loads(json.dumps(spec.to_dict()))  # as tune_norm.json holds it
    assert space.SearchSpec.from_dict(record) == spec
    assert spec.planned == (len(spec.cells()) if spec.search.type == "grid" else spec.num_samples)


def test_an_old_record_reads_with_defaults_and_ignores_unknown_keys():
    old = {"name": "old", "search": {"type": "grid", "gone": 1}, "grid": [{"norm": "batch"}, {"norm": "layer"}],
           "seeds": [1, 2, 3], "resources": {"gpus_per_trial": None}, "removed_key": True, "metric": None}
    spec = space.SearchSpec.from_dict(old)
    assert (spec.name, spec.metric, spec.mode, spec.planned) == ("old", "val_acc", "max", 6)
    assert spec.scheduler == space.Scheduler() and spec.resources == space.Resources()
    assert space.SearchSpec.from_dict({}).planned == space.SearchSpec.from_dict({}).num_samples == 8


def test_baseline_space_is_the_baseline_studys_seven_runs():
    spec = space.load(ROOT / "search_spaces" / "baseline.yaml")
    rows = {(r["norm"], r.get("l1", 0), r.get("l2", 0)) for r in spec.grid}
    assert rows == {("layer", 0, 0), ("group", 0, 0), ("batch", 0, 0), ("batch", 0.001, 0), ("group", 0.001, 0),
                    ("layer", 0, 0.001), ("batch", 0.001, 0.001)}
    assert spec.scheduler.type == "fifo" and spec.constants["val_size"] == 0 and len(spec.seeds) >= 3
    assert len(spec.cells()) == 7 * len(spec.seeds)
    # its earlier name still runs it (a link), so the commands recorded in docs/results/ still work
    old = space.load(ROOT / "search_spaces" / "seed.yaml")
    assert old.grid == spec.grid and old.constants == spec.constants and old.seeds == spec.seeds


def test_full_space_searches_every_axis_with_conditional_groups():
    spec = space.load(ROOT / "search_spaces" / "full.yaml")
    searched = {p.name for p in spec.params if p.kind != "const"}
    assert searched >= {"norm", "groups", "l1", "l2", "lr", "dropout", "batch_size"}
    assert next(p for p in spec.params if p.name == "groups").when == ("norm", "group")
    assert (spec.scheduler.type, spec.search.type, spec.metric) == ("asha", "optuna", "val_acc")


BAD = [
    ("malformed", "space: {norm: [batch\n", "is not valid YAML at line"),
    ("unknown top key", {"colour": 1}, "colour: unknown key; expected one of name"),
    ("unknown space key", {"space": {"momentumm": 0.9}}, "space.momentumm: unknown config key"),
    ("wrong distribution", {"space": {"lr": {"normal": [0, 1]}}},
     "space.lr.normal: unknown key; expected one of choice"),
    ("unknown norm", {"space": {"norm": {"choice": ["batch", "group", "weird"]}}}, "space.norm: unknown norm 'weird'"),
    ("zero lr", {"space": {"lr": 0}}, "lr must be greater than 0, got 0"),
    ("negative lr range", {"space": {"lr": {"uniform": [-0.1, 0.1]}}}, "lr must be greater than 0"),
    ("log of zero", {"space": {"lr": {"loguniform": [0, 0.1]}}}, "expected low > 0 for a log scale"),
    ("negative l1", {"space": {"l1": {"choice": [0, -0.001]}}}, "l1 must not be negative"),
    ("negative l2", {"space": {"l2": -1}}, "l2 must not be negative"),
    ("bad groups", {"space": {"groups": {"choice": [3], "when": {"norm": "group"}}}}, "groups=3 does not divide 16"),
    ("batch 0", {"space": {"batch_size": 0}}, "batch_size must be between 1 and"),
    ("batch too big", {"space": {"batch_size": {"choice": [64, 99999]}}}, "batch_size must be between 1 and the 2000"),
    ("gpu fraction", {"resources": {"gpus_per_trial": 1.5}}, "resources.gpus_per_trial: expected a number <= 1"),
    ("gpu zero", {"resources": {"gpus_per_trial": 0}}, "resources.gpus_per_trial: expected a number > 0"),
    ("grace > max_t", {"scheduler": {"type": "asha", "grace_period": 5}}, "grace period 5 is longer than the 2 epochs"),
    ("num_samples", {"num_samples": 0}, "num_samples: expected a number >= 1"),
    ("bad metric", {"metric": "accuracy"}, "metric: expected one of val_acc"),
    ("bad condition", {"space": {"groups": {"choice": [2], "when": {"norm": "instance"}}}},
     "norm can never be 'instance'"),
    ("list ambiguity", {"space": {"lr": [0.1, 0.2]}}, "a list is ambiguous"),
    ("python tag", "space: !!python/object/apply:os.system ['echo hi']\n", "is not valid YAML"),
]


def _bad_file(tmp_path: Path, content) -> Path:
    path = tmp_path / "bad.yaml"
    if isinstance(content, str):
        path.write_text(content)
    else:
        data = yaml.safe_load((ROOT / "search_spaces" / "smoke.yaml").read_text())
        for key, value in content.items():
            data[key] = {**data[key], **value} if key == "space" else value
        path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("label, content, message", BAD, ids=[b[0] for b in BAD])
def test_bad_space_is_refused_before_anything_runs(tmp_path, label, content, message):
    path = _bad_file(tmp_path, content)
    with pytest.raises(UserError, match="bad.yaml"):
        space.load(path)
    storage = tmp_path / "exp"
    result = CliRunner().invoke(app, ["search", str(path), "--storage", str(storage)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {path}") and message in result.output, result.output
    assert result.output.count("\n") == 1, result.output  # one sentence
    assert not storage.exists()


@pytest.mark.parametrize("args, message", [
    (["--gpus-per-trial", "0"], "gpus_per_trial: expected a number > 0"),
    (["--gpus-per-trial", "2"], "expected a number <= 1"),
    (["--num-samples", "0"], "num_samples: expected a number >= 1"),
    (["--grace-period", "9"], "grace period 9 is longer than the 2 epochs"),
    (["--set", "lr=-1"], "lr must be greater than 0"),
    (["--set", "nonsense=1"], "unknown config key 'nonsense'"),
    (["--seeds", "4,5"], "seeds repeat the rows of a grid"),  # smoke.yaml samples with Optuna
    (["--seeds", "4,five"], "--seeds takes a comma-separated list of integers"),
])
def test_bad_cli_overrides_are_refused(tmp_path, args, message):
    storage = tmp_path / "exp"
    smoke = str(ROOT / "search_spaces" / "smoke.yaml")
    result = CliRunner().invoke(app, ["search", smoke, "--storage", str(storage), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not storage.exists()


def test_missing_or_corrupt_data_is_refused_before_ray_starts(tmp_path):
    storage = tmp_path / "exp"
    res = run_cli("search", ROOT / "search_spaces" / "smoke.yaml", "--storage", storage, "--data", tmp_path / "nodata")
    assert res.returncode == 2 and "does not exist" in res.stderr and not storage.exists()
    raw = tmp_path / "bad" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"\0" * 100)
    res = run_cli("search", ROOT / "search_spaces" / "smoke.yaml", "--storage", storage, "--data", tmp_path / "bad")
    assert res.returncode == 2 and "fails its checksum" in res.stderr and not storage.exists()
    assert "Traceback" not in res.stderr


def test_resume_of_a_folder_that_is_no_experiment(tmp_path):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "keep.txt").write_text("mine")
    result = CliRunner().invoke(app, ["search", str(ROOT / "search_spaces" / "smoke.yaml"), "--storage",
                                      str(tmp_path / "exp"), "--resume"])
    assert result.exit_code == 2 and "is not a tune-norm experiment" in result.output
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["keep.txt"]


def test_seeds_override_reruns_a_grid_with_other_seeds():
    spec = space.load(ROOT / "search_spaces" / "baseline.yaml")
    more = spec.with_overrides(seeds=(4, 5))
    assert more.seeds == (4, 5) and len(more.cells()) == 7 * 2
    assert sorted({c["seed"] for c in more.cells()}) == [4, 5]
    assert [{k: v for k, v in c.items() if k != "seed"} for c in more.cells()[::2]] == \
        [{k: v for k, v in c.items() if k != "seed"} for c in spec.cells()[::len(spec.seeds)]]
    result = CliRunner().invoke(app, ["search", str(ROOT / "search_spaces" / "baseline.yaml"), "--seeds", "4,4"])
    assert result.exit_code == 2 and "lists a seed twice" in result.output


@pytest.mark.parametrize("metric", ["test_acc", "test_loss", "best_test_acc", "best_test_loss", "test_acc_at_best_val"])
def test_tuning_on_the_test_set_is_refused_before_ray_starts(tmp_path, metric):
    path = write_space(tmp_path / "s.yaml", metric=metric)
    result = run_cli("search", path, "--storage", tmp_path / "exp")
    assert result.returncode == 2 and not (tmp_path / "exp").exists()
    assert result.stderr.count("\n") == 1 and f"{metric} is measured on the test set" in result.stderr
    assert "tune on one of val_acc, val_loss, train_acc, train_loss, best_val_acc" in result.stderr


@pytest.mark.parametrize("space, message", [
    ({"norm": {"choice": ["batch", "group", "instance"]}}, "space.norm: norm 'instance' cannot learn in this net"),
    ({"groups": {"choice": [2, 8], "when": {"norm": "group"}}}, "space.groups: groups=8 leaves 2 channel(s) per group"),
])
def test_spaces_that_cannot_learn_are_refused(tmp_path, space, message):
    path = write_space(tmp_path / "s.yaml", space=space)
    result = run_cli("search", path, "--storage", tmp_path / "exp")
    assert result.returncode == 2 and not (tmp_path / "exp").exists()
    assert message in result.stderr and result.stderr.count("\n") == 1
