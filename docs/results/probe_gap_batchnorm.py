"""Probe: does BatchNorm fail at batch 2 because of the norm after global average pooling?

After AvgPool(6) each channel holds one number per image, so at batch 2 that BatchNorm normalizes two numbers:
in training it outputs about +-1 (only the sign of their difference survives), in evaluation it uses running
statistics of a very different distribution. This trains the batch_size.yaml recipe at batch 2 with BatchNorm,
as is and with only that one norm removed (Identity), with GroupNorm as the reference, and prints
validation/test accuracy per epoch.

    python docs/results/probe_gap_batchnorm.py --data ../shared/data --epochs 3 --seeds 1 2
"""

import argparse
from pathlib import Path

from torch import nn

from tune_norm import data
from tune_norm.config import TrainConfig
from tune_norm.train import Trainer

VARIANTS = {"BN everywhere": "batch", "no BN after GAP": "batch", "GroupNorm": "group"}
GAP_BLOCK = 8  # Net.features: block, block, pool, 1x1, block, block, block, AvgPool, *this 1x1 block*, 1x1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = ap.parse_args()
    print("variant         seed epoch val_acc test_acc")
    for seed in args.seeds:
        for variant in args.variants:
            cfg = TrainConfig(norm=VARIANTS[variant], batch_size=2, lr=0.0005, epochs=args.epochs, subset=20000,
                              seed=seed,
                              threads=1)
            trainer = Trainer(cfg, data.load(args.data, val_size=cfg.val_size, subset=cfg.subset))
            block = trainer.model.features[GAP_BLOCK]
            assert block[0].kernel_size == (1, 1)
            if variant == "no BN after GAP":
                assert isinstance(block[2], nn.BatchNorm2d)
                block[2] = nn.Identity()
            for m in trainer.epochs():
                print(f"{variant:15} {seed:4} {m['epoch']:5} {m['val_acc']:7.2f} {m['test_acc']:8.2f}", flush=True)


if __name__ == "__main__":
    main()
