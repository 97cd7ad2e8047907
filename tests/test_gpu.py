"""GPU checks that run themselves where torch sees CUDA (skipped elsewhere): training with and without AMP,
checkpoints across devices, four trials packed on one GPU by a real local Ray, and the bench's GPU rows.

`bash .ci/gpu` runs this file plus the GPU bench and prints a summary (README, "GPU check"). To check the test
code itself without a GPU, TUNE_NORM_GPU_TESTS_ON_CPU=1 runs the same tests with the CPU standing in for the GPU
(Ray is told it has one GPU; the bench test still needs CUDA): a dry run of the logic, not a GPU measurement.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from conftest import run_cli, trial_results, write_space
from tune_norm import data
from tune_norm.config import TrainConfig
from tune_norm.train import Trainer

DRY_RUN = os.environ.get("TUNE_NORM_GPU_TESTS_ON_CPU") == "1"
GPU = "cpu" if DRY_RUN else "cuda"
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available() and not DRY_RUN, reason="no CUDA GPU here"),
]
SUBSET = dict(subset=6000, val_size=2000)


@pytest.fixture(scope="module")
def mnist(data_root):
    return data.load(data_root, **SUBSET)


def two_epochs(mnist, device: str, **changes) -> dict:
    cfg = TrainConfig(epochs=2, device=device, threads=2, **SUBSET, **changes)
    trainer = Trainer(cfg, mnist)
    assert trainer.device.type == device and next(trainer.model.parameters()).device.type == device
    return list(trainer.epochs())[-1]


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "amp"])
def test_two_epochs_on_the_gpu_learn_like_on_the_cpu(mnist, amp):
    cpu = two_epochs(mnist, "cpu")
    gpu = two_epochs(mnist, GPU, amp=amp)
    assert gpu["val_acc"] > 90 and gpu["test_acc"] > 90, gpu
    # other random streams (CUDA's generator, torch's dropout instead of the CPU masks, bf16 sums): the same
    # recipe on 6,000 images lands within a few points, not bit for bit
    assert abs(gpu["test_acc"] - cpu["test_acc"]) < 3.0, (gpu["test_acc"], cpu["test_acc"])


@pytest.mark.parametrize("first, second", [(GPU, "cpu"), ("cpu", GPU)], ids=["gpu-to-cpu", "cpu-to-gpu"])
def test_a_checkpoint_resumes_on_the_other_device(mnist, tmp_path, first, second):
    cfg = TrainConfig(epochs=2, threads=2, **SUBSET)
    a = Trainer(cfg.replace(device=first), mnist)
    a.step()
    a.save(tmp_path / "state.pt")
    b = Trainer(cfg.replace(device=second), mnist)
    b.load(tmp_path / "state.pt")
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert q.device.type == b.device.type and torch.equal(p.cpu(), q.cpu()), name
    moment = [s["momentum_buffer"] for s in b.optimizer.state.values()]
    assert moment and all(m.device.type == b.device.type for m in moment)
    m = b.step()
    assert m["epoch"] == 2 and m["test_acc"] > 90 and len(b.history) == 2


def test_ray_packs_four_trials_on_one_gpu(tmp_path):
    space = write_space(tmp_path / "pack.yaml", num_samples=4,
                        search={"type": "random", "max_concurrent": 4, "seed": 0},
                        scheduler={"type": "fifo"}, space={"epochs": 3})
    res = run_cli("search", space, "--storage", tmp_path / "exp", "--gpus-per-trial", "0.25", "--num-gpus", "1",
                  "--num-cpus", "4", timeout=420)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = trial_results(tmp_path / "exp")
    assert len(rows) == 4 and all(len(r) == 3 for r in rows.values())
    assert {r[-1]["gpu_ids"] for r in rows.values()} == {"0"}  # one GPU, shared
    assert {r[-1]["device"].split(":")[0] for r in rows.values()} == {GPU}
    assert len({r[-1]["pid"] for r in rows.values()}) == 4  # four processes at once
    # every trial's epochs overlap the others': the latest start is before the earliest end
    spans = [(min(e["wall_time"] - e["epoch_seconds"] for e in r), max(e["wall_time"] for e in r))
             for r in rows.values()]
    assert max(s for s, _ in spans) < min(e for _, e in spans), spans


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the bench's GPU rows need CUDA, even in a dry run")
def test_bench_fills_its_gpu_rows(tmp_path):
    out = tmp_path / "bench.json"
    res = run_cli("bench", "--device", "cuda", "--steps", "20", "--rounds", "2", "--json", out, timeout=420)
    assert res.returncode == 0, res.stderr[-3000:]
    gpu = json.loads(out.read_text())["gpu"]
    assert gpu is not None and {"baseline", "tune_norm", "model_step", "tune_norm_amp"} <= set(gpu["pipelines"])
    assert all(p["images_per_s"] > 0 for p in gpu["pipelines"].values())
    assert gpu["packing"]["layouts"] and all("gpu_per_trial" in row for row in gpu["packing"]["layouts"])
    assert "| ratio" in res.stdout and "GPU" in res.stdout

