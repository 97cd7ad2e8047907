"""One device rule (tune_norm/train.py's docstring): no tensor of the training step is made on an implicit device.

Under ``torch.device("meta")`` every factory call without an explicit ``device=`` makes a meta tensor, and the
step then fails (a meta tensor has no data to copy, compare or print). A CPU trainer built and run entirely
inside that context must still train and evaluate like one built outside it. On CUDA the same mistake is a
CPU tensor mixed with CUDA ones (or a CPU generator on a CUDA tensor): this test finds it without a GPU.
"""

import pytest
import torch

from tune_norm import augment, data
from tune_norm.config import TrainConfig
from tune_norm.train import Trainer


def small(data_root) -> data.MNIST:
    return data.load(data_root, val_size=1000, subset=512)


def test_an_epoch_under_the_meta_default_device_trains_as_on_the_cpu(data_root):
    mnist = small(data_root)
    cfg = TrainConfig(epochs=1, batch_size=64, subset=512, val_size=1000, device="cpu", threads=1)
    reference = Trainer(cfg, mnist).step()
    with torch.device("meta"):
        trainer = Trainer(cfg, mnist)
        metrics = trainer.step()
    assert all(p.device.type == "cpu" for p in trainer.model.parameters())
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"):
        assert metrics[key] == pytest.approx(reference[key], rel=1e-5, abs=1e-6), key


def test_augmentation_parameters_follow_the_images_device_not_the_default():
    with torch.device("meta"):
        p = augment.sample_params(8, generator=torch.Generator().manual_seed(0), device="cpu")
        out = augment.augment(torch.full((8, 1, 28, 28), 100.0, device="cpu"), torch.Generator().manual_seed(0))
    assert all(v.device.type == "cpu" for v in p.values()) and out.device.type == "cpu"


def test_the_meta_check_catches_an_implicit_device():
    """The test above has teeth: the old ``sample_params`` (``torch.empty(n)`` drawn on the default device, then
    moved) fails under it, as it failed on CUDA with the Trainer's CUDA generator."""
    def old_sample_params(n, size=28, generator=None, device="cpu"):
        return {"rotation": torch.empty(n).uniform_(-6, 6, generator=generator).to(device)}

    with torch.device("meta"), pytest.raises((RuntimeError, NotImplementedError)):
        old_sample_params(8, generator=torch.Generator().manual_seed(0))["rotation"].tolist()


def test_checkpoints_load_on_the_cpu_first(data_root, tmp_path):
    """RNG states must be CPU tensors: a checkpoint is read to the CPU, then weights move to the trainer's device;
    the generator state of another device type cannot load, so that case reseeds from (seed, epoch)."""
    mnist = small(data_root)
    cfg = TrainConfig(epochs=2, batch_size=64, subset=512, val_size=1000, device="cpu", threads=1)
    a = Trainer(cfg, mnist)
    a.step()
    a.save(tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["generator_device"] == "cpu" and state["cuda_rng"] is None
    b = Trainer(cfg, mnist)
    b.load(tmp_path / "state.pt")
    assert torch.equal(b.generator.get_state(), a.generator.get_state())
    state["generator_device"] = "cuda"  # as written by a CUDA run
    torch.save(state, tmp_path / "from_cuda.pt")
    c = Trainer(cfg, mnist)
    c.load(tmp_path / "from_cuda.pt")
    assert torch.equal(c.generator.get_state(), torch.Generator().manual_seed(cfg.seed * 1_000_003 + 1).get_state())
    assert c.epoch == 1 and c.step()["epoch"] == 2
