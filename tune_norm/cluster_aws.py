"""`tune-norm cluster setup`: the AWS objects cluster.yaml names, created once per account and region with boto3.

cluster.yaml holds no account-specific value: both node types start from launch template ``tune-norm-node``
(security group ``tune-norm-ssh`` and a pinned Deep Learning AMI) and run as instance profiles ``tune-norm-head``
and ``tune-norm-worker``, whose policies are cluster/iam/<profile>.json with the results bucket filled in. Because
every node type brings its own security group, `ray up` never creates one (Ray's own groups open SSH to the world).
Each step is skipped when its object exists, so running it again is safe.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cluster import DOCUMENTATION_NETWORKS
from .errors import UserError

PROFILES = ("tune-norm-worker", "tune-norm-head")  # the worker role first: the head's policy passes it
SECURITY_GROUP = "tune-norm-ssh"
LAUNCH_TEMPLATE = "tune-norm-node"
BUCKET_TOKEN = "TUNE_NORM_BUCKET"
DLAMI_NAME = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04)*"
NARROWEST_SSH_PREFIX = {4: 24, 6: 64}


@dataclass(frozen=True)
class AwsSetup:
    """What `tune-norm cluster setup` created or found, by id."""

    region: str
    bucket: str
    security_group: str
    launch_template: str
    image: str
    ssh_cidr: str
    profiles: tuple[str, ...] = PROFILES

    def summary(self) -> str:
        """One line: what is ready, by id, and the next two commands."""
        return (f"ready in {self.region}: s3://{self.bucket}, instance profiles {', '.join(self.profiles)}, "
                f"security group {self.security_group} (tcp/22 from {self.ssh_cidr}), launch template "
                f"{self.launch_template} ({self.image}); next: tune-norm cluster check cluster.yaml, then "
                "ray up cluster.yaml")


def ssh_source(cidr: str) -> str:
    """The one network SSH is opened to: a real address range no wider than a /24 (IPv6 /64)."""
    try:
        net = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        raise UserError(f"--ssh-cidr must be an address range such as 198.51.7.10/32, got {cidr!r}") from None
    if net.prefixlen < NARROWEST_SSH_PREFIX[net.version]:
        raise UserError(f"--ssh-cidr {cidr} is wider than a /{NARROWEST_SSH_PREFIX[net.version]}: give your own "
                        "public address as a /32 (curl -s https://checkip.amazonaws.com)")
    if any(net.version == d.version and net.subnet_of(d) for d in DOCUMENTATION_NETWORKS):
        raise UserError(f"--ssh-cidr {cidr} is a documentation-only address that reaches nobody: give your own")
    return str(net)


def policy_document(iam_dir: Path, name: str, bucket: str) -> str:
    """cluster/iam/<name>.json with the bucket filled in, as the JSON text IAM takes."""
    path = Path(iam_dir) / f"{name}.json"
    try:
        document = json.loads(path.read_text().replace(BUCKET_TOKEN, bucket))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read the IAM policy {path}: {e}") from None
    return json.dumps(document)


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def setup_aws(bucket: str, ssh_cidr: str, region: str, iam_dir: Path, image: str | None = None,
              log: Callable[[str], None] = print) -> AwsSetup:
    """Create (or find) the bucket, the two roles and instance profiles, the security group and the launch
    template; credentials and endpoint come from boto3's usual sources (AWS_PROFILE, AWS_ENDPOINT_URL, ...)."""
    cidr = ssh_source(ssh_cidr)
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise UserError("boto3 is missing: pip install -e '.[cluster]' -c constraints.txt") from None
    session = boto3.session.Session(region_name=region)
    try:
        _bucket(session.client("s3"), bucket, region, log)
        for name in PROFILES:
            _role(session.client("iam"), name, policy_document(iam_dir, name, bucket),
                  (Path(iam_dir) / "ec2-trust.json").read_text(), log)
        ec2 = session.client("ec2")
        group = _security_group(ec2, cidr, log)
        template, image = _launch_template(ec2, group, image, log)
    except ClientError as e:
        raise UserError(f"AWS refused {e.operation_name}: {e.response.get('Error', {}).get('Message', e)}") from None
    except BotoCoreError as e:
        raise UserError(f"cannot reach AWS: {e}") from None
    return AwsSetup(region=region, bucket=bucket, security_group=group, launch_template=template, image=image,
                    ssh_cidr=cidr)


def _bucket(s3: Any, bucket: str, region: str, log: Callable[[str], None]) -> None:
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
        log(f"bucket s3://{bucket}: exists")
    except ClientError as e:
        if _error_code(e) not in ("404", "NoSuchBucket", "NotFound"):
            raise UserError(f"bucket {bucket} exists but this account cannot use it ({_error_code(e)}); "
                            "pick another name") from None
        extra = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        s3.create_bucket(Bucket=bucket, **extra)
        log(f"bucket s3://{bucket}: created")
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})


def _role(iam: Any, name: str, policy: str, trust: str, log: Callable[[str], None]) -> None:
    from botocore.exceptions import ClientError

    try:
        iam.get_role(RoleName=name)
    except ClientError as e:
        if _error_code(e) != "NoSuchEntity":
            raise
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)
        log(f"role {name}: created")
    iam.put_role_policy(RoleName=name, PolicyName=name, PolicyDocument=policy)  # re-applied on every run
    try:
        iam.get_instance_profile(InstanceProfileName=name)
    except ClientError as e:
        if _error_code(e) != "NoSuchEntity":
            raise
        iam.create_instance_profile(InstanceProfileName=name)
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
        log(f"instance profile {name}: created")


def _security_group(ec2: Any, cidr: str, log: Callable[[str], None]) -> str:
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise UserError("this region has no default VPC to put the cluster's security group in")
    vpc = vpcs[0]["VpcId"]
    found = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [SECURITY_GROUP]},
                                                  {"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"]
    if found:
        log(f"security group {SECURITY_GROUP} ({found[0]['GroupId']}): exists, rules left as they are")
        return found[0]["GroupId"]
    group = ec2.create_security_group(GroupName=SECURITY_GROUP, VpcId=vpc,
                                      Description="tune-norm Ray cluster: SSH from one address, all between members")
    gid = group["GroupId"]
    source = {"CidrIpv6": cidr} if ":" in cidr else {"CidrIp": cidr}
    ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
         **({"Ipv6Ranges": [source]} if ":" in cidr else {"IpRanges": [source]})},
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": gid}]},
    ])
    log(f"security group {SECURITY_GROUP} ({gid}): created, tcp/22 from {cidr}, all traffic between members")
    return gid


def _launch_template(ec2: Any, group: str, image: str | None, log: Callable[[str], None]) -> tuple[str, str]:
    from botocore.exceptions import ClientError

    try:
        versions = ec2.describe_launch_template_versions(LaunchTemplateName=LAUNCH_TEMPLATE, Versions=["$Default"])
        data = versions["LaunchTemplateVersions"][0]["LaunchTemplateData"]
        log(f"launch template {LAUNCH_TEMPLATE}: exists ({data.get('ImageId')}, {data.get('SecurityGroupIds')})")
        return LAUNCH_TEMPLATE, str(data.get("ImageId"))
    except ClientError as e:
        if "NotFound" not in _error_code(e):
            raise
    if image is None:
        images = ec2.describe_images(Owners=["amazon"], Filters=[
            {"Name": "name", "Values": [DLAMI_NAME]}, {"Name": "architecture", "Values": ["x86_64"]},
            {"Name": "state", "Values": ["available"]}])["Images"]
        if not images:
            raise UserError(f"no AMI named {DLAMI_NAME!r} in this region; pass --image ami-... yourself")
        image = max(images, key=lambda i: i["CreationDate"])["ImageId"]
    ec2.create_launch_template(LaunchTemplateName=LAUNCH_TEMPLATE,
                               LaunchTemplateData={"ImageId": image, "SecurityGroupIds": [group]})
    log(f"launch template {LAUNCH_TEMPLATE}: created ({image}, security group {group})")
    return LAUNCH_TEMPLATE, image
