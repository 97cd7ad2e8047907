"""One frozen, validated training config; built from options, YAML or a Ray dict at the edge."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from .errors import UserError
from .norms import check_model_args

TRAIN_IMAGES = 60_000


@dataclass(frozen=True)
class TrainConfig:
    """The baseline recipe by default: BatchNorm, batch 64, SGD + OneCycleLR (max lr 0.015), 20 epochs.

    Momentum: the baseline study passes momentum=0.7 to SGD, but OneCycleLR's default cycle_momentum replaces it
    from the first step with a cycle 0.95 -> 0.85 -> 0.95 (opposite to the lr). That cycle is what the baseline study
    ran, so it is the default here, named as what it is: ``momentum`` at the start and end, ``base_momentum`` at the
    lr peak.
    """

    norm: str = "batch"
    groups: int = 4  # group count on the 16-channel layers (8-channel layers get half): the baseline study's GN
    l1: float = 0.0  # loss += l1 * sum |p| over all parameters
    l2: float = 0.0  # SGD weight_decay
    lr: float = 0.015  # OneCycleLR max_lr (the baseline study's lr and max_lr)
    momentum: float = 0.95  # SGD momentum at the start and end of the cycle (OneCycleLR's max_momentum)
    base_momentum: float = 0.85  # momentum at the peak lr; set it equal to momentum for a constant momentum
    pct_start: float = 0.3  # fraction of the steps spent warming up (OneCycleLR default)
    dropout: float = 0.03
    batch_size: int = 64  # images per step
    epochs: int = 20
    seed: int = 1
    width: int = 1  # channel multiplier; 1 is the baseline study's 7,704-parameter net
    val_size: int = 5000  # images held out of the 60k training set; 0 = the baseline study's convention
    subset: int = 0  # train on only this many images (0 = all); val/test shrink to max(subset // 6, 1000): smoke runs
    full_eval: bool = False  # with subset: still validate on all val_size images and test on all 10,000
    augment: bool = True
    channels_last: bool = True  # CPU memory format; ignored on CUDA
    fast_dropout: bool = True  # CPU dropout masks from PCG64 bits (tune_norm.dropout); False = torch's nn.Dropout
    amp: bool = False  # bfloat16 autocast on CUDA
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads; 0 = all the CPUs this process may use

    def replace(self, **changes: Any) -> TrainConfig:
        return from_mapping({**dataclasses.asdict(self), **changes})

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in fields(TrainConfig)}
TYPES = get_type_hints(TrainConfig)  # the annotations as types (this module's are strings)


def _coerce(name: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{name} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
            raise UserError(f"{name} must be a whole number, got {value!r}")
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"{name} must be a finite number, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise UserError(f"{name} must be a string, got {value!r}")
    return value


def from_mapping(values: Mapping[str, Any], *, train_images: int = TRAIN_IMAGES) -> TrainConfig:
    """Validate a plain mapping (CLI options, YAML, a Ray trial config) into a TrainConfig."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise UserError(f"unknown config key {unknown[0]!r}; valid keys are: {', '.join(FIELDS)}")
    clean = {k: _coerce(k, v, TYPES[k]) for k, v in values.items()}
    cfg = TrainConfig(**clean)
    check(cfg, train_images=train_images)
    return cfg


def check(cfg: TrainConfig, *, train_images: int = TRAIN_IMAGES) -> None:
    """Raise a UserError naming the first value that cannot train."""
    check_model_args(cfg.norm, cfg.groups, cfg.width)
    positive = {"lr": cfg.lr, "epochs": cfg.epochs, "width": cfg.width}
    for name, value in positive.items():
        if value <= 0:
            raise UserError(f"{name} must be greater than 0, got {value}")
    for name in ("momentum", "base_momentum"):
        if not 0 <= getattr(cfg, name) < 1:
            raise UserError(f"{name} must be in [0, 1), got {getattr(cfg, name)}")
    for name in ("l1", "l2", "val_size", "subset", "threads"):
        if getattr(cfg, name) < 0:
            raise UserError(f"{name} must not be negative, got {getattr(cfg, name)}")
    if not 0 <= cfg.dropout < 1:
        raise UserError(f"dropout must be in [0, 1), got {cfg.dropout}")
    if not 0 < cfg.pct_start < 1:
        raise UserError(f"pct_start must be in (0, 1), got {cfg.pct_start}")
    if cfg.val_size >= train_images:
        raise UserError(f"val_size must be below the {train_images} training images, got {cfg.val_size}")
    available = cfg.subset or train_images - cfg.val_size
    available = min(available, train_images - cfg.val_size)
    if not 1 <= cfg.batch_size <= available:
        raise UserError(f"batch_size must be between 1 and the {available} training images, got {cfg.batch_size}")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise UserError(f"device must be auto, cpu or cuda, got {cfg.device!r}")


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping with safe_load; any problem is one sentence naming the file."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text file (not UTF-8); a YAML file is expected") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path} is not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of keys to values, not a {type(data).__name__}")
    return data
