#!/usr/bin/env bash
# One-time AWS set-up for cluster.yaml (docs/cluster.md, step 0). Creates, where missing:
#   * the results bucket (public access blocked),
#   * roles + instance profiles tune-norm-head and tune-norm-worker with the policies in cluster/iam/
#     (the bucket name substituted for TUNE_NORM_BUCKET),
#   * security group tune-norm-ssh in the default VPC: tcp/22 from YOUR_CIDR only, all traffic between its members,
#   * launch template tune-norm-node: that security group and the current Deep Learning Base OSS Nvidia Driver GPU
#     AMI (Ubuntu 24.04) of the region, pinned by id (run the script again after deleting the template to move on).
# cluster.yaml names these by name only, so it holds no account-specific value and `ray up` creates no security
# group of its own (Ray's own groups open SSH to 0.0.0.0/0).
#
# usage: cluster/setup-aws.sh BUCKET YOUR_CIDR [REGION]      e.g. cluster/setup-aws.sh my-results 198.51.100.7/32
# Needs the aws CLI v2 with credentials allowed to create IAM roles, EC2 security groups and launch templates.
set -euo pipefail
cd "$(dirname "$0")/.."
BUCKET=${1:?usage: cluster/setup-aws.sh BUCKET YOUR_CIDR [REGION]}
CIDR=${2:?usage: cluster/setup-aws.sh BUCKET YOUR_CIDR [REGION]  (YOUR_CIDR: your public IP as a /32)}
REGION=${3:-us-west-2}   # must match provider.region in cluster.yaml
case "$CIDR" in
  0.0.0.0/0|::/0) echo "refusing $CIDR: SSH must not be open to the whole internet" >&2; exit 2 ;;
  */*) ;;
  *) echo "YOUR_CIDR must be a CIDR such as 198.51.100.7/32, got $CIDR" >&2; exit 2 ;;
esac
export AWS_DEFAULT_REGION=$REGION

# -- the results bucket
if ! aws s3api head-bucket --bucket "$BUCKET" 2>/dev/null; then
  if [ "$REGION" = us-east-1 ]; then aws s3api create-bucket --bucket "$BUCKET"
  else aws s3api create-bucket --bucket "$BUCKET" --create-bucket-configuration "LocationConstraint=$REGION"; fi
fi
aws s3api put-public-access-block --bucket "$BUCKET" --public-access-block-configuration \
  BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true

# -- roles and instance profiles (policy files from cluster/iam/, re-applied on every run)
for NAME in tune-norm-worker tune-norm-head; do
  aws iam get-role --role-name "$NAME" >/dev/null 2>&1 ||
    aws iam create-role --role-name "$NAME" --assume-role-policy-document file://cluster/iam/ec2-trust.json >/dev/null
  aws iam put-role-policy --role-name "$NAME" --policy-name "$NAME" \
    --policy-document "$(sed "s/TUNE_NORM_BUCKET/$BUCKET/g" "cluster/iam/$NAME.json")"
  if ! aws iam get-instance-profile --instance-profile-name "$NAME" >/dev/null 2>&1; then
    aws iam create-instance-profile --instance-profile-name "$NAME" >/dev/null
    aws iam add-role-to-instance-profile --instance-profile-name "$NAME" --role-name "$NAME"
  fi
done

# -- the security group: SSH from your CIDR, everything between the cluster's own nodes
VPC=$(aws ec2 describe-vpcs --filters Name=is-default,Values=true --query 'Vpcs[0].VpcId' --output text)
SG=$(aws ec2 describe-security-groups --filters Name=group-name,Values=tune-norm-ssh "Name=vpc-id,Values=$VPC" \
       --query 'SecurityGroups[0].GroupId' --output text)
if [ "$SG" = None ]; then
  SG=$(aws ec2 create-security-group --group-name tune-norm-ssh --vpc-id "$VPC" \
         --description "tune-norm Ray cluster: SSH from one address, all traffic between members" \
         --query GroupId --output text)
  aws ec2 authorize-security-group-ingress --group-id "$SG" --protocol tcp --port 22 --cidr "$CIDR" >/dev/null
  aws ec2 authorize-security-group-ingress --group-id "$SG" --protocol -1 --source-group "$SG" >/dev/null
fi

# -- the launch template both node types start from
if ! aws ec2 describe-launch-templates --launch-template-names tune-norm-node >/dev/null 2>&1; then
  AMI=$(aws ec2 describe-images --owners amazon \
          --filters 'Name=name,Values=Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04)*' \
                    'Name=architecture,Values=x86_64' 'Name=state,Values=available' \
          --query 'sort_by(Images,&CreationDate)[-1].ImageId' --output text)
  aws ec2 create-launch-template --launch-template-name tune-norm-node \
    --launch-template-data "{\"ImageId\": \"$AMI\", \"SecurityGroupIds\": [\"$SG\"]}" >/dev/null
fi
aws ec2 describe-security-groups --group-ids "$SG" --query 'SecurityGroups[0].IpPermissions' --output json
aws ec2 describe-launch-template-versions --launch-template-name tune-norm-node --versions '$Default' \
  --query 'LaunchTemplateVersions[0].LaunchTemplateData' --output json
echo "ready: bucket s3://$BUCKET, profiles tune-norm-head/tune-norm-worker, group $SG, template tune-norm-node"
