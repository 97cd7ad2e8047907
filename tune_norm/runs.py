"""`tune-norm train`: one config (options, a YAML file or an experiment's trial), once or per seed, into folders."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import config as config_mod
from . import retrain
from .errors import UserError
from .preflight import writable_folder


def train(overrides: dict[str, Any], *, config: Path | None = None, source: Path | None = None,
          trial: str | None = None, full_train: bool = False, seeds: tuple[int, ...] | None = None,
          data: Path | None = None, download: bool = False, out: Path | None = None,
          echo: Callable[[str], Any] = print) -> Path:
    """Train the config of ``config`` (YAML or params.json) or of ``source``'s best (or ``trial``) trial, with
    ``overrides`` on top, once or once per seed (one folder each); every config is checked before any training.
    Returns the output folder: ``out``, default runs/<norm>-<time> (runs/<experiment>-<trial> from a source).
    ``overrides`` set to None are left out; a config and a source, a trial without a source, or a seed override
    and ``seeds`` together are one UserError naming the options."""
    if source and config:
        raise UserError("give --config or --from, not both")
    if trial and not source:
        raise UserError("--trial names a trial of the experiment given with --from")
    if seeds and overrides.get("seed") is not None:
        raise UserError("give --seed or --seeds, not both")
    overrides = {k: v for k, v in overrides.items() if v is not None}

    values = retrain.trial_config(config_mod.load_yaml(config)) if config else {}
    name = None
    chosen = None
    if source:
        from . import experiment as experiment_mod

        chosen = retrain.pick(experiment_mod.load(source), trial)
        echo(f"{'best' if chosen.best else 'chosen'} trial of {source}: {chosen.trial_id} "
             f"({chosen.metric} {chosen.score:.4g}); config {chosen.config}")
        values, name = chosen.config, f"{Path(source).resolve().name}-{chosen.trial_id}"
    todo = retrain.runs(values, full_train=full_train, seeds=seeds, overrides=overrides)
    cfgs = [config_mod.from_mapping(v) for v in todo]  # every config checked before any training
    from . import data as data_mod  # torch: imported once the configs are known to be good
    from .train import run_to_folder

    root = data_mod.resolve_root(data)
    if download:
        data_mod.download(root)
    base = (out or Path("runs") / f"{name or cfgs[0].norm}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    writable_folder(base, "--out")
    if chosen is not None:
        retrain.write_source(base, source, chosen)
    for cfg in cfgs:
        mnist = data_mod.for_config(cfg, root)
        run_to_folder(cfg, mnist, base / f"seed_{cfg.seed}" if seeds else base, echo=echo)
    return base
