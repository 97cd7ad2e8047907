"""cluster.yaml checked offline (Ray's own validation, our policy check) and a real two-node search.

Ray's validation is what `ray up` runs before its first cloud call (ray.autoscaler._private.commands.
_bootstrap_config): ``prepare_config`` merges the provider's defaults.yaml (a local file), merges the
setup commands and fills per-type min/max workers; ``validate_config`` checks the JSON schema
(ray/autoscaler/ray-schema.json), that head_node_type names a node type, and that the sum of
min_workers fits the global max_workers. The steps after those two are the ones that reach AWS
(``fillout_available_node_types_resources`` calls ec2.describe_instance_types; ``bootstrap_aws``
creates the IAM profile, key pair, subnet choice and security group), so they are not called here;
the tests block the network while validating to prove it.

Ray does not check everything we care about, so ``policy_violations`` adds our own rules:
no ingress open to the whole internet except SSH, no Ray port open to any wide CIDR, the dashboard
bound to 127.0.0.1, and min_workers <= max_workers per node type (Ray only compares the sum of
min_workers with the global max_workers).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"

# Ray's listening ports (the defaults of `ray start` and those cluster.yaml pins): none may be reachable
# from a wide CIDR. Nodes talk to each other through the security group's own intra-cluster rule.
RAY_PORTS = {
    "GCS 6379": (6379, 6379),
    "object/node manager 8076-8077": (8076, 8077),
    "dashboard 8265": (8265, 8265),
    "Ray client 10001": (10001, 10001),
    "worker ports 10002-19999": (10002, 19999),
    "dashboard agent 52365": (52365, 52365),
}
# A CIDR broader than this (fewer prefix bits) counts as wide: more than one /24 (IPv4) or /64 (IPv6).
NARROWEST_WIDE_PREFIX = {4: 24, 6: 64}
LOCAL_DASHBOARD_HOSTS = {"127.0.0.1", "localhost"}


# -- helpers ----------------------------------------------------------------------------------------
def load_cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def ray_validate(config: dict) -> dict:
    """Ray's own offline checks, in `ray up`'s order; returns the prepared (defaults-merged) config."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _port_range(rule: dict) -> tuple[int, int]:
    """A rule's port range; protocol -1 (all traffic) or port -1 means every port."""
    low, high = rule.get("FromPort"), rule.get("ToPort")
    if str(rule.get("IpProtocol", "-1")) == "-1" or low in (None, -1) or high in (None, -1):
        return 0, 65535
    return int(low), int(high)


def _sources(rule: dict) -> list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network | None]]:
    """(label, network) for every address source of a rule; prefix lists have no known width (None)."""
    out = [(r["CidrIp"], ipaddress.ip_network(r["CidrIp"], strict=False)) for r in rule.get("IpRanges", [])]
    out += [(r["CidrIpv6"], ipaddress.ip_network(r["CidrIpv6"], strict=False)) for r in rule.get("Ipv6Ranges", [])]
    out += [(f"prefix list {r.get('PrefixListId')}", None) for r in rule.get("PrefixListIds", [])]
    return out  # UserIdGroupPairs (other security groups) are not address ranges: not checked here


def _ingress_violations(config: dict) -> list[str]:
    problems = []
    rules = (config.get("provider") or {}).get("security_group", {}).get("IpPermissions", [])
    for i, rule in enumerate(rules):
        low, high = _port_range(rule)
        proto = str(rule.get("IpProtocol", "-1")).lower()
        ports = f"ports {low}-{high}/{proto}"
        for label, net in _sources(rule):
            if net is not None and net.prefixlen == 0 and not (proto in ("tcp", "6") and low == high == 22):
                problems.append(f"rule {i}: {ports} open to the whole internet ({label}); only tcp/22 may be")
            wide = net is None or net.prefixlen < NARROWEST_WIDE_PREFIX[net.version]
            hit = [name for name, (a, b) in RAY_PORTS.items() if low <= b and a <= high]
            if wide and hit:
                problems.append(f"rule {i}: Ray port(s) {', '.join(hit)} reachable from wide source {label}")
    return problems


def _dashboard_violations(config: dict) -> list[str]:
    starts = [part.strip() for cmd in config.get("head_start_ray_commands") or []
              for part in re.split(r"[;&|\n]+", cmd) if re.search(r"\bray start\b", part)]
    heads = [s for s in starts if "--head" in s.split()]
    if not heads:
        return ["head_start_ray_commands has no `ray start --head`"]
    problems = []
    for cmd in heads:
        hosts = [h.strip("'\"") for h in re.findall(r"--dashboard-host(?:=|\s+)(\S+)", cmd)]
        if not hosts:
            problems.append(f"`{cmd}` does not pass --dashboard-host=127.0.0.1")
        problems += [f"`{cmd}` binds the dashboard to {h}, not 127.0.0.1" for h in hosts
                     if h not in LOCAL_DASHBOARD_HOSTS]
    return problems


def _sizing_violations(config: dict) -> list[str]:
    problems = []
    types = config.get("available_node_types") or {}
    for name, node in types.items():
        low, high = node.get("min_workers", 0), node.get("max_workers", config.get("max_workers", 0))
        if low > high:
            problems.append(f"node type {name}: min_workers {low} > max_workers {high}")
    head = types.get(config.get("head_node_type"), {})
    if head.get("resources", {}).get("CPU") != 0:
        problems.append("the head node type must advertise resources {CPU: 0} (no trials on the head)")
    return problems


def policy_violations(config: dict) -> list[str]:
    """Our own rules on top of Ray's validation; an empty list means the config passes."""
    return _ingress_violations(config) + _dashboard_violations(config) + _sizing_violations(config)


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt (boto3 included) fails the test: validation must stay offline."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access during offline validation: {args[1:]!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _ssh_rule(cidr: str = "203.0.113.10/32", low: int = 22, high: int = 22, proto: str = "tcp", v6=False) -> dict:
    ranges = {"Ipv6Ranges": [{"CidrIpv6": cidr}]} if v6 else {"IpRanges": [{"CidrIp": cidr}]}
    return {"IpProtocol": proto, "FromPort": low, "ToPort": high, **ranges}


def _with_rules(*rules: dict) -> dict:
    config = load_cluster()
    config["provider"]["security_group"]["IpPermissions"] = list(rules)
    return config


# -- Ray's validation -------------------------------------------------------------------------------
def test_cluster_yaml_passes_ray_validation(no_network):
    config = load_cluster()
    prepared = ray_validate(config)
    types = prepared["available_node_types"]
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in types
    assert types["head"]["resources"] == {"CPU": 0}
    workers = [t for name, t in types.items() if name != prepared["head_node_type"]]
    assert workers and all(t["resources"] == {"CPU": 4, "GPU": 1} for t in workers)
    assert all(0 <= t["min_workers"] <= t["max_workers"] <= prepared["max_workers"] for t in workers)
    # our start commands survive the defaults merge (the AWS defaults bind the dashboard to 0.0.0.0)
    assert prepared["head_start_ray_commands"] == config["head_start_ray_commands"]
    setup = " ".join(prepared["worker_setup_commands"])
    assert "torch==2.14.1" in setup and "torchvision==0.29.1" in setup and "pip install -q -e ~/tune-norm" in setup
    mounts = prepared["file_mounts"]
    assert "~/data" in mounts and all(mounts[f"~/tune-norm/{p}"] == f"./{p}" for p in ("tune_norm", "pyproject.toml"))
    assert all((ROOT / mounts[f"~/tune-norm/{p}"]).exists() for p in ("tune_norm", "search_spaces", "pyproject.toml"))
    assert "." not in mounts.values()  # `ray up` would hash every file under it, the .venv included
    assert "boto3" in " ".join(prepared["head_setup_commands"])


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c.update(max_worker=c.pop("max_workers")), "'max_worker' was unexpected"),
    (lambda c: c.update(head_node_typ=c["head_node_type"]), "'head_node_typ' was unexpected"),
    (lambda c: c.update(head_node_type="ray.head.default"), "must be one of `available_node_types`"),
    # min_workers 5 > max_workers 4 of the node type: Ray sees it only as sum(min_workers) > global max_workers
    (lambda c: c["available_node_types"]["gpu_worker"].update(min_workers=5), "smaller than the sum of `min_workers`"),
    (lambda c: c["available_node_types"]["gpu_worker"]["resources"].update(GPU=0.5), "0.5 is not of type 'integer'"),
], ids=["misspelled-top-level-key", "misspelled-head-node-type-key", "head-type-names-no-node-type",
        "min-workers-over-global-max", "fractional-node-resource"])
def test_ray_validation_rejects_mutations(no_network, mutate, message):
    import jsonschema

    config = load_cluster()
    mutate(config)
    with pytest.raises((jsonschema.ValidationError, ValueError), match=re.escape(message)):
        ray_validate(config)


def test_min_over_max_within_global_limit_needs_our_policy_check(no_network):
    """min_workers 3 > max_workers 2 on a node type while the global max is 4: Ray accepts it."""
    config = load_cluster()
    config["available_node_types"]["gpu_worker"].update(min_workers=3, max_workers=2)
    ray_validate(config)  # passes Ray (if this ever raises, Ray checks it itself now)
    assert policy_violations(config) == ["node type gpu_worker: min_workers 3 > max_workers 2"]


# -- our policy check -------------------------------------------------------------------------------
def test_shipped_config_passes_policy(no_network):
    config = load_cluster()
    assert policy_violations(config) == []
    assert policy_violations(ray_validate(config)) == []
    rules = config["provider"]["security_group"]["IpPermissions"]
    assert [(_port_range(r), r["IpProtocol"]) for r in rules] == [((22, 22), "tcp")]  # SSH only


@pytest.mark.parametrize("rules, expected", [
    ([_ssh_rule("0.0.0.0/0")], []),  # what Ray's own default SSH rule looks like: allowed
    ([_ssh_rule("203.0.113.10/32", 8265, 8265)], []),  # a single host is not wide (still: use port forwarding)
    ([_ssh_rule("0.0.0.0/0", 8265, 8265)], ["whole internet", "dashboard 8265"]),
    ([_ssh_rule("0.0.0.0/0", 443, 443)], ["whole internet"]),
    ([_ssh_rule("0.0.0.0/0", 22, 22, "udp")], ["whole internet"]),
    ([_ssh_rule("10.0.0.0/8", 6379, 6379)], ["GCS 6379"]),
    ([_ssh_rule("198.51.100.0/22", 6000, 9000)], ["GCS 6379", "object/node manager", "dashboard 8265"]),
    ([_ssh_rule("::/0", -1, -1, "-1", v6=True)], ["whole internet", "GCS 6379", "Ray client 10001"]),
    ([{"IpProtocol": "tcp", "FromPort": 10001, "ToPort": 10001, "PrefixListIds": [{"PrefixListId": "pl-1"}]}],
     ["Ray client 10001"]),
], ids=["ssh-world-ok", "dashboard-one-host-ok", "dashboard-world", "https-world", "udp22-world",
        "gcs-private-slash8", "range-covering-ray-ports", "all-traffic-ipv6-world", "client-prefix-list"])
def test_policy_flags_ingress(rules, expected):
    problems = policy_violations(_with_rules(*rules))
    text = "\n".join(problems)
    assert all(e in text for e in expected), problems
    assert bool(problems) == bool(expected), problems


@pytest.mark.parametrize("command, expected", [
    ("ray start --head --port=6379 --dashboard-host=0.0.0.0", "binds the dashboard to 0.0.0.0"),
    ("ulimit -n 65536; ray start --head --dashboard-host '::'", "binds the dashboard to ::"),
    ("ray start --head --port=6379", "does not pass --dashboard-host=127.0.0.1"),
    ("ray start --address=$RAY_HEAD_IP:6379", "no `ray start --head`"),
])
def test_policy_flags_dashboard(command, expected):
    config = load_cluster()
    config["head_start_ray_commands"] = ["ray stop", command]
    assert any(expected in p for p in policy_violations(config)), policy_violations(config)


def test_policy_catches_defaults_when_start_commands_are_dropped(no_network):
    """Deleting head_start_ray_commands passes Ray, but its AWS defaults bind the dashboard to 0.0.0.0."""
    config = load_cluster()
    del config["head_start_ray_commands"]
    prepared = ray_validate(config)
    assert any("binds the dashboard to 0.0.0.0" in p for p in policy_violations(prepared))


def test_policy_flags_head_with_cpus():
    config = load_cluster()
    config["available_node_types"]["head"]["resources"] = {}
    assert any("CPU: 0" in p for p in policy_violations(config))


# -- a real two-node cluster on this machine --------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data_root() -> Path | None:
    for candidate in (os.environ.get("TUNE_NORM_DATA"), ROOT.parent / "shared" / "data", ROOT / "data"):
        if candidate and (Path(candidate) / "MNIST" / "raw").is_dir():
            return Path(candidate).resolve()
    return None


def _procs_under(roots: list[str]) -> list[int]:
    """Pids whose command line names one of our temp dirs, plus all their descendants (workers, agents)."""
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
    return sorted(ours - {os.getpid()})


def _stop_cluster(roots: list[str]) -> list[int]:
    """Stop only the Ray processes of this test's cluster (`ray stop --force` would kill every Ray process
    on the machine, other users' clusters included); returns any pid that survived SIGKILL."""
    pids = set(_procs_under(roots))  # all at once, before a dying raylet's workers are re-parented
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 3.0)):
        pids |= set(_procs_under(roots))
        for pid in sorted(p for p in pids if _alive(p)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
    return sorted(p for p in pids if _alive(p))


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # zombie: done
    except (OSError, IndexError):
        return False


def _ray(args: list[str], env: dict, timeout: float = 60) -> str:
    ray_bin = Path(sys.executable).with_name("ray")
    out = subprocess.run([str(ray_bin), *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"ray {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


@pytest.fixture
def two_node_cluster():
    """A Ray head (1 CPU, custom resource `head`) and a second raylet (1 CPU) on this machine.

    Both report the same node IP; trials tell them apart by the Ray node id they report.
    Token auth: `ray start --head` turns it on whenever ~/.ray/auth_token exists, but a driver given an
    explicit address (tune-norm --address host:port) does not, so every process here gets its own token
    through RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (independent of ~/.ray)."""
    base = tempfile.mkdtemp(prefix="tn-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    head_dir, node_dir = f"{base}/head", f"{base}/node"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0",
               OMP_NUM_THREADS="1")
    port = _free_port()
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
              "--object-store-memory=100000000"]
    try:
        _ray(["start", "--head", f"--port={port}", '--resources={"head": 1}', "--dashboard-host=127.0.0.1",
              "--include-dashboard=false", f"--dashboard-port={_free_port()}", f"--temp-dir={head_dir}",
              f"--dashboard-agent-listen-port={_free_port()}", *common], env)
        _ray(["start", f"--address=127.0.0.1:{port}", f"--temp-dir={node_dir}",
              f"--dashboard-agent-listen-port={_free_port()}", *common], env)
        yield {"address": f"127.0.0.1:{port}", "env": env, "temp_dirs": {"head": head_dir, "node": node_dir}}
    finally:
        survivors = _stop_cluster([head_dir, node_dir])
        shutil.rmtree(base, ignore_errors=True)
        assert not survivors, f"Ray processes still running after teardown: {survivors}"


@pytest.mark.slow
def test_search_spreads_trials_over_two_nodes(two_node_cluster, tmp_path):
    data = _data_root()
    if data is None:
        pytest.skip("MNIST not found: set TUNE_NORM_DATA to a folder holding MNIST/raw/")
    storage = tmp_path / "smoke"
    started = time.monotonic()
    out = subprocess.run(
        [str(Path(sys.executable).with_name("tune-norm")), "search", str(ROOT / "search_spaces" / "smoke.yaml"),
         "--address", two_node_cluster["address"], "--storage", str(storage), "--data", str(data)],
        cwd=tmp_path, env=two_node_cluster["env"], capture_output=True, text=True, timeout=240)
    log = f"{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    assert out.returncode == 0, log
    assert "4 trials, 0 errored" in out.stdout, log
    assert "Connecting to existing Ray cluster" in out.stdout + out.stderr, log  # joined ours, started none

    trial_dirs = sorted(storage.glob("trial_*"))
    assert len(trial_dirs) == 4, [p.name for p in storage.iterdir()]
    nodes = Counter()  # trials per Ray node id (both nodes share one IP)
    for trial in trial_dirs:
        rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines() if line.strip()]
        assert rows, f"{trial.name}: empty result.json"
        assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1)), trial.name
        assert all("val_acc" in r and "node_id" in r for r in rows), rows[-1]
        nodes.update({r["node_id"] for r in rows})
    assert len(nodes) == 2, f"trials ran on {dict(nodes)}, not on both nodes"
    assert time.monotonic() - started < 200
