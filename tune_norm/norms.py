"""The registry of normalization layers: one record per norm, built by ``make_norm(kind, channels, groups)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .errors import UserError


@dataclass(frozen=True)
class Norm:
    """One normalization: how to build it over ``channels`` (with a group count), and what its statistics
    average over on a 1x1 feature map (after global pooling), where a statistic over too few values erases
    the signal: one value normalises to a constant, two to +-1."""

    name: str
    display: str
    build: Callable[[int, int], nn.Module]
    grouped: bool = False  # takes a group count
    # values one per-sample mean/variance averages over on a 1x1 map, from (channels, groups); None where the
    # statistics are not per sample (BatchNorm: over the batch) or there are none
    values_per_sample: Callable[[int, int], int] | None = None


NORMS: dict[str, Norm] = {
    n.name: n
    for n in (
        Norm("batch", "BatchNorm", lambda c, g: nn.BatchNorm2d(c)),
        Norm("layer", "LayerNorm", lambda c, g: nn.GroupNorm(1, c), values_per_sample=lambda c, g: c),
        Norm("group", "GroupNorm", lambda c, g: nn.GroupNorm(g, c), grouped=True,
             values_per_sample=lambda c, g: c // g),
        # one group per channel, with affine params
        Norm("instance", "InstanceNorm", lambda c, g: nn.GroupNorm(c, c), values_per_sample=lambda c, g: 1),
        Norm("none", "NoNorm", lambda c, g: nn.Identity()),
    )
}
DISPLAY = {name: n.display for name, n in NORMS.items()}
GROUPED = frozenset(name for name, n in NORMS.items() if n.grouped)


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
    return NORMS[kind].build(channels, groups)
