"""The registry of normalization layers: every norm is built by ``make_norm(kind, channels, groups)``."""

from __future__ import annotations

from typing import Callable

from torch import nn

from .errors import UserError

# name -> (constructor taking channels first, display name, whether it uses a group count)
NormBuilder = Callable[[int, int], nn.Module]


def _batch(channels: int, groups: int) -> nn.Module:
    return nn.BatchNorm2d(channels)


def _layer(channels: int, groups: int) -> nn.Module:
    return nn.GroupNorm(1, channels)


def _group(channels: int, groups: int) -> nn.Module:
    return nn.GroupNorm(groups, channels)


def _instance(channels: int, groups: int) -> nn.Module:
    return nn.GroupNorm(channels, channels)  # one group per channel, with affine params


def _none(channels: int, groups: int) -> nn.Module:
    return nn.Identity()


NORMS: dict[str, NormBuilder] = {
    "batch": _batch,
    "layer": _layer,
    "group": _group,
    "instance": _instance,
    "none": _none,
}

DISPLAY = {
    "batch": "BatchNorm",
    "layer": "LayerNorm",
    "group": "GroupNorm",
    "instance": "InstanceNorm",
    "none": "NoNorm",
}

GROUPED = frozenset({"group"})


def check_kind(kind: str) -> str:
    """Return ``kind`` if it names a registered norm; otherwise raise with the valid names."""
    if kind not in NORMS:
        raise UserError(f"unknown norm {kind!r}; valid norms are: {', '.join(NORMS)}")
    return kind


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def check_groups(kind: str, channels: int, groups: int) -> None:
    """Raise when ``groups`` cannot split ``channels`` for a grouped norm."""
    if kind in GROUPED and (groups < 1 or channels % groups):
        raise UserError(
            f"groups={groups} does not divide {channels} channels; "
            f"valid group counts for {channels} channels are {', '.join(map(str, divisors(channels)))}"
        )


def make_norm(kind: str, channels: int, groups: int = 1) -> nn.Module:
    """Build the norm layer ``kind`` over ``channels`` channels (``groups`` only for group norm)."""
    check_kind(kind)
    check_groups(kind, channels, groups)
    return NORMS[kind](channels, groups)
