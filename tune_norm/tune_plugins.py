"""Ray Tune plug-ins that keep a search honest: the driver's frozen-trial check, an Optuna searcher that survives
--restart-errored.

The trial's own watchdog (search.Watchdog) lives in the process it watches, so a frozen process (SIGSTOP,
uninterruptible I/O) defeats it; FrozenTrials runs in the driver and ends, through Ray, the worker of a trial that
sent no result for too long."""

from __future__ import annotations

import sys
import time

from ray.tune import Callback
from ray.tune.search.optuna import OptunaSearch


def frozen_limit_s(epoch_timeout_s: float) -> float:
    """Seconds without a result before the driver kills a trial: well past the trial's own watchdog."""
    return 2 * epoch_timeout_s + 10


class FrozenTrials(Callback):
    """Kills the Ray actor of a RUNNING trial silent for ``limit_s`` seconds; Ray then counts a failure and
    retries the trial from its last checkpoint (max_failures) or marks it errored."""

    def __init__(self, limit_s: float):
        self.limit_s = limit_s
        self.last: dict[str, float] = {}

    def __getstate__(self) -> dict:
        return {"limit_s": self.limit_s, "last": {}}  # monotonic times mean nothing in another process

    def _seen(self, trial) -> None:
        self.last[trial.trial_id] = time.monotonic()

    def on_trial_start(self, iteration, trials, trial, **info):
        self._seen(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._seen(trial)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._seen(trial)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.last.pop(trial.trial_id, None)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.last.pop(trial.trial_id, None)

    def on_step_begin(self, iteration, trials, **info):
        import ray

        now = time.monotonic()
        for trial in trials:
            if trial.status != "RUNNING":
                continue
            since = self.last.setdefault(trial.trial_id, now)
            actor = trial.temporary_state.ray_actor
            if now - since > self.limit_s and actor is not None:
                print(f"trial {trial.trial_id} sent no result for {now - since:.0f} s (limit {self.limit_s:g} s, "
                      "from epoch_timeout_s): its worker is frozen; the driver killed it", file=sys.stderr, flush=True)
                ray.kill(actor, no_restart=True)
                self.last[trial.trial_id] = now


class RestartableOptuna(OptunaSearch):
    """OptunaSearch that accepts trials it did not suggest. `--restart-errored` makes Ray rerun an errored trial's
    config as a new trial (a new id); plain OptunaSearch then fails with KeyError on its first result, and so does
    every later resume. The rerun's final value is told to Optuna as a completed trial with the errored one's
    parameters, so the sampler still learns from it."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._ot_trials:
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._ot_trials:
            super().on_trial_complete(trial_id, result, error)
            return
        if error or not result or self.metric is None or result.get(self.metric) is None:
            return
        import optuna

        config = result.get("config") or {k[len("config/"):]: v for k, v in result.items() if k.startswith("config/")}
        for past in self._ot_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
            if past.params and all(config.get(k) == v for k, v in past.params.items()):
                self._ot_study.add_trial(optuna.trial.create_trial(
                    params=past.params, distributions=past.distributions, value=result[self.metric]))
                return
