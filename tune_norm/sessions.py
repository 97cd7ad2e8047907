"""Pruning of Ray's session folders under its temp dir: each local Ray adds one (logs, sockets), never removed."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

KEEP_SESSIONS = 3  # newest session folders kept, besides any a running process uses
NO_PROC_AGE_S = 7 * 24 * 3600  # without /proc, only sessions older than this are pruned


def ray_temp_dir() -> Path:
    """Where a local Ray keeps its sessions: $RAY_TMPDIR/ray, else the system temp dir's ray/."""
    return Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray"


def _in_use() -> set[str] | None:
    """Session folder names named on the command line of a running process (Ray's own processes name theirs)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    used: set[str] = set()
    for cmdline in proc.glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        for word in text.split():
            for part in word.replace("=", "/").split("/"):
                if part.startswith("session_"):
                    used.add(part)
    return used


def prune(root: Path | None = None, keep: int = KEEP_SESSIONS) -> list[Path]:
    """Delete session_* folders under ``root`` except the newest ``keep``, the latest and any in use."""
    root = root or ray_temp_dir()
    if not root.is_dir():
        return []
    sessions = sorted(p for p in root.glob("session_*") if p.is_dir() and not p.is_symlink()
                      and p.name != "session_latest")
    latest = root / "session_latest"
    protect = {latest.resolve().name} if latest.is_symlink() else set()
    used = _in_use()
    removed = []
    for old in sessions[:-keep] if keep else sessions:
        if old.name in protect or (used is not None and old.name in used):
            continue
        if used is None and time.time() - old.stat().st_mtime < NO_PROC_AGE_S:
            continue
        shutil.rmtree(old, ignore_errors=True)
        removed.append(old)
    return removed
