"""The report: pure functions on hand-made frames, a hand-made experiment folder, the CLI, and one real run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import DATA, ROOT, run_cli
from tune_norm import experiment, render, report, space, stats
from tune_norm.cli import app

NAN = float("nan")


# -- hand-made frames ----------------------------------------------------------------------------------
def trial(tid: str, norm: str = "batch", *, status: str = "TERMINATED", **config) -> dict:
    return {"trial_id": tid, "status": status, "norm": norm, "epochs": 3, **config}


def curve(tid: str, val, test, *, train=None, test_loss=None, diverged_at: int | None = None,
          seconds: float = 2.0) -> list[dict]:
    """Per-epoch rows of one trial; time_total_s grows by ``seconds`` an epoch."""
    train = train or [50.0 + 10 * i for i in range(len(test))]
    test_loss = test_loss or [1.0 / (i + 1) for i in range(len(test))]
    return [{"trial_id": tid, "epoch": i + 1, "val_acc": v, "test_acc": t, "train_acc": a, "test_loss": loss,
             "val_loss": loss, "diverged": diverged_at is not None and i + 1 >= diverged_at,
             "time_total_s": seconds * (i + 1)}
            for i, (v, t, a, loss) in enumerate(zip(val, test, train, test_loss))]


def frames(trials: list[dict], *curves: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.DataFrame(trials), pd.DataFrame([row for c in curves for row in c])


def seeds(prefix: str, norm: str, at_val: list[float], **config) -> tuple[list[dict], list[list[dict]]]:
    """One finished trial per seed whose test accuracy at its best-validation epoch is ``at_val[i]``."""
    trials, curves = [], []
    for i, h in enumerate(at_val):
        tid = f"{prefix}{i}"
        trials.append(trial(tid, norm, seed=i + 1, **config))
        curves.append(curve(tid, val=[90.0, 95.0 + i / 10, 94.0], test=[89.0, h, h + 0.5]))
    return trials, curves


# -- groups --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm, l1, l2, label", [
    ("layer", 0, 0, "LayerNorm"), ("group", 0, 0, "GroupNorm"), ("batch", 0, 0, "BatchNorm"),
    ("batch", 0.001, 0, "BatchNorm + L1"), ("group", 0.001, 0, "GroupNorm + L1"), ("layer", 0, 0.001, "LayerNorm + L2"),
    ("batch", 0.001, 0.001, "BatchNorm + L1 + L2"),
])
def test_group_labels_follow_the_seed(norm, l1, l2, label):
    assert report.group_label(norm, l1, l2) == label


def test_batch_size_joins_the_label_only_where_the_experiment_varies_it():
    same = report.add_groups(pd.DataFrame([trial("a", batch_size=64), trial("b", "group", l1=1e-4, batch_size=64)]))
    assert list(same["group"]) == ["BatchNorm", "GroupNorm + L1"]
    assert list(same["stratum"]) == ["no regularization", "L1"]
    varied = report.add_groups(pd.DataFrame([trial("a", batch_size=8), trial("b", "group", l1=1e-4, batch_size=128)]))
    assert list(varied["group"]) == ["BatchNorm, batch 8", "GroupNorm + L1, batch 128"]
    assert list(varied["stratum"]) == ["batch 8", "L1, batch 128"]


# -- the table -----------------------------------------------------------------------------------------
def test_the_row_takes_baseline_columns_and_the_compared_column_from_the_best_trial():
    trials, epochs = frames(
        [trial("a", l2=0.001), trial("b", l2=0.001, lr=0.05)],
        # validation picks epoch 2 (test 93); the test set's own best is epoch 3 (96): the baseline study's convention
        curve("a", val=[90, 95, 94], test=[91, 93, 96], train=[80, 85, 88], test_loss=[0.3, 0.2, 0.25]),
        curve("b", val=[90, 91, 92], test=[97, 97, 97]),
    )
    table = report.best_table(report.summarize_trials(trials, epochs))
    assert len(table) == 1
    row = table.iloc[0]
    assert row["group"] == "BatchNorm + L2" and row["trial_id"] == "a" and row["trials"] == 2
    assert row["train_acc_last"] == 88 and row["best_test_acc"] == 96 and row["best_test_loss"] == 0.2
    assert row["l1"] == 0 and row["l2"] == 0.001
    assert row["best_val_acc"] == 95 and row[report.TEST_AT_VAL] == 93 and row["best_val_epoch"] == 2
    assert row["epochs_run"] == 3 and row["epochs"] == 3 and row["seeds"] == 1 and math.isnan(row["std"])
    labels = [label for label, _ in render.table_columns(report.TEST_AT_VAL)]
    for label in ("baseline: best train acc", "baseline: best test acc", "baseline: best test loss", "L1", "L2",
                  "Val acc", "Test acc @ val epoch", "Epochs run", "Trial", "Seeds", "95% CI"):
        assert label in labels


def test_rows_are_sorted_best_first_and_every_group_appears():
    t1, c1 = seeds("bn", "batch", [99.0])
    t2, c2 = seeds("ln", "layer", [98.0])
    t2[0]["seed"] = 1
    c2[0] = curve("ln0", val=[97, 98, 99], test=[97, 98, 98.5])  # best validation of all
    t3, c3 = seeds("gn", "group", [97.0], l1=1e-4)
    table = report.best_table(report.summarize_trials(*frames(t1 + t2 + t3, *c1, *c2, *c3)))
    assert list(table["group"]) == ["LayerNorm", "BatchNorm", "GroupNorm + L1"]


def test_several_seeds_give_mean_std_and_a_t_interval():
    trials, curves = seeds("gn", "group", [97.0, 98.0, 99.0])
    # an errored seed is listed but is not a seed of the statistics
    trials.append(trial("gnx", "group", seed=9, status="ERROR"))
    curves.append(curve("gnx", val=[99.9], test=[50.0]))
    row = report.best_table(report.summarize_trials(*frames(trials, *curves))).iloc[0]
    assert row["trials"] == 4 and row["errored"] == 1 and row["seeds"] == 3
    assert row["mean"] == pytest.approx(98.0) and row["std"] == pytest.approx(1.0)
    half = 4.302653 / math.sqrt(3)  # t(0.975, 2) * s / sqrt(n)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((98 - half, 98 + half), abs=1e-5)
    shown = render.display(pd.DataFrame([row]), render.table_columns(report.TEST_AT_VAL)).iloc[0]
    assert shown["test acc @ val epoch: mean ± std"] == "98.00 ± 1.00" and shown["95% CI"] == "[95.52, 100.48]"


def test_the_best_setup_is_chosen_by_its_mean_over_seeds():
    good, good_c = seeds("g", "batch", [99.0, 99.0, 99.0], lr=0.01)
    lucky, lucky_c = seeds("l", "batch", [98.0, 90.0], lr=0.05)
    lucky_c[0] = curve("l0", val=[90, 99.9, 94], test=[89, 98.0, 98.5])  # one lucky seed, a poor mean
    lucky_c[1] = curve("l1", val=[80, 81, 82], test=[79, 80, 81])
    table = report.best_table(report.summarize_trials(*frames(good + lucky, *good_c, *lucky_c)))
    assert table.iloc[0]["trial_id"].startswith("g") and table.iloc[0]["seeds"] == 3


# -- comparisons ---------------------------------------------------------------------------------------
def test_norms_are_compared_within_the_same_regularization():
    bn, bn_c = seeds("bn", "batch", [99.5, 99.6, 99.55, 99.52, 99.58])
    gn, gn_c = seeds("gn", "group", [99.0, 99.1, 99.05, 99.02, 99.08])
    ln, ln_c = seeds("ln", "layer", [98.9])
    bl1, bl1_c = seeds("bl", "batch", [99.4, 99.3], l1=1e-3)
    gl1, gl1_c = seeds("gl", "group", [99.35, 99.45], l1=1e-3)
    summary = report.summarize_trials(*frames(bn + gn + ln + bl1 + gl1, *bn_c, *gn_c, *ln_c, *bl1_c, *gl1_c))
    comp = report.comparisons(summary)
    pairs = list(zip(comp["stratum"], comp["a"], comp["b"]))[:4]
    assert pairs == [("no regularization", "BatchNorm", "GroupNorm"), ("no regularization", "BatchNorm", "LayerNorm"),
                     ("no regularization", "GroupNorm", "LayerNorm"), ("L1", "BatchNorm + L1", "GroupNorm + L1")]
    verdicts = list(comp["verdict"])
    # every seed has the same loss curve here, so only the two testable accuracy tests form Holm's family
    holm = min(1.0, 2 * comp["p"][0])
    assert verdicts[0] == "BatchNorm > GroupNorm (accuracy): significant, p < 0.001, Holm p < 0.001, 5 vs 5 seeds"
    assert comp["p_holm"][0] == pytest.approx(holm) and comp["p_holm"][3] == pytest.approx(comp["p"][3])
    assert verdicts[1] == "BatchNorm vs LayerNorm (accuracy): not testable (1 seed), 5 vs 1 seeds"
    assert verdicts[3].startswith("GroupNorm + L1 > BatchNorm + L1 (accuracy): not significant, p = 0.")
    assert verdicts[3].endswith("2 vs 2 seeds")
    assert list(comp["metric"]) == ["test acc @ val epoch"] * 4 + ["baseline: best test loss"] * 4
    assert list(zip(comp["a"], comp["b"]))[4:] == [(a, b) for _, a, b in pairs]
    assert verdicts[4].startswith("BatchNorm vs GroupNorm (test loss): not testable (every seed scored the same")


def test_loss_is_compared_too_lower_is_better_and_holm_covers_both_measures():
    bn, bn_c = seeds("bn", "batch", [99.50, 99.52, 99.48])
    gn, gn_c = seeds("gn", "group", [99.49, 99.53, 99.47])
    bn_loss, gn_loss = [0.0150, 0.0160, 0.0140], [0.0190, 0.0180, 0.0200]
    for c, lowest in zip(bn_c + gn_c, bn_loss + gn_loss):
        for row, factor in zip(c, (2.0, 1.0, 1.5)):
            row["test_loss"] = lowest * factor  # the lowest test loss is at epoch 2
    rep = report.build(*frames(bn + gn, *bn_c, *gn_c))
    comp = rep.comparisons
    assert list(comp["metric"]) == ["test acc @ val epoch", "baseline: best test loss"]
    acc, loss = comp.iloc[0], comp.iloc[1]
    assert loss["mean_a"] == pytest.approx(0.015) and loss["mean_b"] == pytest.approx(0.019)
    assert loss["p"] == pytest.approx(stats.compare(bn_loss, gn_loss).p)
    assert list(comp["p_holm"]) == pytest.approx(stats.holm(comp["p"]))
    assert loss["p_holm"] == pytest.approx(2 * loss["p"]) and acc["p_holm"] == pytest.approx(acc["p"])
    assert loss["verdict"].startswith("BatchNorm < GroupNorm (test loss): significant, p = 0.0")
    assert loss["significant_holm"] and not acc["significant_holm"]
    assert any("Holm-adjusted over the 2 testable comparisons" in n for n in rep.notes)
    shown = render.display(comp, render.comparison_columns())
    assert list(shown.columns) == ["Compared", "Within", "A", "B", "Mean A", "Mean B", "A − B (95% CI)", "p",
                                   "Holm p", "Verdict"]
    assert shown.iloc[1]["Mean A"] == "0.0150" and shown.iloc[1]["A − B (95% CI)"].startswith("-0.0040 [")
    assert shown.iloc[0]["Mean A"] == "99.50" and shown.iloc[1]["Holm p"] == stats.format_p(2 * loss["p"])[4:]


@pytest.mark.slow
def test_the_committed_reports_comparisons_recompute_from_their_trials(tmp_path):
    """docs/results/rereport.py rebuilds a committed report from its CSVs: the committed comparisons, labels and
    column notes are today's (the whole report.md comes back the same)."""
    for name in ("seed", "seed_4_5", "seed_exact_1", "seed_exact", "batch_size", "batch_size_10k"):
        folder = ROOT / "docs" / "results" / name
        copy = tmp_path / name
        copy.mkdir()
        for f in folder.iterdir():
            if f.is_file():  # not seed_exact_1's experiment folder
                (copy / f.name).write_bytes(f.read_bytes())
        run = subprocess.run([sys.executable, str(ROOT / "docs" / "results" / "rereport.py"), str(copy)],
                             capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert run.returncode == 0, run.stderr
        assert (copy / "comparisons.csv").read_text() == (folder / "comparisons.csv").read_text()
        section = lambda text: text[text.index("## Comparisons"):text.index("## Cost")]  # noqa: E731
        assert section((copy / "report.md").read_text()) == section((folder / "report.md").read_text())
        assert (copy / "report.md").read_text() == (folder / "report.md").read_text()
        for f in ("table.csv", "cost.csv", "trials.csv"):  # read back and written again unchanged
            assert (copy / f).read_bytes() == (folder / f).read_bytes()


def test_the_pooled_seed_table_gives_the_numbers_the_results_page_states():
    results = ROOT / "docs" / "results"
    run = subprocess.run([sys.executable, str(results / "pool_seed_tables.py"), str(results / "seed" / "trials.csv"),
                          str(results / "seed_4_5" / "trials.csv")], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    assert ("| baseline: best test loss | no regularization | BatchNorm | GroupNorm | 0.0150 | 0.0184 | "
            "-0.0035 [-0.0055, -0.0014] | 0.005 | 0.03 |") in run.stdout
    assert "| BatchNorm | GroupNorm | 99.52 | 99.47 | +0.04 [-0.05, +0.14] | 0.29 | 0.88 |" in run.stdout
    assert "Holm-adjusted over the 8 testable comparisons" in run.stdout
    assert "- GroupNorm + L1 - GroupNorm: -0.23 (95% CI [-0.36, -0.11])" in run.stdout


def test_the_small_batch_table_on_the_results_page_is_what_the_script_prints():
    """docs/results/batch_size_table.py prints the small-batch table from the committed report; the results page
    shows those rows verbatim, and every accuracy in it is a whole number of images out of all 10,000 test images
    (and 5,000 validation images): the study ran with full_eval, not on a shrunken third of the test set."""
    results = ROOT / "docs" / "results"
    run = subprocess.run([sys.executable, str(results / "batch_size_table.py"), str(results / "batch_size_10k")],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    rows = [line for line in run.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 4  # batch 2, 8, 32, 128
    page = (results / "README.md").read_text()
    for row in rows:
        assert row in page
    trials = pd.read_csv(results / "batch_size_10k" / "trials.csv")
    assert len(trials) == 72 and (trials["epochs_run"] == 5).all()
    whole = lambda column, n: ((trials[column] / 100 * n).sub((trials[column] / 100 * n).round()).abs() < 1e-6)  # noqa: E731
    assert whole("test_acc_at_best_val", 10000).all() and whole("best_val_acc", 5000).all()
    assert not whole("test_acc_at_best_val", 3333).all()



def test_the_gap_norm_probe_on_the_results_page_is_what_its_script_prints_and_replicates_the_study():
    """docs/results/probe_gap_batchnorm.py's table, printed from its committed runs, is on the results page verbatim;
    its two unmodified variants (BatchNorm and GroupNorm at batch 2), trained outside Ray, score exactly what the
    batch-size study's trials of the same config and seed scored inside Ray."""
    results = ROOT / "docs" / "results"
    runs = results / "probe_gap_batchnorm"
    run = subprocess.run([sys.executable, str(results / "probe_gap_batchnorm.py"), "table", str(runs)],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stdout.splitlines() if line.startswith(("| ", "- "))]
    assert len(lines) == 1 + 4 + 5  # the header and four variants; five comparisons
    page = (results / "README.md").read_text()
    for line in lines:
        assert line in page, line
    study = pd.read_csv(results / "batch_size_10k" / "trials.csv")
    study = study[study["batch_size"] == 2].set_index(["norm", "seed"])["test_acc_at_best_val"]
    replicated = 0
    for folder in sorted(runs.glob("*-s*")):
        cfg = json.loads((folder / "config.json").read_text())
        last = pd.read_csv(folder / "metrics.csv").iloc[-1]
        assert cfg["batch_size"] == 2 and cfg["full_eval"] and len(pd.read_csv(folder / "metrics.csv")) == 5
        if cfg["variant"] in ("batch", "group"):
            assert last["test_acc_at_best_val"] == pytest.approx(study[(cfg["norm"], cfg["seed"])], abs=0.005)
            replicated += 1
    assert replicated == 12  # 6 seeds x 2 variants


@pytest.mark.slow
def test_the_rescored_first_third_on_the_results_page_is_what_its_script_prints():
    """docs/results/rescore_first_third.py reloads the batch-size study's 72 committed checkpoints (each must score
    exactly its logged test accuracy on all 10,000 images, or the script exits non-zero) and scores them on the
    first 3,333 test images; the results page shows its tables verbatim."""
    results = ROOT / "docs" / "results"
    run = subprocess.run([sys.executable, str(results / "rescore_first_third.py"), str(results / "batch_size_10k"),
                          str(results / "batch_size")], capture_output=True, text=True, cwd=ROOT, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "TUNE_NORM_DATA": str(DATA)})
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("72 trials rescored at epoch 5, each matching its logged 10,000-image test accuracy")
    rows = [line for line in run.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 24  # 12 groups, two tables
    page = (results / "README.md").read_text()
    for row in rows:
        assert row in page, row

# -- divergence and cost -------------------------------------------------------------------------------
def test_diverged_trials_appear_and_are_counted():
    trials, epochs = frames(
        [trial("ok"), trial("boom", lr=10.0)],
        curve("ok", val=[95, 97, 98], test=[95, 97, 98]),
        curve("boom", val=[40, 0], test=[41, 0], test_loss=[2.0, 1e9], diverged_at=2),
    )
    summary = report.summarize_trials(trials, epochs)
    boom = summary.set_index("trial_id").loc["boom"]
    assert boom["diverged"] and boom["epochs_run"] == 2 and not boom["stopped_early"] and boom["best_test_loss"] == 2.0
    row = report.best_table(summary).iloc[0]
    assert row["trial_id"] == "ok" and row["trials"] == 2 and row["diverged"] == 1
    costs = report.cost(summary).set_index("group")
    assert costs.loc["BatchNorm", "diverged"] == 1 and costs.loc["BatchNorm", "epochs_saved"] == 0
    rep = report.build(trials, epochs)
    assert any("1 trial diverged" in n for n in rep.notes)
    assert "yes" in list(render.display(rep.trials, render.trial_columns(rep.trials))["Diverged"])


def test_cost_counts_seconds_and_the_epochs_asha_saved():
    trials, epochs = frames(
        [trial("full", epochs=4), trial("early1", epochs=4), trial("early2", "group", epochs=4),
         trial("crashed", "group", epochs=4, status="ERROR"), trial("waiting", "group", epochs=4, status="PENDING")],
        curve("full", val=[1, 2, 3, 4], test=[1, 2, 3, 4], seconds=3.0),
        curve("early1", val=[1], test=[1], seconds=3.0),
        curve("early2", val=[1, 2], test=[1, 2], seconds=5.0),
        curve("crashed", val=[1], test=[1], seconds=5.0),
    )
    summary = report.summarize_trials(trials, epochs)
    assert list(summary["stopped_early"]) == [False, True, True, False, False]
    costs = report.cost(summary, cpus=2.0, gpus=0.25).set_index("group")
    bn, gn, total = costs.loc["BatchNorm"], costs.loc["GroupNorm"], costs.loc["All groups"]
    assert (bn["trials"], bn["epochs_run"], bn["epochs_full"], bn["epochs_saved"]) == (2, 5, 8, 3)
    assert bn["wall_s"] == 15.0 and bn["cpu_s"] == 30.0 and bn["gpu_s"] == 3.75
    assert bn["saved_s"] == pytest.approx(3 * 15.0 / 5)  # epochs saved x the group's seconds per epoch
    # the errored and the pending trial are no saving: only finished trials stopped early count
    assert (gn["trials"], gn["epochs_run"], gn["epochs_full"], gn["epochs_saved"], gn["errored"]) == (3, 3, 12, 2, 1)
    assert (total["trials"], total["epochs_saved"], total["wall_s"]) == (5, 5, 30.0)
    assert list(costs.index) == ["BatchNorm", "GroupNorm", "All groups"]


def test_without_a_validation_split_the_seed_convention_is_compared():
    trials, curves = seeds("bn", "batch", [99.0, 99.2], val_size=0)
    for c in curves:
        for row in c:
            row["val_acc"] = row["val_loss"] = NAN
    rep = report.build(*frames(trials, *curves), metric="train_loss", mode="min")
    assert rep.compared_value == report.BASELINE_SCORE
    row = rep.table.iloc[0]
    assert math.isnan(row[report.TEST_AT_VAL]) and row["mean"] == pytest.approx((99.5 + 99.7) / 2)
    assert any("no validation split" in n for n in rep.notes)


def test_trials_without_results_are_not_ranked():
    trials, epochs = frames([trial("a"), trial("b", "group", status="PENDING")], curve("a", val=[90], test=[91]))
    rep = report.build(trials, epochs)
    assert list(rep.table["group"]) == ["BatchNorm"] and len(rep.trials) == 2
    empty = report.build(pd.DataFrame([trial("p", status="PENDING")]), pd.DataFrame(columns=["trial_id", "epoch"]))
    assert empty.table.empty and any("no trial has reported" in m for m in empty.missing)
    assert "(none)" in render.render(empty)


# -- formats -------------------------------------------------------------------------------------------
def _report() -> report.Report:
    bn, bn_c = seeds("bn_", "batch", [99.5, 99.6, 99.55])
    gn, gn_c = seeds("gn_", "group", [99.0, 99.1, 99.05])
    return report.build(*frames(bn + gn, *bn_c, *gn_c), title="demo_1", facts=[("Folder", "/x")],
                        missing=["trial z errored: boom"])


def test_markdown_is_the_default_and_holds_every_section():
    text = render.render(_report())
    for part in ("# Report: demo_1", "## Groups", "## Comparisons", "## Cost", "## Missing", "baseline: best test acc",
                 "BatchNorm > GroupNorm (accuracy): significant", "Holm p", "trial z errored: boom", "| BatchNorm |",
                 "| GroupNorm |"):
        assert part in text


def test_csv_json_and_latex_carry_the_same_table():
    rep = _report()
    table = pd.read_csv(StringIO(render.render(rep, "csv")))
    assert list(table["group"]) == ["BatchNorm", "GroupNorm"] and "test_acc_at_best_val" in table
    data = json.loads(render.render(rep, "json"))
    assert [r["group"] for r in data["table"]] == ["BatchNorm", "GroupNorm"]
    assert data["comparisons"][0]["verdict"].startswith("BatchNorm > GroupNorm") and len(data["trials"]) == 6
    tex = render.render(rep, "latex")
    assert r"\begin{tabular}" in tex and r"demo\_1" in tex and r"95\% CI" in tex and r"$\pm$" in tex
    assert r"BatchNorm $>$ GroupNorm (accuracy)" in tex and "Holm p" in tex


def test_the_report_outcome_is_the_tables_then_a_warning_per_note_then_the_page(tmp_path):
    from tune_norm import outcome
    from tune_norm.publish import Published

    rep, page = _report(), tmp_path / "report.html"
    done = outcome.of_report(Published(rep, tmp_path, page, [("curves", tmp_path / "c.png")], ["no data"]), "csv")
    assert done.out == render.render(rep, "csv") and done.exit_code == 0
    assert done.err == ["warning: no data", f"report: {page} (1 plots; tables as md, csv, json and tex beside it)"]
    assert outcome.of_report(Published(rep, tmp_path, page)).out == render.render(rep)  # markdown by default


def test_write_files_puts_every_format_in_the_folder(tmp_path):
    paths = render.write_files(_report(), tmp_path / "out")
    assert sorted(p.name for p in paths) == ["comparisons.csv", "cost.csv", "report.json", "report.md", "report.tex",
                                             "table.csv", "trials.csv"]
    assert all(p.stat().st_size > 0 for p in paths)


# -- an experiment folder on disk, written by hand ----------------------------------------------------
def fake_experiment(path: Path, *, name: str = "fake", prefix: str = "", seed: int = 1) -> Path:
    """A search as it looks while running: one finished trial (grid cell), one running with half a line
    written, one errored, one pending without a folder. ``prefix`` goes before every trial id; every trial
    runs ``seed``."""
    path.mkdir(parents=True)
    spec = space.parse({"name": name, "metric": "val_acc", "mode": "max", "num_samples": 5,
                        "search": {"type": "optuna"}, "scheduler": {"type": "asha"},
                        "resources": {"cpus_per_trial": 2}})
    provenance = {"spec": spec.to_dict(), "gpus_per_trial": 0.5, "command": "tune-norm search x",
                  "settings": {"data_root": "/nowhere"}}
    (path / "tune_norm.json").write_text(json.dumps(provenance))
    trials = [(prefix + "t1", "TERMINATED", {"cell": {"norm": "batch", "epochs": 2, "seed": seed}}),
              (prefix + "t2", "RUNNING", {"norm": "group", "epochs": 2, "groups": 2, "l1": None, "seed": seed}),
              (prefix + "t3", "ERROR", {"norm": "layer", "epochs": 2, "seed": seed}),
              (prefix + "t4", "PENDING", {"norm": "layer", "epochs": 2, "l2": 0.001, "seed": seed})]
    state = {"trial_data": [[json.dumps({"trial_id": t, "status": s, "config": c,
                                         "relative_logdir": f"trial_{t}" if t != prefix + "t4" else None}),
                             json.dumps({"num_failures": int(s == "ERROR")})] for t, s, c in trials],
             "runner_data": {}}
    (path / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps(state))
    for tid, _, config in trials[:3]:
        d = path / f"trial_{tid}"
        d.mkdir()
        rows = curve(tid, val=[90, 95], test=[91, 94]) if tid == prefix + "t1" else curve(tid, val=[80], test=[81])
        lines = [json.dumps({**r, "config": config, "timestamp": 100 + 10 * r["epoch"], "time_this_iter_s": 5.0})
                 for r in rows]
        if tid == prefix + "t2":
            lines.append('{"epoch": 2, "val_acc"')  # the line being written when we read
        (d / "result.json").write_text("\n".join(lines) + "\n")
        (d / "checkpoint_000000").mkdir()
        if tid == prefix + "t3":
            (d / "error.txt").write_text("Failure # 1\nTraceback ...\n\x1b[36mRuntimeError: injected crash\x1b[0m\n")
        else:
            (d / "checkpoint_000000" / "state.pt").write_bytes(b"not read without plots")
    return path


def test_a_running_experiment_is_read_and_what_is_missing_is_said(tmp_path):
    exp = experiment.load(fake_experiment(tmp_path / "exp"))
    assert list(exp.trials["trial_id"]) == ["t1", "t2", "t3", "t4"]
    t = exp.trials.set_index("trial_id")
    assert t.loc["t1", "norm"] == "batch" and t.loc["t1", "lr"] == 0.015  # grid cell flattened, defaults filled
    assert t.loc["t2", "groups"] == 2 and t.loc["t2", "l1"] == 0.0 and t.loc["t4", "l2"] == 0.001
    assert t.loc["t3", "error"] == "RuntimeError: injected crash" and t.loc["t3", "checkpoint"] == ""
    assert list(exp.epochs.groupby("trial_id").size()) == [2, 1, 1]  # the half-written line is skipped
    assert exp.resources == (2.0, 0.5) and exp.planned == 5
    text = " | ".join(exp.missing)
    for part in ("4 of 5 planned trials exist", "1 trial with no results yet: t4",
                 "trial t2 is still running or was interrupted (epoch 1 of 2)",
                 "trial t3 errored: RuntimeError: injected crash", "1 trial with results but no checkpoint: t3"):
        assert part in text
    rep = report.from_experiment(exp)
    assert dict(rep.facts)["Trials"] == "4 of 5 planned (1 terminated, 1 running, 1 error, 1 pending)"
    assert rep.cost.set_index("group").loc["All groups", "cpu_s"] == pytest.approx(2 * (4 + 2 + 2))


def test_a_resume_sets_orphaned_trial_folders_aside_and_keeps_them(tmp_path):
    path = fake_experiment(tmp_path / "exp")
    orphan = path / "trial_t9"  # started after Ray's last snapshot, then the driver died
    orphan.mkdir()
    (orphan / "result.json").write_text(json.dumps({"epoch": 1, "val_acc": 50.0, "trial_id": "t9"}) + "\n")
    assert experiment.orphaned_trials(path) == [orphan]
    assert "t9" in set(experiment.load(path).trials["trial_id"])  # a running search's newest trials are shown
    moved = experiment.set_orphans_aside(path)
    assert moved == [path / "orphaned" / "trial_t9"] and (moved[0] / "result.json").exists()
    assert experiment.orphaned_trials(path) == []
    exp = experiment.load(path)
    assert list(exp.trials["trial_id"]) == ["t1", "t2", "t3", "t4"]
    assert any("1 trial folder set aside in orphaned/" in m and "trial_t9" in m for m in exp.missing)


def test_runs_of_one_space_pool_into_one_report(tmp_path):
    a = fake_experiment(tmp_path / "a", name="a", prefix="a")
    b = fake_experiment(tmp_path / "b", name="b", prefix="b", seed=2)
    exp = experiment.pool([experiment.load(a), experiment.load(b)])
    assert len(exp.trials) == 8 and exp.planned == 10 and exp.sources == [a.resolve(), b.resolve()]
    assert sorted(exp.epochs["trial_id"].unique()) == ["at1", "at2", "at3", "bt1", "bt2", "bt3"]
    assert any(m.startswith("b: trial bt3 errored") for m in exp.missing)
    out = tmp_path / "pooled"
    result = CliRunner().invoke(app, ["report", str(a), str(b), "--no-plots", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"- Folders: {a.resolve()}, {b.resolve()}" in result.stdout and "8 of 10 planned" in result.stdout
    assert (out / "report.html").exists() and not (a / "report").exists()


@pytest.mark.parametrize("change, message", [
    (lambda prov: prov["spec"].update(metric="val_loss"), "they differ in metric"),
    (lambda prov: prov["spec"].update(params=[{"name": "epochs"}]), "they differ in params"),
    (lambda prov: prov.pop("spec"), "its space is unknown"),
])
def test_runs_of_other_spaces_do_not_pool(tmp_path, change, message):
    a = fake_experiment(tmp_path / "a", prefix="a")
    b = fake_experiment(tmp_path / "b", prefix="b")
    prov = json.loads((b / "tune_norm.json").read_text())
    change(prov)
    (b / "tune_norm.json").write_text(json.dumps(prov))
    result = CliRunner().invoke(app, ["report", str(a), str(b), "--no-plots", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and message in result.output, result.output


def test_pooling_refuses_repeats_and_needs_out(tmp_path):
    a = fake_experiment(tmp_path / "a")
    same_ids = fake_experiment(tmp_path / "b")
    cases = [([str(a), str(a), "--out", str(tmp_path / "o")], "the same experiment folder is given twice"),
             ([str(a), str(same_ids), "--out", str(tmp_path / "o")], "trial t1 appears in more than one"),
             ([str(a), str(same_ids)], "pass --out")]
    for args, message in cases:
        result = CliRunner().invoke(app, ["report", *args, "--no-plots"])
        assert result.exit_code == 2 and message in result.output, result.output


def test_report_command_on_a_running_experiment(tmp_path):
    exp = fake_experiment(tmp_path / "exp")
    result = CliRunner().invoke(app, ["report", str(exp), "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "| BatchNorm |" in result.stdout and "## Missing" in result.stdout and "trial t3 errored" in result.stdout
    html = (exp / "report" / "report.html").read_text()
    assert "<table>" in html and "BatchNorm" in html and "injected crash" in html
    out = tmp_path / "elsewhere"
    result = CliRunner().invoke(app, ["report", str(exp), "--no-plots", "--format", "csv", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert pd.read_csv(StringIO(result.stdout))["trial_id"].tolist() == ["t1", "t2", "t3"]
    assert (out / "report.html").stat().st_size > 0 and (out / "table.csv").exists()


def test_plots_without_data_are_skipped_with_a_note(tmp_path):
    exp = fake_experiment(tmp_path / "exp")
    result = CliRunner().invoke(app, ["report", str(exp), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["table"][0]["group"] == "BatchNorm"
    assert "warning: no misclassified images for BatchNorm" in result.stderr
    assert (exp / "report" / "learning_curves.png").stat().st_size > 0


def test_the_default_experiment_is_the_newest_in_tune_results(tmp_path, monkeypatch):
    import os

    old = fake_experiment(tmp_path / "tune_results" / "old", name="old")
    new = fake_experiment(tmp_path / "tune_results" / "new", name="new")
    for f in old.glob("experiment_state-*"):
        os.utime(f, (1, 1))
    (tmp_path / "tune_results" / "notes").mkdir()
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["report", "--no-plots"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# Report: new") and (new / "report" / "report.html").exists()


@pytest.mark.parametrize("make, message", [
    (lambda p: p, "does not exist"),
    (lambda p: (p.mkdir(), p)[1], "is not a tune-norm experiment"),
    (lambda p: (p.mkdir(), (p / "notes.txt").write_text("hi"), (p / "report").mkdir(), p)[3],
     "is not a tune-norm experiment"),
    (lambda p: (p.write_text("x"), p)[1], "is a file, not an experiment folder"),
])
def test_a_folder_that_is_not_an_experiment_is_one_sentence_and_exit_2(tmp_path, make, message):
    path = make(tmp_path / "thing")
    result = CliRunner().invoke(app, ["report", str(path)])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and message in result.stderr and result.stderr.count("\n") == 1


def test_no_experiment_anywhere_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["report"])
    assert result.exit_code == 2 and "none found in tune_results" in result.stderr


# -- end to end ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smoke_search_then_report(tmp_path, data_root):
    exp = tmp_path / "smoke"
    res = run_cli("search", ROOT / "search_spaces" / "smoke.yaml", "--storage", exp, "--num-cpus", "2",
                  "--data", data_root, env={"HOME": str(tmp_path)})
    assert res.returncode == 0, res.stderr[-3000:]
    res = run_cli("report", exp, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| Group |"))
    for column in ("baseline: best train acc", "baseline: best test acc", "baseline: best test loss", "L1", "L2",
                   "Val acc", "Test acc @ val epoch", "Epochs run", "Trial", "Seeds"):
        assert f"| {column} |" in header
    rows = []
    for line in lines[lines.index(header) + 2:]:
        if not line.startswith("| "):
            break
        rows.append(line)
    trials = json.loads((exp / "report" / "report.json").read_text())["trials"]
    groups = {t["group"] for t in trials}
    assert len(trials) == 4 and sorted(r.split(" | ")[0].removeprefix("| ") for r in rows) == sorted(groups)
    assert "## Comparisons" in res.stdout and "## Cost" in res.stdout and "Epochs saved by ASHA" in res.stdout
    out = exp / "report"
    pngs = ["learning_curves.png", "accuracy_vs_lr.png"]  # lr is sampled from a range: it always varies
    pngs += ["accuracy_vs_norm.png"] if len({t["norm"] for t in trials}) > 1 else []
    pngs += [f"misclassified_{report_slug(g)}.png" for g in groups]
    for name in pngs:
        assert (out / name).stat().st_size > 1000, name
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(list(out.glob("*.png"))) >= len(pngs)
    assert "http://" not in html and "https://" not in html  # nothing to fetch: it opens offline


def report_slug(group: str) -> str:
    from tune_norm.plots import slug

    return slug(group)


def test_accuracy_vs_batch_size_zooms_only_when_one_setup_is_far_below():
    from tune_norm.plots import zoom_range

    assert zoom_range([(98.2, 0.2), (98.5, 0.1), (97.9, 0.3)]) is None  # within 3 points: one panel
    low, high = zoom_range([(75.0, 6.0), (98.2, 0.2), (98.5, 0.1), (97.9, 0.3)])
    assert 97.4 < low < 97.6 and 98.6 < high < 98.8  # the near-best means and their error bars, padded
