"""`tune-norm cluster check`: a Ray cluster-launcher YAML checked offline, Ray's own schema plus our security policy.

Ray's part is what `ray up` runs before its first cloud call (ray.autoscaler._private.commands._bootstrap_config):
``prepare_config`` merges the provider's defaults.yaml (a file in the wheel) and the setup commands, and
``validate_config`` checks the JSON schema (ray/autoscaler/ray-schema.json), that head_node_type names a node type
and that the sum of min_workers fits max_workers. The steps after those reach AWS, so they are not called.

Our part is what Ray does not check and what costs money or security when wrong: no Ray port open to a wide
network, the dashboard on loopback, Ray's token authentication on for every `ray start`, a pre-created security
group (so `ray up` never adds its own "SSH from 0.0.0.0/0" rule), an explicit instance profile for every node type
whose policy file ships in cluster/iam/ and grants nothing account-wide, explicit CPU/GPU resources on GPU node
types, every file_mounts source present, and no placeholder or documentation-only value left in.
"""

from __future__ import annotations

import contextlib
import copy
import io
import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError
from .outcome import Outcome

# Ray's listening ports (the defaults of `ray start` and those cluster.yaml pins): none may be reachable from a
# wide CIDR. Nodes talk to each other through the security group's own intra-cluster rule.
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
# Address blocks reserved for documentation (RFC 5737, RFC 3849): a value in one was never filled in.
DOCUMENTATION_NETWORKS = [ipaddress.ip_network(n) for n in
                          ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]
PLACEHOLDER = re.compile(r"(?i:\bREPLACE\b|\bCHANGE[-_ ]?ME\b|\bYOUR[-_]|<your[^>]*>|\b(?:sg|ami|subnet|vpc)-x{4,})"
                         r"|EXAMPLE|\b123456789012\b")
# EC2 instance families with NVIDIA GPUs (g4ad has AMD GPUs, which torch's CUDA build cannot use).
GPU_FAMILIES = re.compile(r"^(g3s?|g4dn|g5|g5g|g6|g6e|gr6|g6f|gr6f|g7e?|p2|p3|p3dn|p4d|p4de|p5|p5e|p5en"
                          r"|p6[a-z0-9-]*)\.")
IAM_DIR = Path("cluster") / "iam"
TOKEN_FILE = "~/.ray/auth_token"


CHECKED = "Ray's schema, network, dashboard, token auth, resources, IAM, mounts, placeholders"


def check(path: Path, root: Path | None = None) -> Outcome:
    """`tune-norm cluster check`: one stdout line per finding, each naming the file, and a count on stderr with
    exit 1; or one line saying the file is ok and what was checked."""
    findings = check_cluster_file(path, root)
    if findings:
        return Outcome("".join(f"{path}: {line}\n" for line in findings),
                       [f"{len(findings)} problem(s) in {path}: fix them before `ray up`"], exit_code=1)
    return Outcome(f"{path}: ok ({CHECKED})\n")


def check_cluster_file(path: Path, root: Path | None = None) -> list[str]:
    """Every finding for a cluster YAML, one sentence each; empty when it may go to `ray up`.

    ``root`` is the directory `ray up` will run in (file_mounts sources and cluster/iam/ are relative to it);
    default: the YAML's own directory.
    """
    path = Path(path)
    root = (Path(root) if root is not None else path.parent).resolve()
    try:
        config = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"cluster config {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read cluster config {path}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        return [f"{path} is not valid YAML{at}: {getattr(e, 'problem', None) or e}"]
    if not isinstance(config, dict):
        return [f"{path} must hold a mapping of cluster settings, got {type(config).__name__}"]

    findings, prepared = ray_findings(config)
    rules = [lambda: policy_violations(config), lambda: placeholder_findings(config),
             lambda: mount_findings(config, root), lambda: iam_findings(config, root)]
    if prepared is not None:  # Ray's defaults can reintroduce what the file left out (a public dashboard)
        rules.insert(1, lambda: [f for f in _dashboard_violations(prepared) if f not in findings])
    for rule in rules:
        try:
            findings += rule()
        except (AttributeError, TypeError, ValueError, KeyError):
            if prepared is not None:
                raise
            # a shape Ray's schema has already refused (a list where a mapping belongs): that finding says it
    return findings


def ray_findings(config: dict) -> tuple[list[str], dict | None]:
    """Ray's own offline validation, in `ray up`'s order: (findings, the defaults-merged config or None)."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:  # Ray prints chatter meant for docker clusters ("File Mount ... refers to a file"): keep it out
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            prepared = prepare_config(copy.deepcopy(config))
            validate_config(prepared)
    except jsonschema.ValidationError as e:
        return [_schema_finding(e)], None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        try:  # prepare_config trips over some wrong shapes before the schema sees them: ask the schema itself
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                validate_config(copy.deepcopy(config))
        except jsonschema.ValidationError as schema_error:
            return [_schema_finding(schema_error)], None
        except Exception:  # noqa: BLE001 - the first error is the one to report
            pass
        return [f"Ray rejects the file: {str(e).strip() or type(e).__name__}"], None
    return [], prepared


def _schema_finding(error: Any) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "top level"
    return f"Ray's schema rejects the file at {where}: {error.message}"


def policy_violations(config: dict) -> list[str]:
    """Our rules on the configuration itself (no file system); an empty list means it passes."""
    return (_ingress_violations(config) + _security_group_violations(config) + _dashboard_violations(config)
            + _token_violations(config) + _sizing_violations(config) + _resource_violations(config))


# -- network -----------------------------------------------------------------------------------------------------
def _port_range(rule: dict) -> tuple[int, int]:
    """A rule's port range; protocol -1 (all traffic) or port -1 means every port."""
    low, high = rule.get("FromPort"), rule.get("ToPort")
    if str(rule.get("IpProtocol", "-1")) == "-1" or low in (None, -1) or high in (None, -1):
        return 0, 65535
    return int(low), int(high)


def _sources(rule: dict) -> list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network | None]]:
    """(label, network) for every address source of a rule; prefix lists have no known width (None)."""
    out = []
    for key, field in (("IpRanges", "CidrIp"), ("Ipv6Ranges", "CidrIpv6")):
        for r in rule.get(key, []):
            try:
                out.append((r[field], ipaddress.ip_network(r[field], strict=False)))
            except (KeyError, ValueError):
                out.append((str(r.get(field)), None))  # unreadable: treated as wide
    out += [(f"prefix list {r.get('PrefixListId')}", None) for r in rule.get("PrefixListIds", [])]
    return out  # UserIdGroupPairs (other security groups) are not address ranges: not checked here


def _ingress_violations(config: dict) -> list[str]:
    problems = []
    rules = ((config.get("provider") or {}).get("security_group") or {}).get("IpPermissions") or []
    for i, rule in enumerate(rules):
        low, high = _port_range(rule)
        proto = str(rule.get("IpProtocol", "-1")).lower()
        ports = f"ports {low}-{high}/{proto}"
        for label, net in _sources(rule):
            if net is not None and net.prefixlen == 0 and not (proto in ("tcp", "6") and low == high == 22):
                problems.append(f"security group rule {i}: {ports} open to the whole internet ({label}); "
                                "only tcp/22 may be")
            wide = net is None or net.prefixlen < NARROWEST_WIDE_PREFIX[net.version]
            hit = [name for name, (a, b) in RAY_PORTS.items() if low <= b and a <= high]
            if wide and hit:
                problems.append(f"security group rule {i}: Ray port(s) {', '.join(hit)} reachable from wide "
                                f"source {label}")
    return problems


def _security_group_violations(config: dict) -> list[str]:
    """A node type without its own group gets one that `ray up` creates, with SSH open to 0.0.0.0/0."""
    problems = []
    for name, node in (config.get("available_node_types") or {}).items():
        node_config = (node or {}).get("node_config") or {}
        if not any(k in node_config for k in ("SecurityGroupIds", "LaunchTemplate", "NetworkInterfaces")):
            problems.append(f"node type {name} names no pre-created security group (SecurityGroupIds or a "
                            "LaunchTemplate holding one), so `ray up` would create one with SSH open to 0.0.0.0/0")
    return problems


# -- Ray start commands ------------------------------------------------------------------------------------------
def _ray_starts(commands: list | None) -> list[tuple[str, str]]:
    """(whole command, the `ray start ...` part) for each `ray start` in a list of shell commands."""
    out = []
    for cmd in commands or []:
        for part in re.split(r"[;&|\n]+", str(cmd)):
            if re.search(r"\bray start\b", part):
                out.append((str(cmd), part.strip()))
    return out


def _dashboard_violations(config: dict) -> list[str]:
    heads = [part for _, part in _ray_starts(config.get("head_start_ray_commands"))
             if "--head" in part.split()]
    if not heads:
        return ["head_start_ray_commands has no `ray start --head`"]
    problems = []
    for cmd in heads:
        hosts = [h.strip("'\"") for h in re.findall(r"--dashboard-host(?:=|\s+)(\S+)", cmd)]
        if not hosts:
            problems.append(f"head_start_ray_commands: `{cmd}` does not pass --dashboard-host=127.0.0.1, so the "
                            "dashboard (which runs code for whoever reaches it) is not bound to loopback")
        problems += [f"head_start_ray_commands: `{cmd}` binds the dashboard to {h}, not 127.0.0.1" for h in hosts
                     if h not in LOCAL_DASHBOARD_HOSTS]
    return problems


def _token_violations(config: dict) -> list[str]:
    """Ray's token authentication on for the head and every worker, and a token that reaches the workers."""
    problems = []
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = _ray_starts(config.get(key))
        if not starts:
            problems.append(f"{key} has no `ray start`")
        for whole, part in starts:
            before = whole[:whole.index(part)] + part.split("ray start")[0]
            if re.search(r"RAY_AUTH_MODE=[\"']?disabled", whole):
                problems.append(f"{key}: `{part}` turns Ray's token authentication off (RAY_AUTH_MODE=disabled)")
            elif not re.search(r"RAY_AUTH_MODE=[\"']?token\b", before):
                problems.append(f"{key}: `{part}` runs without Ray's token authentication; set "
                                "RAY_AUTH_MODE=token before it (export RAY_AUTH_MODE=token; ray start ...)")
    workers = " ".join(map(str, config.get("worker_start_ray_commands") or []))
    synced = {str(p).rstrip("/") for p in config.get("cluster_synced_files") or []}
    mounted = {str(p).rstrip("/") for p in (config.get("file_mounts") or {})}
    if (TOKEN_FILE not in synced | mounted and "~/.ray" not in synced | mounted
            and not re.search(r"RAY_AUTH_TOKEN(_PATH)?=", workers)):
        problems.append(f"no token reaches the workers: list {TOKEN_FILE} in cluster_synced_files (copied from the "
                        "head) or file_mounts, or set RAY_AUTH_TOKEN_PATH in worker_start_ray_commands")
    return problems


# -- node types --------------------------------------------------------------------------------------------------
def _sizing_violations(config: dict) -> list[str]:
    problems = []
    types = config.get("available_node_types") or {}
    for name, node in types.items():
        node = node or {}
        low, high = node.get("min_workers", 0), node.get("max_workers", config.get("max_workers", 0))
        if isinstance(low, int) and isinstance(high, int) and low > high:
            problems.append(f"node type {name}: min_workers {low} > max_workers {high}")
    head = types.get(config.get("head_node_type")) or {}
    if (head.get("resources") or {}).get("CPU") != 0:
        problems.append("the head node type must advertise resources {CPU: 0}, so that no trial runs on the head")
    return problems


def _resource_violations(config: dict) -> list[str]:
    """GPU node types declare CPU and GPU themselves (Ray's auto-detection asks AWS; trial packing needs them)."""
    problems = []
    for name, node in (config.get("available_node_types") or {}).items():
        node = node or {}
        itype = str((node.get("node_config") or {}).get("InstanceType", ""))
        resources = node.get("resources") or {}
        gpu_type = bool(GPU_FAMILIES.match(itype))
        if gpu_type and not (isinstance(resources.get("GPU"), int) and resources["GPU"] >= 1):
            problems.append(f"node type {name} ({itype}) has GPUs but does not declare resources.GPU, so trials "
                            "asking for a GPU fraction would wait for it or train on its CPUs")
        if gpu_type and "CPU" not in resources:
            problems.append(f"node type {name} ({itype}) does not declare resources.CPU, which sets how many "
                            "trials share its GPU")
        if itype and not gpu_type and resources.get("GPU"):
            problems.append(f"node type {name} advertises GPU: {resources['GPU']} but {itype} has no NVIDIA GPU")
    return problems


# -- values left unfilled ----------------------------------------------------------------------------------------
def _strings(node: Any, where: str = "") -> list[tuple[str, str]]:
    """(dotted path, text) for every key and string value in a parsed YAML tree."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            sub = f"{where}.{k}" if where else str(k)
            out.append((sub, str(k)))
            out += _strings(v, sub)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _strings(v, f"{where}[{i}]")
    elif isinstance(node, str):
        out.append((where, node))
    return out


def _documentation_address(text: str) -> str | None:
    for token in re.findall(r"[0-9A-Fa-f:.]*[.:][0-9A-Fa-f:.]+(?:/\d{1,3})?", text):
        try:
            net = ipaddress.ip_network(token, strict=False)
        except ValueError:
            continue
        if any(net.version == d.version and net.subnet_of(d) for d in DOCUMENTATION_NETWORKS):
            return token
    return None


def placeholder_findings(config: dict) -> list[str]:
    """Values copied from documentation and never filled in: REPLACE, YOUR-..., example ids and addresses."""
    problems = []
    for where, text in _strings(config):
        found = PLACEHOLDER.search(text)
        if found:
            context = f" ({text[:60]!r})" if text != found.group(0) else ""
            problems.append(f"{where} still holds the placeholder {found.group(0)!r}{context}; fill it in")
            continue
        address = _documentation_address(text)
        if address:
            problems.append(f"{where} is {address}, a documentation-only address that reaches nobody; "
                            "put the real one")
    return problems


# -- files the YAML points at ------------------------------------------------------------------------------------
def _local(root: Path, source: str) -> Path:
    path = Path(source).expanduser()
    return path if path.is_absolute() else root / path


def mount_findings(config: dict, root: Path) -> list[str]:
    """Every file_mounts source must exist where `ray up` runs, or the upload fails after instances start."""
    problems = []
    mounts = config.get("file_mounts") or {}
    if not isinstance(mounts, dict):
        return []  # Ray's schema reports it
    for remote, local in mounts.items():
        if not _local(root, str(local)).exists():
            problems.append(f"file_mounts {remote}: the local source {local} does not exist under {root}")
    return problems


def _profile_name(profile: dict) -> str | None:
    if profile.get("Name"):
        return str(profile["Name"])
    arn = str(profile.get("Arn") or "")
    return arn.rsplit("/", 1)[-1] if ":instance-profile/" in arn else None


def iam_findings(config: dict, root: Path) -> list[str]:
    """Each node type runs under an instance profile whose policy ships in cluster/iam/<profile>.json."""
    problems = []
    head = config.get("head_node_type")
    for name, node in (config.get("available_node_types") or {}).items():
        profile = ((node or {}).get("node_config") or {}).get("IamInstanceProfile")
        if not isinstance(profile, dict) or not _profile_name(profile):
            default = (" so `ray up` attaches its default ray-autoscaler-v1 role (EC2 and S3 full access)"
                       if name == head else " so its trials cannot write their checkpoints to S3")
            problems.append(f"node type {name} has no IamInstanceProfile Name,{default}")
            continue
        policy = _local(root, str(IAM_DIR / f"{_profile_name(profile)}.json"))
        if not policy.exists():
            problems.append(f"node type {name} runs as instance profile {_profile_name(profile)} but its policy "
                            f"{policy.relative_to(root) if policy.is_relative_to(root) else policy} is missing")
            continue
        problems += [f"{policy.name}: {p}" for p in policy_document_findings(policy)]
    return problems


def _listed(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def policy_document_findings(path: Path) -> list[str]:
    """An IAM policy grants nothing account-wide: no iam:PassRole, S3 or wildcard action on every resource."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return [f"not a readable JSON policy ({e})"]
    statements = document.get("Statement") if isinstance(document, dict) else None
    if not isinstance(statements, list) or not statements:
        return ["has no Statement list"]
    problems = []
    for i, st in enumerate(statements):
        if not isinstance(st, dict) or st.get("Effect") != "Allow":
            continue
        actions = [a.lower() for a in _listed(st.get("Action", []))]
        resources = _listed(st.get("Resource", []))
        everything = any(r == "*" or r.startswith("arn:aws:s3:::*") for r in resources)
        if "*" in actions or any(a in ("iam:*", "s3:*", "ec2:*") for a in actions):
            problems.append(f"statement {i} allows a whole service ({', '.join(actions)}); list the actions")
        if everything and any(a.startswith(("iam:", "s3:")) for a in actions):
            problems.append(f"statement {i} allows {', '.join(a for a in actions if a.startswith(('iam:', 's3:')))}"
                            " on every resource; name the role or the bucket")
    return problems
