"""`tune-norm train`'s library entry (tune_norm.runs.train): options that conflict are refused before any work."""

import re
from pathlib import Path

import pytest

from tune_norm import runs
from tune_norm.errors import UserError


@pytest.mark.parametrize("kwargs, message", [
    (dict(config=Path("c.yaml"), source=Path("tune_results/x")), "give --config or --from, not both"),
    (dict(trial="a6d79c08"), "--trial names a trial of the experiment given with --from"),
    (dict(seeds=(1, 2), overrides={"seed": 3}), "give --seed or --seeds, not both"),
])
def test_conflicting_options_are_one_sentence_before_any_work(tmp_path, kwargs, message):
    overrides = kwargs.pop("overrides", {"seed": None})
    with pytest.raises(UserError, match=f"^{re.escape(message)}$"):
        runs.train(overrides, out=tmp_path / "out", echo=pytest.fail, **kwargs)
    assert not (tmp_path / "out").exists()


def test_options_left_unset_are_not_overrides(tmp_path):
    """None means the option was not given: the config's own value stays, so only the real error is reported."""
    with pytest.raises(UserError, match="^batch_size must be between 1"):
        runs.train({"lr": None, "amp": None, "batch_size": 0}, seeds=(1, 2), out=tmp_path / "out", echo=pytest.fail)
    assert not (tmp_path / "out").exists()
