"""A private Ray cluster on this machine for tests: Ray's fake multinode autoscaler, started and stopped by us.

`ray.cluster_utils.AutoscalingCluster` would do, but it runs `ray stop --force`, which kills every Ray on the
machine (other people's included), and its config template is missing from the wheel. So: our own config,
our own GCS port and temp dir, token auth with our own token, and teardown of only the processes we started.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
HEAD_TYPE = "ray.head.default"  # the fake provider tags its head with this type, whatever the config says


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def autoscaling_config(gcs_address: str, worker_types: dict, idle_timeout_s: float) -> dict:
    """A complete fake_multinode config (the monitor validates it as `ray up` would, without defaults)."""
    types = {HEAD_TYPE: {"resources": {"CPU": 0}, "node_config": {}, "min_workers": 0, "max_workers": 0}}
    types.update({name: {"node_config": {}, "min_workers": 0, **t} for name, t in worker_types.items()})
    return {
        "cluster_name": "tune-norm-fake", "max_workers": sum(t["max_workers"] for t in worker_types.values()),
        "upscaling_speed": 1.0, "idle_timeout_minutes": idle_timeout_s / 60,
        "provider": {"type": "fake_multinode", "gcs_address": gcs_address, "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True},
        "auth": {"ssh_user": "ubuntu"}, "available_node_types": types, "head_node_type": HEAD_TYPE,
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [], "setup_commands": [],
        "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


class FakeCluster:
    """A head with no CPU (like cluster.yaml's) whose autoscaler launches fake worker nodes on this machine."""

    def __init__(self, worker_types: dict, idle_timeout_s: float = 5.0):
        root = Path(os.environ.get("RAY_TMPDIR") or "/tmp")
        root.mkdir(parents=True, exist_ok=True)
        self.base = tempfile.mkdtemp(prefix="tn-fake-", dir=root)  # short: Ray's socket paths must fit 107 bytes
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.config = Path(self.base) / "autoscaler.json"
        self.config.write_text(json.dumps(autoscaling_config(self.address, worker_types, idle_timeout_s)))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0",
                        OMP_NUM_THREADS="1")

    def start(self) -> FakeCluster:
        env = {**self.env, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
        cmd = [RAY, "start", "--head", f"--port={self.port}", "--num-cpus=0", "--node-ip-address=127.0.0.1",
               f"--autoscaling-config={self.config}", f"--temp-dir={self.base}/ray", "--include-dashboard=false",
               "--disable-usage-stats", "--object-store-memory=100000000", f"--dashboard-port={free_port()}",
               f"--dashboard-agent-listen-port={free_port()}"]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        return self

    def driver_env(self) -> dict:
        """Environment for a `tune-norm ... --address auto` that must find this cluster and no other."""
        return {**self.env, "RAY_ADDRESS": self.address}

    def nodes(self) -> list[dict]:
        """Alive nodes: {'id', 'resources'} each, asked of the cluster by a short-lived driver."""
        code = ("import json, ray; ray.init(address=%r, logging_level='ERROR', log_to_driver=False); "  # noqa: UP031
                "print(json.dumps([{'id': n['NodeID'], 'resources': n['Resources']} for n in ray.nodes() "
                "if n['Alive']]))") % self.address
        out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    def wait_for_nodes(self, count: int, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            nodes = self.nodes()
            if len(nodes) == count or time.monotonic() > deadline:
                return nodes
            time.sleep(1)

    def stop(self) -> list[int]:
        """Stop only this cluster's processes (`ray stop` would stop everyone's); returns pids that survived."""
        survivors = stop_processes([self.base])
        shutil.rmtree(self.base, ignore_errors=True)
        return survivors


def _procs_under(roots: list[str]) -> set[int]:
    """Pids whose command line names one of our folders, plus all their descendants (workers, fake nodes)."""
    parents, ours = {}, set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if any(root in cmdline for root in roots):
            ours.add(int(entry.name))
    grew = True
    while grew:
        kids = {pid for pid, ppid in parents.items() if ppid in ours} - ours
        ours |= kids
        grew = bool(kids)
    return ours - {os.getpid()}


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stop_processes(roots: list[str]) -> list[int]:
    pids = _procs_under(roots)  # all at once, before a dying raylet's workers are re-parented
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 3.0)):
        pids |= _procs_under(roots)
        for pid in sorted(p for p in pids if _alive(p)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
    return sorted(p for p in pids if _alive(p))
