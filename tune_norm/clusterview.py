"""What the Ray cluster a search joins is and may become: its nodes, its GPUs, the node types its autoscaler adds.

A search joining a cluster (--address) must decide two things before any trial starts, and both depend on
nodes that may not exist yet: with ``min_workers: 0`` the GPU workers appear only once trials wait for them.
So the view reads the autoscaler's own config, the file its monitor process was started with
(``--autoscaling-config``; ``ray up`` puts it at ~/ray_bootstrap_config.yaml on the head, where the driver runs).
Where that file cannot be read, the view says so (``node_types`` is None) and the search asks the user.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import UserError

DEFAULT_GPU_FRACTION = 0.25  # four small trials share a GPU (see docs/cluster.md, "Cost and GPU packing")


@dataclass(frozen=True)
class ClusterView:
    """A running cluster as the driver sees it: alive nodes now, and what the autoscaler may launch."""

    driver_ip: str
    node_ips: tuple[str, ...]  # one per alive node
    gpus: float  # GPUs of the alive nodes
    node_types: dict[str, dict[str, float]] | None  # launchable worker types -> resources; {}: none; None: unknown

    @property
    def gpu_types(self) -> list[str]:
        return sorted(name for name, res in (self.node_types or {}).items() if res.get("GPU", 0) > 0)

    def gpus_per_trial(self) -> tuple[float, str]:
        """The GPU share of a trial that did not ask for one, and a sentence saying why (empty: nothing to say).

        Raises UserError where the cluster has no GPU up and the node types it may launch are unknown."""
        if self.gpus >= 1:
            return DEFAULT_GPU_FRACTION, ""
        if self.node_types is None:
            raise UserError("the Ray cluster has no GPU node up and tune-norm cannot read its autoscaler's node types "
                            "here, so it cannot tell whether trials should wait for GPUs; pass --gpus-per-trial "
                            f"({DEFAULT_GPU_FRACTION:g} packs four trials on a GPU, 0 trains on CPUs)")
        if not self.gpu_types:
            return 0.0, ""
        name = self.gpu_types[0]
        return DEFAULT_GPU_FRACTION, (
            f"no GPU node is up yet, but the autoscaler can launch {', '.join(self.gpu_types)} "
            f"(GPU: {self.node_types[name]['GPU']:g}), so each trial asks for {DEFAULT_GPU_FRACTION:g} GPU "
            "and waits for one; pass --gpus-per-trial to choose")

    def storage_problem(self, folder: str) -> str | None:
        """Why a local ``folder`` cannot hold a search on this cluster, or None where every node shares it:
        all nodes are on this machine and the autoscaler cannot add any."""
        others = sorted(set(self.node_ips) - {self.driver_ip})
        if others:
            why = f"the Ray cluster has nodes on other machines ({', '.join(others)})"
        elif self.node_types is None:
            why = "tune-norm cannot read the Ray cluster's autoscaler config here, so nodes on other machines may join"
        elif self.node_types:
            why = f"the Ray cluster's autoscaler can add nodes ({', '.join(sorted(self.node_types))})"
        else:
            return None
        return (f"--storage {folder} is a folder on this machine, but {why}, and their trials cannot write there; "
                "pass --storage s3://BUCKET/PREFIX (any URI pyarrow reads), or "
                f"file://{folder} if it is a shared filesystem mounted at that path on every node")


def read() -> ClusterView:
    """The view of the cluster this process is connected to (after ray.init)."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    gcs_port = ray.get_runtime_context().gcs_address.rpartition(":")[2]
    return ClusterView(driver_ip=ray.util.get_node_ip_address(),
                       node_ips=tuple(str(n["NodeManagerAddress"]) for n in nodes),
                       gpus=float(sum(n.get("Resources", {}).get("GPU", 0) for n in nodes)),
                       node_types=launchable_node_types(gcs_port))


def launchable_node_types(gcs_port: str, proc: Path = Path("/proc")) -> dict[str, dict[str, float]] | None:
    """Worker node types the autoscaler of the cluster at ``gcs_port`` may launch, from the config file its
    monitor process was started with: {} for a cluster started by hand (no --autoscaling-config), None
    where no such monitor runs on this machine or its config cannot be read."""
    for entry in proc.iterdir() if proc.is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            args = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0")]
        except OSError:
            continue
        if not any(a.endswith("/monitor.py") for a in args):
            continue
        values = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
        if values.get("gcs-address", "").rpartition(":")[2] != gcs_port:
            continue
        if "autoscaling-config" not in values:
            return {}
        config_path = Path(os.path.expanduser(values["autoscaling-config"]))
        try:
            if not config_path.is_absolute():
                config_path = (entry / "cwd").resolve() / config_path
            config = yaml.safe_load(config_path.read_text())
        except (OSError, yaml.YAMLError) as e:
            print(f"warning: cannot read the autoscaler config {config_path}: {e}", file=sys.stderr)
            return None
        return node_types_of(config)
    return None


def node_types_of(config: dict) -> dict[str, dict[str, float]]:
    """Worker node types of an autoscaler config that may have nodes (max_workers > 0), with their resources."""
    if not isinstance(config, dict) or not int(config.get("max_workers", 0) or 0):
        return {}
    head = config.get("head_node_type")
    types = config.get("available_node_types") or {}
    return {name: {k: float(v) for k, v in (t.get("resources") or {}).items()}
            for name, t in types.items()
            if name != head and int(t.get("max_workers", config.get("max_workers", 0)) or 0) > 0}
