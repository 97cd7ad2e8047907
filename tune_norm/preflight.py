"""Checks of a search's inputs that must pass before Ray starts: storage folder, local resources, cluster address."""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading
from pathlib import Path

from .errors import UserError

CONNECT_TIMEOUT_S = 30.0  # the longest `--address` may take to answer


def check_storage_option(storage: str | None) -> None:
    if storage is not None and not storage.strip():
        raise UserError("--storage is empty; give a folder or an s3:// URI, or leave it out for ./tune_results/<name>")


def writable_folder(path: Path | str, option: str) -> None:
    """Refuse a folder that is a file, lies under a file, or cannot be written; a probe file is made and removed."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is a file, not a folder")
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{option} {path} cannot be made: {ancestor} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=ancestor, prefix=".tune_norm-probe-"):
            pass
    except OSError as e:
        raise UserError(f"{option} {path} is not writable: {ancestor}: {e.strerror or e}") from None


def check_local_resources(cpus_per_trial: float, gpus_per_trial: float | None, num_cpus: int | None,
                          num_gpus: int | None) -> None:
    """A local Ray that tune-norm starts has a known size: refuse trials it could never place (Ray would wait)."""
    if num_cpus is not None and num_cpus < 1:
        raise UserError(f"--num-cpus must be at least 1, got {num_cpus}")
    if num_gpus is not None and num_gpus < 0:
        raise UserError(f"--num-gpus must be 0 or more, got {num_gpus}")
    cpus = num_cpus if num_cpus is not None else (os.cpu_count() or 1)
    if cpus_per_trial > cpus:
        raise UserError(f"a trial asks for {cpus_per_trial:g} CPUs but the local Ray has {cpus}; lower "
                        "--cpus-per-trial or raise --num-cpus (no trial could ever start)")
    if gpus_per_trial:
        gpus = num_gpus if num_gpus is not None else _visible_gpus()
        if gpus_per_trial > gpus:
            raise UserError(f"a trial asks for {gpus_per_trial:g} GPU but the local Ray has {gpus} GPU; drop "
                            "--gpus-per-trial (or pass --num-gpus if a GPU is there) (no trial could ever start)")


def check_fits(cluster: dict, cpus_per_trial: float, gpus_per_trial: float) -> None:
    """The same check against the resources a started local Ray reports (ray.cluster_resources())."""
    cpus, gpus = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    if cpus_per_trial > cpus or gpus_per_trial > gpus:
        raise UserError(f"a trial asks for {cpus_per_trial:g} CPU and {gpus_per_trial:g} GPU but the local Ray has "
                        f"{cpus:g} CPU and {gpus:g} GPU; no trial could ever start")


def _visible_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no CUDA runtime: no GPU
        return 0


def check_address(address: str) -> None:
    """A host:port (or ray://host:port) must answer a TCP connection within a few seconds."""
    if address in ("auto", "local"):
        return
    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"--address takes auto or host:port (e.g. 10.0.0.5:6379), got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise UserError(f"cannot reach a Ray cluster at {address}: {e.strerror or e}; check the address and that "
                        "the head node runs (ray status on it)") from None


class Deadline:
    """Ends the process with one sentence and exit code 2 when a blocking call outlives ``seconds``."""

    def __init__(self, seconds: float, message: str):
        self.seconds, self.message = seconds, message
        self.done = threading.Event()

    def _watch(self) -> None:
        if not self.done.wait(self.seconds):
            sys.stderr.write(f"error: {self.message}\n")
            sys.stderr.flush()
            os._exit(2)

    def __enter__(self) -> Deadline:
        threading.Thread(target=self._watch, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
