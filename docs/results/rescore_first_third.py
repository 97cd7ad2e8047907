"""How much of the batch-size study's level shift comes from which test images were scored?

The earlier batch-size study (docs/results/batch_size) scored validation and test on their first 3,333 images
(subset 20000 shrank them); the rerun (docs/results/batch_size_10k, full_eval) scored all 10,000 test images and
sat 0.5-0.7 points higher. This reloads every trial's last checkpoint (epoch 5) from the rerun's committed
experiment folders and scores the same weights on all 10,000 test images and on the first 3,333 only: the paired
difference is the part of the shift that the scored images make, with the training (augmentation, code) held fixed.
A cross-check: the 10,000-image score must equal the test accuracy the trial logged at epoch 5.

Given the earlier study's report folder too, it sets the earlier run's per-seed test accuracy (at the
validation-chosen epoch, on the first 3,333 images) beside the rerun's on the same 3,333 images (epoch 5, the
only one with a checkpoint; the script prints in how many trials it was the validation-chosen epoch): Welch per
group, Holm over the 12 groups.

    python docs/results/rescore_first_third.py docs/results/batch_size_10k docs/results/batch_size
"""

import json
import sys
from pathlib import Path

import pandas as pd

from tune_norm import config, plots, retrain, stats
from tune_norm import data as data_mod
from tune_norm.data import Split

NORMS = {"batch": "BatchNorm", "group": "GroupNorm", "layer": "LayerNorm"}


def accuracy(model, split: Split) -> float:
    """Percent correct, as the trainer logs it: 100 * correct / images."""
    preds, _ = plots.predict(model, split.images)
    return 100.0 * int((preds == split.labels).sum()) / len(split.labels)


def rescore(trial: Path, test: Split, first: Split) -> dict:
    cfg = config.from_mapping(retrain.trial_config(json.loads((trial / "params.json").read_text())))
    model, epoch = plots.load_model(max(trial.glob("checkpoint_*")) / "state.pt", cfg.as_dict())
    logged = pd.read_csv(trial / "progress.csv").set_index("epoch").loc[epoch]
    scored = accuracy(model, test)
    if abs(scored - logged["test_acc"]) > 1e-9:
        sys.exit(f"{trial}: scores {scored} on all 10,000 test images, but logged {logged['test_acc']} at epoch "
                 f"{epoch}")
    return {"norm": cfg.norm, "batch_size": cfg.batch_size, "seed": cfg.seed, "epoch": epoch, "all_10000": scored,
            "first_3333": accuracy(model, first)}


def main(folder: Path, earlier: Path | None = None) -> None:
    _, test = data_mod.load_raw(data_mod.resolve_root(None))
    first = data_mod.load(val_size=5000, subset=20000).test  # what the earlier run scored: subset without full_eval
    assert len(first) == 3333 and (first.labels == test.labels[:3333]).all()
    rows = pd.DataFrame([rescore(t, test, first) for t in sorted(folder.glob("seeds_*/trial_*"))])
    chosen = pd.read_csv(folder / "trials.csv")["best_val_epoch"]
    print(f"{len(rows)} trials rescored at epoch {', '.join(map(str, sorted(rows['epoch'].unique())))}, each matching "
          f"its logged 10,000-image test accuracy; the validation-chosen epoch in {(chosen == 5).sum()} of them")
    print()
    print("| batch | norm | all 10,000 | first 3,333 | first 3,333 − all, paired mean [95% CI] |")
    print("|---:|---|---|---|---|")
    for (batch, norm), g in rows.groupby(["batch_size", "norm"]):
        whole, third = stats.summarize(g["all_10000"]), stats.summarize(g["first_3333"])
        d = stats.summarize(g["first_3333"] - g["all_10000"])
        print(f"| {batch} | {NORMS[norm]} | {whole.mean_std()} | {third.mean_std()} | "
              f"{d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}] |")
    d = stats.summarize(rows["first_3333"] - rows["all_10000"])
    print()
    print(f"Over all {d.n} trials: first 3,333 − all 10,000 = {d.mean:+.2f} points [{d.low:+.2f}, {d.high:+.2f}]")
    if earlier is not None:
        against_earlier(rows, earlier)


def against_earlier(rows: pd.DataFrame, earlier: Path) -> None:
    """The earlier run's scores beside the rerun's on the same first 3,333 test images."""
    old = pd.read_csv(earlier / "trials.csv")
    old = old[old["epochs_run"] == old["epochs"]]
    groups = [(batch, norm) for batch in sorted(rows["batch_size"].unique()) for norm in NORMS]
    family = stats.adjust([
        stats.compare(rows.loc[(rows["batch_size"] == b) & (rows["norm"] == n), "first_3333"],
                      old.loc[(old["batch_size"] == b) & (old["norm"] == n), "test_acc_at_best_val"],
                      f"{NORMS[n]}, batch {b}, rerun", "earlier run") for b, n in groups])
    print()
    print(f"The rerun against the earlier run ({earlier}), both on the first 3,333 test images (Welch, Holm over "
          f"{len(family)}):")
    print()
    print("| batch | norm | rerun | earlier run | rerun − earlier [95% CI] | Holm p |")
    print("|---:|---|---|---|---|---|")
    for (batch, norm), c in zip(groups, family):
        holm = stats.format_p(c.p_holm).removeprefix("p ").removeprefix("= ")
        print(f"| {batch} | {NORMS[norm]} | {c.mean_a:.2f} ({c.n_a}) | {c.mean_b:.2f} ({c.n_b}) | "
              f"{c.diff:+.2f} [{c.low:+.2f}, {c.high:+.2f}] | {holm} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
