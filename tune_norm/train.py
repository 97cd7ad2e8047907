"""The Ray-free training loop: SGD + OneCycleLR per batch, L1 in the loss, L2 as weight decay, per-epoch metrics.

Devices, one rule: the initial weights are drawn on the CPU (``torch.device("cpu")`` around the model's
construction, whatever torch's default device is) and moved, so a seed gives the same net on every device;
every tensor of the training step (shuffle, augmentation parameters, metrics, evaluation) is made on the
data's device with an explicit ``device=``, and every random draw of the step uses ``Trainer.generator``,
which lives on that device. The one exception is the CPU dropout mask (tune_norm.dropout), drawn from numpy
on the CPU for CPU tensors only. tests/test_device.py enforces the rule with torch's meta device.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from . import augment
from .config import TrainConfig
from .data import MNIST, normalize
from .errors import UserError
from .model import Net

EVAL_BATCH = 500  # images per evaluation step; 1.6-1.8x faster than 1000 on CPU (docs/bench.md, bench --search)
DIVERGED_LOSS = 1e9  # the finite stand-in for a non-finite loss, so schedulers and searchers can rank it
EXPLODED_LOSS = 1e3  # an epoch's mean train loss above this has blown up (chance level is ln 10 = 2.3)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda was asked for, but torch sees no CUDA GPU here")
    return torch.device(name)


def cpu_budget() -> int:
    """CPUs this process may use: the affinity mask, or what Ray assigned through OMP_NUM_THREADS."""
    assigned = os.environ.get("OMP_NUM_THREADS")
    if assigned and assigned.isdigit() and int(assigned) > 0:
        return int(assigned)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def l1_penalty(params: list[torch.Tensor]) -> torch.Tensor:
    """sum |p| over all parameters, as the baseline study adds it to the loss."""
    return torch.stack([p.abs().sum() for p in params]).sum()


class Trainer:
    """Owns the model, optimizer, schedule and best-so-far record of one run; checkpointable."""

    def __init__(self, cfg: TrainConfig, data: MNIST):
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        self.threads = cfg.threads or cpu_budget()
        if self.device.type == "cpu":
            torch.set_num_threads(self.threads)
        torch.manual_seed(cfg.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        with torch.device("cpu"):  # weights drawn on the CPU, then moved: the same net on every device
            self.model = Net(cfg.norm, cfg.groups, cfg.dropout, cfg.width, cfg.fast_dropout)
        self.model = self.model.to(self.device)
        self.memory_format = (
            torch.channels_last if cfg.channels_last and self.device.type == "cpu" else torch.contiguous_format
        )
        self.model = self.model.to(memory_format=self.memory_format)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.train_set = data.train.to(self.device)
        # evaluation sets normalised once; they never change
        self.eval_sets = {
            name: (normalize(s.images.to(self.device)).contiguous(memory_format=self.memory_format),
                   s.labels.to(self.device))
            for name, s in (("val", data.val), ("test", data.test))
            if len(s)
        }
        self.steps_per_epoch = math.ceil(len(self.train_set) / cfg.batch_size)
        self.optimizer = torch.optim.SGD(self.params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.l2)
        # OneCycleLR cycles the momentum opposite to the lr: momentum at the start and end, base_momentum at the
        # peak (the baseline study's 0.95 -> 0.85 -> 0.95); base_momentum == momentum keeps it constant
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=cfg.lr, epochs=cfg.epochs, steps_per_epoch=self.steps_per_epoch,
            pct_start=cfg.pct_start, base_momentum=cfg.base_momentum, max_momentum=cfg.momentum,
        )
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.diverged = False

    # -- one epoch -----------------------------------------------------------------------------
    def _autocast(self):
        enabled = self.cfg.amp and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def train_epoch(self) -> dict[str, float]:
        cfg, model = self.cfg, self.model
        model.train()
        images, labels = self.train_set.images, self.train_set.labels
        order = torch.randperm(len(labels), device=self.device, generator=self.generator)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            x = images[idx].unsqueeze(1).float()  # grey levels 0..255, as the baseline's 8-bit PIL transforms see them
            if cfg.augment:
                x = augment.augment(x, self.generator)
            x = normalize(x.div_(augment.LEVELS)).contiguous(memory_format=self.memory_format)
            y = labels[idx]
            with self._autocast():
                out = model(x)
                loss = F.nll_loss(out.float(), y)
            if cfg.l1:
                loss = loss + cfg.l1 * l1_penalty(self.params)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            loss_sum += loss.detach() * len(y)
            correct += (out.argmax(1) == y).sum()
        n = len(order)
        return {"train_loss": loss_sum.item() / n, "train_acc": 100.0 * correct.item() / n}

    @torch.no_grad()
    def evaluate(self, name: str) -> dict[str, float]:
        x, y = self.eval_sets[name]
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for start in range(0, len(y), EVAL_BATCH):
            with self._autocast():
                out = self.model(x[start : start + EVAL_BATCH]).float()
            loss_sum += F.nll_loss(out, y[start : start + EVAL_BATCH], reduction="sum")
            correct += (out.argmax(1) == y[start : start + EVAL_BATCH]).sum()
        return {f"{name}_loss": loss_sum.item() / len(y), f"{name}_acc": 100.0 * correct.item() / len(y)}

    def step(self) -> dict[str, Any]:
        """Train and evaluate one epoch; return its metrics (with the best-so-far record)."""
        started = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        metrics: dict[str, Any] = self.train_epoch()
        self.epoch += 1
        if not math.isfinite(metrics["train_loss"]) or metrics["train_loss"] > EXPLODED_LOSS:
            self.diverged = True
            metrics = {"train_loss": DIVERGED_LOSS, "train_acc": 0.0, "val_loss": DIVERGED_LOSS, "val_acc": 0.0,
                       "test_loss": DIVERGED_LOSS, "test_acc": 0.0}
        else:
            for name in self.eval_sets:
                metrics.update(self.evaluate(name))
            if "val_acc" not in metrics:  # the baseline study's convention (val_size 0): no validation split
                metrics.update(val_loss=float("nan"), val_acc=float("nan"))
        seconds = time.perf_counter() - started
        # named apart from the config's lr (the OneCycle peak) so trackers and tables do not mix the two
        metrics.update(epoch=self.epoch, lr_epoch_start=lr, epoch_seconds=seconds, wall_time=time.time(),
                       images_per_s=len(self.train_set) / seconds, diverged=self.diverged)
        metrics.update(self._best(metrics))
        self.history.append(metrics)
        return metrics

    def _best(self, m: dict[str, Any]) -> dict[str, Any]:
        """Best-over-epochs summaries: the baseline study's (best test acc, lowest test loss) and the test acc at the
        validation-chosen epoch."""
        prev = self.history[-1] if self.history else None
        best = {
            "best_test_acc": max(m["test_acc"], prev["best_test_acc"]) if prev else m["test_acc"],
            "best_test_loss": min(m["test_loss"], prev["best_test_loss"]) if prev else m["test_loss"],
        }
        if not math.isfinite(m["val_acc"]):  # no validation split: nothing may choose an epoch
            return {**best, "best_val_acc": float("nan"), "test_acc_at_best_val": float("nan"), "best_val_epoch": 0}
        if prev is None or m["val_acc"] > prev["best_val_acc"]:
            best.update(best_val_acc=m["val_acc"], test_acc_at_best_val=m["test_acc"], best_val_epoch=m["epoch"])
        else:
            best.update({k: prev[k] for k in ("best_val_acc", "test_acc_at_best_val", "best_val_epoch")})
        return best

    def epochs(self) -> Iterator[dict[str, Any]]:
        """Run the remaining epochs; stop after a diverged one."""
        while self.epoch < self.cfg.epochs and not self.diverged:
            yield self.step()

    # -- checkpoints: weights and plain values only ------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "history": self.history,
            "diverged": self.diverged,
            "generator": self.generator.get_state(),
            "generator_device": self.device.type,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "dropout_rng": self.model.mask_rng.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.history, self.diverged = state["epoch"], state["history"], state["diverged"]
        if state.get("generator_device", "cpu") == self.device.type:
            self.generator.set_state(state["generator"])
        else:  # another device's generator state cannot be loaded: a fresh stream, fixed by seed and epoch
            self.generator.manual_seed(self.cfg.seed * 1_000_003 + self.epoch)
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.model.mask_rng.set_state(state["dropout_rng"])

    def save(self, path: Path) -> None:
        torch.save(self.state_dict(), path)

    def load(self, path: Path) -> None:
        """Restore from ``path``, written on any device; ``weights_only`` refuses anything but tensors and plain
        values. Loaded to the CPU first (RNG states must be CPU tensors); weights and optimizer state then move
        to this trainer's device. Resuming on another device type is exact but for the step's random stream."""
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def describe_momentum(cfg: TrainConfig) -> str:
    """The momentum that really runs, in words (OneCycleLR cycles it unless base_momentum == momentum)."""
    if cfg.base_momentum == cfg.momentum:
        return f"momentum {cfg.momentum:g} (constant)"
    return f"momentum {cfg.momentum:g} -> {cfg.base_momentum:g} -> {cfg.momentum:g} (OneCycleLR, opposite to the lr)"


def format_row(m: dict[str, Any]) -> str:
    return (f"{m['epoch']:>5} {m['lr_epoch_start']:>9.5f} {m['train_loss']:>10.4f} {m['train_acc']:>9.2f} "
            f"{m['val_loss']:>9.4f} {m['val_acc']:>7.2f} {m['test_loss']:>9.4f} {m['test_acc']:>8.2f} "
            f"{m['epoch_seconds']:>6.1f}")


TABLE_HEADER = (f"{'epoch':>5} {'lr_start':>9} {'train_loss':>10} {'train_acc':>9} {'val_loss':>9} {'val_acc':>7} "
                f"{'test_loss':>9} {'test_acc':>8} {'sec':>6}")


def write_metrics(rows: list[dict[str, Any]], out: Path) -> None:
    """A run's per-epoch metrics (Trainer.history) as metrics.csv and metrics.json in ``out``."""
    import csv
    import json

    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "metrics.json").write_text(json.dumps(rows, indent=2) + "\n")


def run_to_folder(cfg: TrainConfig, data: MNIST, out: Path, echo=print) -> list[dict[str, Any]]:
    """Train ``cfg`` and write config.json, metrics.csv, metrics.json and model.pt into ``out``."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.as_dict(), indent=2) + "\n")
    trainer = Trainer(cfg, data)
    echo(f"training {cfg.norm} norm on {trainer.device}, {len(data.train)} train / {len(data.val)} val / "
         f"{len(data.test)} test images, {cfg.epochs} epochs, lr up to {cfg.lr:g}, {describe_momentum(cfg)}")
    echo(TABLE_HEADER)
    for m in trainer.epochs():
        echo(format_row(m))
    rows = trainer.history
    write_metrics(rows, out)
    torch.save(trainer.model.state_dict(), out / "model.pt")
    last = rows[-1]
    status = "diverged" if trainer.diverged else "finished"
    at_val = last["test_acc_at_best_val"]
    at_val_text = "" if math.isnan(at_val) else f"test acc at the validation-chosen epoch {at_val:.2f}%, "
    echo(f"{status}: best test acc {last['best_test_acc']:.2f}% (baseline convention: best over epochs), "
         f"{at_val_text}results in {out}")
    return rows
