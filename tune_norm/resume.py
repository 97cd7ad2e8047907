"""Checks before `--resume` hands a folder to Ray (whose pickles, complete state, same experiment); pruning state."""

from __future__ import annotations

import io
import json
import os
import pickletools
import stat
from pathlib import Path
from typing import Any

from . import storage
from .errors import UserError
from .experiment import PROGRESS, PROVENANCE, RESULTS, STATE_GLOB, _state, result_row
from .space import SearchSpec

# Ray's state files; all but experiment_state are pickles, and experiment_state embeds cloudpickled objects
STATE_PATTERNS = (STATE_GLOB, "searcher-state-*.pkl", "search_gen_state-*.json", "basic-variant-state-*.json")
PICKLE_PATTERNS = ("tuner.pkl", "searcher-state-*.pkl", "search_gen_state-*.json", "basic-variant-state-*.json",
                   "trial_*/*.pkl")
KEEP_STATES = 3  # newest state files of each kind kept; older ones are superseded (Ray reads the newest)
RESTARTED = "restarted"  # errored trial folders set aside by --restart-errored (their configs rerun as new trials)
# spec keys a resume may change: they reach the trials through the trainable given at restore
MAY_CHANGE = ("resources", "epoch_timeout_s", "source", "warnings", "description")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _newest(path: Path, pattern: str) -> Path | None:
    found = sorted(path.glob(pattern))
    return found[-1] if found else None


def check_owner(path: Path) -> None:
    """Refuse Ray's pickles (unpickling runs code) unless this user owns them and nobody else can write them."""
    uid = os.getuid()
    for pattern in PICKLE_PATTERNS + (STATE_GLOB,):
        for f in sorted(path.glob(pattern)):
            st = f.lstat()
            if stat.S_ISLNK(st.st_mode):
                raise UserError(f"refusing to resume {path}: {f.name} is a symbolic link; resuming loads Ray's "
                                "pickles, which can run code, so they must be plain files of yours")
            if st.st_uid != uid:
                raise UserError(f"refusing to resume {path}: {f.relative_to(path)} belongs to uid {st.st_uid}, not "
                                f"you (uid {uid}); resuming unpickles Ray's state, which runs code of whoever wrote "
                                "it, so copy a folder you trust and chown it first")
            if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise UserError(f"refusing to resume {path}: {f.relative_to(path)} is writable by others "
                                f"(mode {stat.S_IMODE(st.st_mode):o}); resuming unpickles it, which runs code, so "
                                f"if you trust it run chmod -R go-w {path} first")


def _check_pickle(f: Path) -> None:
    try:
        data = f.read_bytes()
        for _ in pickletools.genops(io.BytesIO(data)):  # walks the opcodes; executes nothing
            pass
    except (OSError, ValueError) as e:
        raise UserError(f"cannot resume {f.parent}: {f.name} is truncated or corrupt ({e}); Ray could not restore "
                        "the search from it, so restore the folder from a backup or start a new experiment") from None


def check_complete(path: Path) -> None:
    """Refuse a state Ray could restore only partly or not at all: a cut experiment_state, a cut pickle."""
    state = _newest(path, STATE_GLOB)
    if state is None:
        raise UserError(f"{path} is not a tune-norm experiment (no experiment state in it); nothing to resume")
    try:
        data = json.loads(state.read_text())
        entries = data["trial_data"]
        for entry in entries:
            json.loads(entry[0]), json.loads(entry[1])
        if not isinstance(data["runner_data"], dict):
            raise TypeError("runner_data is not a mapping")
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise UserError(f"cannot resume {path}: {state.name} is truncated or corrupt ({type(e).__name__}: {e}); "
                        "resuming it would lose trials, so restore the folder from a backup or start a new "
                        "experiment") from None
    if not (path / "tuner.pkl").is_file():
        raise UserError(f"cannot resume {path}: tuner.pkl is missing; restore the folder from a backup")
    _check_pickle(path / "tuner.pkl")
    for pattern in STATE_PATTERNS[1:]:
        newest = _newest(path, pattern)
        if newest is not None:
            _check_pickle(newest)


def recorded(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path / PROVENANCE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def check_same_experiment(path: Path, spec: SearchSpec) -> None:
    """Refuse a resume whose space or settings differ from the recorded ones (Ray would keep the old ones anyway,
    and the record would name a space that was never searched)."""
    record = recorded(path).get("spec")
    if not isinstance(record, dict):
        return
    now = _jsonable(spec.to_dict())
    before = _jsonable(SearchSpec.from_dict(record).to_dict())
    differ = [k for k in now if k not in MAY_CHANGE and k in record and before[k] != now[k]]
    if differ:
        raise UserError(f"cannot resume {path} with another space or overrides: {', '.join(differ)} differ from the "
                        f"record in {PROVENANCE} ({_difference(differ[0], before[differ[0]], now[differ[0]])}); "
                        f"resume with the experiment's own command (its 'command' in {PROVENANCE}) plus --resume, "
                        "or start a new experiment with another --storage")


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _difference(key: str, before: Any, now: Any) -> str:
    """The first difference, short: for params the first searched key that changed."""
    if key == "params" and isinstance(before, list) and isinstance(now, list):
        old = {p.get("name"): p for p in before if isinstance(p, dict)}
        new = {p.get("name"): p for p in now if isinstance(p, dict)}
        for name in sorted(set(old) | set(new), key=str):
            if old.get(name) != new.get(name):
                show = [_short(p and (p["values"][0] if p.get("kind") == "const" else
                                      {p.get("kind"): p.get("values")})) for p in (old.get(name), new.get(name))]
                return f"{name}: recorded {show[0]}, given {show[1]}"
    return f"{key}: recorded {_short(before)}, given {_short(now)}"


def moved_from(path: Path) -> str | None:
    """The folder this experiment was started in, when that is not ``path`` (a copy, a move, a synced backup)."""
    record = recorded(path)
    where = ([r.get("path") for r in record.get("resumes") or [] if isinstance(r, dict)] or [record.get("path")])[-1]
    if isinstance(where, str) and not storage.is_uri(where) and Path(where) != Path(path):
        return where
    return None


def check(path: Path, spec) -> None:
    """Everything a resume needs to be correct or refused, before Ray starts and before anything is written."""
    path = Path(path)
    check_owner(path)
    check_complete(path)
    check_same_experiment(path, spec)


def set_errored_aside(path: Path) -> list[Path]:
    """--restart-errored: Ray reruns each errored trial's config as a new trial (new id, new folder), so the
    errored folder would look like an extra trial; move it to ``restarted/`` (kept). Returns where they went."""
    moved = []
    for info in _state(path, []).values():
        d = path / str(info["dir"]) if info["dir"] else None
        if info["status"] == "ERROR" and d is not None and d.is_dir():
            target = path / RESTARTED / d.name
            target.parent.mkdir(exist_ok=True)
            d.rename(target)
            moved.append(target)
    return moved


def drop_recreated(path: Path) -> None:
    """Ray recreates an empty folder for every restored trial, the restarted ones included; remove those."""
    for d in (path / RESTARTED).glob("trial_*"):
        empty = path / d.name
        if empty.is_dir() and not any(empty.iterdir()):
            empty.rmdir()


def dedupe_results(path) -> list:
    """A resumed trial can report an epoch again, and Ray appends it to result.json and progress.csv: trained again
    (Ray snapshots the experiment before the trials stop, so an epoch a trial finishes during a stop is on disk but
    not in the snapshot, and the trial restarts from the checkpoint the snapshot names; the numbers are the same,
    resume is exact) or reported again from a mended checkpoint (experiment.mend_checkpoints; the same wall_time).
    Keep one row per epoch: the last one, or the first report of it where the last is a report again. Local
    folders and object storage alike. Returns the files rewritten."""
    folder = storage.path(path)
    fixed = []
    for pattern, dedupe in ((f"trial_*/{PROGRESS}", _dedupe_csv), (f"trial_*/{RESULTS}", _dedupe_json_lines)):
        for f in sorted(folder.glob(pattern)):
            try:
                text = f.read_bytes().decode("utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            kept = dedupe(text)
            if kept is not None:
                storage.write_whole(f, kept.encode())
                fixed.append(f)
    return fixed


def _one_per_epoch(rows: list[tuple[Any, Any]]) -> list[int]:
    """Indexes of the rows to keep, from each row's (epoch, wall_time); rows without an epoch are kept."""
    last = {epoch: i for i, (epoch, _) in enumerate(rows) if epoch is not None}
    keep = {i for i, (epoch, _) in enumerate(rows) if epoch is None}
    for epoch, i in last.items():
        wall = rows[i][1]
        keep.add(next(j for j, row in enumerate(rows) if row[0] == epoch and (row[1] == wall if wall else j == i)))
    return sorted(keep)


def _dedupe_csv(text: str) -> str | None:
    import csv

    try:
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    except csv.Error:
        return None
    if not rows or "epoch" not in rows[0]:
        return None
    keep = _one_per_epoch([(row["epoch"], row.get("wall_time")) for row in rows])
    if len(keep) == len(rows):
        return None
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows[i] for i in keep)
    return out.getvalue()


def _row(line: str) -> tuple[Any, Any]:
    row = result_row(line)  # a cut line has no epoch: it is left as it is (the experiment reader reports it)
    return row.get("epoch"), row.get("wall_time")


def _dedupe_json_lines(text: str) -> str | None:
    lines = text.splitlines()
    keep = _one_per_epoch([_row(line) for line in lines])
    if len(keep) == len(lines):
        return None
    return "".join(lines[i] + "\n" for i in keep)


def prune_states(path: Path, keep: int = KEEP_STATES) -> list[Path]:
    """Delete all but the ``keep`` newest of each kind of Ray state file (each run adds one; Ray reads the newest)."""
    removed = []
    for pattern in STATE_PATTERNS:
        for f in sorted(path.glob(pattern))[:-keep]:
            f.unlink(missing_ok=True)
            removed.append(f)
    return removed
