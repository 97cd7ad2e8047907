"""Ray's OptunaSearch (restartable), its study in the experiment folder's journal, trials tagged with Ray's ids."""

from __future__ import annotations

from .study import RAY_TRIAL_ID
from .tune_plugins import RestartableOptuna


class StudySearch(RestartableOptuna):
    """OptunaSearch whose Optuna trials carry the Ray trial id (user attribute ray_trial_id), so the study in
    optuna-dashboard points to each trial's trial_<id>/ folder; it survives --restart-errored like its parent.
    Runs in the driver, as Ray's searchers do."""

    # The experiment folder as it is now, set by search.run before a resume: the pickled state names the folder
    # the search started in, which a copy or a move leaves behind (and whose lock file it would wait on forever).
    folder: str | None = None

    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and RAY_TRIAL_ID not in ot_trial.user_attrs:
            ot_trial.set_user_attr(RAY_TRIAL_ID, trial_id)
        return config

    def restore(self, checkpoint_path: str):
        """After a resume, trials the study shows running but Ray's snapshot does not know (started after it,
        their folders set aside as orphaned) will never report: mark them failed so the dashboard stops
        showing them as running."""
        super().restore(checkpoint_path)
        if self._ot_study is None or self._storage is None:
            return
        if StudySearch.folder is not None:  # one storage object is shared by the study and its trials: repoint it
            from .study import backend

            self._storage._backend = backend(StudySearch.folder)
        import optuna

        known = {t.number for t in self._ot_trials.values()}
        for t in self._ot_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if t.number not in known:
                self._ot_study.tell(t.number, state=optuna.trial.TrialState.FAIL)
