"""The `tune-norm` command line: thin Typer wrappers over the library; user errors exit 2 with one sentence."""

from __future__ import annotations

import enum
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer

from . import outcome
from .errors import UserError
from .norms import NORMS
from .space import METRICS, SCHEDULERS, SEARCHERS
from .stop import Stopped

app = typer.Typer(
    help="Hyperparameter search for normalization and regularization experiments on MNIST.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish and PowerShell
    pretty_exceptions_enable=False,
)

NormKind = enum.Enum("NormKind", {k: k for k in NORMS}, type=str)  # CLI choices come from the registry
# choices of the enumerated options, so --help lists them; the values come from the modules that check them
Scheduler = enum.Enum("Scheduler", {k: k for k in SCHEDULERS}, type=str)
Searcher = enum.Enum("Searcher", {k: k for k in SEARCHERS}, type=str)
Metric = enum.Enum("Metric", {k: k for k in METRICS}, type=str)
Mode = enum.Enum("Mode", {k: k for k in ("max", "min")}, type=str)
Device = enum.Enum("Device", {k: k for k in ("auto", "cpu", "cuda")}, type=str)


def _value(choice: enum.Enum | None) -> str | None:
    return choice.value if choice is not None else None


def _tell(done: outcome.Outcome) -> None:
    """Print a command's outcome (stdout text, stderr lines) and exit with its code."""
    typer.echo(done.out, nl=False)
    for line in done.err:
        typer.echo(line, err=True)
    if done.exit_code:
        raise typer.Exit(done.exit_code)


def _log(line: str) -> None:
    """A library's progress line, on stderr."""
    typer.echo(line, err=True)


def _version(show: bool) -> None:
    if show:
        from .versions import line

        typer.echo(line())
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the versions of tune-norm, torch, ray and optuna, and exit."),
) -> None:
    """Hyperparameter search for normalization and regularization experiments on MNIST."""


DataOption = typer.Option(None, "--data", help="Data directory holding MNIST/raw/ (default: $TUNE_NORM_DATA or "
                                               "./data).")


def friendly(fn: Callable) -> Callable:
    """Turn library UserErrors into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            ray = sys.modules.get("ray")  # connected to a cluster: its log stream would print after the sentence
            if ray is not None and ray.is_initialized():
                ray.shutdown()
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        except Stopped as e:  # SIGINT/SIGTERM during a search: state saved, say how to continue
            typer.echo(e.sentence(), err=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


@app.command(epilog="Example: tune-norm train --norm group --groups 4 --epochs 20 --out runs/gn\n\n"
                     "From a search: tune-norm train --from tune_results/smoke --full-train --seeds 1,2,3")
@friendly
def train(
    norm: Optional[NormKind] = typer.Option(None, help="Normalization layer (default batch)."),
    groups: Optional[int] = typer.Option(None, help="GroupNorm groups on the 16-channel layers (baseline 4)."),
    l1: Optional[float] = typer.Option(None, help="L1 factor: loss += l1 * sum|p|."),
    l2: Optional[float] = typer.Option(None, help="L2 factor: SGD weight_decay."),
    lr: Optional[float] = typer.Option(None, help="OneCycle max learning rate (baseline 0.015)."),
    momentum: Optional[float] = typer.Option(None, help="Momentum at the start and end of the OneCycle (the "
                                                        "baseline's real 0.95)."),
    base_momentum: Optional[float] = typer.Option(None, help="Momentum at the lr peak (0.85); equal to --momentum: "
                                                             "constant."),
    dropout: Optional[float] = typer.Option(None, help="Dropout after every norm (baseline 0.03)."),
    batch_size: Optional[int] = typer.Option(None, help="Images per step (baseline 64)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (baseline 20)."),
    seed: Optional[int] = typer.Option(None, help="Random seed."),
    val_size: Optional[int] = typer.Option(None, help="Validation images held out of training (default 5000; 0 = the "
                                                      "baseline study's convention)."),
    subset: Optional[int] = typer.Option(None, help="Train on only this many images (0 = all)."),
    device: Optional[Device] = typer.Option(None, help="Where to train (default auto: CUDA when present)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads (0 = all available)."),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="bfloat16 autocast on CUDA."),
    config: Optional[Path] = typer.Option(None, "--config",
        help="YAML file of config keys, or a trial's params.json; options override it."),
    from_: Optional[Path] = typer.Option(None, "--from",
        help="Experiment folder: retrain its best trial's config (by the experiment's metric)."),
    trial: Optional[str] = typer.Option(None, "--trial",
        help="With --from: this trial instead of the best, e.g. a6d79c08."),
    full_train: bool = typer.Option(False, "--full-train",
        help="Train on the validation split too (val_size 0): the final model."),
    seeds: Optional[str] = typer.Option(None, "--seeds",
        help="Train once per seed, e.g. 1,2,3 (one folder each under --out)."),
    data: Optional[Path] = DataOption,
    download: bool = typer.Option(False, help="Download MNIST with torchvision when files are missing (needs "
                                              "internet)."),
    out: Optional[Path] = typer.Option(None,
        help="Output folder (default runs/<norm>-<time>, or runs/<experiment>-<trial> with --from)."),
) -> None:
    """Train one config and print a per-epoch table; writes metrics and weights (model.pt) to --out."""
    from . import runs

    options = dict(norm=_value(norm), groups=groups, l1=l1, l2=l2, lr=lr, momentum=momentum,
                   base_momentum=base_momentum, dropout=dropout,
                   batch_size=batch_size, epochs=epochs, seed=seed, val_size=val_size, subset=subset,
                   device=_value(device), threads=threads, amp=amp)
    runs.train(options, config=config, source=from_, trial=trial, full_train=full_train,
               seeds=_parse_seeds(seeds, "--seeds"), data=data, download=download, out=out, echo=typer.echo)


def _parse_sets(pairs: list[str]) -> dict[str, Any]:
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--set takes key=value, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _parse_seeds(text: str | None, option: str = "--seeds") -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"{option} takes a comma-separated list of integers, e.g. 4,5,6; got {text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise UserError(f"{option} lists a seed twice: {text!r}")
    return seeds


@app.command(epilog="Example: tune-norm search search_spaces/full.yaml --num-samples 40 --gpus-per-trial 0.25")
@friendly
def search(
    space_file: Path = typer.Argument(..., help="Search-space YAML (see search_spaces/)."),
    num_samples: Optional[int] = typer.Option(None, help="Trials to sample (overrides the YAML)."),
    metric: Optional[Metric] = typer.Option(None, help="Metric to optimise (default: the YAML's)."),
    mode: Optional[Mode] = typer.Option(None, help="Maximise or minimise the metric (default: the YAML's)."),
    scheduler: Optional[Scheduler] = typer.Option(None, help="ASHA stops poor trials early; FIFO runs all to the end."),
    grace_period: Optional[int] = typer.Option(None, help="ASHA: epochs before a trial may be stopped."),
    searcher: Optional[Searcher] = typer.Option(None, "--searcher",
        help="Optuna's TPE, random sampling, or the YAML's grid."),
    max_concurrent: Optional[int] = typer.Option(None, help="Trials running at once (0 = as resources allow)."),
    cpus_per_trial: Optional[float] = typer.Option(None, help="CPUs per trial (also its torch threads)."),
    gpus_per_trial: Optional[float] = typer.Option(None, help="GPU fraction per trial, e.g. 0.25 packs four on a GPU."),
    max_failures: Optional[int] = typer.Option(None, help="Retries of a crashed trial from its last checkpoint."),
    epoch_timeout: Optional[float] = typer.Option(None, "--epoch-timeout", help="Seconds an epoch may take before the "
                                                                                "trial counts as hung."),
    seeds: Optional[str] = typer.Option(None, help="Grid searches: run every row with these seeds instead of the "
                                                   "YAML's, e.g. 4,5,6 to add seeds to a study."),
    set_: list[str] = typer.Option([], "--set", help="Fix a config key for every trial, e.g. --set epochs=3 "
                                                     "(repeatable)."),
    name: Optional[str] = typer.Option(None, help="Experiment name (default: the YAML's)."),
    storage: Optional[str] = typer.Option(None, help="Experiment folder or URI: s3://bucket/prefix (any URI pyarrow "
                                                     "reads), file:///path for a mount every node shares (default "
                                                     "./tune_results/<name>)."),
    address: Optional[str] = typer.Option(None, help="Join a running Ray cluster ('auto' or host:port); default: "
                                                     "start a local Ray."),
    num_cpus: Optional[int] = typer.Option(None, help="CPUs for a local Ray (default: all)."),
    num_gpus: Optional[int] = typer.Option(None, help="GPUs for a local Ray (default: detected)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted experiment in --storage."),
    restart_errored: bool = typer.Option(False, help="With --resume: rerun errored trials from scratch instead of "
                                                     "from their checkpoints."),
    verbose: bool = typer.Option(False, "--verbose", help="Also print Ray's trial table and log lines."),
    mlflow: Optional[str] = typer.Option(None, "--mlflow",
        help=("Log every trial to MLflow: a tracking URI or a folder (file store), e.g. ./mlruns. Needs the "
              "mlflow extra.")),
    wandb: Optional[str] = typer.Option(None, "--wandb",
        help="Log every trial to this Weights & Biases project. Needs the wandb extra and a wandb login."),
    data: Optional[Path] = DataOption,
) -> None:
    """Run a Ray Tune search (ASHA + Optuna by default) over the space in SPACE_FILE."""
    from . import space as space_mod

    spec = space_mod.load(space_file).with_overrides(
        num_samples=num_samples, metric=_value(metric), mode=_value(mode), name=name, max_failures=max_failures,
        epoch_timeout_s=epoch_timeout, scheduler__type=_value(scheduler), scheduler__grace_period=grace_period,
        search__type=_value(searcher), search__max_concurrent=max_concurrent,
        resources__cpus_per_trial=cpus_per_trial, resources__gpus_per_trial=gpus_per_trial,
        seeds=_parse_seeds(seeds), set=_parse_sets(set_))
    for warning in spec.warnings:
        typer.echo(f"warning: {warning}", err=True)
    from . import data as data_mod  # torch and Ray: imported once the space is known to be good
    from . import search as search_mod

    results = search_mod.run(spec, data_root=str(data_mod.resolve_root(data)), storage=storage, address=address,
                             resume=resume, restart_errored=restart_errored, num_cpus=num_cpus, num_gpus=num_gpus,
                             verbose=int(verbose), mlflow=mlflow, wandb=wandb)
    _tell(outcome.of_search(results, search_mod.experiment_path(spec, storage)))


@app.command(epilog="Example: tune-norm confirm tune_results/full --top 3 --seeds 5 --baseline recipe")
@friendly
def confirm(
    experiment: str = typer.Argument(..., help="The search to confirm: its folder or URI."),
    top: int = typer.Option(3, help="Rerun this many best distinct configs (by the search's metric and mode)."),
    seeds: int = typer.Option(5, help="Fresh seeds per config (at least 2)."),
    baseline: str = typer.Option("recipe", metavar="[recipe|none]",  # checked by confirm, which also takes 'seed'
        help="recipe: the baseline study's BatchNorm recipe, like for like; none: no baseline."),
    first_seed: Optional[int] = typer.Option(None,
        help="First fresh seed (default 1001, or 2001, ... where the search used one)."),
    threshold: float = typer.Option(99.4, help="Report the first epoch whose val acc reaches this (percent)."),
    name: Optional[str] = typer.Option(None, help="Experiment name (default <source folder>-confirm)."),
    storage: Optional[str] = typer.Option(None, help="Experiment folder or URI (default ./tune_results/<name>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue (or reread) the confirmation in --storage."),
    num_cpus: Optional[int] = typer.Option(None, help="CPUs for a local Ray (default: all)."),
    verbose: bool = typer.Option(False, "--verbose", help="Also print Ray's trial table and log lines."),
    data: Optional[Path] = DataOption,
) -> None:
    """Rerun a search's best configs and a baseline over fresh seeds as their own experiment, side by side."""
    from . import confirm as confirm_mod
    from . import data as data_mod

    plan, result, path = confirm_mod.run(
        experiment, top=top, seeds=seeds, baseline_kind=baseline, first_seed=first_seed, threshold=threshold,
        name=name, storage_path=storage, resume=resume, data_root=str(data_mod.resolve_root(data)), num_cpus=num_cpus,
        verbose=int(verbose))
    _tell(outcome.of_confirm(plan, result, path))


ReportFormat = enum.Enum("ReportFormat", {k: k for k in ("markdown", "csv", "json", "latex")}, type=str)


@app.command(epilog="Example: tune-norm report tune_results/smoke --format csv --out reports/smoke\n\n"
                     "Pooled: tune-norm report tune_results/baseline tune_results/baseline_4_5 --out reports/baseline")
@friendly
def report(
    experiments: Optional[list[str]] = typer.Argument(None, help="Experiment folder or URI, e.g. s3://bucket/key "
                                                                 "(default: the newest one in ./tune_results); "
                                                                 "several runs of one space (e.g. more seeds) are "
                                                                 "pooled into one report."),
    format: ReportFormat = typer.Option("markdown", "--format", help="What to print: markdown tables, csv (the main "
                                                                     "table), json or latex."),
    out: Optional[Path] = typer.Option(None, help="Folder for report.html, the tables in every format and the plots "
                                                  "(default EXPERIMENT/report; ./reports/NAME for a URI)."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Skip the PNG plots (then neither checkpoints nor data "
                                                            "are read)."),
    data: Optional[Path] = DataOption,
) -> None:
    """Summarize an experiment, finished or not: best trial per group, seed statistics, comparisons, cost, plots."""
    from . import publish

    _tell(outcome.of_report(publish.publish(experiments, out=out, plots=not no_plots, data_root=data), format.value))


@app.command(epilog="Example: tune-norm bench --threads 2 --steps 200 --json bench.json")
@friendly
def bench(
    device: Device = typer.Option("auto", help="auto: CPU, plus CUDA when a GPU is present."),
    threads: int = typer.Option(
        0, help="torch CPU threads; also the process count of the packing test (0 = all available)."),
    batch_size: int = typer.Option(64, help="Images per step (baseline 64)."),
    steps: int = typer.Option(200, help="Timed steps per pipeline per round; sec/epoch is extrapolated to 60k images."),
    rounds: int = typer.Option(3, help="Interleaved rounds; the table shows medians."),
    packing: bool = typer.Option(
        True, "--packing/--no-packing", help="Also measure N processes side by side (spawned)."),
    data: Optional[Path] = DataOption,
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the results as JSON to this file."),
    search: bool = typer.Option(False, "--search", help="Instead: a mini-search through Ray vs the same trials "
                                                         "without Ray, the step's share of peak, levers."),
    search_trials: int = typer.Option(8, help="--search: trials of the mini-search."),
    search_epochs: int = typer.Option(3, help="--search: epochs per trial."),
    search_images: int = typer.Option(20_000, help="--search: training images per trial."),
    search_rounds: int = typer.Option(1, help="--search: Ray/direct rounds (order alternating)."),
    levers: str = typer.Option("eval,checkpoint,compile", help="--search: levers to time (comma list, or none)."),
    lever_rounds: int = typer.Option(5, help="--search: interleaved rounds per lever."),
) -> None:
    """Images/s of the baseline study's pipeline, tune-norm's pipeline and the bare model step, with their ratios.

    With --search: trials/hour of a mini-search through Ray vs without, the step's share of peak, and levers."""
    if search:  # trials/hour through Ray vs direct; the logic lives in tune_norm/searchbench.py
        from . import searchbench

        done = searchbench.bench(data, trials=search_trials, epochs=search_epochs, images=search_images,
                                 threads=threads, rounds=search_rounds, levers=levers, lever_rounds=lever_rounds,
                                 json_path=json_path, log=_log)
    else:
        from . import bench as bench_mod

        done = bench_mod.bench(data, device=device.value, threads=threads, batch_size=batch_size, steps=steps,
                               rounds=rounds, with_packing=packing, json_path=json_path, log=_log)
    _tell(done)


cluster_app = typer.Typer(help="Ray cluster-launcher configs (cluster.yaml).", no_args_is_help=True,
                          epilog="Example: tune-norm cluster check cluster.yaml")
app.add_typer(cluster_app, name="cluster")


@cluster_app.command("check", epilog="Example: tune-norm cluster check cluster.yaml")
@friendly
def cluster_check(
    config: Path = typer.Argument(..., help="The cluster YAML that `ray up` will get."),
    root: Optional[Path] = typer.Option(None, help="Where `ray up` runs (file_mounts, cluster/iam/); default: "
                                                   "the YAML's folder."),
) -> None:
    """Offline, before `ray up`: Ray's own schema check plus the security policy; one line per problem, exit 1."""
    from . import cluster

    _tell(cluster.check(config, root))


@cluster_app.command("setup", epilog="Example: tune-norm cluster setup my-results --ssh-cidr 198.51.7.10/32")
@friendly
def cluster_setup(
    bucket: str = typer.Argument(..., help="The results bucket (created if missing, public access blocked)."),
    ssh_cidr: str = typer.Option(..., help="The only source SSH is opened to: your public address as a /32."),
    region: str = typer.Option("us-west-2", help="AWS region; must match provider.region in cluster.yaml."),
    image: Optional[str] = typer.Option(None, help="AMI for the launch template (default: the newest Deep "
                                                   "Learning Base OSS Nvidia Driver GPU AMI, Ubuntu 24.04)."),
    iam_dir: Path = typer.Option(Path("cluster/iam"), help="Folder of the IAM policy files."),
) -> None:
    """Once per account and region: the bucket, IAM profiles, security group and launch template it names."""
    from . import cluster_aws

    typer.echo(cluster_aws.setup_aws(bucket, ssh_cidr, region, iam_dir, image=image, log=_log).summary())


def main() -> None:
    app(prog_name="tune-norm")


if __name__ == "__main__":
    sys.exit(main())
