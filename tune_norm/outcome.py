"""What `tune-norm search`, `confirm` and `report` tell their user at the end: counts, where, what next, exit code."""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .confirm import Plan, Result
    from .publish import Published


@dataclass(frozen=True)
class Outcome:
    """The end of a command: text for stdout, lines for stderr, and the exit code (0: it did what was asked)."""

    out: str = ""
    err: list[str] = field(default_factory=list)
    exit_code: int = 0


def of_search(results: Iterable[Any], path: str) -> Outcome:
    """A finished search (``results``: Ray's ResultGrid, each with .error and .path): the trial and error counts,
    where the results are and how to report them; exit 1 when every trial errored, naming the first error's file."""
    results = list(results)
    errored = [r for r in results if r.error]
    out = (f"{len(results)} trials, {len(errored)} errored; results in {path}\n"
           f"next: tune-norm report {shlex.quote(path)}\n")  # a URI's query holds '&'
    if results and len(errored) == len(results):
        return Outcome(out, [f"error: all {len(results)} trials errored; the first one's error is in "
                             f"{errored[0].path}/error.txt"], exit_code=1)
    return Outcome(out)


def of_confirm(plan: Plan, result: Result, path: str) -> Outcome:
    """A finished confirmation: its side-by-side tables, where the file of
    every table is, and how to report the confirmation's own experiment."""
    from . import confirm

    return Outcome(confirm.render(plan, result, path),
                   [f"tables: {shlex.quote(path)}/{confirm.RESULT_FILE}; next: tune-norm report {shlex.quote(path)}"])


def of_report(done: Published, fmt: str = "markdown") -> Outcome:
    """A published report: its tables in ``fmt`` for stdout; on stderr a warning per plot that could not be drawn,
    then where the report page is and what lies beside it."""
    from . import render

    return Outcome(render.render(done.report, fmt),
                   [*(f"warning: {note}" for note in done.notes),
                    f"report: {done.page} ({len(done.images)} plots; tables as md, csv, json and tex beside it)"])
