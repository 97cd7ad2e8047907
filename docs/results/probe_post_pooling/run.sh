#!/bin/bash
# Probe: do instance norm and GroupNorm(8) learn in the baseline net? 4 epochs, 20k images, 2 seeds each.
# Ran at commit f7947fd (before the exact augmentation); today instance and groups 8 are refused by the net.
cd "$(dirname "$0")/../../.."  # the repository root
for seed in 1 2; do
for setup in "instance 4" "group 8" "group 4" "group 2" "layer 4" "batch 4"; do
  set -- $setup
  TUNE_NORM_DATA=../shared/data .venv/bin/tune-norm train --norm $1 --groups $2 --epochs 4 --subset 20000 \
    --val-size 5000 --threads 1 --seed $seed --out runs/probe/$1-g$2-s$seed
done; done
