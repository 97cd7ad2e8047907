"""Around one search run: checks before Ray starts, one writer per folder, a clean stop on signals, tidying after."""

from __future__ import annotations

import sys
from pathlib import Path

from . import lock, preflight, resume, sessions
from .errors import UserError
from .stop import StopSignals
from .storage import is_uri


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class RunGuard:
    """``check()`` before anything is written, ``start()`` just before Ray starts, ``watch_signals()`` just after,
    ``finish()`` after the search (also when it fails), then ``raise_if_stopped()``."""

    def __init__(self, path: str, spec, *, storage: str | None, resume: bool, restart_errored: bool,
                 address: str | None, num_cpus: int | None, num_gpus: int | None):
        self.path, self.spec, self.storage = path, spec, storage
        self.resume, self.restart_errored = resume, restart_errored
        self.address, self.num_cpus, self.num_gpus = address, num_cpus, num_gpus
        self.local = not is_uri(path)
        self.lock: lock.ExperimentLock | None = None
        self.created = False
        self.signals = StopSignals(path)

    def check(self) -> None:
        """Refuse, in one sentence and before anything is written, what would fail or corrupt the folder later."""
        preflight.check_storage_option(self.storage)
        if self.restart_errored and not self.resume:
            raise UserError("--restart-errored goes with --resume (it reruns the errored trials of an experiment)")
        if self.local:
            running = lock.holder(self.path)
            if running is not None:
                raise UserError(f"{self.path} is being written by a running search, {running.describe()}; wait "
                                "for it to end or stop it (Ctrl+C), then resume")
            preflight.writable_folder(self.path, "--storage")
            if self.resume:
                resume.check(Path(self.path), self.spec)
        if self.address:
            preflight.check_address(self.address)
        else:
            preflight.check_local_resources(self.spec.resources.cpus_per_trial, self.spec.resources.gpus_per_trial,
                                            self.num_cpus, self.num_gpus)

    def start(self) -> None:
        """Take the folder's lock and the stop signals; on a resume, tidy the folder for Ray."""
        if self.local:
            self.created = not Path(self.path).exists()
            self.lock = lock.ExperimentLock(self.path).acquire()
            if self.lock.took_over is not None:
                _say(f"note: took over the lock of a search that is gone ({self.lock.took_over.describe()})")
            if self.resume:
                folder = Path(self.path)
                origin = resume.moved_from(folder)
                if origin:
                    _say(f"note: this experiment was started in {origin}; it is resumed here, in {folder}, and "
                         "nothing is written there")
                if self.restart_errored:
                    for moved in resume.set_errored_aside(folder):
                        _say(f"{moved.name} errored; --restart-errored reruns its config as a new trial, so its "
                             f"folder was moved to {moved} and kept")
                resume.prune_states(folder)

    def watch_signals(self) -> None:
        """After Ray starts (ray.init installs its own SIGTERM handler, which aborts with a stack dump)."""
        self.signals.__enter__()

    def finish(self) -> None:
        self.signals.__exit__()
        if self.resume:
            resume.dedupe_results(self.path)
        if self.local and self.resume:
            resume.drop_recreated(Path(self.path))
            resume.prune_states(Path(self.path))  # again: this run added one of each
        if self.lock is not None:
            self.lock.release()
            folder = Path(self.path)
            if self.created and [p.name for p in folder.iterdir()] == [lock.LOCK_FILE]:
                self.lock.path.unlink()  # the search never began (Ray did not start): leave nothing behind
                folder.rmdir()
        sessions.prune()

    def raise_if_stopped(self) -> None:
        if self.signals.received is not None:
            raise self.signals.stopped()
