"""Every registered norm builds, forwards and backpropagates; bad kinds and groups are refused."""

import pytest
import torch

from tune_norm.errors import UserError
from tune_norm.norms import NORMS, make_norm


@pytest.mark.parametrize("kind", list(NORMS))
@pytest.mark.parametrize("channels", [8, 16])
def test_every_norm_forwards_and_backprops(kind, channels):
    layer = make_norm(kind, channels, groups=2)
    x = torch.randn(4, channels, 6, 6, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_one_record_per_norm():
    assert [n.display for n in NORMS.values()] == ["BatchNorm", "LayerNorm", "GroupNorm", "InstanceNorm", "NoNorm"]
    assert [name for name, n in NORMS.items() if n.grouped] == ["group"]
    per_sample = {name: n.values_per_sample(16, 4) for name, n in NORMS.items() if n.values_per_sample}
    assert per_sample == {"layer": 16, "group": 4, "instance": 1}


def test_layer_norm_is_one_group_and_group_norm_uses_groups():
    assert make_norm("layer", 16).num_groups == 1
    assert make_norm("group", 16, 4).num_groups == 4


def test_unknown_norm_lists_valid_ones():
    with pytest.raises(UserError, match="unknown norm 'bogus'.*batch, layer, group, instance, none"):
        make_norm("bogus", 8)


@pytest.mark.parametrize("groups", [3, 0, 5])
def test_groups_that_do_not_divide_are_refused(groups):
    with pytest.raises(UserError, match=f"groups={groups} does not divide 16 channels.*1, 2, 4, 8, 16"):
        make_norm("group", 16, groups)
