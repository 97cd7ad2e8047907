"""Print the small-batch study's summary table (docs/results/README.md) from a committed batch-size report.

Reads the report's trials.csv (per-seed numbers) and comparisons.csv (Welch, Holm-adjusted over the report's tests)
and prints, per batch size: each norm's test accuracy at the validation-chosen epoch (mean ± std), GroupNorm minus
BatchNorm with its 95% CI, p and Holm p, the two norms' lowest test loss with p and Holm p, then the running train
accuracy of the last epoch and the Holm p over the accuracy tests alone.

    python docs/results/batch_size_table.py docs/results/batch_size_10k
"""

import sys
from pathlib import Path

import pandas as pd

from tune_norm import stats

NORMS = ("BatchNorm", "GroupNorm", "LayerNorm")
ACCURACY, LOSS = "test acc @ val epoch", "baseline: best test loss"


def p_text(p: float) -> str:
    """'< 0.001' or '= 0.04', as tune_norm.stats words a p-value (never rounded across alpha)."""
    return stats.format_p(p).removeprefix("p ")


def main(folder: Path) -> None:
    trials = pd.read_csv(folder / "trials.csv")
    comparisons = pd.read_csv(folder / "comparisons.csv")
    trials = trials[trials["epochs_run"] == trials["epochs"]]
    accuracy = comparisons[comparisons["metric"] == ACCURACY].copy()
    accuracy["holm_within"] = stats.holm(list(accuracy["p"]))  # over the accuracy tests alone

    def pair(metric: str, batch: int) -> pd.Series:
        rows = comparisons[(comparisons["metric"] == metric)
                           & (comparisons["a"] == f"BatchNorm, batch {batch}")
                           & (comparisons["b"] == f"GroupNorm, batch {batch}")]
        if len(rows) != 1:
            sys.exit(f"{folder}: no single BatchNorm vs GroupNorm {metric} comparison at batch {batch}")
        return rows.iloc[0]

    print("| batch | BatchNorm | GroupNorm | LayerNorm | GN − BN (95% CI), p, Holm p "
          "| lowest test loss BN / GN, p, Holm p |")
    print("|---:|---|---|---|---|---|")
    batches = sorted(int(b) for b in trials["batch_size"].unique())
    for batch in batches:
        cells = []
        for norm in NORMS:
            s = stats.summarize(trials.loc[trials["group"] == f"{norm}, batch {batch}", "test_acc_at_best_val"])
            cells.append(f"{s.mean:.2f} ± {s.std:.2f} ({s.n})")
        acc, loss = pair(ACCURACY, batch), pair(LOSS, batch)
        gap = f"{-acc['diff']:+.2f} [{-acc['diff_high']:+.2f}, {-acc['diff_low']:+.2f}]"
        print(f"| {batch} | {' | '.join(cells)} | {gap}, p {p_text(acc['p'])}, Holm p {p_text(acc['p_holm'])} "
              f"| {loss['mean_a']:.4f} / {loss['mean_b']:.4f}, p {p_text(loss['p'])}, "
              f"Holm p {p_text(loss['p_holm'])} |")
    print()
    print("Running train accuracy of the last epoch (mean over seeds), batch " + " / ".join(map(str, batches)) + ":")
    for norm in NORMS:
        means = [trials.loc[trials["group"] == f"{norm}, batch {b}", "train_acc_last"].mean() for b in batches]
        print(f"- {norm}: " + " / ".join(f"{m:.1f}" for m in means))
    print()
    print(f"Holm over the {len(accuracy)} accuracy tests alone (the report's Holm p is over all {len(comparisons)}):")
    for _, row in accuracy.iterrows():
        print(f"- {row['a']} vs {row['b']}: p {p_text(row['p'])}, Holm p {p_text(row['holm_within'])}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
