"""Throughput benchmark: the baseline study's torchvision pipeline, tune-norm's tensor pipeline and the model step."""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from . import augment
from . import data as data_mod
from .config import TrainConfig, from_mapping
from .data import MNIST, Split, normalize
from .errors import UserError
from .model import Net
from .outcome import Outcome
from .train import Trainer, cpu_budget, pick_device

EPOCH_IMAGES = 60_000  # seconds per epoch are extrapolated to the full MNIST training set
WARMUP_STEPS = 10  # untimed steps per pipeline before the first timed round (oneDNN/cuDNN set-up)
GPU_SHARES = (1.0, 0.5, 0.25, 0.125)  # GPU fraction per trial; 1/share processes share one GPU
TRIAL = TrainConfig()  # trials/hour counts the default trial: its epochs over 60k minus its val split
TRIAL_IMAGES = TRIAL.epochs * (EPOCH_IMAGES - TRIAL.val_size)
EMPTY = Split(torch.zeros(0, 28, 28, dtype=torch.uint8), torch.zeros(0, dtype=torch.long))

PIPELINES = {  # name -> description, in table order
    "baseline": "baseline-style: torchvision MNIST + per-image PIL transforms + DataLoader, contiguous",
    "tune_norm": "tune-norm: Trainer.train_epoch on uint8 tensors, batched augmentation",
    "tune_norm_contiguous": "tune-norm with channels_last off",
    "tune_norm_torch_dropout": "tune-norm with torch's nn.Dropout (bernoulli_ masks)",
    "tune_norm_amp": "tune-norm with AMP (bf16 autocast)",
    "model_step": "model step only: forward + backward + SGD/OneCycle on one fixed batch",
}


# -- the baseline study's data path ----------------------------------------------------------------
def cache_dir() -> Path:
    """Writable cache for the uncompressed IDX files: $TUNE_NORM_CACHE, else ~/.cache/tune_norm/mnist."""
    env = os.environ.get("TUNE_NORM_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tune_norm" / "mnist"
    return base.expanduser().resolve()


def _is_verified(path: Path, name: str) -> bool:
    sha, size, _ = data_mod.FILES[name]
    return path.is_file() and path.stat().st_size == size and hashlib.sha256(path.read_bytes()).hexdigest() == sha


def torchvision_root(root: Path, cache: Path | None = None) -> Path:
    """A folder whose MNIST/raw holds the four uncompressed, checksum-verified files torchvision reads.

    ``root`` itself when it already has them; otherwise they are extracted once from ``root`` (.gz allowed,
    the folder may be read-only) into ``cache``.
    """
    raw = Path(root) / "MNIST" / "raw"
    if all(_is_verified(raw / name, name) for name in data_mod.FILES):
        return Path(root)
    cache = cache or cache_dir()
    target = cache / "MNIST" / "raw"
    for name in data_mod.FILES:
        if _is_verified(target / name, name):
            continue
        blob = data_mod._read_raw(raw, name)
        data_mod._parse(name, blob)  # raises a UserError unless size and sha256 match
        try:
            target.mkdir(parents=True, exist_ok=True)
            tmp = target / f".{name}.{os.getpid()}.tmp"
            tmp.write_bytes(blob)
            tmp.replace(target / name)
        except OSError as e:
            raise UserError(f"cannot write the MNIST cache {target}: {e.strerror or e}; "
                            "set TUNE_NORM_CACHE to a writable folder") from None
    return cache


def baseline_transforms():
    """The baseline study's training transforms, per PIL image: its notebook's literal arguments, not our constants."""
    from torchvision import transforms

    return transforms.Compose([
        transforms.RandomRotation((-6.0, 6.0), fill=(1,)),
        transforms.RandomAffine(degrees=7, shear=10, translate=(0.1, 0.1), scale=(0.8, 1.2)),
        transforms.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
        transforms.ToTensor(),
        transforms.Normalize((0.1307,), (0.3081,)),
    ])


# -- the pipelines: each warms up when built; run() times `steps` steps and returns (seconds, images) ----
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_split(root: Path, n: int) -> Split:
    """The first ``n`` training images (cycled past 60k), so every batch of a timed pass is full."""
    full, _ = data_mod.load_raw(Path(root))
    idx = torch.arange(n) % len(full)
    return Split(full.images[idx], full.labels[idx])


class BaselinePipeline:
    """The baseline study's loop: torchvision MNIST, PIL transforms, DataLoader, contiguous Net, .item() every batch."""

    def __init__(self, root: Path, cfg: TrainConfig, steps: int, rounds: int):
        from torch.utils.data import DataLoader
        from torchvision.datasets import MNIST as TorchvisionMNIST

        self.device, self.steps = pick_device(cfg.device), steps
        dataset = TorchvisionMNIST(str(torchvision_root(root)), train=True, download=False,
                                   transform=baseline_transforms())
        # the baseline study's loader arguments: plain on CPU; 4 workers and pinned memory on CUDA
        extra = dict(num_workers=min(4, os.cpu_count() or 1), pin_memory=True) if self.device.type == "cuda" else {}
        self.loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, **extra)
        torch.manual_seed(cfg.seed)
        self.model = Net(cfg.norm, cfg.groups, cfg.dropout, cfg.width, fast_dropout=False).to(self.device)  # nn.Dropout
        # the baseline study's literal SGD(momentum=0.7); its OneCycleLR below cycles the momentum
        # 0.95 -> 0.85 -> 0.95 anyway
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=0.7)
        total = WARMUP_STEPS + steps * rounds
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=cfg.lr, epochs=math.ceil(total / len(self.loader)) + 1,
            steps_per_epoch=len(self.loader), pct_start=cfg.pct_start)
        self.batches = self._forever()
        self.run(min(steps, WARMUP_STEPS))

    def _forever(self):
        while True:
            yield from self.loader

    def run(self, steps: int | None = None) -> tuple[float, int]:
        model, device = self.model, self.device
        model.train()
        images = correct = 0
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps or self.steps):
            x, y = next(self.batches)
            x, y = x.to(device), y.to(device)
            self.optimizer.zero_grad()
            out = model(x)
            loss = F.nll_loss(out, y)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            correct += out.argmax(dim=1, keepdim=True).eq(y.view(-1, 1)).sum().item()
            loss.item()  # the baseline study's progress bar reads the loss every batch
            images += len(y)
        return time.perf_counter() - start, images


class TunePipeline:
    """tune-norm's Trainer.train_epoch over exactly ``steps`` full batches."""

    def __init__(self, root: Path, cfg: TrainConfig, steps: int, rounds: int):
        warm = min(steps, WARMUP_STEPS) * cfg.batch_size
        Trainer(cfg.replace(epochs=1), MNIST(_train_split(root, warm), EMPTY, EMPTY)).train_epoch()
        split = _train_split(root, steps * cfg.batch_size)
        self.trainer = Trainer(cfg.replace(epochs=rounds), MNIST(split, EMPTY, EMPTY))

    def run(self) -> tuple[float, int]:
        _sync(self.trainer.device)
        start = time.perf_counter()
        self.trainer.train_epoch()  # ends in .item(), so it is synchronised
        return time.perf_counter() - start, len(self.trainer.train_set)


class StepPipeline:
    """Trainer's model work alone: forward, NLL, backward, SGD and OneCycle steps on one pre-made batch."""

    def __init__(self, root: Path, cfg: TrainConfig, steps: int, rounds: int):
        n = cfg.batch_size
        self.trainer = tr = Trainer(cfg.replace(epochs=rounds + 1), MNIST(_train_split(root, steps * n), EMPTY, EMPTY))
        x = augment.augment(tr.train_set.images[:n].unsqueeze(1).float(), tr.generator)
        self.x = normalize(x.div_(augment.LEVELS)).contiguous(memory_format=tr.memory_format)
        self.y = tr.train_set.labels[:n]
        self.steps = steps
        self.run(min(steps, WARMUP_STEPS))

    def run(self, steps: int | None = None) -> tuple[float, int]:
        tr, x, y = self.trainer, self.x, self.y
        tr.model.train()
        amp = tr.cfg.amp and tr.device.type == "cuda"
        steps = steps or self.steps
        _sync(tr.device)
        start = time.perf_counter()
        for _ in range(steps):
            with torch.autocast(tr.device.type, dtype=torch.bfloat16, enabled=amp):
                out = tr.model(x)
                loss = F.nll_loss(out.float(), y)
            tr.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            tr.optimizer.step()
            tr.scheduler.step()
        _sync(tr.device)
        return time.perf_counter() - start, steps * len(y)


def _build(name: str, root: Path, cfg: TrainConfig, steps: int, rounds: int):
    if name == "baseline":
        return BaselinePipeline(root, cfg, steps, rounds)
    if name == "model_step":
        return StepPipeline(root, cfg, steps, rounds)
    changes = {"tune_norm_contiguous": {"channels_last": False}, "tune_norm_torch_dropout": {"fast_dropout": False},
               "tune_norm_amp": {"amp": True}}.get(name, {})
    return TunePipeline(root, cfg.replace(**changes), steps, rounds)


def compare(root: Path, cfg: TrainConfig, names: list[str], steps: int, rounds: int, log: Callable = print) -> dict:
    """Time the named pipelines in interleaved rounds (the order rotates each round); medians and per-round ratios."""
    pipes = {}
    for name in names:
        log(f"  warming up {name} on {cfg.device}")
        pipes[name] = _build(name, root, cfg, steps, rounds)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            seconds, images = pipes[name].run()
            rates[name].append(images / seconds)
        log(f"  round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:,.0f} img/s" for k, v in rates.items()))
    per_round = lambda a, b: statistics.median(x / y for x, y in zip(rates[a], rates[b]))  # noqa: E731
    out: dict[str, Any] = {"pipelines": {}, "ratios": {}}
    for name in names:
        ips = statistics.median(rates[name])
        out["pipelines"][name] = {"images_per_s": ips, "sec_per_epoch": EPOCH_IMAGES / ips,
                                  "rounds_images_per_s": rates[name], "description": PIPELINES[name]}
        if "baseline" in rates:
            out["pipelines"][name]["vs_baseline"] = per_round(name, "baseline")
    ratios = out["ratios"]
    if "baseline" in rates and "tune_norm" in rates:
        ratios["tune_norm_vs_baseline"] = per_round("tune_norm", "baseline")
    if "model_step" in rates and "tune_norm" in rates:
        ratios["model_fraction"] = per_round("tune_norm", "model_step")  # = model-step time / epoch time
    if "tune_norm_contiguous" in rates:
        ratios["channels_last_speedup"] = per_round("tune_norm", "tune_norm_contiguous")
    if "tune_norm_torch_dropout" in rates and "tune_norm" in rates:
        ratios["fast_dropout_speedup"] = per_round("tune_norm", "tune_norm_torch_dropout")
    if "tune_norm_amp" in rates:
        ratios["amp_speedup"] = per_round("tune_norm_amp", "tune_norm")
    return out


# -- packing: N processes side by side -------------------------------------------------------------
def _pack_worker(conn, barrier, root: str, cfg_values: dict, steps: int, rounds: int) -> None:
    """A spawned trial stand-in: warm up, then time one pass each time the parent says run."""
    cfg = from_mapping(cfg_values)
    torch.set_num_threads(cfg.threads)  # as Ray's OMP_NUM_THREADS would, on CUDA too
    pipe = TunePipeline(Path(root), cfg, steps, rounds)
    conn.send("ready")
    while conn.recv() == "run":
        barrier.wait()
        start = time.time()
        seconds, images = pipe.run()
        conn.send((start, start + seconds, images))


def _recv(conn, proc, timeout: float = 900.0):
    deadline = time.monotonic() + timeout
    while not conn.poll(1.0):
        if not proc.is_alive():
            raise UserError(f"packing benchmark worker {proc.pid} died (exit code {proc.exitcode}); "
                            "rerun with --no-packing to skip that part")
        if time.monotonic() > deadline:
            raise UserError(f"packing benchmark worker {proc.pid} sent nothing for {timeout:.0f} s; "
                            "rerun with --no-packing to skip that part")
    try:
        return conn.recv()
    except EOFError:
        raise UserError(f"packing benchmark worker {proc.pid} died (exit code {proc.exitcode}); "
                        "rerun with --no-packing to skip that part") from None


def packing(root: Path, cfg: TrainConfig, layouts: list[tuple[int, int]], steps: int, rounds: int,
            log: Callable = print) -> list[dict]:
    """Aggregate images/s of ``procs`` concurrent trials with ``threads`` each, per (procs, threads) layout.

    Every process runs tune-norm's pipeline (spawned, warmed up first); the layouts take turns round by round, and
    a round's aggregate is all images over the span from the first start to the last finish.
    """
    ctx = mp.get_context("spawn")
    groups, barriers = [], []  # the parent keeps every barrier alive until its children have unpickled it
    try:
        for procs, threads in layouts:
            barrier, members = ctx.Barrier(procs), []
            barriers.append(barrier)
            for rank in range(procs):
                parent, child = ctx.Pipe()
                values = cfg.replace(threads=threads, seed=cfg.seed + rank).as_dict()
                proc = ctx.Process(target=_pack_worker, args=(child, barrier, str(root), values, steps, rounds),
                                   daemon=True)
                proc.start()
                child.close()
                members.append((proc, parent))
            groups.append(members)
        log(f"  packing: warming up {sum(p for p, _ in layouts)} spawned processes")
        for members in groups:
            for proc, conn in members:
                _recv(conn, proc)
        rates: list[list[float]] = [[] for _ in layouts]
        per_proc: list[list[float]] = [[] for _ in layouts]
        for r in range(rounds):
            for g in list(range(r % len(groups), len(groups))) + list(range(r % len(groups))):
                for _, conn in groups[g]:
                    conn.send("run")
                spans = [_recv(conn, proc) for proc, conn in groups[g]]
                total = sum(n for _, _, n in spans)
                rates[g].append(total / (max(e for _, e, _ in spans) - min(s for s, _, _ in spans)))
                per_proc[g].append(statistics.median(n / (e - s) for s, e, n in spans))
            log(f"  packing round {r + 1}/{rounds}: " + ", ".join(
                f"{p}x{t} {rates[i][-1]:,.0f} img/s" for i, (p, t) in enumerate(layouts)))
    finally:
        for members in groups:
            for _, conn in members:
                try:
                    conn.send("stop")
                except (OSError, BrokenPipeError):
                    pass
        for members in groups:
            for proc, _ in members:
                proc.join(timeout=30)
                if proc.is_alive():
                    proc.terminate()
    out = []
    for (procs, threads), agg, each in zip(layouts, rates, per_proc):
        ips = statistics.median(agg)
        out.append({"processes": procs, "threads": threads, "images_per_s": ips, "rounds_images_per_s": agg,
                    "per_process_images_per_s": statistics.median(each), "trials_per_hour": 3600 * ips / TRIAL_IMAGES})
    return out


def packing_verdict(rows: list[dict]) -> str:
    one, many = rows[0], rows[-1]
    gain = many["images_per_s"] / one["images_per_s"]
    better = many if gain > 1 else one
    return (f"{many['processes']} processes x {many['threads']} thread(s) give {gain:.2f}x the aggregate images/s of "
            f"{one['processes']} process x {one['threads']} threads; use cpus_per_trial={better['threads']}")


# -- the whole run ---------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    model = platform.processor() or ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")) or model
    except (OSError, StopIteration):
        pass
    info = {"cpu_model": model, "cpus": cpu_budget(), "torch": torch.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run(root: Path, *, device: str = "auto", threads: int = 0, batch_size: int = 64, steps: int = 200,
        rounds: int = 3, with_packing: bool = True, log: Callable = print) -> dict[str, Any]:
    """Measure on CPU and, where present, on CUDA; returns a plain dict (its fields are described in docs/bench.md)."""
    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"device must be auto, cpu or cuda, got {device!r}")
    bounds = (("steps", steps, 1), ("rounds", rounds, 1), ("batch size", batch_size, 1), ("threads", threads, 0))
    for name, value, low in bounds:
        if value < low:
            raise UserError(f"{name} must be at least {low}, got {value}")
    if device == "cuda":
        pick_device("cuda")  # a UserError where there is no GPU
    threads = threads or cpu_budget()
    base = TrainConfig(batch_size=batch_size, threads=threads, epochs=rounds)
    root = Path(root).resolve()
    data_mod.load_raw(root)  # verified once, up front: a bad folder is a one-line error
    before = torch.get_num_threads()
    results: dict[str, Any] = {
        "settings": {"device": device, "threads": threads, "batch_size": batch_size, "steps": steps, "rounds": rounds,
                     "epoch_images": EPOCH_IMAGES, "trial_images": TRIAL_IMAGES,
                     "note": f"timed {steps} steps of {batch_size} images per round, {rounds} interleaved round(s), "
                             f"medians; sec/epoch extrapolated to {EPOCH_IMAGES:,} images"},
        "machine": machine(),
        "load_average_before": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        if device in ("auto", "cpu"):
            log(f"CPU: {threads} thread(s), batch {batch_size}, {steps} steps x {rounds} rounds")
            cfg = base.replace(device="cpu")
            results["cpu"] = compare(root, cfg, ["baseline", "tune_norm", "model_step", "tune_norm_contiguous",
                                                      "tune_norm_torch_dropout"], steps, rounds, log)
            if with_packing and threads > 1:
                rows = packing(root, cfg, [(1, threads), (threads, 1)], steps, rounds, log)
                results["cpu"]["packing"] = {"layouts": rows, "verdict": packing_verdict(rows)}
            elif with_packing:
                results["cpu"]["packing"] = {"layouts": [], "verdict": "not measured (only 1 thread)"}
        if device in ("auto", "cuda") and torch.cuda.is_available():
            log(f"GPU: {torch.cuda.get_device_name(0)}, batch {batch_size}, {steps} steps x {rounds} rounds")
            cfg = base.replace(device="cuda")
            gpu = compare(root, cfg, ["baseline", "tune_norm", "model_step", "tune_norm_amp"], steps, rounds, log)
            if with_packing:
                cpus = cpu_budget()
                layouts = [(round(1 / s), max(1, cpus // round(1 / s))) for s in GPU_SHARES]
                rows = packing(root, cfg, layouts, steps, rounds, log)
                for row, share in zip(rows, GPU_SHARES):
                    row["gpu_per_trial"] = share
                gpu["packing"] = {"layouts": rows}
            results["gpu"] = gpu
        else:
            results["gpu"] = None
            results["gpu_note"] = ("not measured (no CUDA device)" if not torch.cuda.is_available()
                                   else "not measured (--device cpu)")
    finally:
        torch.set_num_threads(before)
    results["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return results


def command_line(device: str, threads: int, batch_size: int, steps: int, rounds: int, with_packing: bool) -> str:
    """The `tune-norm bench` command that repeats a run; ``threads`` is the count it ran with (never 0)."""
    return (f"tune-norm bench --device {device} --threads {threads} --batch-size {batch_size} --steps {steps} "
            f"--rounds {rounds} --{'' if with_packing else 'no-'}packing")


def bench(data: Path | None = None, *, device: str = "auto", threads: int = 0, batch_size: int = 64,
          steps: int = 200, rounds: int = 3, with_packing: bool = True, json_path: Path | None = None,
          log: Callable = print) -> Outcome:
    """`tune-norm bench`: :func:`run` on ``data`` (default $TUNE_NORM_DATA or ./data), the command that repeats it
    in the results, their markdown table for stdout, and the results as JSON in ``json_path`` (see :func:`told`)."""
    check_json_path(json_path)
    root = data_mod.resolve_root(data)
    results = run(root, device=device, threads=threads, batch_size=batch_size, steps=steps, rounds=rounds,
                  with_packing=with_packing, log=log)
    results["command"] = command_line(device, results["settings"]["threads"], batch_size, steps, rounds, with_packing)
    return told(results, markdown(results), json_path)


def check_json_path(json_path: Path | None) -> None:
    """Refuse a --json file that cannot be written before the bench spends minutes (nothing is created here)."""
    if json_path is None:
        return
    target, folder = Path(json_path), Path(json_path).parent
    if target.is_dir():
        raise UserError(f"--json {json_path} is a folder; give a file name, e.g. {target / 'bench.json'}")
    if not folder.is_dir():
        raise UserError(f"--json {json_path}: the folder {folder} does not exist; create it or pick another file")
    if not os.access(target if target.exists() else folder, os.W_OK):
        raise UserError(f"--json {json_path} cannot be written (no write permission); pick another file")


def told(results: dict[str, Any], text: str, json_path: Path | None = None) -> Outcome:
    """The end of a bench: ``text`` for stdout, and ``results`` written as JSON to ``json_path`` (where given) and
    named on stderr; a file that cannot be written is one error line and exit 2, the table still printed."""
    if json_path is None:
        return Outcome(text)
    try:
        Path(json_path).write_text(json.dumps(results, indent=2) + "\n")
    except OSError as e:
        return Outcome(text, [f"error: cannot write {json_path}: {e.strerror or e}"], exit_code=2)
    return Outcome(text, [f"results: {json_path}"])


# -- the markdown table ----------------------------------------------------------------------------
def _section(title: str, part: dict, device: str) -> list[str]:
    lines = [f"### {title}", "",
             "| pipeline | images/s (median) | s/epoch (60k, extrapolated) | vs baseline | best round |",
             "|---|---:|---:|---:|---:|"]
    for p in part["pipelines"].values():
        vs = f"{p['vs_baseline']:.2f}x" if "vs_baseline" in p else ""
        lines.append(f"| {p['description']} | {p['images_per_s']:,.0f} | {p['sec_per_epoch']:.1f} | {vs} | "
                     f"{max(p['rounds_images_per_s']):,.0f} |")
    labels = {
        "tune_norm_vs_baseline": ("tune-norm epoch speed-up over the baseline-style pipeline", "x"),
        "model_fraction": ("model-step time / tune-norm epoch time (share of the epoch in the model)", ""),
        "channels_last_speedup": ("channels_last on vs off (tune-norm)", "x"),
        "fast_dropout_speedup": ("PCG64 dropout masks vs torch's nn.Dropout (tune-norm)", "x"),
        "amp_speedup": ("AMP bf16 on vs off (tune-norm)", "x"),
    }
    lines += ["", "| ratio (median of per-round ratios) | value |", "|---|---:|"]
    for key, value in part["ratios"].items():
        text, unit = labels[key]
        lines.append(f"| {text} | {value:.2f}{unit} |")
    pack = part.get("packing")
    if pack and pack["layouts"]:
        share = "gpu_per_trial" in pack["layouts"][0]
        head = "| processes x threads | aggregate images/s | per process | trials/hour |"
        if share:
            head = "| GPU per trial " + head
        lines += ["", f"Packing on {device} (trials/hour: {TRIAL.epochs} epochs x {EPOCH_IMAGES - TRIAL.val_size:,} "
                      "training images, evaluation excluded):", "", head, "|" + "---:|" * (head.count("|") - 1)]
        for row in pack["layouts"]:
            cells = [f"{row['processes']} x {row['threads']}", f"{row['images_per_s']:,.0f}",
                     f"{row['per_process_images_per_s']:,.0f}", f"{row['trials_per_hour']:.2f}"]
            if share:
                cells.insert(0, f"{row['gpu_per_trial']:g}")
            lines.append("| " + " | ".join(cells) + " |")
    if pack and pack.get("verdict"):
        lines += ["", f"Packing verdict: {pack['verdict']}."]
    return lines + [""]


def markdown(results: dict[str, Any]) -> str:
    s, m = results["settings"], results["machine"]
    lines = [f"## tune-norm bench: batch {s['batch_size']}, {s['threads']} CPU thread(s), {s['steps']} steps x "
             f"{s['rounds']} rounds", "",
             f"Machine: {m['cpu_model'] or 'unknown CPU'}, {m['cpus']} CPUs, torch {m['torch']}"
             + (f", {m['gpu']}" if m.get("gpu") else "")
             + (f"; load average before {results['load_average_before'][0]:.2f}, "
                f"after {results['load_average_after'][0]:.2f}" if results.get("load_average_before") else ""), "",
             s["note"] + ".", ""]
    load = results.get("load_average_before")
    if load and load[0] >= 0.5 * m["cpus"]:
        lines += [f"Warning: the 1-minute load average was {load[0]:.2f} on {m['cpus']} CPUs before the run; other "
                  "processes share the CPUs, so absolute numbers are low and noisy: compare the per-round ratios.", ""]
    if results.get("command"):
        lines[2:2] = [f"Command: `{results['command']}`", ""]
    if "cpu" in results:
        lines += _section("CPU", results["cpu"], "cpu")
    if results.get("gpu"):
        lines += _section("GPU", results["gpu"], "cuda")
    else:
        lines.append(f"GPU: {results['gpu_note']}")
    return "\n".join(lines).rstrip() + "\n"
