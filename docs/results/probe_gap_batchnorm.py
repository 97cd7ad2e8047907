"""Probe: how much of BatchNorm's collapse at batch 2 comes from the norm after global average pooling?

After AvgPool(6) each channel holds one number per image, so at batch 2 the BatchNorm of the 1x1 block normalizes
two numbers: in training it outputs about +-1 (only the sign of their difference survives), in evaluation it uses
running statistics of a very different distribution. This trains the batch-size study's batch-2 recipe
(search_spaces/batch_size.yaml: lr 0.0005, 5 epochs, 20,000 training images, 5,000 validation and all 10,000 test
images) four ways: BatchNorm as the study runs it, BatchNorm with only that one norm removed (Identity), GroupNorm
as the reference, and GroupNorm with that norm removed too (so the two nets without it differ only in the norms of
their convolutions). Each run writes metrics.csv, metrics.json and then config.json (with the variant) into its
own folder.

    python docs/results/probe_gap_batchnorm.py run --data ../shared/data --out docs/results/probe_gap_batchnorm \
        --seeds 1 2 3 4 5 6
    python docs/results/probe_gap_batchnorm.py table docs/results/probe_gap_batchnorm

`table` prints, from the committed folders, each variant's test accuracy at the validation-chosen epoch (mean ±
std over seeds) and five pairwise Welch tests, Holm-corrected over those five.
"""

import argparse
import csv
import json
import sys
from pathlib import Path

from tune_norm import stats

ROOT = Path(__file__).resolve().parents[2]
SPACE = ROOT / "search_spaces" / "batch_size.yaml"
VARIANTS = {  # folder slug: (label, norm, drop the norm after global pooling)
    "batch": ("BatchNorm (the study's net)", "batch", False),
    "batch-no-gap-norm": ("BatchNorm, no norm after pooling", "batch", True),
    "group": ("GroupNorm (reference)", "group", False),
    "group-no-gap-norm": ("GroupNorm, no norm after pooling", "group", True),
}
GAP_BLOCK = 8  # Net.features: block, block, pool, 1x1, block, block, block, AvgPool, *this 1x1 block*, 1x1
VALUE = "test_acc_at_best_val"


def recipe(norm: str, seed: int) -> dict:
    """The batch-size study's batch-2 config for ``norm`` and ``seed``, read from its YAML (like for like)."""
    from tune_norm import space

    spec = space.load(SPACE).with_overrides(seeds=(seed,))
    rows = [c for c in spec.cells() if c["batch_size"] == 2 and c["norm"] == norm]
    if len(rows) != 1:
        sys.exit(f"{SPACE}: expected one batch-2 {norm} row, found {len(rows)}")
    return rows[0]


def run(data: Path, out: Path, seeds: list[int], variants: list[str]) -> None:
    from torch import nn

    from tune_norm import config
    from tune_norm import data as data_mod
    from tune_norm.train import Trainer, write_metrics

    for seed in seeds:
        for slug in variants:
            label, norm, drop = VARIANTS[slug]
            folder = out / f"{slug}-s{seed}"
            cfg = config.from_mapping({**recipe(norm, seed), "threads": 1})
            if (folder / "config.json").exists():  # written last: the run is complete
                print(f"{folder}: done already, skipped", flush=True)
                continue
            trainer = Trainer(cfg, data_mod.for_config(cfg, data))
            block = trainer.model.features[GAP_BLOCK]
            assert block[0].kernel_size == (1, 1), "the net's layout changed: GAP_BLOCK no longer names the 1x1 block"
            if drop:
                assert isinstance(block[2], (nn.BatchNorm2d, nn.GroupNorm))
                block[2] = nn.Identity()
            for m in trainer.epochs():
                print(f"{label:34} seed {seed} epoch {m['epoch']}: val {m['val_acc']:.2f} test {m['test_acc']:.2f}",
                      flush=True)
            folder.mkdir(parents=True, exist_ok=True)
            write_metrics(trainer.history, folder)
            (folder / "config.json").write_text(json.dumps({**cfg.as_dict(), "variant": slug}, indent=2) + "\n")


def read(folder: Path) -> dict[str, dict[int, float]]:
    """variant -> seed -> test accuracy at the validation-chosen epoch (the last epoch's running value)."""
    out: dict[str, dict[int, float]] = {slug: {} for slug in VARIANTS}
    for run_dir in sorted(folder.glob("*-s*")):
        if not (run_dir / "config.json").exists():
            continue
        cfg = json.loads((run_dir / "config.json").read_text())
        with open(run_dir / "metrics.csv", newline="") as f:
            last = list(csv.DictReader(f))[-1]
        out[cfg["variant"]][int(cfg["seed"])] = float(last[VALUE])
    return out


def table(folder: Path) -> None:
    scores = read(folder)
    seeds = sorted({seed for runs in scores.values() for seed in runs})
    print("| variant (batch 2, 5 epochs) | seeds | test acc @ val epoch, mean ± std "
          f"| seed {' / '.join(map(str, seeds))} |")
    print("|---|---:|---|---|")
    for slug, (label, _, _) in VARIANTS.items():
        s = stats.summarize(scores[slug].values())
        per_seed = " / ".join(f"{scores[slug][seed]:.2f}" if seed in scores[slug] else "-" for seed in seeds)
        print(f"| {label} | {s.n} | {s.mean_std()} | {per_seed} |")
    pairs = [("batch-no-gap-norm", "batch"), ("group", "batch-no-gap-norm"), ("group", "batch"),
             ("group-no-gap-norm", "batch-no-gap-norm"), ("group", "group-no-gap-norm")]
    family = stats.adjust([stats.compare(scores[a].values(), scores[b].values(), VARIANTS[a][0], VARIANTS[b][0],
                                         what="accuracy") for a, b in pairs])
    print()
    print(f"Welch, Holm over these {len(family)} tests:")
    for c in family:
        print(f"- {c.a} − {c.b}: {c.diff:+.2f} [{c.low:+.2f}, {c.high:+.2f}]; {c.verdict}")
    bn, no_gap, gn = (stats.summarize(scores[k].values()).mean for k in ("batch", "batch-no-gap-norm", "group"))
    print()
    print(f"Share of the BatchNorm-to-GroupNorm gap that removing the one norm closes (of the means): "
          f"{(no_gap - bn) / (gn - bn):.0%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train the variants, one folder per variant and seed (done folders are skipped)")
    r.add_argument("--data", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    r.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    t = sub.add_parser("table", help="print the summary from the run folders")
    t.add_argument("folder", type=Path)
    args = ap.parse_args()
    if args.command == "run":
        run(args.data, args.out, args.seeds, args.variants)
    else:
        table(args.folder)


if __name__ == "__main__":
    main()
