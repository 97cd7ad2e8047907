"""One writer per experiment folder: an flock'd lock file naming the driver holding it; stale locks are taken over."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import storage
from .errors import UserError

LOCK_FILE = ".tune_norm.lock"


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) an experiment's lock."""

    pid: int
    host: str
    command: str
    since: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.since} ({self.command})"


def _read(path: Path) -> Holder | None:
    try:
        data = json.loads(path.read_text())
        return Holder(int(data["pid"]), str(data["host"]), str(data["command"]), str(data["since"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class ExperimentLock:
    """Held by the one driver writing an experiment folder, from before Ray starts until the search ends.

    The kernel drops an flock when its process dies (kill -9 included), so a lock file left behind by a killed
    driver is stale and is taken over. Works on local disks; on NFS flock depends on the server, and s3:// has no
    locks at all (see README, Reliability)."""

    def __init__(self, folder: Path | str, command: str | None = None):
        self.path = Path(folder) / LOCK_FILE
        self.command = command or " ".join(sys.argv)
        self.fd: int | None = None
        self.took_over: Holder | None = None  # the stale holder this lock replaced, if any

    def acquire(self) -> ExperimentLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _read(self.path)
            who = holder.describe() if holder else "another process"
            raise UserError(f"{self.path.parent} is being written by a running search, {who}; wait for it to end "
                            "or stop it (Ctrl+C), then resume") from None
        except OSError as e:
            os.close(fd)
            raise UserError(f"cannot lock {self.path}: {e.strerror or e}") from None
        previous = _read(self.path)  # an empty file: released cleanly; a record: its driver died
        if previous is not None:
            self.took_over = previous  # its process is gone (its flock went with it)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                  "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        os.ftruncate(self.fd, 0)  # kept, not unlinked: a racing driver must flock the same file
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> ExperimentLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def holder(folder) -> Holder | None:
    """The driver holding ``folder``'s lock right now, or None when no live process holds it (or ``folder`` is a
    URI such as s3://, where there are no locks: README, "Reliability")."""
    if storage.is_uri(folder):
        return None
    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read(path) or Holder(0, "?", "?", "?")
    except OSError:
        return None
    finally:
        os.close(fd)  # closing drops the shared lock we may have taken
    return None
