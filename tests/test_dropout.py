"""The CPU dropout is nn.Dropout in distribution: drop rate, scale, gradients, layouts, seeding and resuming."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tune_norm.dropout import LEVELS, Dropout, MaskRNG
from tune_norm.model import Net


@pytest.mark.parametrize("p", [0.03, 0.1, 0.5])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_drop_rate_and_scale_match_nn_dropout(p, layout):
    x = torch.ones(64, 16, 24, 24).contiguous(memory_format=layout)
    out = Dropout(p, MaskRNG(0)).train()(x)
    n = x.numel()
    dropped = (out == 0).sum().item()
    assert abs(dropped - p * n) < 6 * math.sqrt(n * p * (1 - p))  # six standard deviations of a binomial
    kept = out[out != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - p)), rtol=1e-4)
    assert out.mean().item() == pytest.approx(1.0, abs=6 * math.sqrt(p / (1 - p) / n))  # unbiased like nn.Dropout
    assert out.is_contiguous(memory_format=layout)
    torch.manual_seed(0)
    reference = F.dropout(x, p, training=True)
    assert abs((reference == 0).sum().item() - dropped) < 12 * math.sqrt(n * p * (1 - p))


def test_every_position_and_channel_is_dropped_alike():
    """A layout bug (e.g. one mask reused across channels) would make the rate differ by channel or repeat."""
    x = torch.ones(256, 16, 12, 12).contiguous(memory_format=torch.channels_last)
    out = Dropout(0.1, MaskRNG(1)).train()(x)
    per_channel = (out == 0).float().mean(dim=(0, 2, 3))
    assert per_channel.min() > 0.08 and per_channel.max() < 0.12
    assert not torch.equal(out[:, 0], out[:, 1]) and not torch.equal(out[0], out[1])


def test_gradient_is_the_mask():
    x = torch.randn(8, 16, 6, 6, requires_grad=True)
    drop = Dropout(0.2, MaskRNG(2)).train()
    out = drop(x)
    out.backward(torch.ones_like(out))
    mask = out.detach() / x.detach()
    assert torch.allclose(x.grad, mask, atol=1e-6)


def test_eval_is_identity_and_p_zero_is_free():
    x = torch.randn(4, 8, 5, 5)
    assert Dropout(0.5, MaskRNG(0)).eval()(x) is x
    assert Dropout(0.0, MaskRNG(0)).train()(x) is x
    p = 0.1 / LEVELS  # below one 16-bit level: falls back to torch's dropout, same draws from torch's RNG
    torch.manual_seed(3)
    ours = Dropout(p, MaskRNG(0)).train()(x)
    assert not torch.equal(torch.get_rng_state(), torch.manual_seed(3).get_state())  # torch's RNG was drawn from
    assert torch.equal(ours, F.dropout(x, p, training=True))
    with pytest.raises(ValueError):
        Dropout(1.0, MaskRNG(0))


def test_masks_follow_the_seed_and_the_saved_state():
    x = torch.ones(32, 16, 8, 8)
    a, b = MaskRNG(7), MaskRNG(7)
    assert torch.equal(Dropout(0.1, a).train()(x), Dropout(0.1, b).train()(x))
    state = a.get_state()
    first = Dropout(0.1, a).train()(x)
    assert not torch.equal(first, Dropout(0.1, a).train()(x))  # the stream moves on
    c = MaskRNG(99)
    c.set_state(state)
    assert torch.equal(Dropout(0.1, c).train()(x), first)


def test_the_net_uses_it_and_can_use_torchs():
    torch.manual_seed(5)
    fast = Net("batch")
    assert sum(isinstance(m, Dropout) for m in fast.modules()) == 6
    assert not any(type(m) is nn.Dropout for m in fast.modules())
    ref = Net("batch", fast_dropout=False)
    assert sum(type(m) is nn.Dropout for m in ref.modules()) == 6
    ref.load_state_dict(fast.state_dict())  # same parameters and buffers: the two nets are interchangeable
    fast.eval(), ref.eval()
    x = torch.randn(4, 1, 28, 28)
    assert torch.allclose(fast(x), ref(x))
