"""`tune-norm cluster setup` and Ray's own `ray up` bootstrap of cluster.yaml, against a real AWS API on localhost.

moto's server (`moto[server]`, threaded, on 127.0.0.1) answers S3, IAM and EC2 calls as AWS would. After the setup
made the bucket, roles, security group and launch template, Ray's ``bootstrap_aws`` (the part of `ray up` that
talks to AWS before any instance starts) runs on the shipped cluster.yaml: it must create no security group of its
own and keep our instance profiles. The same bootstrap on a node type without a pre-created group shows what the
`cluster check` rule prevents: Ray creates a group with SSH open to 0.0.0.0/0.
"""

from __future__ import annotations

import copy
import re
import socket
from pathlib import Path

import pytest
import yaml

from conftest import run_cli
from tune_norm.cluster_aws import LAUNCH_TEMPLATE, PROFILES, SECURITY_GROUP, AwsSetup, setup_aws
from tune_norm.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
REGION = "us-west-2"
MY_CIDR = "198.18.7.10/32"  # benchmarking range (RFC 2544): not a documentation address, reaches nobody here


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def aws(monkeypatch, tmp_path):
    """A moto server on localhost, with boto3 (and Ray's cached boto3 clients) pointed at it."""
    from moto.server import ThreadedMotoServer
    from ray.autoscaler._private.aws import config as ray_aws_config
    from ray.autoscaler._private.aws import utils as ray_aws_utils

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    import urllib.request  # moto keeps its state per process: start every test from an empty account

    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/moto-api/reset", method="POST"))
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION, "HOME": str(tmp_path / "home")}
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    caches = (ray_aws_utils.resource_cache, ray_aws_utils.client_cache, ray_aws_config._get_subnets_or_die)
    for cache in caches:
        cache.cache_clear()
    import boto3

    clients = {name: boto3.client(name, region_name=REGION) for name in ("s3", "iam", "ec2")}
    image = clients["ec2"].describe_images(Owners=["amazon"])["Images"][0]["ImageId"]  # moto has no DLAMI
    try:
        yield {"env": env, "image": image, **clients}
    finally:
        for cache in caches:
            cache.cache_clear()
        server.stop()


def _bootstrap(config: dict) -> dict:
    """What `ray up` does before launching anything: Ray's offline checks, then its AWS bootstrap."""
    from ray.autoscaler._private.aws.config import bootstrap_aws
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return bootstrap_aws(prepared)


def _groups(ec2) -> dict[str, dict]:
    return {g["GroupName"]: g for g in ec2.describe_security_groups()["SecurityGroups"]}


def test_setup_then_ray_bootstrap_creates_no_open_group(aws):
    cluster = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    done = setup_aws("tn-results", MY_CIDR, REGION, ROOT / "cluster" / "iam", image=aws["image"], log=lambda _: None)
    ec2, iam, s3 = aws["ec2"], aws["iam"], aws["s3"]

    group = _groups(ec2)[SECURITY_GROUP]
    assert done.security_group == group["GroupId"] and done.launch_template == LAUNCH_TEMPLATE
    rules = sorted(group["IpPermissions"], key=lambda r: r["IpProtocol"])
    assert [(r["IpProtocol"], r.get("FromPort"), [x["CidrIp"] for x in r.get("IpRanges", [])],
             [x["GroupId"] for x in r.get("UserIdGroupPairs", [])]) for r in rules] == [
        ("-1", None, [], [group["GroupId"]]), ("tcp", 22, [MY_CIDR], [])]
    head = iam.get_role_policy(RoleName="tune-norm-head", PolicyName="tune-norm-head")["PolicyDocument"]
    passrole = [st for st in head["Statement"] if st["Action"] == "iam:PassRole"]
    assert [st["Resource"] for st in passrole] == ["arn:aws:iam::*:role/tune-norm-worker"]
    worker = iam.get_role_policy(RoleName="tune-norm-worker", PolicyName="tune-norm-worker")["PolicyDocument"]
    assert {st["Resource"] for st in worker["Statement"]} == {"arn:aws:s3:::tn-results",
                                                              "arn:aws:s3:::tn-results/tune-norm/*"}
    for name in PROFILES:
        roles = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Roles"]
        assert [r["RoleName"] for r in roles] == [name]
    assert s3.get_public_access_block(Bucket="tn-results")["PublicAccessBlockConfiguration"]["BlockPublicPolicy"]

    again = setup_aws("tn-results", MY_CIDR, REGION, ROOT / "cluster" / "iam", log=lambda _: None)
    assert again == done  # idempotent: found, not duplicated
    assert len(ec2.describe_launch_templates()["LaunchTemplates"]) == 1

    before = set(_groups(ec2))
    boot = _bootstrap(cluster)
    assert set(_groups(ec2)) == before  # `ray up` made no group of its own
    assert _groups(ec2)[SECURITY_GROUP]["IpPermissions"] == group["IpPermissions"]  # and added no rule
    for name, node in boot["available_node_types"].items():
        assert node["node_config"]["SecurityGroupIds"] == [done.security_group], name
        assert node["node_config"]["ImageId"] == done.image, name
    assert boot["available_node_types"]["head"]["node_config"]["IamInstanceProfile"] == {"Name": "tune-norm-head"}
    assert boot["available_node_types"]["gpu_worker"]["node_config"]["IamInstanceProfile"] == {
        "Name": "tune-norm-worker"}
    assert "IamInstanceProfile" not in boot["head_node"]  # Ray's broad default role was not attached


def test_without_a_precreated_group_ray_opens_ssh_to_the_world(aws):
    """The behaviour `tune-norm cluster check` refuses: a node type with no group of its own."""
    setup_aws("tn-results", MY_CIDR, REGION, ROOT / "cluster" / "iam", image=aws["image"], log=lambda _: None)
    cluster = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    node = cluster["available_node_types"]["gpu_worker"]["node_config"]
    node.pop("LaunchTemplate")
    node["ImageId"] = aws["image"]
    _bootstrap(cluster)
    made = [g for name, g in _groups(aws["ec2"]).items() if name.startswith("ray-autoscaler-")]
    assert made, sorted(_groups(aws["ec2"]))
    ssh = [r for r in made[0]["IpPermissions"] if r.get("FromPort") == 22]
    assert any(x["CidrIp"] == "0.0.0.0/0" for r in ssh for x in r.get("IpRanges", [])), made[0]["IpPermissions"]


def test_cli_setup_against_the_api(aws):
    out = run_cli("cluster", "setup", "tn-cli", "--ssh-cidr", MY_CIDR, "--image", aws["image"], env=aws["env"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith(f"ready in {REGION}: s3://tn-cli, instance profiles tune-norm-worker, tune-norm-head"
                                 f", security group sg-"), out.stdout
    assert f"security group {SECURITY_GROUP} (sg-" in out.stderr and "created, tcp/22 from 198.18.7.10/32" in out.stderr


def test_the_summary_names_every_id_and_the_next_commands():
    done = AwsSetup(region="eu-west-1", bucket="b", security_group="sg-1", launch_template="lt", image="ami-2",
                    ssh_cidr="198.18.7.10/32", profiles=("p-worker", "p-head"))
    assert done.summary() == ("ready in eu-west-1: s3://b, instance profiles p-worker, p-head, security group sg-1 "
                              "(tcp/22 from 198.18.7.10/32), launch template lt (ami-2); next: tune-norm cluster "
                              "check cluster.yaml, then ray up cluster.yaml")


@pytest.mark.parametrize("cidr, message", [
    ("0.0.0.0/0", "--ssh-cidr 0.0.0.0/0 is wider than a /24"),
    ("10.0.0.0/8", "--ssh-cidr 10.0.0.0/8 is wider than a /24"),
    ("203.0.113.10/32", "--ssh-cidr 203.0.113.10/32 is a documentation-only address"),
    ("my-laptop", "--ssh-cidr must be an address range such as 198.51.7.10/32, got 'my-laptop'"),
])
def test_setup_refuses_a_wide_or_fake_ssh_source_before_any_call(cidr, message):
    with pytest.raises(UserError, match=re.escape(message)):
        setup_aws("tn-results", cidr, REGION, ROOT / "cluster" / "iam", log=lambda _: None)
    if cidr != "0.0.0.0/0":
        return  # one through the real CLI is enough
    out = run_cli("cluster", "setup", "b", "--ssh-cidr", cidr, env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert out.returncode == 2 and out.stderr.startswith(f"error: {message}"), out.stderr


def test_setup_without_an_ami_says_so(aws):
    with pytest.raises(UserError, match=r"no AMI named 'Deep Learning Base OSS Nvidia Driver GPU AMI \(Ubuntu"):
        setup_aws("tn-results", MY_CIDR, REGION, ROOT / "cluster" / "iam", log=lambda _: None)
