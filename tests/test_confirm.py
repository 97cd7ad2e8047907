"""`tune-norm confirm`: top-K selection, the plan's refusals, and a real source search confirmed end to end."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats as sps
from typer.testing import CliRunner

from conftest import run_cli, trial_results, write_space
from tune_norm import confirm, experiment, retrain, space
from tune_norm.cli import app
from tune_norm.config import TrainConfig
from tune_norm.errors import UserError

DEFAULTS = TrainConfig().as_dict()


# -- selection and refusals on an experiment given as DataFrames (no Ray) -----------------------------
def _exp(trials: list[dict], scores: dict[str, list[float]], *, metric: str = "val_acc", mode: str = "max",
         diverged: tuple[str, ...] = (), val_size: int = 1000, path: str = "/tmp/src") -> experiment.Experiment:
    """An experiment of finished trials: ``trials`` are config overrides with a trial_id, ``scores`` each trial's
    ``metric`` per epoch; a trial in ``diverged`` diverged at its last epoch."""
    rows, epochs = [], []
    for t in trials:
        tid = t["trial_id"]
        config = {**DEFAULTS, "epochs": 2, "subset": 2000, "val_size": val_size,
                  **{k: v for k, v in t.items() if k != "trial_id"}}
        rows.append({"trial_id": tid, "status": "TERMINATED", "dir": "", "error": "", "checkpoint": "",
                     "num_failures": 0, **config})
        for i, v in enumerate(scores[tid], start=1):
            bad = tid in diverged and i == len(scores[tid])
            epochs.append({"trial_id": tid, "epoch": i, metric: v, "val_acc": v if metric == "val_acc" else 50.0,
                           "test_acc": v, "test_loss": (100 - v) / 100, "train_acc": v, "diverged": bad})
    spec = space.parse({"name": "src", "mode": mode, "scheduler": {"type": "asha"},
                        "search": {"type": "optuna", "max_concurrent": 2}, "resources": {"cpus_per_trial": 1}})
    spec = replace(spec, metric=metric)  # the parser refuses test metrics; an old record may hold one
    return experiment.Experiment(path=Path(path), provenance={"spec": spec.to_dict()}, trials=pd.DataFrame(rows),
                                 epochs=pd.DataFrame(epochs))


def test_top_configs_rank_by_best_epoch_and_break_ties_by_trial_id():
    exp = _exp([{"trial_id": "b", "lr": 0.02}, {"trial_id": "a", "lr": 0.03}, {"trial_id": "c", "lr": 0.04}],
               {"b": [60, 90], "a": [90, 80], "c": [70, 85]})
    metric, mode, top = confirm.top_configs(exp, 3)
    assert (metric, mode) == ("val_acc", "max")
    assert [c.trial_ids for c in top] == [("a",), ("b",), ("c",)]  # a and b tie at 90: a's id sorts first
    assert [c.score for c in top] == [90, 90, 85]
    assert top[0].config["lr"] == 0.03 and "seed" not in top[0].config


def test_configs_differing_only_in_seed_are_one_config_scored_by_their_mean():
    exp = _exp([{"trial_id": "x1", "lr": 0.02, "seed": 1}, {"trial_id": "x2", "lr": 0.02, "seed": 2},
                {"trial_id": "y", "lr": 0.03, "seed": 1}],
               {"x1": [95], "x2": [70], "y": [85]})
    _, _, top = confirm.top_configs(exp, 2)
    assert [c.trial_ids for c in top] == [("y",), ("x1", "x2")]  # x's mean 82.5 < 85, though x1 scored 95
    assert top[1].score == 82.5 and top[1].seeds == (1, 2)
    with pytest.raises(UserError, match="has 2 distinct configs .* fewer than --top 3"):
        confirm.top_configs(exp, 3)


def test_diverged_trials_never_count_and_min_mode_ranks_lowest_first():
    exp = _exp([{"trial_id": "d", "lr": 0.5}, {"trial_id": "e", "lr": 0.02}, {"trial_id": "f", "lr": 0.03}],
               {"d": [99, 10], "e": [80], "f": [85]}, diverged=("d",))
    _, _, top = confirm.top_configs(exp, 2)
    assert [c.trial_ids[0] for c in top] == ["f", "e"]
    assert retrain.pick(exp).trial_id == "f"  # the same ranking as train --from
    loss = _exp([{"trial_id": "g", "lr": 0.02}, {"trial_id": "h", "lr": 0.03}], {"g": [0.3, 0.2], "h": [0.25]},
                metric="val_loss", mode="min")
    _, mode, top = confirm.top_configs(loss, 2)
    assert mode == "min" and [c.trial_ids[0] for c in top] == ["g", "h"]


def test_plan_is_a_fifo_grid_of_the_top_configs_and_the_baseline_recipe_over_fresh_seeds():
    exp = _exp([{"trial_id": "a", "norm": "group", "groups": 2, "lr": 0.03, "seed": 1001},
                {"trial_id": "b", "norm": "layer", "lr": 0.02, "seed": 3}],
               {"a": [90], "b": [80]})
    p = confirm.plan(exp, top=2, seeds=3)
    assert p.seeds == (2001, 2002, 2003)  # 1001 was used by the search
    assert p.spec.search.type == "grid" and p.spec.scheduler.type == "fifo" and p.spec.seeds == p.seeds
    assert p.spec.name == "src-confirm" and p.spec.search.max_concurrent == 2
    assert [r.get("norm", "batch") for r in p.spec.grid] == ["group", "layer", "batch"]
    base = p.spec.grid[2]
    assert base == {"val_size": 1000, "subset": 2000, "full_eval": False, "epochs": 2, "channels_last": True,
                    "fast_dropout": True, "amp": False}  # the baseline recipe, run like for like
    assert len(p.spec.cells()) == 9 and p.spec.max_epochs == 2
    assert confirm.plan(exp, top=1, seeds=2, baseline_kind="none").spec.grid == (p.spec.grid[0],)
    # a candidate that is the baseline recipe runs once, and serves as both
    same = _exp([{"trial_id": "s"}, {"trial_id": "t", "lr": 0.02}], {"s": [90], "t": [80]})
    q = confirm.plan(same, top=2, seeds=2)
    assert len(q.spec.grid) == 2 and q.baseline.key == q.candidates[0].key


@pytest.mark.parametrize("kwargs, message", [
    (dict(top=0, seeds=5), "--top must be at least 1, got 0"),
    (dict(top=1, seeds=1), "--seeds must be at least 2"),
    (dict(top=3, seeds=5), "has 2 distinct configs with a finite val_acc .* fewer than --top 3"),
    (dict(top=1, seeds=2, first_seed=2), "--first-seed 2 gives seed 3, which the search already used"),
    (dict(top=1, seeds=2, baseline_kind="bn"), "--baseline must be one of recipe, none"),
    (dict(top=1, seeds=2, name="a/b"), "--name takes letters, digits, - and _ only, got 'a/b'"),
])
def test_bad_requests_are_refused_with_one_sentence(kwargs, message):
    exp = _exp([{"trial_id": "a", "seed": 3}, {"trial_id": "b", "lr": 0.02}], {"a": [90], "b": [80]})
    with pytest.raises(UserError, match=message):
        confirm.plan(exp, **kwargs)


def test_the_old_baseline_name_seed_still_plans_the_recipe_and_help_lists_only_the_new_names():
    exp = _exp([{"trial_id": "a", "lr": 0.03}, {"trial_id": "b", "lr": 0.02}], {"a": [90], "b": [80]})
    old, new = confirm.plan(exp, top=1, seeds=2, baseline_kind="seed"), confirm.plan(exp, top=1, seeds=2)
    assert old == new and old.baseline_kind == "recipe" and old.record()["baseline"] == "recipe"
    shown = CliRunner().invoke(app, ["confirm", "--help"], terminal_width=200).output
    assert "[recipe|none]" in shown and "seed:" not in shown


def test_a_source_without_a_validation_split_is_refused():
    exp = _exp([{"trial_id": "a"}, {"trial_id": "b", "lr": 0.02}], {"a": [90], "b": [80]}, val_size=0,
               metric="test_acc")
    with pytest.raises(UserError, match="val_size 0 .* no validation split can choose its epoch"):
        confirm.plan(exp, top=1, seeds=2)


def test_first_epochs_at_a_threshold():
    exp = _exp([{"trial_id": "a"}, {"trial_id": "b", "lr": 0.02}], {"a": [90, 99.5, 99.6], "b": [80, 99.0]})
    assert confirm.first_epochs(exp.epochs, 99.4) == {"a": 2.0}
    table = confirm.source_epochs(exp, 99.4).set_index("trial_id")
    assert table.loc["a", "first_epoch_at_threshold"] == 2 and math.isnan(table.loc["b", "first_epoch_at_threshold"])
    assert table.loc["a", "epochs_run"] == 3 and table.loc["b", "epochs_run"] == 2


def test_results_name_a_candidate_that_beats_the_baseline_and_compare_with_the_best_without_one():
    src = _exp([{"trial_id": "a", "lr": 0.03}, {"trial_id": "b", "lr": 0.02}], {"a": [90], "b": [80]})
    p = confirm.plan(src, top=2, seeds=3)
    final = {0.03: [99.0, 99.2, 99.1], 0.02: [97.0, 98.0, 97.5], None: [97.3, 97.5, 97.4]}  # None: the baseline
    cells = [{"trial_id": f"t{i}", **cell} for i, cell in enumerate(p.spec.cells())]
    conf = _exp(cells, {c["trial_id"]: [50.0, final[c.get("lr")][c["seed"] - 1001]] for c in cells},
                path="/tmp/src-confirm")
    r = confirm.results(p, conf, src, threshold=99.05)
    assert list(r.rows["label"]) == ["#1", "#2", "baseline"] and list(r.rows["seeds"]) == [3, 3, 3]
    assert list(r.rows["reached"]) == [2, 0, 0] and r.rows["first_epoch_median"][0] == 2
    raw = [sps.ttest_ind(final[a], final[None], equal_var=False).pvalue for a in (0.03, 0.02)]
    ps = r.comparisons["p"].tolist()
    assert ps[0] == pytest.approx(raw[0]) and ps[2] == pytest.approx(raw[1])
    assert ps[1] == pytest.approx(raw[0]) and ps[3] == pytest.approx(raw[1])  # loss = (100 - acc) / 100 here
    ranks = sorted(ps)
    assert r.comparisons["p_holm"].min() == pytest.approx(4 * ranks[0])
    assert r.verdicts[0].startswith("#1 beats the baseline recipe on test accuracy at the "
                                    "validation-chosen epoch: +1.7 (p < 0.001, Holm p < 0.001)")
    assert r.verdicts[1].startswith("#1 has a lower test loss (lowest over epochs) than the baseline")
    text = confirm.render(p, r, "/tmp/src-confirm")
    assert "| #1 | lr 0.03 | a | 90 | 3/3 | 99.10 [98.85, 99.35] |" in text
    alone = confirm.plan(src, top=2, seeds=3, baseline_kind="none")
    r = confirm.results(alone, conf, src)
    assert list(r.comparisons["candidate"]) == ["#2", "#2"] and set(r.comparisons["against"]) == {"#1"}
    assert r.verdicts[0] == ("No candidate beats #1 (the search's best) on test accuracy at the validation-chosen "
                             "epoch after Holm's correction (alpha 0.05, 2 tests).")


def test_a_large_source_prints_the_candidates_trials_and_writes_them_all():
    ids = [f"s{i:02d}" for i in range(25)]
    src = _exp([{"trial_id": t, "lr": 0.01 + i / 1000} for i, t in enumerate(ids)],
               {t: [50.0 + i, 99.5] if i == 3 else [50.0 + i] for i, t in enumerate(ids)})
    p = confirm.plan(src, top=1, seeds=2)
    cells = [{"trial_id": f"t{i}", **cell} for i, cell in enumerate(p.spec.cells())]
    r = confirm.results(p, _exp(cells, {c["trial_id"]: [90.0, 91.0 + c["seed"] % 2] for c in cells}), src)
    printed, written = confirm.render(p, r, "x"), confirm.render(p, r, "x", all_source_trials=True)
    assert p.candidates[0].trial_ids == ("s03",)  # 99.5 at its second epoch
    assert "25 trials ran 26 of 50 epochs (52% of the full budget; 24 stopped early); 1 reached 99.4% on " \
           "validation, the first at epoch 2." in printed
    assert "| s03 | TERMINATED | 2/2 |  |  | 99.50 | 2 |" in printed and "| s04 |" not in printed
    assert "all 25 trials are in confirmation.md" in printed
    assert all(f"| {t} |" in written for t in ids) and "all 25 trials" not in written


# -- end to end: a real search, confirmed through the real CLI ---------------------------------------
@pytest.fixture(scope="module")
def confirmed(tmp_path_factory, data_root):
    tmp = tmp_path_factory.mktemp("confirm")
    src, out = tmp / "src", tmp / "src-confirm"
    space = write_space(tmp / "space.yaml", name="src", num_samples=4)  # 2 epochs, subset 2000, val 1000
    res = run_cli("search", space, "--storage", src, "--num-cpus", "2", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    res = run_cli("confirm", src, "--top", "2", "--seeds", "2", "--baseline", "recipe", "--threshold", "30",
                  "--storage", out, "--num-cpus", "2", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return {"src": src, "out": out, "stdout": res.stdout, "stderr": res.stderr, "data": data_root}


def _best_val(rows: list[dict]) -> tuple[float, dict]:
    """A trial's best val_acc and the first epoch row reaching it, straight from result.json."""
    best = max(r["val_acc"] for r in rows)
    return best, next(r for r in rows if r["val_acc"] == best)


@pytest.mark.slow
def test_the_confirmation_reruns_the_top_two_configs_and_the_baseline_recipe_on_fresh_seeds(confirmed):
    src = trial_results(confirmed["src"])
    ranked = sorted(src, key=lambda name: (-_best_val(src[name])[0], name))
    top_two = [json.loads((confirmed["src"] / name / "params.json").read_text()) for name in ranked[:2]]
    runs = trial_results(confirmed["out"])
    assert len(runs) == 6
    configs = [json.loads((confirmed["out"] / name / "params.json").read_text())["cell"] for name in runs]
    assert sorted(c["seed"] for c in configs) == [1001, 1001, 1001, 1002, 1002, 1002]
    assert all(len(rows) == 2 and rows[-1]["epoch"] == 2 for rows in runs.values())  # full epochs, no ASHA cut
    for want in top_two:
        mine = [c for c in configs if c.get("lr") == want["lr"] and c.get("norm") == want["norm"]]
        assert len(mine) == 2 and all(c.get("groups") == want.get("groups") for c in mine)
    baseline = [c for c in configs if "lr" not in c]
    assert len(baseline) == 2 and all(c["val_size"] == 1000 and c["subset"] == 2000 and c["epochs"] == 2
                                      for c in baseline)
    plan = json.loads((confirmed["out"] / confirm.PLAN_FILE).read_text())
    assert plan["source"] == str(confirmed["src"]) and plan["seeds"] == [1001, 1002]
    assert [r["trial_ids"][0] for r in plan["rows"][:2]] == [n.removeprefix("trial_") for n in ranked[:2]]
    spec = json.loads((confirmed["out"] / "tune_norm.json").read_text())["spec"]
    assert spec["scheduler"]["type"] == "fifo" and spec["search"]["type"] == "grid"
    assert str(confirmed["src"]) in spec["description"]


def _p_text(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}" if p < 0.01 else f"{p:.2f}"


@pytest.mark.slow
def test_the_printed_table_holds_the_seed_statistics_and_the_corrected_tests(confirmed):
    """Every number recomputed from Ray's result.json files: means, Welch p, Holm p over the 4 tests, verdicts."""
    out = confirmed["stdout"]
    lines = out.splitlines()
    runs = trial_results(confirmed["out"])
    configs = {name: json.loads((confirmed["out"] / name / "params.json").read_text())["cell"] for name in runs}
    planned = json.loads((confirmed["out"] / confirm.PLAN_FILE).read_text())["rows"]
    acc, loss = {}, {}
    for row in planned:
        want = row["config"]
        names = [n for n, c in configs.items() if c.get("lr") == want.get("lr") and c.get("norm") == want.get("norm")]
        assert len(names) == 2
        acc[row["label"]] = [_best_val(runs[n])[1]["test_acc"] for n in names]
        loss[row["label"]] = [min(r["test_loss"] for r in runs[n]) for n in names]
    tests = []  # (candidate, measure, diff, p) in the printed order
    for label in ("#1", "#2"):
        for measure, values, digits in (("test acc @ val epoch", acc, 2), ("lowest test loss", loss, 4)):
            diff = sum(values[label]) / 2 - sum(values["baseline"]) / 2
            p = sps.ttest_ind(values[label], values["baseline"], equal_var=False).pvalue
            tests.append((label, measure, diff, p, digits))
    order = sorted(range(4), key=lambda i: tests[i][3])
    holm, running = {}, 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (4 - k) * tests[i][3]))
        holm[i] = running
    for i, (label, measure, diff, p, digits) in enumerate(tests):
        row = next(x for x in lines if x.startswith(f"| {label} | baseline | {measure} |"))
        assert f"{diff:+.{digits}f} [" in row and f"| {_p_text(p)} | {_p_text(holm[i])} |" in row, row
    mean = sum(acc["#1"]) / 2
    assert f"| 2/2 | {mean:.2f} [" in next(x for x in lines if x.startswith("| #1 |"))
    winners = [t[0] for i, t in enumerate(tests) if t[1] == "test acc @ val epoch" and t[2] > 0 and holm[i] < 0.05]
    against = "the baseline recipe"
    for label in ("#1", "#2"):
        assert (f"{label} beats {against} on test accuracy" in out) == (label in winners)
    assert (f"No candidate beats {against} on test accuracy at the validation-chosen epoch after Holm's correction"
            in out) == (not winners)
    # the source search's epochs: run against the budget, first epoch at val acc >= 30%
    src = trial_results(confirmed["src"])
    ran = sum(len(rows) for rows in src.values())
    assert f"4 trials ran {ran} of 8 epochs" in out
    for name, rows in src.items():
        hit = [r["epoch"] for r in rows if r["val_acc"] >= 30]
        line = next(x for x in out.splitlines() if x.startswith(f"| {name.removeprefix('trial_')} |"))
        assert line.rstrip(" |").endswith(str(hit[0]) if hit else "never")
    assert (confirmed["out"] / confirm.RESULT_FILE).read_text().startswith("# Confirmation of")


@pytest.mark.slow
def test_report_reads_the_confirmation_and_a_second_run_is_refused(confirmed, tmp_path):
    res = run_cli("report", confirmed["out"], "--no-plots", "--out", tmp_path / "report")
    assert res.returncode == 0, res.stderr
    assert "Trials: 6 of 6 planned (6 terminated)" in res.stdout and "grid search, fifo scheduler" in res.stdout
    before = (confirmed["out"] / confirm.PLAN_FILE).read_text()
    again = run_cli("confirm", confirmed["src"], "--top", "2", "--seeds", "2", "--storage", confirmed["out"])
    assert again.returncode == 2 and again.stderr.strip().count("\n") == 0
    assert "already holds an experiment; pass --resume" in again.stderr
    assert (confirmed["out"] / confirm.PLAN_FILE).read_text() == before
    with pytest.raises(UserError, match="planned other configs or seeds than this command would run now"):
        confirm.run(str(confirmed["src"]), top=1, seeds=2, storage_path=str(confirmed["out"]), resume=True,
                    data_root=str(confirmed["data"]))
    assert (confirmed["out"] / confirm.PLAN_FILE).read_text() == before


@pytest.mark.slow
@pytest.mark.parametrize("kwargs, message", [
    (dict(top=5), "fewer than --top 5"),
    (dict(threshold=0), "--threshold is a validation accuracy in percent"),
    (dict(resume=True), "holds no confirmation to resume"),
])
def test_bad_input_on_a_real_search_is_refused_before_any_work(confirmed, data_root, tmp_path, kwargs, message):
    out = tmp_path / "c"
    with pytest.raises(UserError, match=message):
        confirm.run(str(confirmed["src"]), storage_path=str(out), data_root=str(data_root),
                    **{"top": 2, "seeds": 2, **kwargs})
    assert not out.exists()


def test_no_such_experiment_is_one_sentence(tmp_path):
    res = run_cli("confirm", tmp_path / "nothing")
    assert res.returncode == 2 and res.stderr.strip() == f"error: {tmp_path / 'nothing'} does not exist"
