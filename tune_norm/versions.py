"""The versions a run depends on, read from package metadata (nothing heavy is imported)."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

from . import __version__

PACKAGES = ("torch", "ray", "optuna")


def installed(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def line() -> str:
    """'tune-norm 0.1.0 (torch 2.14.1, ray 2.60.0, optuna 5.0.0, python 3.11.9)'."""
    parts = [f"{p} {installed(p)}" for p in PACKAGES] + [f"python {platform.python_version()}"]
    return f"tune-norm {__version__} ({', '.join(parts)})"
