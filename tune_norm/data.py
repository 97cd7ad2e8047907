"""MNIST from the four original IDX files, verified, held in memory as tensors, with a stable val split."""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .errors import UserError

if TYPE_CHECKING:
    from .config import TrainConfig

MEAN, STD = 0.1307, 0.3081  # training-set pixel statistics, on the [0, 1] scale
SPLIT_SEED = 20210601  # the validation split never moves with the training seed

# uncompressed file -> (sha256, byte size, IDX shape)
FILES = {
    "train-images-idx3-ubyte": ("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47040016,
                                (60000, 28, 28)),
    "train-labels-idx1-ubyte": ("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60008, (60000,)),
    "t10k-images-idx3-ubyte": ("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7840016,
                               (10000, 28, 28)),
    "t10k-labels-idx1-ubyte": ("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10008, (10000,)),
}


def default_root() -> Path:
    """The data directory: $TUNE_NORM_DATA, else ./data."""
    return Path(os.environ.get("TUNE_NORM_DATA", "data")).expanduser().resolve()


def resolve_root(given: Path | str | None = None) -> Path:
    """The data directory as an absolute path: ``given`` (--data) where set, else :func:`default_root`."""
    return Path(given).resolve() if given else default_root()


@dataclass(frozen=True)
class Split:
    """Images as uint8 [N, 28, 28] and labels as int64 [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True)
class MNIST:
    train: Split
    val: Split
    test: Split


def _read_raw(raw: Path, name: str) -> bytes:
    for path, opener in ((raw / name, open), (raw / f"{name}.gz", gzip.open)):
        if path.exists():
            try:
                with opener(path, "rb") as f:
                    return f.read()
            except (OSError, EOFError) as e:
                raise UserError(f"MNIST file {path} is corrupt or unreadable ({e}); "
                                "replace it with the original") from None
    raise UserError(
        f"MNIST file {name}(.gz) is missing from {raw}; put the four original IDX files there "
        "or pass --download where the machine is online"
    )


def _parse(name: str, blob: bytes) -> torch.Tensor:
    sha, size, shape = FILES[name]
    if len(blob) != size or hashlib.sha256(blob).hexdigest() != sha:
        raise UserError(
            f"MNIST file {name} fails its checksum ({len(blob)} bytes, expected {size} with sha256 {sha[:12]}...); "
            "it is corrupt or not the original"
        )
    offset = 4 + 4 * len(shape)
    return torch.frombuffer(bytearray(blob[offset:]), dtype=torch.uint8).reshape(shape)


def download(root: Path) -> None:
    """Fill ``root`` with torchvision's MNIST download (needs internet)."""
    from torchvision.datasets import MNIST as TorchvisionMNIST

    try:
        TorchvisionMNIST(str(root), train=True, download=True)
        TorchvisionMNIST(str(root), train=False, download=True)
    except Exception as e:  # network errors come in many types
        raise UserError(f"could not download MNIST into {root}: {e}") from None


@functools.lru_cache(maxsize=2)
def load_raw(root: Path) -> tuple[Split, Split]:
    """The verified 60k training and 10k test sets; cached per process, so a Ray worker reads once."""
    raw = Path(root) / "MNIST" / "raw"
    if not Path(root).is_dir():
        raise UserError(f"data directory {root} does not exist; "
                        "point --data or TUNE_NORM_DATA at a folder holding MNIST/raw/")
    arrays = {name: _parse(name, _read_raw(raw, name)) for name in FILES}
    train = Split(arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"].long())
    test = Split(arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"].long())
    return train, test


def load(root: Path | None = None, *, val_size: int = 5000, subset: int = 0, full_eval: bool = False) -> MNIST:
    """MNIST with ``val_size`` images held out of training (seeded, stable); ``subset`` trims training.

    With ``subset`` the validation and test sets shrink too (smoke runs), unless ``full_eval`` keeps them whole."""
    full, test = load_raw(resolve_root(root))
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(SPLIT_SEED))
    val_idx, train_idx = order[:val_size], order[val_size:]
    if subset:
        train_idx = train_idx[:subset]
    if subset and not full_eval:
        held = max(subset // 6, 1000)  # validation and test shrink with the training subset: smoke runs
        test = Split(test.images[:held], test.labels[:held])
        val_idx = val_idx[:held] if val_size else val_idx
    pick = lambda idx: Split(full.images[idx], full.labels[idx])  # noqa: E731
    return MNIST(train=pick(train_idx), val=pick(val_idx), test=test)


def for_config(cfg: TrainConfig, root: Path | None = None) -> MNIST:
    """The splits a TrainConfig trains and is scored on (its val_size, subset and full_eval)."""
    return load(root, val_size=cfg.val_size, subset=cfg.subset, full_eval=cfg.full_eval)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 28, 28] or float [N, 1, 28, 28] in [0, 1] -> normalized float [N, 1, 28, 28]."""
    if images.dtype == torch.uint8:
        images = images.unsqueeze(1).float().div_(255)
    return (images - MEAN) / STD
