"""The Ray-free loop: it learns, reports divergence, resumes exactly and loads only safe checkpoints."""

import math
import pickle

import pytest
import torch

from tune_norm import data, train
from tune_norm.config import TrainConfig


@pytest.fixture(scope="module")
def small(data_root):
    return data.load(data_root, val_size=5000, subset=4000)


@pytest.mark.slow  # trains
def test_one_epoch_on_a_subset_learns(small):
    trainer = train.Trainer(TrainConfig(epochs=1, subset=4000, lr=0.05, threads=2), small)
    m = trainer.step()
    assert m["val_acc"] > 70 and m["test_acc"] > 70, m  # chance is 10%
    assert m["train_loss"] < 2.0 and not m["diverged"]
    assert set(m) >= {"train_acc", "val_loss", "test_loss", "lr_epoch_start", "epoch_seconds", "best_test_acc",
                      "test_acc_at_best_val"}


@pytest.mark.slow  # trains
def test_divergence_ends_the_run_with_finite_metrics(small):
    trainer = train.Trainer(TrainConfig(norm="none", lr=1e4, epochs=5, subset=4000, augment=False), small)
    rows = list(trainer.epochs())
    assert len(rows) == 1 and rows[0]["diverged"] is True
    assert rows[0]["val_acc"] == 0.0 and all(math.isfinite(v) for v in rows[0].values() if isinstance(v, float))


def test_l1_is_factor_times_sum_of_absolute_parameters(small):
    trainer = train.Trainer(TrainConfig(l1=1e-3, subset=4000), small)
    expected = sum(p.abs().sum() for p in trainer.model.parameters())
    assert torch.allclose(train.l1_penalty(trainer.params), expected)
    assert trainer.optimizer.param_groups[0]["weight_decay"] == 0
    assert train.Trainer(TrainConfig(l2=1e-3, subset=4000), small).optimizer.param_groups[0]["weight_decay"] == 1e-3


@pytest.mark.slow  # trains
def test_resume_from_checkpoint_continues_exactly(small, tmp_path):
    cfg = TrainConfig(epochs=3, subset=4000, seed=7, threads=1)
    straight = [m["train_loss"] for m in train.Trainer(cfg, small).epochs()]
    first = train.Trainer(cfg, small)
    first.step()
    first.save(tmp_path / "state.pt")
    resumed = train.Trainer(cfg, small)
    resumed.load(tmp_path / "state.pt")
    rest = [m["train_loss"] for m in resumed.epochs()]
    assert [m["epoch"] for m in resumed.history] == [1, 2, 3]
    assert rest == pytest.approx(straight[1:], rel=1e-5)


class Exploit:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_malicious_checkpoint_is_refused(small, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"model": Exploit()}, path, pickle_module=pickle)
    trainer = train.Trainer(TrainConfig(subset=4000), small)
    with pytest.raises(pickle.UnpicklingError):
        trainer.load(path)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.slow  # trains
def test_run_to_folder_writes_metrics_and_weights(small, tmp_path):
    rows = train.run_to_folder(TrainConfig(epochs=1, subset=4000), small, tmp_path / "out", echo=lambda s: None)
    for name in ("config.json", "metrics.csv", "metrics.json", "model.pt"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert len(rows) == 1
    state = torch.load(tmp_path / "out" / "model.pt", weights_only=True)
    assert sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k) == 7704


def momenta(optimizer, scheduler, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["momentum"])
        optimizer.step()
        scheduler.step()
    return out


def test_momentum_is_the_seeds_cycle_not_its_0_7(small):
    """The baseline study's literal SGD(momentum=0.7) + OneCycleLR(max_lr=0.015): torch cycles the momentum 0.95 -> 0.85
    -> 0.95 and 0.7 never acts. The default config runs exactly that schedule, step for step."""
    cfg = TrainConfig(epochs=2, batch_size=500, subset=4000)
    trainer = train.Trainer(cfg, small)
    w = torch.zeros(1, requires_grad=True)
    seed_opt = torch.optim.SGD([w], lr=0.015, momentum=0.7)
    seed_sched = torch.optim.lr_scheduler.OneCycleLR(seed_opt, max_lr=0.015, epochs=2, steps_per_epoch=8)
    theirs = momenta(seed_opt, seed_sched, 16)
    ours = momenta(trainer.optimizer, trainer.scheduler, 16)
    assert ours == pytest.approx(theirs) and 0.7 not in theirs
    assert max(ours) == pytest.approx(0.95) and min(ours) == pytest.approx(0.85, abs=2e-3)
    assert "0.95 -> 0.85 -> 0.95" in train.describe_momentum(cfg)


def test_base_momentum_equal_to_momentum_is_a_constant_momentum(small):
    cfg = TrainConfig(epochs=2, batch_size=500, subset=4000, momentum=0.7, base_momentum=0.7)
    trainer = train.Trainer(cfg, small)
    assert set(momenta(trainer.optimizer, trainer.scheduler, 16)) == {0.7}
    assert train.describe_momentum(cfg) == "momentum 0.7 (constant)"
