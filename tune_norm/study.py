"""The Optuna study of a search, kept in a journal file inside the experiment folder (optuna-dashboard reads it)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from .errors import UserError

STUDY_FILE = "optuna_study.log"  # an Optuna JournalStorage file: `optuna-dashboard <experiment>/optuna_study.log`
RAY_TRIAL_ID = "ray_trial_id"  # user attribute linking an Optuna trial to Ray's trial (and its trial_<id>/ folder)


def study_file(path: str | Path) -> Path:
    return Path(path) / STUDY_FILE


def backend(path: str | Path):
    """The journal file of the experiment folder ``path`` (created when absent), with its lock."""
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    file = study_file(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    # the open lock (O_EXCL) works on NFS and other shared file systems, where symlink locks may not
    return JournalFileBackend(str(file), lock_obj=JournalFileOpenLock(str(file)))


def storage(path: str | Path):
    """The journal storage of the experiment folder ``path``. Only the search's driver writes to it (Ray's
    OptunaSearch runs there), so a file lock is all the coordination it needs."""
    from optuna.storages import JournalStorage

    return JournalStorage(backend(path))


def create(path: str | Path, name: str, metric: str, mode: str, attrs: dict[str, Any] | None = None):
    """Create (or reopen, on resume) the study ``name`` in the experiment folder; returns its storage.

    Ray's OptunaSearch then loads it by name (it creates studies with load_if_exists)."""
    import optuna

    store = storage(path)
    study = optuna.create_study(storage=store, study_name=name, load_if_exists=True,
                                direction="maximize" if mode == "max" else "minimize")
    if study.metric_names is None:
        with warnings.catch_warnings():  # experimental since Optuna 3.2; only the dashboard's labels depend on it
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([metric])
    for key, value in (attrs or {}).items():
        study.set_user_attr(key, value)
    return store


def load(path: str | Path):
    """The study of the experiment folder ``path``, for `optuna.load_study`-style analysis (trials_dataframe...)."""
    import optuna

    file = study_file(path)
    if not file.is_file():
        raise UserError(f"{path} has no {STUDY_FILE}: grid searches, searches stored on s3:// and experiments "
                        "from before the study file keep no Optuna study there")
    store = storage(path)
    names = optuna.get_all_study_names(store)
    if len(names) != 1:
        raise UserError(f"{file} should hold one study, found {len(names)}")
    return optuna.load_study(study_name=names[0], storage=store)
