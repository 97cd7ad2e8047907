"""The benchmark compares like with like: same loss on both paths, same augmentation, a CLI that writes sane numbers."""

import copy
import gzip
import json
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from tune_norm import augment, bench, data
from tune_norm.config import TrainConfig
from tune_norm.errors import UserError
from tune_norm.train import Trainer, l1_penalty

from conftest import run_cli

N = 32


def pil_images(images: torch.Tensor) -> list:
    return [Image.fromarray(im.numpy(), mode="L") for im in images]


@pytest.mark.parametrize("channels_last, tolerance", [(True, 1e-3), (False, 1e-6)])
def test_fast_path_and_seed_path_give_the_same_loss_and_gradients(data_root, channels_last, tolerance):
    """One Trainer step on a 32-image set vs the seed's per-image input path, from the same weights.

    channels_last runs other oneDNN kernels, so float32 sums round differently (about 1e-4 of a gradient's norm);
    with it off the two paths agree to the last bits.
    """
    full, _ = data.load_raw(data_root)
    images, labels = full.images[:N], full.labels[:N]
    cfg = TrainConfig(batch_size=N, epochs=1, augment=False, dropout=0.0, l1=1e-3, device="cpu", threads=2,
                      channels_last=channels_last)
    trainer = Trainer(cfg, data.MNIST(data.Split(images, labels), bench.EMPTY, bench.EMPTY))
    assert trainer.memory_format == (torch.channels_last if channels_last else torch.contiguous_format)
    seed_model = copy.deepcopy(trainer.model).to(memory_format=torch.contiguous_format)  # the same weights
    order = torch.randperm(N, generator=torch.Generator().manual_seed(cfg.seed))  # the trainer's shuffle

    # the seed's path: PIL image -> ToTensor -> Normalize, one image at a time, contiguous
    to_input = transforms.Compose([transforms.ToTensor(), transforms.Normalize((data.MEAN,), (data.STD,))])
    x = torch.stack([to_input(im) for im in pil_images(images[order])])
    assert x.is_contiguous() and torch.equal(x, data.normalize(images[order]))
    seed_model.train()
    seed_loss = F.nll_loss(seed_model(x), labels[order]) + cfg.l1 * l1_penalty(list(seed_model.parameters()))
    seed_loss.backward()

    metrics = trainer.train_epoch()  # one step: the whole set is one batch
    assert metrics["train_loss"] == pytest.approx(seed_loss.item(), rel=tolerance / 10)
    for (name, ours), theirs in zip(trainer.model.named_parameters(), seed_model.parameters()):
        assert ours.grad is not None, name
        assert (ours.grad - theirs.grad).norm() <= tolerance * theirs.grad.norm(), name


def test_the_seed_transforms_are_the_seeds_literal_ones_and_augment_uses_the_same_numbers():
    rot, aff, jit, _, norm = bench.seed_transforms().transforms
    assert list(rot.degrees) == [-6, 6] and list(rot.fill) == [1]
    assert list(aff.degrees) == [-7, 7] and list(aff.shear) == [-10, 10] and aff.fill == 0
    assert tuple(aff.translate) == (0.1, 0.1) and tuple(aff.scale) == (0.8, 1.2)
    assert jit.brightness == jit.contrast == jit.saturation == (0.6, 1.4) and jit.hue == (-0.1, 0.1)
    assert norm.mean == (0.1307,) and norm.std == (0.3081,)
    # the batched augmentation's constants are the same numbers (tests/test_augment.py checks the behaviour)
    assert [-augment.ROTATION_DEG, augment.ROTATION_DEG] == list(rot.degrees) and augment.ROTATION_FILL == 1
    assert (augment.AFFINE_DEG, augment.SHEAR_DEG, augment.TRANSLATE_FRAC, augment.SCALE) == (7, 10, 0.1, (0.8, 1.2))
    assert (1 - augment.BRIGHTNESS, 1 + augment.CONTRAST) == jit.brightness
    assert (data.MEAN, data.STD) == (0.1307, 0.3081)


def test_torchvision_cache_is_verified(data_root, tmp_path):
    bad = tmp_path / "bad" / "MNIST" / "raw"
    bad.mkdir(parents=True)
    with gzip.open(bad / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"not mnist")
    with pytest.raises(UserError, match="checksum"):
        bench.torchvision_root(tmp_path / "bad", cache=tmp_path / "cache")


def test_bench_cli_writes_sane_numbers(tmp_path):
    out = tmp_path / "out.json"
    # one thread: two on a shared, busy 2-core machine can stall for a minute (see docs/bench.md)
    res = run_cli("bench", "--steps", "5", "--no-packing", "--threads", "1", "--json", out,
                  env={"TUNE_NORM_CACHE": str(tmp_path / "cache")})
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (tmp_path / "cache" / "MNIST" / "raw").iterdir()) == sorted(data.FILES)
    r = json.loads(out.read_text())
    cpu = r["cpu"]
    assert set(cpu["pipelines"]) == {"seed", "tune_norm", "model_step", "tune_norm_contiguous",
                                     "tune_norm_torch_dropout"}
    for p in cpu["pipelines"].values():
        assert math.isfinite(p["images_per_s"]) and p["images_per_s"] > 0
        assert p["sec_per_epoch"] == pytest.approx(60_000 / p["images_per_s"])
        assert len(p["rounds_images_per_s"]) == 3
    assert set(cpu["ratios"]) == {"tune_norm_vs_seed", "model_fraction", "channels_last_speedup",
                                 "fast_dropout_speedup"}
    assert all(math.isfinite(v) and v > 0 for v in cpu["ratios"].values())
    assert "packing" not in cpu and r["settings"]["steps"] == 5
    assert "| ratio (median of per-round ratios) | value |" in res.stdout
    if not torch.cuda.is_available():
        assert r["gpu"] is None and "GPU: not measured (no CUDA device)" in res.stdout
