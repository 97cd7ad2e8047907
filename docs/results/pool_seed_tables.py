"""Pool the per-trial tables (trials.csv) of several committed reports of one grid: 5-seed means and comparisons.

`tune-norm report A B --out ...` pools experiment folders; this does the same arithmetic, with tune_norm.stats and
tune_norm.report.comparisons (accuracy and lowest test loss, Holm-corrected over the table's tests), for reports
whose experiment folders are gone (seeds 1-3 of baseline.yaml, then named seed.yaml, ran on another machine; only
their report was committed). Printed as Markdown.

    python docs/results/pool_seed_tables.py docs/results/seed/trials.csv docs/results/seed_4_5/trials.csv
"""

import sys

import pandas as pd

from tune_norm import render, report, stats

BASELINE = {  # the baseline study's single runs: train, test, loss
    "LayerNorm": (98.80, 99.48, 0.0174), "GroupNorm": (98.84, 99.51, 0.0156), "BatchNorm": (98.59, 99.58, 0.0151),
    "BatchNorm + L1": (98.02, 99.26, 0.0217), "GroupNorm + L1": (98.12, 99.37, 0.0283),
    "LayerNorm + L2": (98.94, 99.56, 0.0159), "BatchNorm + L1 + L2": (98.07, 99.31, 0.0233),
}


def main(paths: list[str]) -> None:
    trials = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    trials = trials[trials["epochs_run"] == trials["epochs"]]  # finished trials only
    if trials.duplicated(["group", "seed"]).any():
        sys.exit("a (group, seed) pair appears twice: these tables overlap")
    print("| run | seeds | train acc | test acc (baseline convention) | test - baseline | test loss "
          "| test acc per seed |")
    print("|---|---|---|---|---|---|---|")
    for group, (_train, test, _loss) in BASELINE.items():
        rows = trials[trials["group"] == group].sort_values("seed")
        acc = stats.summarize(rows["best_test_acc"])
        tr, lo = stats.summarize(rows["train_acc_last"]), stats.summarize(rows["best_test_loss"])
        print(f"| {group} | {acc.n} | {tr.mean:.2f} ± {tr.std:.2f} | {acc.mean:.2f} ± {acc.std:.2f} "
              f"| {acc.mean - test:+.2f} | {lo.mean:.4f} ± {lo.std:.4f} | "
              + " / ".join(f"{v:.2f}" for v in rows["best_test_acc"]) + " |")
    print()
    summary = report.add_groups(trials)
    summary["score"] = 0.0  # one setup per group (the grid has no search): the score picks nothing here
    compared = report.comparisons(summary)
    print(render.markdown_table(render.display(compared, render.comparison_columns())))
    print()
    print(report.comparison_note(compared))
    print()
    print("Regularization against the same norm without it (L1 ran with BatchNorm and GroupNorm only, L2 with "
          "LayerNorm and BatchNorm + L1; Welch, Holm over these four tests):")
    acc = lambda group: trials.loc[trials["group"] == group, "best_test_acc"]  # noqa: E731
    pairs = (("BatchNorm + L1", "BatchNorm"), ("GroupNorm + L1", "GroupNorm"), ("LayerNorm + L2", "LayerNorm"),
             ("BatchNorm + L1 + L2", "BatchNorm + L1"))
    for c in stats.adjust(stats.compare(acc(a), acc(b), a, b, what="accuracy") for a, b in pairs):
        print(f"- {c.a} - {c.b}: {c.diff:+.2f} (95% CI [{c.low:+.2f}, {c.high:+.2f}]); {c.verdict}")

if __name__ == "__main__":
    main(sys.argv[1:])
