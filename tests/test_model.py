"""The baseline study's net: exactly 7,704 parameters, the right shapes, and group counts checked before building."""

import pytest
import torch

from tune_norm.errors import UserError
from tune_norm.model import Net, count_parameters
from tune_norm.norms import NORMS, learns_after_pooling, make_norm, valid_groups

LEARNABLE = [n for n in NORMS if learns_after_pooling(n, 4)]


@pytest.mark.parametrize("norm", ["batch", "layer", "group"])
def test_seed_parameter_count(norm):
    assert count_parameters(Net(norm)) == 7704


@pytest.mark.parametrize("norm", LEARNABLE)
def test_forward_gives_log_probabilities(norm):
    net = Net(norm).eval()
    out = net(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 10)
    assert torch.allclose(out.exp().sum(1), torch.ones(3), atol=1e-5)


def test_seed_group_norm_is_two_groups_on_8_and_four_on_16():
    counts = {(m.num_channels, m.num_groups) for m in Net("group", groups=4).modules()
              if isinstance(m, torch.nn.GroupNorm)}
    assert counts == {(8, 2), (16, 4)}


def test_valid_groups_keep_channels_per_group_constant_and_learn_after_pooling():
    assert valid_groups() == [2, 4] and valid_groups(width=2) == [2, 4, 8]
    with pytest.raises(UserError, match="valid group counts for this net are 2, 4$"):
        Net("group", groups=1)
    with pytest.raises(UserError, match="groups=3 does not divide 16"):
        Net("group", groups=3)
    with pytest.raises(UserError, match="groups=8 leaves 2 channel.* only output \\+-1 .*valid group counts .* 2, 4$"):
        Net("group", groups=8)
    with pytest.raises(UserError, match="groups=16 leaves 1 channel.* outputs a constant"):
        Net("group", groups=16)


def test_instance_norm_is_refused_with_the_norms_that_learn():
    assert LEARNABLE == ["batch", "layer", "group", "none"]
    with pytest.raises(UserError, match="norm 'instance' cannot learn in this net.*batch, layer, group, none$"):
        Net("instance")


def test_why_after_global_pooling_one_value_is_a_constant_and_two_are_plus_minus_one():
    """The 1x1 block's norm sees [B, 16, 1, 1]: per-sample statistics over 1 value erase the input, over 2 keep
    only a sign per group; over 4 (the baseline study's GroupNorm) the values vary continuously."""
    torch.manual_seed(0)
    x = torch.randn(32, 16, 1, 1)
    instance = make_norm("instance", 16)
    assert torch.allclose(instance(x), instance(torch.randn(32, 16, 1, 1)), atol=1e-4)  # same output, any input
    two = make_norm("group", 16, 8)(x).detach()
    assert torch.allclose(two[:, 0::2], -two[:, 1::2], atol=1e-4)  # each pair is (+a, -a) ...
    assert (two.abs() > 0.9).float().mean() > 0.9  # ... with a = 1 but for pairs closer than eps
    four = make_norm("group", 16, 4)(x).detach()
    assert len(torch.unique(four.abs().round(decimals=2))) > 20


def test_width_multiplier_widens():
    assert count_parameters(Net("batch", width=2)) > 7704
