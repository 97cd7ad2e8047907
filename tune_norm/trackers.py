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
    if mlflow is not None:
        _open_mlflow(mlflow_uri(mlflow))
    if wandb is not None and not wandb.strip():
        raise UserError("--wandb takes a W&B project name, e.g. --wandb tune-norm")


def _open_mlflow(uri: str) -> None:
    """Open the tracking store once, so a bad URI is refused before any work. A folder is MLflow's file store,
    in 'maintenance mode' since MLflow 3 and refused unless MLFLOW_ALLOW_FILE_STORE is set: a folder given
    here is that explicit choice (a server or sqlite:// URI needs no such switch)."""
    import os

    import mlflow

    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as e:  # MLflow raises many types (MlflowException, OSError, requests errors)
        first = str(e).strip().split(". ")[0].splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--mlflow {uri}: cannot open the tracking store: {first}") from None


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
