"""SIGINT/SIGTERM during a search: a clean stop through Ray Tune (state saved), exit 130/143, the resume command."""

from __future__ import annotations

import os
import shlex
import signal
import sys


class Stopped(BaseException):
    """The search was stopped by a signal; carries the signal and the command that resumes it."""

    def __init__(self, signum: int, resume_command: str):
        super().__init__(signum, resume_command)
        self.signum, self.resume_command = signum, resume_command

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def sentence(self) -> str:
        return (f"stopped by {signal.Signals(self.signum).name}; the experiment state is saved, continue it with: "
                f"{self.resume_command}")


def resume_command(path: str, argv: list[str] | None = None) -> str:
    """The command line that continues this search: its own arguments plus --resume (and its folder)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--resume" not in args:
        args.append("--resume")
    if not any(a == "--storage" or a.startswith("--storage=") for a in args):
        args += ["--storage", path]
    return shlex.join(["tune-norm", *args])


class StopSignals:
    """Installed around a search. The first SIGINT or SIGTERM asks Ray Tune to end the run as its own Ctrl+C does
    (trials stop, the experiment state is saved); before Ray's loop runs, or on a second signal, it stops at once."""

    def __init__(self, path: str):
        self.path = path
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Ray's handler would hide that Ctrl+C was pressed
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def stopped(self) -> Stopped:
        return Stopped(self.received or signal.SIGINT, resume_command(self.path))

    def _handle(self, signum, frame) -> None:
        first = self.received is None
        self.received = self.received or signum
        tune_stop = signal.getsignal(signal.SIGUSR1)  # Ray Tune's graceful stop, set while its loop runs
        if first and callable(tune_stop) and tune_stop is not self._handle:
            print(f"\n{signal.Signals(signum).name} received: stopping the trials and saving the experiment "
                  "state (again to stop at once)", file=sys.stderr, flush=True)
            tune_stop(signal.SIGUSR1, frame)
            return
        raise self.stopped()
