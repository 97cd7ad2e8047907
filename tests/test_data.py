"""MNIST from the real IDX files: shapes, checksums, a stable validation split, clear errors."""

import gzip
import shutil
from pathlib import Path

import pytest
import torch

from tune_norm import data
from tune_norm.errors import UserError


def copy_raw(src, dst, compress=True):
    raw = dst / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data.FILES:
        if compress:
            shutil.copy(src / "MNIST" / "raw" / f"{name}.gz", raw)
        else:
            with gzip.open(src / "MNIST" / "raw" / f"{name}.gz") as f:
                (raw / name).write_bytes(f.read())
    return raw


def test_real_files_load_as_tensors(data_root):
    m = data.load(data_root, val_size=5000)
    assert m.train.images.shape == (55000, 28, 28) and m.train.images.dtype == torch.uint8
    assert m.val.images.shape == (5000, 28, 28) and m.test.images.shape == (10000, 28, 28)
    assert set(m.test.labels.unique().tolist()) == set(range(10))
    x = data.normalize(m.train.images[:4096])
    assert abs(x.mean().item()) < 0.1 and abs(x.std().item() - 1) < 0.1  # (0.1307, 0.3081)


def test_validation_split_is_seeded_stable_and_disjoint(data_root):
    a, b = data.load(data_root, val_size=5000), data.load(data_root, val_size=5000)
    assert torch.equal(a.val.images, b.val.images)
    seed_convention = data.load(data_root, val_size=0)
    assert len(seed_convention.train) == 60000 and len(seed_convention.val) == 0
    train_rows = {bytes(r) for r in a.train.images[:2000].flatten(1).numpy()}
    assert not any(bytes(r) in train_rows for r in a.val.images.flatten(1).numpy()[:2000])


def test_a_subset_shrinks_evaluation_unless_full_eval_keeps_it_whole(data_root):
    small = data.load(data_root, val_size=5000, subset=6000)
    assert (len(small.train), len(small.val), len(small.test)) == (6000, 1000, 1000)
    whole = data.load(data_root, val_size=5000, subset=6000, full_eval=True)
    assert (len(whole.train), len(whole.val), len(whole.test)) == (6000, 5000, 10000)
    full = data.load(data_root, val_size=5000)
    assert torch.equal(whole.train.images, small.train.images) and torch.equal(whole.test.images, full.test.images)
    assert torch.equal(whole.val.images, full.val.images) and torch.equal(small.val.images, full.val.images[:1000])


def test_uncompressed_files_work(data_root, tmp_path):
    copy_raw(data_root, tmp_path, compress=False)
    assert len(data.load(tmp_path).test) == 10000


def test_corrupt_file_fails_its_checksum(data_root, tmp_path):
    raw = copy_raw(data_root, tmp_path, compress=False)
    blob = bytearray((raw / "t10k-labels-idx1-ubyte").read_bytes())
    blob[100] ^= 0xFF
    (raw / "t10k-labels-idx1-ubyte").write_bytes(bytes(blob))
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte fails its checksum"):
        data.load(tmp_path)


def test_truncated_gzip_is_reported(data_root, tmp_path):
    raw = copy_raw(data_root, tmp_path)
    path = raw / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(UserError, match="corrupt"):
        data.load(tmp_path)


def test_missing_file_and_folder_are_reported(data_root, tmp_path):
    raw = copy_raw(data_root, tmp_path)
    (raw / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte\\(.gz\\) is missing"):
        data.load(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        data.load(tmp_path / "nowhere")


def test_the_data_root_is_the_given_folder_else_the_environment_else_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUNE_NORM_DATA", "mnist_here")
    assert data.resolve_root(Path("given")) == tmp_path / "given"  # absolute, though given relative
    assert data.resolve_root(None) == data.resolve_root("") == tmp_path / "mnist_here"
    monkeypatch.delenv("TUNE_NORM_DATA")
    assert data.resolve_root() == tmp_path / "data"
