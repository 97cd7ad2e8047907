"""Test-only fault injection into the trainable: a crash or a hang at an epoch, driven by $TUNE_NORM_FAULT."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

VARIABLE = "TUNE_NORM_FAULT"


def inject(config: dict, epoch: int, trial_id: str) -> None:
    """Do nothing unless $TUNE_NORM_FAULT holds JSON with kind (crash|hang), epoch, match (config values that
    select trials) and once_dir (fire once per trial, remembered there); then crash or hang after that epoch."""
    spec = os.environ.get(VARIABLE)
    if not spec:
        return
    fault = json.loads(spec)
    if fault.get("epoch") != epoch or any(config.get(k) != v for k, v in fault.get("match", {}).items()):
        return
    if fault.get("once_dir"):
        marker = Path(fault["once_dir"]) / f"fault-fired-{trial_id}"
        if marker.exists():
            return
        marker.write_text(str(epoch))
    if fault["kind"] == "crash":
        raise RuntimeError(f"injected crash after epoch {epoch}")
    while True:  # hang: a Python loop, as a deadlocked data pipeline would
        time.sleep(0.05)
