"""Search throughput: a mini-search through Ray vs the same trials without Ray, the step's share of peak, levers."""

from __future__ import annotations

import copy
import itertools
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from . import data as data_mod
from . import flops
from .config import TrainConfig, from_mapping
from .dropout import Dropout
from .errors import UserError
from .outcome import Outcome
from .train import EVAL_BATCH, Trainer

NORMS = ("batch", "group", "layer")
LRS = (0.015, 0.03, 0.01, 0.05)
LEVERS = ("eval", "checkpoint", "compile")


@dataclass(frozen=True)
class MiniSearch:
    """The fixed mini-search: ``trials`` grid cells of ``epochs`` epochs on ``images`` training images, FIFO."""

    trials: int = 8
    epochs: int = 3
    images: int = 20_000
    threads: int = 1
    rounds: int = 1

    def check(self) -> None:
        for name, low in (("trials", 1), ("epochs", 1), ("images", 64), ("threads", 1), ("rounds", 1)):
            if getattr(self, name) < low:
                raise UserError(f"search {name} must be at least {low}, got {getattr(self, name)}")
        if self.images > 55_000:
            raise UserError(f"search images must be at most the 55000 training images, got {self.images}")

    def cells(self) -> list[dict[str, Any]]:
        """The trials' configs: norms, learning rates and seeds in turn; the same for Ray and the direct loop."""
        rows = []
        for i in range(self.trials):
            row = {"norm": NORMS[i % 3], "lr": LRS[i % len(LRS)], "seed": i + 1, "epochs": self.epochs,
                   "subset": self.images, "val_size": 5000}
            if row["norm"] == "group":
                row["groups"] = 4
            rows.append(row)
        return rows

    def spec_mapping(self) -> dict[str, Any]:
        return {"name": "bench_search", "metric": "val_acc", "mode": "max", "scheduler": {"type": "fifo"},
                "search": {"type": "grid"}, "resources": {"cpus_per_trial": self.threads}, "max_failures": 0,
                "num_to_keep": 1, "grid": self.cells()}


# -- the two sides, each in a fresh spawned process ------------------------------------------------
def _ray_side(ms_values: dict, root: str, storage: str) -> dict:
    """tune_norm.search.run on a fresh local Ray with ``threads`` CPUs: one trial at a time, as the direct loop."""
    from . import search, space

    ms = MiniSearch(**ms_values)
    spec = space.parse(ms.spec_mapping(), "bench --search")
    start = time.perf_counter()
    grid = search.run(spec, data_root=root, storage=storage, num_cpus=ms.threads, verbose=0)
    wall = time.perf_counter() - start
    import ray

    ray.shutdown()
    errors = [str(r.error) for r in grid if r.error]
    if errors:
        raise RuntimeError(f"a mini-search trial failed: {errors[0]}")  # the parent makes it one line
    gaps, first_starts, ends, epochs, spans = [], [], [], 0, []
    for r in grid:
        df = r.metrics_dataframe.sort_values("epoch")
        begins = (df["wall_time"] - df["epoch_seconds"]).tolist()
        finishes = df["wall_time"].tolist()
        gaps += [b - f for b, f in zip(begins[1:], finishes[:-1])]  # checkpoint + report between two epochs
        first_starts.append(begins[0])
        ends.append(finishes[-1])
        spans.append((begins[0], finishes[-1]))
        epochs += len(df)
    return {"wall_s": wall, "epochs": epochs, "per_epoch_gap_s": statistics.median(gaps) if gaps else 0.0,
            "trials_span_s": max(ends) - min(first_starts), "per_trial_gap_s": _trial_gap(spans)}


def _trial_gap(spans: list[tuple[float, float]]) -> float:
    """Median time from one trial's last epoch to the next trial's first (trials run one at a time)."""
    spans = sorted(spans)
    gaps = [b - e for (_, e), (b, _) in itertools.pairwise(spans)]
    return statistics.median(gaps) if gaps else 0.0


def _direct_side(ms_values: dict, root: str) -> dict:
    """The same trials back to back in this one process: the trainable's work without Ray, checkpoint or report."""
    ms = MiniSearch(**ms_values)
    start = time.perf_counter()
    epochs, spans = 0, []
    for cell in ms.cells():
        cfg = from_mapping({**cell, "threads": ms.threads})
        trainer = Trainer(cfg, data_mod.for_config(cfg, Path(root)))
        rows = list(trainer.epochs())
        epochs += len(rows)
        spans.append((rows[0]["wall_time"] - rows[0]["epoch_seconds"], rows[-1]["wall_time"]))
    return {"wall_s": time.perf_counter() - start, "epochs": epochs, "trials_span_s": spans[-1][1] - spans[0][0],
            "per_trial_gap_s": _trial_gap(spans)}


def _child(conn, side: str, ms_values: dict, root: str, storage: str) -> None:
    os.environ["OMP_NUM_THREADS"] = str(ms_values["threads"])
    try:
        out = _ray_side(ms_values, root, storage) if side == "ray" else _direct_side(ms_values, root)
        conn.send(("ok", out))
    except Exception as e:  # noqa: BLE001 -- reported to the parent as one line
        conn.send(("error", f"{type(e).__name__}: {e}"))


def _spawn(target, args: tuple, timeout: float = 7200.0) -> dict:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(child, *args))
    proc.start()
    child.close()
    try:
        deadline = time.monotonic() + timeout
        while not parent.poll(1.0):
            if not proc.is_alive():
                raise UserError(f"the search bench's process {proc.pid} died (exit code {proc.exitcode})")
            if time.monotonic() > deadline:
                raise UserError(f"the search bench's process {proc.pid} sent nothing for {timeout:.0f} s")
        status, out = parent.recv()
    finally:
        proc.join(timeout=60)
        if proc.is_alive():
            proc.terminate()
    if status != "ok":  # a failed trial or compile: one line, no traceback
        raise UserError(f"the search bench failed: {out}")
    return out


def ray_overhead(root: Path, ms: MiniSearch, log: Callable = print) -> dict:
    """Ray and direct rounds, the order alternating; overhead = median of per-round Ray wall / direct wall."""
    rounds = []
    with tempfile.TemporaryDirectory(prefix="tune-norm-bench-") as tmp:
        for r in range(ms.rounds):
            row = {}
            for side in (("ray", "direct") if r % 2 == 0 else ("direct", "ray")):
                load = os.getloadavg()[0]
                args = (side, asdict(ms), str(root), str(Path(tmp) / f"ray{r}"))
                row[side] = _spawn(_child, args)
                row[side]["load_before"] = load
                log(f"  search round {r + 1}/{ms.rounds}: {side} {row[side]['wall_s']:.1f} s "
                    f"({ms.trials} trials x {ms.epochs} epochs, load {load:.2f})")
            rounds.append(row)
    ratio = statistics.median(r["ray"]["wall_s"] / r["direct"]["wall_s"] for r in rounds)
    ray_wall = statistics.median(r["ray"]["wall_s"] for r in rounds)
    direct_wall = statistics.median(r["direct"]["wall_s"] for r in rounds)
    span_ratio = statistics.median(r["ray"]["trials_span_s"] / r["direct"]["trials_span_s"] for r in rounds)
    return {"rounds": rounds, "ray_overhead": ratio, "ray_overhead_after_startup": span_ratio,
            "ray_trials_per_hour": 3600 * ms.trials / ray_wall,
            "direct_trials_per_hour": 3600 * ms.trials / direct_wall,
            "ray_per_epoch_gap_s": statistics.median(r["ray"]["per_epoch_gap_s"] for r in rounds),
            "ray_per_trial_gap_s": statistics.median(r["ray"]["per_trial_gap_s"] for r in rounds),
            "direct_per_trial_gap_s": statistics.median(r["direct"]["per_trial_gap_s"] for r in rounds)}


# -- the model step against the CPU's peak ---------------------------------------------------------
def step_peak(root: Path, threads: int, steps: int = 60, rounds: int = 3) -> dict:
    """Achieved GFLOP/s of bench's model step (forward, backward, SGD, OneCycle on one batch) vs the fp32 peak."""
    from .bench import StepPipeline

    before = torch.get_num_threads()
    try:
        cfg = TrainConfig(threads=threads, device="cpu", epochs=rounds)
        pipe = StepPipeline(root, cfg, steps, rounds)
        rates = []
        for _ in range(rounds):
            seconds, images = pipe.run()
            rates.append(images / seconds)
    finally:
        torch.set_num_threads(before)
    per_image = flops.step_flops_per_image(pipe.trainer.model)
    ips = statistics.median(rates)
    peak = flops.cpu_peak(flops.threads_or_cores(threads))
    achieved = ips * per_image / 1e9
    return {"images_per_s": ips, "rounds_images_per_s": rates, "step_flops_per_image": per_image,
            "forward_flops_per_image": flops.forward_flops(pipe.trainer.model), "achieved_gflops": achieved,
            "peak_gflops": peak.gflops, "share_of_peak": achieved / peak.gflops, "peak_assumption": peak.assumption,
            "flop_rule": flops.STEP_RULE}


# -- levers ----------------------------------------------------------------------------------------
def _evaluate(model, x, y, batch: int, mode) -> float:
    """Trainer.evaluate's arithmetic with a chosen batch and grad mode; returns the accuracy (as a check)."""
    model.eval()
    correct = 0
    with mode():
        for start in range(0, len(y), batch):
            out = model(x[start: start + batch])
            F.nll_loss(out, y[start: start + batch], reduction="sum")
            correct += int((out.argmax(1) == y[start: start + batch]).sum())
    return 100.0 * correct / len(y)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def eval_levers(root: Path, threads: int, rounds: int = 5, train_steps: int = 40) -> dict:
    """Evaluation variants on the 5,000-image val set against Trainer.evaluate, interleaved; and evaluation's
    share of a full epoch (train time extrapolated from ``train_steps`` batches to 55,000 images)."""
    cfg = TrainConfig(threads=threads, device="cpu", epochs=rounds)
    mnist = data_mod.load(root, val_size=5000)
    n = train_steps * cfg.batch_size
    small = data_mod.MNIST(data_mod.Split(mnist.train.images[:n], mnist.train.labels[:n]), mnist.val, mnist.test)
    tr = Trainer(cfg, small)
    x, y = tr.eval_sets["val"]
    contiguous = copy.deepcopy(tr.model).to(memory_format=torch.contiguous_format)
    xc = x.contiguous()
    variants = {
        "reference": lambda: tr.evaluate("val")["val_acc"],
        "batch_1000": lambda: _evaluate(tr.model, x, y, 1000, torch.no_grad),
        "batch_5000": lambda: _evaluate(tr.model, x, y, 5000, torch.no_grad),
        "batch_100": lambda: _evaluate(tr.model, x, y, 100, torch.no_grad),
        "batch_250": lambda: _evaluate(tr.model, x, y, 250, torch.no_grad),
        "batch_500": lambda: _evaluate(tr.model, x, y, 500, torch.no_grad),
        "inference_mode": lambda: _evaluate(tr.model, x, y, EVAL_BATCH, torch.inference_mode),
        "batch_250_inference_mode": lambda: _evaluate(tr.model, x, y, 250, torch.inference_mode),
        "contiguous": lambda: _evaluate(contiguous, xc, y, EVAL_BATCH, torch.no_grad),
    }
    for fn in variants.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    train_rates = []
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            times[name].append(_timed(variants[name]))
        train_rates.append(len(tr.train_set) / _timed(tr.train_epoch))
        contiguous.load_state_dict(tr.model.state_dict())  # the same weights, still contiguous
    accs = {name: fn() for name, fn in variants.items()}  # after training: every variant, the same accuracy
    ratios = {k: statistics.median(b / v for b, v in zip(times["reference"], times[k]))
              for k in names if k != "reference"}
    val_s = statistics.median(times["reference"])
    test_s = val_s * len(mnist.test) / len(y)
    train_s = 55_000 / statistics.median(train_rates)
    return {"reference": f"Trainer.evaluate: batch {EVAL_BATCH}, no_grad, channels_last",
            "val_eval_s": val_s, "speedups_vs_reference": ratios, "accuracies": accs,
            "train_epoch_s_55k": train_s, "test_eval_s_10k": test_s,
            "test_share_of_epoch": test_s / (train_s + val_s + test_s),
            "eval_share_of_epoch": (val_s + test_s) / (train_s + val_s + test_s)}


def checkpoint_lever(root: Path, threads: int, rounds: int = 5) -> dict:
    """The trainable's per-epoch checkpoint write (Trainer.save into a fresh temporary folder), timed."""
    cfg = TrainConfig(threads=threads, device="cpu", epochs=1, subset=640)
    tr = Trainer(cfg, data_mod.load(root, val_size=5000, subset=640))
    tr.step()
    times = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as d:
            times.append(_timed(lambda: tr.save(Path(d) / "checkpoint.pt")))
            size = (Path(d) / "checkpoint.pt").stat().st_size
    return {"save_s": statistics.median(times), "checkpoint_bytes": size}


def _compile_child(conn, root: str, threads: int, cache: str, steps: int, rounds: int) -> None:
    """One trial's view of torch.compile: time to the first compiled step, then eager vs compiled interleaved."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    try:
        torch.set_num_threads(threads)
        cfg = TrainConfig(threads=threads, device="cpu", epochs=rounds + 2)
        split = data_mod.load(Path(root), val_size=0).train
        n = steps * cfg.batch_size
        sub = data_mod.MNIST(data_mod.Split(split.images[:n], split.labels[:n]), data_mod.Split(split.images[:0],
                             split.labels[:0]), data_mod.Split(split.images[:0], split.labels[:0]))
        eager, compiled = Trainer(cfg, sub), Trainer(cfg, sub)
        eager.train_epoch()
        start = time.perf_counter()
        for m in compiled.model.modules():  # numpy draws the CPU masks: dynamo leaves them to eager (graph breaks)
            if isinstance(m, Dropout):
                m.forward = torch._dynamo.disable(m.forward)
        compiled.model = torch.compile(compiled.model)
        compiled.train_epoch()  # compile happens in the first steps
        first = time.perf_counter() - start
        rates = {"eager": [], "compiled": []}
        for r in range(rounds):
            for name, tr in (("eager", eager), ("compiled", compiled))[:: 1 if r % 2 == 0 else -1]:  # alternating
                rates[name].append(n / _timed(tr.train_epoch))
        eager_epoch = n / statistics.median(rates["eager"])
        conn.send(("ok", {"first_epoch_s": first, "compile_s": max(0.0, first - eager_epoch),
                          "speedup": statistics.median(c / e for c, e in zip(rates["compiled"], rates["eager"])),
                          "rates": rates}))
    except Exception as e:  # noqa: BLE001 -- reported to the parent as one line
        conn.send(("error", f"{type(e).__name__}: {e}"))


def compile_lever(root: Path, threads: int, steps: int = 60, rounds: int = 3, log: Callable = print) -> dict:
    """torch.compile cold (empty Inductor cache) and warm (the cache a previous trial filled), in fresh processes."""
    with tempfile.TemporaryDirectory(prefix="tune-norm-inductor-") as cache:
        out = {}
        for kind in ("cold", "warm"):
            log(f"  compile lever: {kind} Inductor cache")
            out[kind] = _spawn(_compile_child, (str(root), threads, cache, steps, rounds), timeout=1800)
    return out


def packing_rule(cores: int, cpus_per_trial: float = 1, max_concurrent: int = 4) -> dict:
    """How the search packs trials: Ray runs floor(cores / cpus_per_trial) trials, capped by max_concurrent."""
    running = min(int(cores // cpus_per_trial), max_concurrent or 10**9)
    suggested = max(1, cores // max_concurrent) if max_concurrent else 1
    return {"cores": cores, "cpus_per_trial": cpus_per_trial, "max_concurrent": max_concurrent,
            "trials_at_once": running, "idle_cores": cores - running * cpus_per_trial,
            "suggested_cpus_per_trial": suggested}


# -- the whole run ---------------------------------------------------------------------------------
def run(root: Path, ms: MiniSearch, levers: tuple[str, ...] = LEVERS, lever_rounds: int = 5,
        log: Callable = print) -> dict[str, Any]:
    """Time the mini-search (Ray vs direct), the model step against peak and the chosen levers; a plain dict."""
    ms.check()
    if lever_rounds < 1:
        raise UserError(f"lever rounds must be at least 1, got {lever_rounds}")
    unknown = [lv for lv in levers if lv not in LEVERS]
    if unknown:
        raise UserError(f"unknown lever {unknown[0]!r}; choose from {', '.join(LEVERS)}")
    root = Path(root).resolve()
    data_mod.load_raw(root)  # a bad data folder is one line, before any work
    results: dict[str, Any] = {"settings": asdict(ms), "lever_rounds": lever_rounds,
                               "load_average_before": list(os.getloadavg())}
    log(f"search bench: {ms.trials} trials x {ms.epochs} epochs on {ms.images:,} images, {ms.threads} thread(s), "
        f"{ms.rounds} round(s)")
    results["search"] = ray_overhead(root, ms, log)
    log("  model step vs the CPU's fp32 peak")
    results["step"] = step_peak(root, ms.threads)
    results["levers"] = {}
    if "eval" in levers:
        log("  eval lever")
        results["levers"]["eval"] = eval_levers(root, ms.threads, lever_rounds)
    if "checkpoint" in levers:
        ck = checkpoint_lever(root, ms.threads, lever_rounds)
        ck["ray_per_epoch_gap_s"] = results["search"]["ray_per_epoch_gap_s"]
        results["levers"]["checkpoint"] = ck
    if "compile" in levers:
        results["levers"]["compile"] = compile_lever(root, ms.threads, rounds=lever_rounds, log=log)
    cores = flops.threads_or_cores(os.cpu_count() or 1)
    results["packing_rule"] = packing_rule(cores)
    results["load_average_after"] = list(os.getloadavg())
    return results


def parse_levers(text: str) -> tuple[str, ...]:
    """--levers: a comma list (spaces ignored), or none for no lever; names are checked by :func:`run`."""
    return tuple(x for x in text.replace(" ", "").split(",") if x and x != "none")


def command_line(ms: MiniSearch, levers: tuple[str, ...], lever_rounds: int) -> str:
    """The `tune-norm bench --search` command that repeats a run."""
    return (f"tune-norm bench --search --threads {ms.threads} --search-trials {ms.trials} "
            f"--search-epochs {ms.epochs} --search-images {ms.images} --search-rounds {ms.rounds} "
            f"--levers {','.join(levers) or 'none'} --lever-rounds {lever_rounds}")


def bench(data: Path | None = None, *, trials: int = 8, epochs: int = 3, images: int = 20_000, threads: int = 0,
          rounds: int = 1, levers: str = ",".join(LEVERS), lever_rounds: int = 5, json_path: Path | None = None,
          log: Callable = print) -> Outcome:
    """`tune-norm bench --search`: :func:`run` on ``data`` (default $TUNE_NORM_DATA or ./data) with ``threads``
    per trial (0: one), the command that repeats it in the results, their markdown table for stdout, and the
    results as JSON in ``json_path`` (see :func:`tune_norm.bench.told`)."""
    from . import bench as bench_mod

    bench_mod.check_json_path(json_path)
    root = data_mod.resolve_root(data)
    ms = MiniSearch(trials, epochs, images, threads or 1, rounds)
    chosen = parse_levers(levers)
    results = run(root, ms, chosen, lever_rounds, log=log)
    results["command"] = command_line(ms, chosen, lever_rounds)
    return bench_mod.told(results, markdown(results), json_path)


def markdown(res: dict[str, Any]) -> str:
    s, se, st = res["settings"], res["search"], res["step"]
    before, after = res["load_average_before"][0], res["load_average_after"][0]
    wall = {side: statistics.median(r[side]["wall_s"] for r in se["rounds"]) for side in ("ray", "direct")}
    lines = [f"## tune-norm bench --search: {s['trials']} trials x {s['epochs']} epochs on {s['images']:,} images, "
             f"{s['threads']} thread(s), {s['rounds']} round(s)", "",
             f"Load average before {before:.2f}, after {after:.2f}.", "",
             "| path | wall s (median) | trials/hour |", "|---|---:|---:|",
             f"| Ray (tune_norm.search.run, local Ray, one trial at a time) | {wall['ray']:.1f} "
             f"| {se['ray_trials_per_hour']:.1f} |",
             f"| direct (Trainer back to back, one process) | {wall['direct']:.1f} "
             f"| {se['direct_trials_per_hour']:.1f} |",
             "", "| ratio | value |", "|---|---:|",
             f"| Ray overhead: Ray wall / direct wall (goal <= 1.1) | {se['ray_overhead']:.3f} |",
             f"| the same from the first epoch's start (process, Ray start, first data load left out) "
             f"| {se['ray_overhead_after_startup']:.3f} |",
             f"| Ray: s between two epochs of a trial (checkpoint + report) | {se['ray_per_epoch_gap_s']:.3f} |",
             f"| Ray: s between two trials (last epoch to next first epoch) | {se['ray_per_trial_gap_s']:.2f} |",
             f"| direct: s between two trials (data split + Trainer) | {se['direct_per_trial_gap_s']:.2f} |",
             "", f"Model step: {st['images_per_s']:,.0f} images/s x {st['step_flops_per_image'] / 1e6:.2f} "
                 f"MFLOP/image = {st['achieved_gflops']:.1f} GFLOP/s of {st['peak_gflops']:.1f} GFLOP/s fp32 peak: "
                 f"**{100 * st['share_of_peak']:.1f}% of peak**.",
             f"Peak: {st['peak_assumption']}.", f"FLOPs: {st['flop_rule']}.", ""]
    lv = res["levers"]
    if lv:
        lines += ["| lever | value (speed-ups: median of per-round ratios, > 1 = faster) |", "|---|---:|"]
    if "eval" in lv:
        e = lv["eval"]
        for k, v in e["speedups_vs_reference"].items():
            lines.append(f"| eval {k} vs {e['reference']} | {v:.2f}x |")
        lines.append(f"| share of a 55k-image epoch spent evaluating val + test | {e['eval_share_of_epoch']:.3f} |")
        lines.append(f"| share spent evaluating test alone | {e['test_share_of_epoch']:.3f} |")
    if "checkpoint" in lv:
        c = lv["checkpoint"]
        lines.append(f"| checkpoint write per epoch, s ({c['checkpoint_bytes'] / 1024:.0f} KiB) | {c['save_s']:.4f} |")
    if "compile" in lv:
        c = lv["compile"]
        for kind in ("cold", "warm"):
            lines.append(f"| torch.compile, {kind} Inductor cache: compiled vs eager train step "
                         f"| {c[kind]['speedup']:.2f}x |")
            lines.append(f"| torch.compile, {kind} Inductor cache: compile time per trial, s "
                         f"| {c[kind]['compile_s']:.1f} |")
    p = res["packing_rule"]
    lines += ["", f"Packing rule: cpus_per_trial {p['cpus_per_trial']:g}, max_concurrent {p['max_concurrent']} on "
                  f"{p['cores']} core(s): {p['trials_at_once']} trial(s) at once, {p['idle_cores']:g} core(s) idle; "
                  f"suggested cpus_per_trial = max(1, cores // max_concurrent) = {p['suggested_cpus_per_trial']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `tune-norm bench --search`")
