"""The baseline study's 7,704-parameter MNIST CNN, with the norm chosen from the registry."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dropout import Dropout, MaskRNG
from .errors import UserError
from .norms import GROUPED, NORMS, check_groups, check_kind, make_norm

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


class Block(nn.Sequential):
    """Conv(no bias) -> ReLU -> Norm -> Dropout, the baseline study's building block."""

    def __init__(self, cin: int, cout: int, k: int, norm: str, groups: int, dropout: nn.Module):
        super().__init__(
            nn.Conv2d(cin, cout, k, bias=False),
            nn.ReLU(),
            make_norm(norm, cout, groups),
            dropout,
        )


class Net(nn.Module):
    """28x28 -> 26 -> 24 -> pool 12 -> 1x1 -> 10 -> 8 -> 6 -> GAP -> 1x1 block -> 1x1 -> 10 log-probs."""

    def __init__(self, norm: str = "batch", groups: int = 4, dropout: float = 0.03, width: int = 1,
                 fast_dropout: bool = True):
        super().__init__()
        check_model_args(norm, groups, width)
        narrow, wide = (c * width for c in BASE_CHANNELS)
        # one seeded stream for all masks; torch.initial_seed() is the run's seed once torch.manual_seed ran
        self.mask_rng = MaskRNG(torch.initial_seed())

        def block(cin: int, cout: int, k: int = 3) -> Block:
            drop = Dropout(dropout, self.mask_rng) if fast_dropout else nn.Dropout(dropout)
            return Block(cin, cout, k, norm, layer_groups(groups, cout, wide) or 1, drop)

        self.features = nn.Sequential(
            block(1, narrow),
            block(narrow, wide),
            nn.MaxPool2d(2),
            nn.Conv2d(wide, narrow, 1, bias=False),
            block(narrow, wide),
            block(wide, wide),
            block(wide, wide),
            nn.AvgPool2d(6),
            block(wide, wide, k=1),
            nn.Conv2d(wide, 10, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.features(x).flatten(1), dim=1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
