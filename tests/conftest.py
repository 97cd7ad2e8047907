"""Shared fixtures: the real MNIST folder, the real CLI, and small search-space files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT / os.environ.get("TUNE_NORM_DATA", "../shared/data")).resolve()
os.environ["TUNE_NORM_DATA"] = str(DATA)  # absolute, for in-process CLI runs and subprocesses alike
CLI = [sys.executable, "-m", "tune_norm.cli"]


@pytest.fixture(scope="session")
def data_root() -> Path:
    assert (DATA / "MNIST" / "raw").is_dir(), f"MNIST not found under {DATA}; set TUNE_NORM_DATA"
    return DATA


def run_cli(*args: str, env: dict | None = None, timeout: float = 300, cwd: Path | None = None):
    """Run the real `tune-norm` command line in a subprocess."""
    full_env = {**os.environ, "TUNE_NORM_DATA": str(DATA), **(env or {})}
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=full_env, cwd=cwd or ROOT)


def write_space(path: Path, base: str = "smoke.yaml", **changes) -> Path:
    """A copy of a shipped space file with top-level keys replaced (space keys merged)."""
    data = yaml.safe_load((ROOT / "search_spaces" / base).read_text())
    space = changes.pop("space", None)
    data.update(changes)
    if space is not None:
        data["space"] = {**data.get("space", {}), **space}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def trial_results(exp: Path) -> dict[str, list[dict]]:
    """trial folder name -> its per-epoch result rows, read from Ray's result.json files."""
    out = {}
    for d in sorted(exp.glob("trial_*")):
        f = d / "result.json"
        out[d.name] = [json.loads(line) for line in f.read_text().splitlines() if line.strip()] if f.exists() else []
    return out


def wait_for(predicate, timeout: float, proc) -> None:
    """Poll ``predicate`` until it holds; fail early if the background CLI ``proc`` ended, late on timeout."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"search ended early: {(out or '')[-2000:]}{(err or '')[-3000:]}")
        time.sleep(0.5)
    raise AssertionError("timed out waiting")
