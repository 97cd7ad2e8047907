"""The registry of normalization layers (one record per norm, built by ``make_norm``) and which this net accepts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import UserError

if TYPE_CHECKING:
    from torch import nn


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


def _nn():
    """torch.nn, imported when a layer is built: the registry and the checks below load without torch, so the
    command line answers --help and refuses bad input without paying torch's import."""
    from torch import nn

    return nn


NORMS: dict[str, Norm] = {
    n.name: n
    for n in (
        Norm("batch", "BatchNorm", lambda c, g: _nn().BatchNorm2d(c)),
        Norm("layer", "LayerNorm", lambda c, g: _nn().GroupNorm(1, c), values_per_sample=lambda c, g: c),
        Norm("group", "GroupNorm", lambda c, g: _nn().GroupNorm(g, c), grouped=True,
             values_per_sample=lambda c, g: c // g),
        # one group per channel, with affine params
        Norm("instance", "InstanceNorm", lambda c, g: _nn().GroupNorm(c, c), values_per_sample=lambda c, g: 1),
        Norm("none", "NoNorm", lambda c, g: _nn().Identity()),
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


# -- which norms and group counts this net accepts ------------------------------------------------------
BASE_CHANNELS = (8, 16)  # the baseline study's two widths; times `width` in wider variants
# After global pooling the 1x1 block's norm sees one number per channel. A per-sample statistic over 1 value
# normalises every image to the same output (instance norm: chance accuracy), over 2 values to +-1 (GroupNorm
# with 8 groups: far below 4 groups); README "Norms after global pooling" has the measurements.
MIN_VALUES_AFTER_POOLING = 3


def layer_groups(groups: int, channels: int, widest: int) -> int:
    """Group count for a layer: ``groups`` on the widest layers, the same channels per group elsewhere.

    The baseline study uses 4 groups on 16 channels and 2 on 8, i.e. 4 channels per group everywhere.
    """
    if groups < 1 or widest % groups or (groups * channels) % widest:
        return 0
    return groups * channels // widest


def learns_after_pooling(norm: str, groups: int, width: int = 1) -> bool:
    """Whether the norm's statistics in the 1x1 block after global pooling average over enough values."""
    per_sample = NORMS[norm].values_per_sample
    return per_sample is None or per_sample(BASE_CHANNELS[1] * width, groups) >= MIN_VALUES_AFTER_POOLING


def valid_groups(width: int = 1) -> list[int]:
    """Group counts (on the widest layers) that split every layer of the net evenly and still learn after
    global pooling."""
    narrow, wide = (c * width for c in BASE_CHANNELS)
    return [g for g in range(1, wide + 1)
            if layer_groups(g, narrow, wide) >= 1 and learns_after_pooling("group", g, width)]


def check_model_args(norm: str, groups: int, width: int = 1) -> None:
    """Validate norm and groups for this net before anything is built."""
    check_kind(norm)
    narrow, wide = (c * width for c in BASE_CHANNELS)
    if norm in GROUPED:
        check_groups(norm, wide, groups)
        valid = ", ".join(map(str, valid_groups(width)))
        if layer_groups(groups, narrow, wide) < 1:
            raise UserError(
                f"groups={groups} cannot keep the same channels per group on the {narrow}-channel layers; "
                f"valid group counts for this net are {valid}"
            )
        if not learns_after_pooling(norm, groups, width):
            raise UserError(
                f"groups={groups} leaves {wide // groups} channel(s) per group in the 1x1 block after global pooling, "
                f"where GroupNorm {'outputs a constant' if wide // groups == 1 else 'can only output +-1 per group'} "
                f"and the net barely learns; "
                f"valid group counts for this net are {valid}"
            )
    elif not learns_after_pooling(norm, groups, width):
        raise UserError(
            f"norm {norm!r} cannot learn in this net: after global pooling each channel is one number, so it "
            f"maps every image to the same output; valid norms here are "
            f"{', '.join(n for n in NORMS if learns_after_pooling(n, 4, width))}"
        )
