"""cluster.yaml checked offline by `tune-norm cluster check` (Ray's own validation, our policy), and a real
two-node search with token authentication.

Ray's validation is what `ray up` runs before its first cloud call (ray.autoscaler._private.commands.
_bootstrap_config): ``prepare_config`` merges the provider's defaults.yaml (a local file), merges the
setup commands and fills per-type min/max workers; ``validate_config`` checks the JSON schema
(ray/autoscaler/ray-schema.json), that head_node_type names a node type, and that the sum of
min_workers fits the global max_workers. The steps after those two are the ones that reach AWS, so
they are not called; the tests block the network while validating to prove it.

Our own rules (tune_norm/cluster.py) are fed mutated copies of the shipped file: a few through the real
CLI, the rest through the library function.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from conftest import run_cli
from raycluster import free_port, stop_processes
from tune_norm import cluster
from tune_norm.cluster import (
    check_cluster_file,
    placeholder_findings,
    policy_document_findings,
    policy_violations,
    ray_findings,
)

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"


# -- helpers ----------------------------------------------------------------------------------------
def load_cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def ray_validate(config: dict) -> dict:
    """Ray's own offline checks, in `ray up`'s order; returns the prepared (defaults-merged) config."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def check_config(config: dict, tmp_path: Path, root: Path = ROOT) -> list[str]:
    """The whole check (Ray + policy + files) on a config written to a temporary YAML."""
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return check_cluster_file(path, root)


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt (boto3 included) fails the test: validation must stay offline."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access during offline validation: {args[1:]!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _ssh_rule(cidr: str = "198.18.0.10/32", low: int = 22, high: int = 22, proto: str = "tcp", v6=False) -> dict:
    ranges = {"Ipv6Ranges": [{"CidrIpv6": cidr}]} if v6 else {"IpRanges": [{"CidrIp": cidr}]}
    return {"IpProtocol": proto, "FromPort": low, "ToPort": high, **ranges}


def _with_rules(*rules: dict) -> dict:
    """The shipped config plus a security group that `ray up` would create with these extra rules."""
    config = load_cluster()
    config["provider"]["security_group"] = {"GroupName": "tune-norm-ray", "IpPermissions": list(rules)}
    return config


# -- the shipped file -------------------------------------------------------------------------------
def test_cluster_yaml_passes_ray_validation(no_network):
    config = load_cluster()
    prepared = ray_validate(config)
    types = prepared["available_node_types"]
    assert prepared["provider"]["type"] == "aws"
    assert types["head"]["resources"] == {"CPU": 0}
    workers = [t for name, t in types.items() if name != prepared["head_node_type"]]
    assert workers and all(t["resources"] == {"CPU": 4, "GPU": 1} for t in workers)
    assert all(0 <= t["min_workers"] <= t["max_workers"] <= prepared["max_workers"] for t in workers)
    # our start commands survive the defaults merge (the AWS defaults bind the dashboard to 0.0.0.0)
    assert prepared["head_start_ray_commands"] == config["head_start_ray_commands"]
    setup = " ".join(prepared["worker_setup_commands"])
    assert "-c ~/tune-norm/constraints.txt" in setup and '-e "$HOME/tune-norm[cluster]"' in setup
    mounts = prepared["file_mounts"]
    assert all(mounts[f"~/tune-norm/{p}"] == f"./{p}" for p in ("tune_norm", "pyproject.toml", "constraints.txt"))
    assert "." not in mounts.values()  # `ray up` would hash every file under it, the .venv included
    assert prepared["cluster_synced_files"] == ["~/.ray/auth_token"]


def test_shipped_config_passes_the_check(no_network):
    assert check_cluster_file(CLUSTER_YAML) == []
    config = load_cluster()
    assert policy_violations(config) == [] and policy_violations(ray_validate(config)) == []
    assert "security_group" not in config["provider"]  # no group for Ray to create (and open SSH to the world)


def test_cli_check_passes_on_the_shipped_file():
    out = run_cli("cluster", "check", "cluster.yaml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("cluster.yaml: ok"), out.stdout
    assert "WARN" not in out.stdout + out.stderr  # Ray's docker-only file-mount chatter stays out


def test_shipped_iam_policies():
    """Head: EC2 for the autoscaler, PassRole on the worker role only, S3 on the bucket prefix; worker: S3 only."""
    head = json.loads((ROOT / "cluster/iam/tune-norm-head.json").read_text())
    worker = json.loads((ROOT / "cluster/iam/tune-norm-worker.json").read_text())
    grants = lambda doc: {a: st["Resource"] for st in doc["Statement"]  # noqa: E731
                          for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])}
    assert grants(head)["iam:PassRole"] == "arn:aws:iam::*:role/tune-norm-worker"
    assert {a for a in grants(head) if a.startswith("iam:")} == {"iam:PassRole"}
    assert {"ec2:RunInstances", "ec2:TerminateInstances", "ec2:DescribeInstances"} <= set(grants(head))
    for doc in (head, worker):
        s3 = {a: r for a, r in grants(doc).items() if a.startswith("s3:")}
        assert s3["s3:PutObject"] == "arn:aws:s3:::TUNE_NORM_BUCKET/tune-norm/*", s3
        assert set(s3.values()) <= {"arn:aws:s3:::TUNE_NORM_BUCKET", "arn:aws:s3:::TUNE_NORM_BUCKET/tune-norm/*"}
    assert not [a for a in grants(worker) if not a.startswith("s3:")]
    assert policy_document_findings(ROOT / "cluster/iam/tune-norm-head.json") == []
    assert policy_document_findings(ROOT / "cluster/iam/tune-norm-worker.json") == []



def test_docker_alternative_in_the_docs_passes_the_check(no_network, tmp_path):
    """docs/cluster.md's docker block, applied to cluster.yaml as the docs say, passes Ray's and our checks."""
    docs = (ROOT / "docs" / "cluster.md").read_text()
    section = docs[docs.index("## Docker instead of a venv"):]
    block = yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0])
    assert block["docker"]["image"] == "rayproject/ray:2.60.0-py311-gpu"
    config = load_cluster()
    config.update(block)
    assert check_config(config, tmp_path) == []
    prepared = ray_validate(config)
    assert prepared["docker"]["container_name"] == "tune_norm"
    assert any("-c ~/tune-norm/constraints.txt" in c for c in prepared["worker_setup_commands"])

# -- mutated copies through the real CLI ---------------------------------------------------------------
def _yaml_text_mutation(old: str, new: str):
    def mutate(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)
    return mutate


@pytest.mark.parametrize("mutate, expected", [
    (_yaml_text_mutation("--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0"),
     "binds the dashboard to 0.0.0.0, not 127.0.0.1"),
    (_yaml_text_mutation("export RAY_AUTH_MODE=token; ulimit -n 65536;\n    ray start --address",
                         "ulimit -n 65536;\n    ray start --address"),
     "worker_start_ray_commands: `ray start --address=$RAY_HEAD_IP:6379 --object-manager-port=8076 "
     "--disable-usage-stats` runs without Ray's token authentication"),
    (_yaml_text_mutation("Name: tune-norm-worker", "Name: REPLACE-with-your-profile"),
     "available_node_types.gpu_worker.node_config.IamInstanceProfile.Name still holds the placeholder 'REPLACE'"),
], ids=["public-dashboard", "worker-without-token-auth", "placeholder-left"])
def test_cli_check_rejects_mutated_copies(tmp_path, mutate, expected):
    copy_path = tmp_path / "cluster.yaml"
    copy_path.write_text(mutate(CLUSTER_YAML.read_text()))
    out = run_cli("cluster", "check", str(copy_path), "--root", str(ROOT))
    assert out.returncode == 1, out.stdout + out.stderr
    assert expected in out.stdout, out.stdout
    lines = out.stdout.strip().splitlines()
    assert all(line.startswith(f"{copy_path}: ") for line in lines), lines
    assert re.fullmatch(r"\d+ problem\(s\) in .*: fix them before `ray up`", out.stderr.strip()), out.stderr
    assert "Traceback" not in out.stderr


def test_cli_check_names_a_missing_file(tmp_path):
    out = run_cli("cluster", "check", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: cluster config {tmp_path / 'nope.yaml'} does not exist"


def test_check_says_ok_or_one_line_per_finding_and_their_count(no_network, tmp_path):
    ok = cluster.check(CLUSTER_YAML)
    assert ok.out == f"{CLUSTER_YAML}: ok ({cluster.CHECKED})\n" and ok.err == [] and ok.exit_code == 0
    bad = tmp_path / "cluster.yaml"
    bad.write_text(CLUSTER_YAML.read_text().replace("--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0", 1)
                   .replace("Name: tune-norm-worker", "Name: REPLACE-me", 1))
    findings = check_cluster_file(bad, ROOT)
    done = cluster.check(bad, ROOT)
    assert len(findings) >= 2 and done.exit_code == 1
    assert done.out == "".join(f"{bad}: {line}\n" for line in findings)
    assert done.err == [f"{len(findings)} problem(s) in {bad}: fix them before `ray up`"]


# -- mutated copies through the library ----------------------------------------------------------------
def _node(config, name="gpu_worker"):
    return config["available_node_types"][name]


MUTATIONS = {
    "yaml-syntax": (None, "is not valid YAML at line"),
    "misspelled-top-level-key": (lambda c: c.update(max_worker=c.pop("max_workers")),
                                 "Ray's schema rejects the file at top level: Additional properties are not allowed "
                                 "('max_worker' was unexpected)"),
    "head-type-names-no-node-type": (lambda c: c.update(head_node_type="ray.head.default"),
                                     "must be one of `available_node_types`"),
    "fractional-node-resource": (lambda c: _node(c)["resources"].update(GPU=0.5),
                                 "at available_node_types.gpu_worker.resources.GPU: 0.5 is not of type 'integer'"),
    "head-token-auth-off": (lambda c: c.update(head_start_ray_commands=[
        "ray stop", "RAY_AUTH_MODE=disabled ray start --head --dashboard-host=127.0.0.1"]),
        "turns Ray's token authentication off (RAY_AUTH_MODE=disabled)"),
    "token-not-synced": (lambda c: c.update(cluster_synced_files=[]), "no token reaches the workers"),
    "dashboard-host-missing": (lambda c: c.update(head_start_ray_commands=[
        "export RAY_AUTH_MODE=token; ray start --head --port=6379"]), "does not pass --dashboard-host=127.0.0.1"),
    "start-commands-dropped": (lambda c: c.pop("head_start_ray_commands"),
                               "binds the dashboard to 0.0.0.0"),  # Ray's AWS defaults do that
    "gpu-resources-implicit": (lambda c: _node(c).pop("resources"),
                               "node type gpu_worker (g5.xlarge) has GPUs but does not declare resources.GPU"),
    "gpu-on-cpu-instance": (lambda c: _node(c)["node_config"].update(InstanceType="m5.xlarge"),
                            "advertises GPU: 1 but m5.xlarge has no NVIDIA GPU"),
    "head-with-cpus": (lambda c: _node(c, "head").update(resources={}), "must advertise resources {CPU: 0}"),
    "min-over-max": (lambda c: _node(c).update(min_workers=3, max_workers=2),
                     "node type gpu_worker: min_workers 3 > max_workers 2"),
    "no-security-group": (lambda c: _node(c)["node_config"].pop("LaunchTemplate"),
                          "node type gpu_worker names no pre-created security group"),
    "head-default-role": (lambda c: _node(c, "head")["node_config"].pop("IamInstanceProfile"),
                          "node type head has no IamInstanceProfile Name, so `ray up` attaches its default "
                          "ray-autoscaler-v1 role (EC2 and S3 full access)"),
    "iam-policy-missing": (lambda c: _node(c)["node_config"].update(IamInstanceProfile={"Name": "tune-norm-gpu"}),
                           "runs as instance profile tune-norm-gpu but its policy cluster/iam/tune-norm-gpu.json "
                           "is missing"),
    "example-account-id": (lambda c: _node(c)["node_config"].update(IamInstanceProfile={
        "Arn": "arn:aws:iam::123456789012:instance-profile/tune-norm-worker"}), "placeholder '123456789012'"),
    "your-bucket-in-a-command": (lambda c: c["setup_commands"].append("aws s3 ls s3://YOUR-BUCKET/"),
                                 "still holds the placeholder 'YOUR-'"),
    "placeholder-ami": (lambda c: _node(c)["node_config"].update(ImageId="ami-xxxxxxxx"),
                        "still holds the placeholder 'ami-xxxxxxxx'"),
    "documentation-ssh-address": (lambda c: c["provider"].update(security_group={
        "GroupName": "g", "IpPermissions": [_ssh_rule("203.0.113.10/32")]}),
        "provider.security_group.IpPermissions[0].IpRanges[0].CidrIp is 203.0.113.10/32, a documentation-only "
        "address"),
    "missing-data-mount": (lambda c: c["file_mounts"].update({"~/data": "./data"}),
                           "file_mounts ~/data: the local source ./data does not exist"),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_check_rejects_mutation(no_network, tmp_path, name):
    mutate, expected = MUTATIONS[name]
    if mutate is None:
        broken = CLUSTER_YAML.read_text().replace("max_workers: 4\n", "max_workers: [4\n", 1)
        (tmp_path / "cluster.yaml").write_text(broken)
        findings = check_cluster_file(tmp_path / "cluster.yaml", ROOT)
    else:
        config = load_cluster()
        mutate(config)
        findings = check_config(config, tmp_path)
    assert any(expected in f for f in findings), findings
    assert all("\n" not in f for f in findings)  # one line each


@pytest.mark.parametrize("change", [{"available_node_types": [1, 2]}, {"file_mounts": "./tune_norm"},
                                    {"head_start_ray_commands": "ray start --head"}, {"provider": None}])
def test_check_survives_shapes_ray_refuses(no_network, tmp_path, change):
    config = load_cluster()
    config.update(change)
    findings = check_config(config, tmp_path)
    key = next(iter(change))
    assert findings[0].startswith(f"Ray's schema rejects the file at {key}: "), findings  # not a Python error


def test_min_over_max_within_global_limit_needs_our_policy_check(no_network):
    """min_workers 3 > max_workers 2 on a node type while the global max is 4: Ray accepts it."""
    config = load_cluster()
    config["available_node_types"]["gpu_worker"].update(min_workers=3, max_workers=2)
    assert ray_findings(config)[0] == []  # passes Ray (if this ever fails, Ray checks it itself now)
    assert policy_violations(config) == ["node type gpu_worker: min_workers 3 > max_workers 2"]


@pytest.mark.parametrize("statement, expected", [
    ({"Effect": "Allow", "Action": "iam:PassRole", "Resource": "*"}, "allows iam:passrole on every resource"),
    ({"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": "arn:aws:s3:::*"},
     "allows s3:getobject, s3:putobject on every resource"),
    ({"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::b/tune-norm/*"}, "allows a whole service (s3:*)"),
    ({"Effect": "Allow", "Action": "*", "Resource": "*"}, "allows a whole service (*)"),
], ids=["passrole-any-role", "s3-any-bucket", "s3-star", "admin"])
def test_check_rejects_broad_iam_policy(no_network, tmp_path, statement, expected):
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "cluster", root / "cluster")
    for p in ("tune_norm", "search_spaces"):
        (root / p).mkdir(parents=True)
    for p in ("pyproject.toml", "constraints.txt", "README.md"):
        (root / p).write_text("")
    head = root / "cluster/iam/tune-norm-head.json"
    doc = json.loads(head.read_text())
    doc["Statement"].append(statement)
    head.write_text(json.dumps(doc))
    findings = check_config(load_cluster(), tmp_path, root)
    assert any(f.startswith("tune-norm-head.json: statement 5 ") and expected in f for f in findings), findings


# -- our policy on security-group rules -------------------------------------------------------------
@pytest.mark.parametrize("rules, expected", [
    ([_ssh_rule("0.0.0.0/0")], []),  # what Ray's own default SSH rule looks like: allowed by the rule check
    ([_ssh_rule("198.18.0.10/32", 8265, 8265)], []),  # a single host is not wide (still: use port forwarding)
    ([_ssh_rule("0.0.0.0/0", 8265, 8265)], ["whole internet", "dashboard 8265"]),
    ([_ssh_rule("0.0.0.0/0", 443, 443)], ["whole internet"]),
    ([_ssh_rule("0.0.0.0/0", 22, 22, "udp")], ["whole internet"]),
    ([_ssh_rule("10.0.0.0/8", 6379, 6379)], ["GCS 6379"]),
    ([_ssh_rule("198.18.0.0/22", 6000, 9000)], ["GCS 6379", "object/node manager", "dashboard 8265"]),
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
    ("ray start --head --dashboard-host=127.0.0.1", "runs without Ray's token authentication"),
    ("ray start --head --dashboard-host=127.0.0.1; export RAY_AUTH_MODE=token", "runs without Ray's token auth"),
])
def test_policy_flags_head_start(command, expected):
    config = load_cluster()
    config["head_start_ray_commands"] = ["ray stop", command]
    assert any(expected in p for p in policy_violations(config)), policy_violations(config)


@pytest.mark.parametrize("text, found", [
    ("REPLACE me", True), ("s3://your-bucket/x", True), ("<your-ip>/32", True), ("sg-xxxxxxxx", True),
    ("AKIAIOSFODNN7EXAMPLE", True), ("192.0.2.1", True), ("2001:db8::1/128", True), ("198.51.100.0/24", True),
    ("s3://results-7/tune-norm", False), ("10.0.0.1/32", False), ("ray start --port=6379", False),
    ("replacement", False), ("REPLACE-with-yours", True),
])
def test_placeholder_detection(text, found):
    assert bool(placeholder_findings({"key": text})) == found


# -- a real two-node cluster on this machine --------------------------------------------------------
def _data_root() -> Path | None:
    for candidate in (os.environ.get("TUNE_NORM_DATA"), ROOT.parent / "shared" / "data", ROOT / "data"):
        if candidate and (Path(candidate) / "MNIST" / "raw").is_dir():
            return Path(candidate).resolve()
    return None


def _ray(args: list[str], env: dict, timeout: float = 60) -> str:
    ray_bin = Path(sys.executable).with_name("ray")
    out = subprocess.run([str(ray_bin), *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"ray {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


@pytest.fixture
def two_node_cluster():
    """A Ray head (1 CPU, custom resource `head`) and a second raylet (1 CPU) on this machine.

    Both report the same node IP; trials tell them apart by the Ray node id they report.
    Token auth as cluster.yaml sets it up: the head's setup command generates ~/.ray/auth_token (HOME is a
    temporary folder here), and every `ray start` and the driver run with RAY_AUTH_MODE=token and read it."""
    base = tempfile.mkdtemp(prefix="tn-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    head_dir, node_dir = f"{base}/head", f"{base}/node"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=f"{base}/home", PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1")
    (token_setup,) = load_cluster()["head_setup_commands"]
    made = subprocess.run(["bash", "-c", token_setup], env=env, capture_output=True, text=True, timeout=60)
    token = Path(env["HOME"], ".ray", "auth_token")
    assert made.returncode == 0 and len(token.read_text().strip()) >= 32, made.stderr
    assert token.stat().st_mode & 0o077 == 0  # readable by its owner only
    env["RAY_AUTH_MODE"] = "token"
    port = free_port()
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
              "--object-store-memory=100000000"]
    try:
        _ray(["start", "--head", f"--port={port}", '--resources={"head": 1}', "--dashboard-host=127.0.0.1",
              "--include-dashboard=false", f"--dashboard-port={free_port()}", f"--temp-dir={head_dir}",
              f"--dashboard-agent-listen-port={free_port()}", *common], env)
        _ray(["start", f"--address=127.0.0.1:{port}", f"--temp-dir={node_dir}",
              f"--dashboard-agent-listen-port={free_port()}", *common], env)
        yield {"address": f"127.0.0.1:{port}", "env": env, "temp_dirs": {"head": head_dir, "node": node_dir}}
    finally:
        survivors = stop_processes([head_dir, node_dir])
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


def _dashboard_installed() -> bool:
    """ray[default]'s extras (the dashboard that serves Ray jobs) are importable."""
    return all(importlib.util.find_spec(m) is not None for m in ("aiohttp", "aiohttp_cors", "opencensus"))


@pytest.mark.slow
@pytest.mark.skipif(not _dashboard_installed(),
                    reason="needs the cluster extra (ray[default]) for Ray jobs: pip install -e '.[cluster]'")
def test_job_submit_ships_the_working_dir_to_driver_and_trials(tmp_path):
    """docs/cluster.md step 2 on a local head: token as cluster.yaml makes it, a job without it is refused, and
    `ray job submit --working-dir .` runs the submitted copy's code in the driver and in the trials."""
    data = _data_root()
    if data is None:
        pytest.skip("MNIST not found: set TUNE_NORM_DATA to a folder holding MNIST/raw/")
    base = tempfile.mkdtemp(prefix="tn-job-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=f"{base}/home", PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1")
    (token_setup,) = load_cluster()["head_setup_commands"]
    assert subprocess.run(["bash", "-c", token_setup], env=env, timeout=60).returncode == 0
    work = tmp_path / "checkout"  # what --working-dir uploads: the project, with a change not installed anywhere
    for name in ("tune_norm", "search_spaces"):
        shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    marker = f"WORKDIR-{secrets.token_hex(4)}"
    with open(work / "tune_norm" / "search.py", "a") as f:
        f.write(f"\nprint({marker!r}, __file__, flush=True)\n")
    dashboard = free_port()
    head_dir = f"{base}/head"
    try:
        _ray(["start", "--head", f"--port={free_port()}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
              "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--temp-dir={head_dir}",
              f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats",
              "--object-store-memory=100000000"], {**env, "RAY_AUTH_MODE": "token"})
        submit = [str(Path(sys.executable).with_name("ray")), "job", "submit", "--address",
                  f"http://127.0.0.1:{dashboard}", "--working-dir", "."]
        laptop = {**env, "HOME": f"{base}/laptop"}  # a client with no ~/.ray of its own
        refused = subprocess.run([*submit, "--", "echo", "hi"], cwd=work, env=laptop, capture_output=True,
                                 text=True, timeout=120)
        assert refused.returncode != 0 and "Missing authentication token" in refused.stdout + refused.stderr
        laptop.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=f"{base}/home/.ray/auth_token")
        out = subprocess.run([*submit, "--", "tune-norm", "search", "search_spaces/smoke.yaml", "--address", "auto",
                              "--data", str(data), "--storage", str(tmp_path / "store")],
                             cwd=work, env=laptop, capture_output=True, text=True, timeout=400)
        log = out.stdout + out.stderr
        assert out.returncode == 0 and "4 trials, 0 errored" in log, log[-4000:]
        shipped = [line for line in log.splitlines() if marker in line]
        assert shipped and all("working_dir_files" in line for line in shipped), shipped
        assert any("(pid=" in line for line in shipped), shipped  # a trial worker imported the shipped code too
    finally:
        survivors = stop_processes([head_dir])
        shutil.rmtree(base, ignore_errors=True)
        assert not survivors, f"Ray processes still running after teardown: {survivors}"
