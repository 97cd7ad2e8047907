"""Experiment trackers beside TensorBoard (which Ray always writes): MLflow and W&B through Ray's callbacks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import UserError


def mlflow_uri(uri: str) -> str:
    """A tracking URI as MLflow takes it: URIs pass through, a plain folder becomes an absolute file: URI."""
    if "://" in uri or uri.startswith("file:"):
        return uri
    return Path(uri).expanduser().resolve().as_uri()


def check(*, mlflow: str | None = None, wandb: str | None = None) -> None:
    """Refuse, before any work, a tracker whose package is not installed."""
    if mlflow is not None and importlib.util.find_spec("mlflow") is None:
        raise UserError("--mlflow needs the mlflow package: pip install 'tune-norm[mlflow]'")
    if wandb is not None and importlib.util.find_spec("wandb") is None:
        raise UserError("--wandb needs the wandb package: pip install 'tune-norm[wandb]'")
    if mlflow is not None and not mlflow.strip():
        raise UserError("--mlflow takes a tracking URI or a folder, e.g. --mlflow ./mlruns")
    if wandb is not None and not wandb.strip():
        raise UserError("--wandb takes a W&B project name, e.g. --wandb tune-norm")


def callbacks(name: str, path: str, *, mlflow: str | None = None, wandb: str | None = None) -> list:
    """Ray Tune callbacks for the trackers asked for: one MLflow run (or W&B run) per trial, in the
    experiment ``name``, tagged with the experiment folder."""
    out = []
    if mlflow is not None:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        out.append(MLflowLoggerCallback(tracking_uri=mlflow_uri(mlflow), experiment_name=name,
                                        tags={"tune_norm.experiment": path}))
    if wandb is not None:
        from ray.air.integrations.wandb import WandbLoggerCallback

        out.append(WandbLoggerCallback(project=wandb, group=name, tags=[name]))
    return out
