"""FLOPs of the model step counted from the layer shapes, and the CPU's fp32 peak from /proc/cpuinfo."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

BACKWARD_FACTOR = 3  # forward + backward ~ 3x forward: backward computes the input gradient and the weight gradient
FMA_PIPES = 2  # assumed FMA units per core (Intel server cores and AMD Zen 4/5 have two)
STEP_RULE = ("conv/linear multiply-accumulates x 2 per forward pass; a training step = 3 x forward (backward: the "
             "input gradient and the weight gradient, each as costly as the forward); norms, ReLU, pooling, dropout "
             "and the optimizer are not counted (a few percent of the arithmetic, memory-bound)")


def forward_flops(model: nn.Module, input_shape: tuple[int, ...] = (1, 1, 28, 28)) -> int:
    """FLOPs of one forward pass over ``input_shape``: 2 x MACs of every Conv2d and Linear, from their shapes."""
    total = 0

    def conv(m: nn.Conv2d, _inp, out) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += 2 * out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear(m: nn.Linear, _inp, out) -> None:
        nonlocal total
        total += 2 * out.numel() * m.in_features

    hooks = [m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else linear)
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros(input_shape, dtype=p.dtype, device=p.device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return total


def step_flops_per_image(model: nn.Module) -> int:
    """FLOPs of one training step per image: BACKWARD_FACTOR x the forward pass (see STEP_RULE)."""
    return BACKWARD_FACTOR * forward_flops(model)


@dataclass(frozen=True)
class CpuPeak:
    """fp32 peak = cores x clock x FLOPs/cycle/core; ``isa`` and ``assumption`` say how FLOPs/cycle was chosen."""

    cores: int
    ghz: float
    flops_per_cycle: int
    isa: str
    assumption: str

    @property
    def gflops(self) -> float:
        return self.cores * self.ghz * self.flops_per_cycle


def cpu_peak(cores: int, cpuinfo: str | None = None) -> CpuPeak:
    """The fp32 peak of ``cores`` cores of this CPU, from /proc/cpuinfo's flags and clock.

    FLOPs/cycle/core = fp32 lanes of the widest FMA (AVX-512: 16, AVX2: 8, SSE: 4) x 2 (an FMA is two FLOPs)
    x FMA_PIPES, but AVX-512 on AMD is counted at 256-bit width: Zen 4 splits 512-bit ops in two, so its peak
    is the AVX2 one (32). The clock is 'cpu MHz' (the VM's nominal clock; turbo is not counted).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    vendor = fields.get("vendor_id", "")
    try:
        ghz = float(fields["cpu MHz"]) / 1000
    except (KeyError, ValueError):
        ghz = float("nan")
    if "avx512f" in flags and "AMD" not in vendor:
        lanes, isa, note = 16, "AVX-512 FMA", "two 512-bit FMA pipes per core"
    elif "avx512f" in flags:
        lanes, isa, note = 8, "AVX-512 FMA (AMD)", ("AMD AVX-512 counted as two 256-bit FMA pipes (Zen 4 splits "
                                                   "512-bit ops; a Zen 5 server core with full 512-bit pipes has 2x)")
    elif "fma" in flags and "avx2" in flags:
        lanes, isa, note = 8, "AVX2 FMA", "two 256-bit FMA pipes per core (one-pipe parts have half)"
    else:
        lanes, isa, note = 4, "SSE (no FMA flag)", "4 lanes x 2 FLOPs x 2 pipes, an upper bound without FMA"
    per_cycle = lanes * 2 * FMA_PIPES
    return CpuPeak(cores=cores, ghz=ghz, flops_per_cycle=per_cycle, isa=isa,
                   assumption=f"{cores} core(s) x {ghz:.2f} GHz ('cpu MHz', no turbo) x {per_cycle} fp32 FLOP/cycle "
                              f"({isa}: {note})")


def threads_or_cores(threads: int) -> int:
    """The cores a step with ``threads`` threads may use: no more than this process's CPUs."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(threads, cpus))
