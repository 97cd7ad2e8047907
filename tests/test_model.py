"""The seed's net: exactly 7,704 parameters, the right shapes, and group counts checked before building."""

import pytest
import torch

from tune_norm.errors import UserError
from tune_norm.model import Net, count_parameters, valid_groups
from tune_norm.norms import NORMS


@pytest.mark.parametrize("norm", ["batch", "layer", "group"])
def test_seed_parameter_count(norm):
    assert count_parameters(Net(norm)) == 7704


@pytest.mark.parametrize("norm", list(NORMS))
def test_forward_gives_log_probabilities(norm):
    net = Net(norm).eval()
    out = net(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 10)
    assert torch.allclose(out.exp().sum(1), torch.ones(3), atol=1e-5)


def test_seed_group_norm_is_two_groups_on_8_and_four_on_16():
    counts = {(m.num_channels, m.num_groups) for m in Net("group", groups=4).modules()
              if isinstance(m, torch.nn.GroupNorm)}
    assert counts == {(8, 2), (16, 4)}


def test_valid_groups_keep_channels_per_group_constant():
    assert valid_groups() == [2, 4, 8, 16]
    with pytest.raises(UserError, match="valid group counts for this net are 2, 4, 8, 16"):
        Net("group", groups=1)
    with pytest.raises(UserError, match="groups=3 does not divide 16"):
        Net("group", groups=3)


def test_width_multiplier_widens():
    assert count_parameters(Net("batch", width=2)) > 7704
