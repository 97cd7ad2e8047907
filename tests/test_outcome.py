"""What search and confirm say at the end: counts, where, what next, and exit 1 only when every trial errored."""

from __future__ import annotations

from ray.tune import Result

from tune_norm import outcome


def _result(name: str, error: Exception | None = None) -> Result:
    """Ray's own per-trial Result, as a ResultGrid yields it."""
    return Result(metrics={}, checkpoint=None, error=error, path=f"/exp/{name}")


def test_a_search_with_some_errors_reports_counts_and_the_next_command():
    done = outcome.of_search([_result("a"), _result("b", RuntimeError("x")), _result("c")], "tune_results/smoke")
    assert done.out == "3 trials, 1 errored; results in tune_results/smoke\nnext: tune-norm report tune_results/smoke\n"
    assert done.err == [] and done.exit_code == 0


def test_a_search_whose_every_trial_errored_exits_1_and_names_the_first_error():
    done = outcome.of_search([_result("a", RuntimeError("x")), _result("b", ValueError("y"))], "tune_results/x")
    assert done.out.startswith("2 trials, 2 errored; results in tune_results/x\n")
    assert done.err == ["error: all 2 trials errored; the first one's error is in /exp/a/error.txt"]
    assert done.exit_code == 1


def test_a_uri_is_quoted_for_the_shell_and_no_trials_is_not_an_error():
    done = outcome.of_search([], "s3://bucket/exp?region=x&endpoint_override=y")
    assert done.out.endswith("next: tune-norm report 's3://bucket/exp?region=x&endpoint_override=y'\n")
    assert done.exit_code == 0
