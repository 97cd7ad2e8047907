"""Config validation at the edge: unknown keys, bad values and unsafe YAML are refused in one sentence."""

import dataclasses

import pytest

from tune_norm.config import TrainConfig, from_mapping, load_yaml
from tune_norm.errors import UserError


def test_defaults_are_the_seed_recipe():
    cfg = from_mapping({})
    assert (cfg.norm, cfg.batch_size, cfg.lr, cfg.dropout, cfg.epochs) == ("batch", 64, 0.015, 0.03, 20)
    assert (cfg.momentum, cfg.base_momentum) == (0.95, 0.85)  # what the baseline study's OneCycleLR really ran
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1  # frozen


@pytest.mark.parametrize("values, message", [
    ({"colour": 1}, "unknown config key 'colour'; valid keys are: norm, groups"),
    ({"norm": "weird"}, "unknown norm 'weird'"),
    ({"lr": 0}, "lr must be greater than 0"),
    ({"lr": -0.1}, "lr must be greater than 0"),
    ({"l1": -1e-3}, "l1 must not be negative"),
    ({"l2": -1}, "l2 must not be negative"),
    ({"norm": "group", "groups": 3}, "groups=3 does not divide 16 channels"),
    ({"batch_size": 0}, "batch_size must be between 1 and"),
    ({"batch_size": 60000}, "batch_size must be between 1 and the 55000 training images"),
    ({"epochs": 2.5}, "epochs must be a whole number"),
    ({"lr": "fast"}, "lr must be a finite number"),
    ({"dropout": 1.0}, "dropout must be in"),
    ({"val_size": 60000}, "val_size must be below"),
])
def test_bad_values_are_refused(values, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        from_mapping(values)


def test_replace_revalidates():
    with pytest.raises(UserError):
        TrainConfig().replace(lr=-1)
    assert TrainConfig().replace(norm="layer").norm == "layer"


def test_yaml_is_read_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("norm: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(UserError, match="is not valid YAML"):
        load_yaml(evil)
    assert not (tmp_path / "pwned").exists()
    broken = tmp_path / "broken.yaml"
    broken.write_text("norm: [batch\n")
    with pytest.raises(UserError, match=r"broken.yaml is not valid YAML at line"):
        load_yaml(broken)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="must hold a mapping"):
        load_yaml(listy)


@pytest.mark.parametrize("values, message", [
    ({"momentum": 1.0}, "momentum must be in [0, 1)"),
    ({"base_momentum": -0.1}, "base_momentum must be in [0, 1)"),
])
def test_momentum_bounds(values, message):
    with pytest.raises(UserError, match=message.replace("[", "\\[").replace("(", "\\(").replace(")", "\\)")):
        from_mapping(values)
