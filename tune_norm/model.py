"""The baseline study's 7,704-parameter MNIST CNN, with the norm chosen from the registry."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dropout import Dropout, MaskRNG
from .norms import BASE_CHANNELS, check_model_args, layer_groups, make_norm


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
