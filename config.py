"""The platform's configuration: one typed, frozen, validated object.

Where it comes from
-------------------
1. The ``platform`` key of ``cdk.json`` (the defaults a team commits).
2. Overrides on the CDK command line, one dotted path per ``-c`` flag::

       npx cdk synth -c platform.cluster.name=ml-prod -c platform.network.nat_gateways=2
       npx cdk synth -c 'platform.cluster.endpoint.public_cidrs=["203.0.113.0/24"]'

   The value is read as JSON when it parses as JSON (numbers, booleans, lists, objects)
   and as a plain string otherwise.

Everything is validated before a single construct is built. All problems are reported
at once, each naming the field path, the value given and what is allowed; unknown keys
are errors, so a typo cannot silently fall back to a default.

Validation is done by pydantic (strict JSON mode: no string-to-number coercion, no
extra keys); this module only adds the platform's own rules and turns pydantic's errors
into one readable message.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

import versions
from charts import karpenter_nodes as kn
from charts import log_shipping
from charts import metrics

CONTEXT_KEY = "platform"
CDK_JSON = Path(__file__).resolve().parent / "cdk.json"

_CLUSTER_NAME = re.compile(r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$")
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_IAM_PRINCIPAL_ARN = re.compile(r"^arn:aws(-cn|-us-gov)?:iam::\d{12}:(role|user)/[\w+=,.@/-]{1,512}$")
_AZ_NAME = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d[a-z]$")
# EKS-optimized AMI release versions: <Kubernetes major.minor.patch>-<release date>, e.g. 1.34.1-20251112.
_AMI_RELEASE_VERSION = re.compile(r"^(?P<minor>\d+\.\d+)\.\d+-(?P<date>\d{8})$")


class ConfigError(ValueError):
    """Invalid configuration. ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"Invalid platform configuration ({len(problems)} {noun}):\n{lines}")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


def _check_ipv4_cidr(value: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(value, strict=True)
    except ValueError as err:
        raise ValueError(f"must be an IPv4 network in CIDR form such as 10.0.0.0/16 ({err})") from None


# Client allowlists (cluster.endpoint.public_cidrs, jupyterhub.allowed_cidrs) admit at most a /8's worth of internet
# addresses, per entry and all entries together. A /8 is the largest block ever assigned to a single holder (the
# legacy class A allocations of the IANA IPv4 address space registry), so a broader entry necessarily spans
# unrelated networks; the total catches the internet split into pieces (0.0.0.0/1 + 128.0.0.0/1), which no check of
# one entry sees.
ALLOWLIST_MAX_PREFIX = 8
ALLOWLIST_MAX_INTERNET_ADDRESSES = 2 ** (32 - ALLOWLIST_MAX_PREFIX)
# Never routed on the internet, so they do not count towards the total (a client behind an internal load balancer,
# a peered VPC, a VPN): the private ranges of RFC 1918 and the shared address space of RFC 6598.
_NOT_ON_THE_INTERNET = tuple(
    ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
)


def _internet_addresses(networks: list[ipaddress.IPv4Network]) -> int:
    """How many addresses outside _NOT_ON_THE_INTERNET the union of ``networks`` covers (overlaps counted once)."""
    total = 0
    for net in ipaddress.collapse_addresses(networks):
        # Two CIDR blocks are either disjoint or one holds the other.
        hidden = sum(min(net.num_addresses, r.num_addresses) for r in _NOT_ON_THE_INTERNET if net.overlaps(r))
        total += net.num_addresses - hidden
    return total


def _check_client_allowlist(cidrs: tuple[str, ...], *, opens: str, when_empty: str) -> None:
    """Refuse an allowlist of client CIDRs that admits more than a /8's worth of the internet.

    ``opens``: what a too-broad list would expose ("the API server"); ``when_empty``: what an empty list means, for
    the message."""
    nets = [_check_ipv4_cidr(cidr) for cidr in cidrs]
    allowed = (f"entries of /{ALLOWLIST_MAX_PREFIX} or narrower, covering together at most "
               f"{ALLOWLIST_MAX_INTERNET_ADDRESSES} internet addresses (one /{ALLOWLIST_MAX_PREFIX}; the private "
               "ranges 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 and 100.64.0.0/10 do not count)")
    if any(net.prefixlen == 0 for net in nets):
        raise ValueError(f"'0.0.0.0/0' opens {opens} to the whole internet; list the networks that need it "
                         f"({when_empty}); allowed: {allowed}")
    broad = [cidr for cidr, net in zip(cidrs, nets) if net.prefixlen < ALLOWLIST_MAX_PREFIX]
    if broad:
        raise ValueError(f"{', '.join(repr(c) for c in broad)}: broader than /{ALLOWLIST_MAX_PREFIX}, which opens {opens} "
                         f"to a large part of the internet; allowed: {allowed}")
    covered = _internet_addresses(nets)
    if covered > ALLOWLIST_MAX_INTERNET_ADDRESSES:
        raise ValueError(f"together these entries open {opens} to {covered} internet addresses "
                         f"({covered / 2 ** 32:.1%} of the IPv4 space); allowed: {allowed}")


class EndpointConfig(_Model):
    """Who can reach the Kubernetes API server."""

    access: Literal["private", "public_and_private"] = "private"
    public_cidrs: tuple[str, ...] = ()

    @field_validator("public_cidrs")
    @classmethod
    def _cidrs(cls, cidrs: tuple[str, ...]) -> tuple[str, ...]:
        _check_client_allowlist(cidrs, opens="the API server", when_empty="or keep access 'private'")
        return cidrs

    @model_validator(mode="after")
    def _access_matches_cidrs(self) -> "EndpointConfig":
        if self.access == "public_and_private" and not self.public_cidrs:
            raise ValueError(
                "access 'public_and_private' needs at least one entry in public_cidrs "
                "(the public endpoint is never open to 0.0.0.0/0)"
            )
        if self.access == "private" and self.public_cidrs:
            raise ValueError("public_cidrs is only allowed with access 'public_and_private'")
        return self


class SystemNodesConfig(_Model):
    """The small on-demand managed node group for critical add-ons (Cilium operator, CoreDNS, Karpenter)."""

    instance_type: str = "t3a.large"
    desired_size: int = Field(2, ge=1, le=10)
    min_size: int = Field(2, ge=1, le=10)
    max_size: int = Field(3, ge=1, le=20)
    # The AMI patch path. None: the latest EKS-optimized AL2023 release of cluster.kubernetes_version when
    # the node group is created or moves to a new Kubernetes version, then nothing until the next upgrade.
    # A release (of cluster.kubernetes_version): the nodes roll onto it when it changes; never backwards.
    ami_release_version: str | None = None

    @field_validator("ami_release_version")
    @classmethod
    def _ami_release_version(cls, value: str | None) -> str | None:
        if value is not None and not _AMI_RELEASE_VERSION.match(value):
            raise ValueError(
                "must be an EKS-optimized AMI release version, <Kubernetes version>.<patch>-<YYYYMMDD> such as "
                "1.34.1-20251112 (aws ssm get-parameter --name /aws/service/eks/optimized-ami/<minor>/"
                "amazon-linux-2023/x86_64/standard/recommended/release_version), or null for the latest"
            )
        return value

    @field_validator("instance_type")
    @classmethod
    def _instance_type(cls, value: str) -> str:
        if not _INSTANCE_TYPE.match(value):
            raise ValueError("must be an EC2 instance type such as t3a.large")
        if value not in kn.INSTANCE_TYPES:
            known = ", ".join(t for t in sorted(kn.INSTANCE_TYPES) if not kn.INSTANCE_TYPES[t].gpus)
            raise ValueError(f"must be a type whose network limits the platform knows: {known}")
        return value

    @model_validator(mode="after")
    def _sizes(self) -> "SystemNodesConfig":
        if not self.min_size <= self.desired_size <= self.max_size:
            raise ValueError(
                f"sizes must satisfy min_size <= desired_size <= max_size "
                f"(got {self.min_size} <= {self.desired_size} <= {self.max_size})"
            )
        return self


class ClusterConfig(_Model):
    name: str = "dynamic-factory"
    kubernetes_version: str = versions.DEFAULT_KUBERNETES_VERSION
    endpoint: EndpointConfig = EndpointConfig()
    system_nodes: SystemNodesConfig = SystemNodesConfig()
    admin_principal_arns: tuple[str, ...] = ()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _CLUSTER_NAME.match(value):
            raise ValueError(
                "must be 2-40 characters of lowercase letters, digits and hyphens, starting with a letter "
                "and not ending with a hyphen (it also names the interruption queue and IAM roles)"
            )
        return value

    @field_validator("kubernetes_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if value not in versions.KUBERNETES_VERSIONS:
            allowed = ", ".join(sorted(versions.KUBERNETES_VERSIONS))
            raise ValueError(f"must be one of {allowed} (the versions with a matching kubectl layer)")
        return value

    @model_validator(mode="after")
    def _ami_release_matches_the_version(self) -> "ClusterConfig":
        release = self.system_nodes.ami_release_version
        match = _AMI_RELEASE_VERSION.match(release or "")
        if match and match["minor"] != self.kubernetes_version:
            raise ValueError(
                f"system_nodes.ami_release_version {release!r} is an AMI release of Kubernetes {match['minor']}, "
                f"but kubernetes_version is {self.kubernetes_version!r}: set a {self.kubernetes_version} release "
                "with it, or null for the latest (EKS rejects a node group whose AMI belongs to another version)"
            )
        return self

    @field_validator("admin_principal_arns")
    @classmethod
    def _admins(cls, arns: tuple[str, ...]) -> tuple[str, ...]:
        for arn in arns:
            if not _IAM_PRINCIPAL_ARN.match(arn):
                raise ValueError(
                    f"{arn!r} is not an IAM role or user ARN (arn:aws:iam::<12-digit account>:role/<name>)"
                )
        if len(set(arns)) != len(arns):
            raise ValueError("contains the same ARN twice")
        return arns


def subnet_plan(vpc_cidr: str, az_count: int, masks: tuple[int, int]) -> list[str] | None:
    """The subnets the VPC gets, allocated as CDK's ``IpAddresses.cidr`` does: in order (one public subnet
    per zone, then one private per zone), each at the next free address aligned to its size. None when
    they do not fit in ``vpc_cidr`` (tests compare this with CDK's own allocator)."""
    net = ipaddress.ip_network(vpc_cidr)
    subnets, next_free = [], int(net.network_address)
    for mask in masks:
        for _ in range(az_count):
            size = 2 ** (32 - mask)
            start = -(-next_free // size) * size
            subnet = ipaddress.ip_network((start, mask))
            if subnet.broadcast_address > net.broadcast_address:
                return None
            subnets.append(str(subnet))
            next_free = start + size
    return subnets


class NetworkConfig(_Model):
    # One public /24 (NAT gateways, load balancers) and one private /19 (nodes and, under Cilium ENI
    # mode, every pod) per availability zone.
    PUBLIC_SUBNET_MASK: ClassVar[int] = 24
    PRIVATE_SUBNET_MASK: ClassVar[int] = 19

    vpc_cidr: str = "10.0.0.0/16"
    az_count: int = Field(2, ge=2, le=3)
    availability_zones: tuple[str, ...] = ()
    nat_gateways: int = Field(1, ge=1, le=3)

    @field_validator("vpc_cidr")
    @classmethod
    def _vpc_cidr(cls, value: str) -> str:
        net = _check_ipv4_cidr(value)
        if not 16 <= net.prefixlen <= 20:
            raise ValueError("prefix length must be between /16 and /20 (pods take VPC addresses under Cilium ENI mode)")
        if not net.is_private:
            raise ValueError("must be a private (RFC 1918) range")
        return value

    @field_validator("availability_zones")
    @classmethod
    def _azs(cls, azs: tuple[str, ...]) -> tuple[str, ...]:
        for az in azs:
            if not _AZ_NAME.match(az):
                raise ValueError(f"{az!r} is not an availability zone name such as us-east-1a")
        if len(set(azs)) != len(azs):
            raise ValueError("contains the same availability zone twice")
        return azs

    @model_validator(mode="after")
    def _consistent(self) -> "NetworkConfig":
        if self.availability_zones and len(self.availability_zones) != self.az_count:
            raise ValueError(
                f"availability_zones lists {len(self.availability_zones)} zones but az_count is {self.az_count}"
            )
        if self.az_count > 2 and not self.availability_zones:
            raise ValueError(
                "az_count above 2 needs availability_zones listed by name: an environment-agnostic synth "
                "can only resolve two zones"
            )
        masks = (self.PUBLIC_SUBNET_MASK, self.PRIVATE_SUBNET_MASK)
        if subnet_plan(self.vpc_cidr, self.az_count, masks) is None:
            fits = [p for p in range(16, 21) if subnet_plan(f"10.0.0.0/{p}", self.az_count, masks) is not None]
            raise ValueError(
                f"vpc_cidr {self.vpc_cidr!r} has no room for {self.az_count} public /{masks[0]} and "
                f"{self.az_count} private /{masks[1]} subnets: with az_count {self.az_count} the prefix must be "
                f"/{max(fits)} or shorter"
            )
        if self.nat_gateways > self.az_count:
            raise ValueError(f"nat_gateways ({self.nat_gateways}) cannot exceed az_count ({self.az_count})")
        return self


class _PoolConfig(_Model):
    """Limits and instance choice of one Karpenter NodePool.

    Defaults and the full validation of the combination come from the chart
    (charts/karpenter_nodes.py), so the config and the manifests cannot disagree.
    """

    base_pool: ClassVar[kn.NodePoolSettings]

    def settings(self) -> kn.NodePoolSettings:
        """The chart's NodePoolSettings for this pool."""
        fields = self.model_dump(exclude={"enabled"})
        return dataclasses.replace(self.base_pool, **fields)

    @model_validator(mode="after")
    def _chart_accepts(self):
        try:
            pool = self.settings()
        except ValueError as err:
            raise ValueError(str(err).split(": ", 1)[-1]) from None
        if pool.gpu != self.base_pool.gpu:
            kind = "GPU" if self.base_pool.gpu else "non-GPU"
            raise ValueError(f"instance_families {list(pool.instance_families)} must all be {kind} families here")
        return self


def _pool_model(name: str, pool: kn.NodePoolSettings, *, gpu: bool = False) -> type[_PoolConfig]:
    fields: dict[str, Any] = {
        "instance_families": (tuple[str, ...], pool.instance_families),
        "instance_sizes": (tuple[str, ...], pool.instance_sizes),
        "cpu_limit": (int, Field(pool.cpu_limit, ge=1, le=100_000)),
        "memory_limit_gib": (int, Field(pool.memory_limit_gib, ge=1, le=1_000_000)),
        "consolidate_after": (str, pool.consolidate_after),
        "expire_after": (str, pool.expire_after),
    }
    if gpu:
        fields["enabled"] = (bool, False)
        fields["gpu_limit"] = (int, Field(pool.gpu_limit, ge=1, le=10_000))
    model = create_model(name, __base__=_PoolConfig, **fields)
    model.base_pool = pool
    return model


SpotPoolConfig = _pool_model("SpotPoolConfig", kn.DEFAULT_SPOT_POOL)
OnDemandPoolConfig = _pool_model("OnDemandPoolConfig", kn.DEFAULT_ON_DEMAND_POOL)
GpuPoolConfig = _pool_model("GpuPoolConfig", kn.DEFAULT_GPU_POOL, gpu=True)


class KarpenterConfig(_Model):
    """Karpenter's node pools: ``spot`` (Ray workers, batch), ``on_demand`` (Ray head, hub), ``gpu`` (off)."""

    ami_alias: str = kn.DEFAULT_AMI_ALIAS
    spot: SpotPoolConfig = SpotPoolConfig()  # type: ignore[valid-type]
    on_demand: OnDemandPoolConfig = OnDemandPoolConfig()  # type: ignore[valid-type]
    gpu: GpuPoolConfig = GpuPoolConfig()  # type: ignore[valid-type]

    @field_validator("ami_alias")
    @classmethod
    def _alias(cls, value: str) -> str:
        if not re.match(r"^al2023@v\d{8}$", value):
            raise ValueError("must be a pinned AL2023 alias such as al2023@v20260818 (never @latest)")
        return value

    def node_pools(self) -> list[kn.NodePoolSettings]:
        pools = [self.spot.settings(), self.on_demand.settings()]
        if self.gpu.enabled:
            pools.append(self.gpu.settings())
        return pools


class RayWorkersConfig(_Model):
    max_workers: int = Field(8, ge=1, le=1000)
    cpu: int = Field(3, ge=1, le=192)
    memory_gib: int = Field(12, ge=1, le=1536)


class RayGpuWorkersConfig(_Model):
    max_workers: int = Field(0, ge=0, le=100)  # 0: no GPU worker group
    cpu: int = Field(3, ge=1, le=192)
    memory_gib: int = Field(12, ge=1, le=1536)
    gpus: int = Field(1, ge=1, le=8)


class ValidationJobConfig(_Model):
    """What the validation run (pipeline post-deploy step, `make validate`) asks of the cluster."""

    workers: int = Field(4, ge=1, le=256)
    rows: int = Field(500_000, ge=1000, le=100_000_000)
    rounds: int = Field(50, ge=1, le=5000)
    min_auc: float = Field(0.8, gt=0.5, le=1.0)


class RayConfig(_Model):
    """The RayCluster: head off Spot (on the system nodes by default), CPU workers on Spot from zero,
    optional GPU workers."""

    # "system": the always-on system node group hosts the head (no extra idle node);
    # "on-demand": Karpenter's on-demand pool (a dedicated node, more room for a busy head).
    head_placement: Literal["system", "on-demand"] = "system"
    head_cpu: int = Field(1, ge=1, le=64)
    head_memory_gib: int = Field(4, ge=2, le=512)
    idle_timeout_seconds: int = Field(120, ge=30, le=86_400)
    workers: RayWorkersConfig = RayWorkersConfig()
    gpu_workers: RayGpuWorkersConfig = RayGpuWorkersConfig()
    checkpoint_retention_days: int = Field(90, ge=1, le=3650)
    validation: ValidationJobConfig = ValidationJobConfig()
    # Tenancy (charts/ray_teams.py). Empty: one RayCluster in namespace `ray` that every hub user shares (one
    # trust domain). Named teams: one RayCluster, token and checkpoint prefix per team, in namespace ray-<team>;
    # a notebook reaches the clusters of the teams its user belongs to (JupyterHub group of the same name). The
    # first team's cluster is the one the validation run exercises.
    teams: tuple[str, ...] = Field((), max_length=20)
    # What Ray pods may reach on 443 besides their namespace, DNS, Pod Identity, S3 and PyPI (charts/ray_egress.py):
    # DNS names, or Cilium patterns with '*' standing for one label (e.g. "*.huggingface.co").
    extra_egress_fqdns: tuple[str, ...] = Field((), max_length=50)

    @field_validator("extra_egress_fqdns")
    @classmethod
    def _fqdns(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        from charts.ray_egress import ray_egress_policies

        try:
            ray_egress_policies("ray", "ray", region=None, extra_fqdns=list(names))
        except ValueError as err:
            raise ValueError(str(err).removeprefix("ray egress policies: ")) from None
        return names

    @field_validator("teams")
    @classmethod
    def _teams(cls, teams: tuple[str, ...]) -> tuple[str, ...]:
        from charts.ray_teams import TEAM_NAME_RE, TEAM_NAME_RULE

        bad = [t for t in teams if not TEAM_NAME_RE.match(t)]
        if bad:
            raise ValueError(f"teams {bad} are not valid team names: each must be {TEAM_NAME_RULE}")
        duplicates = sorted({t for t in teams if teams.count(t) > 1})
        if duplicates:
            raise ValueError(f"teams {duplicates} are listed more than once")
        return teams

    @model_validator(mode="after")
    def _validation_fits(self) -> "RayConfig":
        if self.validation.workers > self.workers.max_workers * self.workers.cpu:
            raise ValueError(
                f"validation.workers ({self.validation.workers}) exceeds the CPUs the worker group can "
                f"offer (workers.max_workers x workers.cpu = {self.workers.max_workers * self.workers.cpu})"
            )
        return self


_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z]{2,63}$")
_ACM_ARN = re.compile(r"^arn:aws(-cn|-us-gov)?:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]{36}$")
_COGNITO_PREFIX = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# The admin in Cognito mode: an e-mail address as JupyterHub sees it (it lowercases user names), in the
# characters admin_user allows.
_ADMIN_EMAIL = re.compile(r"^[a-z0-9][a-z0-9._-]*@(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,63}$")


class JupyterHubConfig(_Model):
    """The JupyterHub front door. Without a domain: NativeAuthenticator, reachable by port-forward only.
    With domain + certificate_arn: Amazon Cognito login over HTTPS.

    ``admin_user``: the JupyterHub admin. With NativeAuthenticator a user name (default ``admin``). In
    Cognito mode JupyterHub names every user by the e-mail they sign in with, so the admin is an e-mail
    address (lowercase) and must be given: ``admin`` would name nobody.

    ``cognito_domain_prefix``: the hosted-UI domain ``<prefix>.auth.<region>.amazoncognito.com``. Leave it
    empty (recommended): the stack derives it from its own CloudFormation stack id, so no later config
    change can alter it. It is immutable once deployed: a user pool has one prefix domain, and
    CloudFormation creates a replacement domain before deleting the old one, so a changed prefix fails the
    JupyterHub stack update ("User pool already has a domain configured", aws/aws-cdk#10062) and rolls back.
    Set it only before the first deploy, and only if you need a readable login host name.
    """

    # Where the hub, the proxy and the user scheduler run (never Spot); see ray.head_placement.
    core_placement: Literal["system", "on-demand"] = "system"
    user_pool: Literal["on-demand", "spot"] = "on-demand"
    home_capacity_gib: int = Field(10, ge=1, le=1000)
    # Home volumes and the hub database outlive `make destroy` (README, Tearing down); false deletes them.
    keep_homes_on_destroy: bool = True
    cull_timeout_seconds: int = Field(3600, ge=300, le=7 * 86_400)
    notebook_image: str = ""
    domain: str = ""
    # After domain: its check reads whether Cognito mode is on. validate_default: the default "admin" is
    # refused in Cognito mode too.
    admin_user: str = Field("admin", validate_default=True)
    certificate_arn: str = ""
    cognito_domain_prefix: str = ""
    internal_load_balancer: bool = False
    allowed_cidrs: tuple[str, ...] = ()

    @field_validator("admin_user")
    @classmethod
    def _admin(cls, value: str, info) -> str:  # info: pydantic's ValidationInfo (fields validated so far)
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$", value):
            raise ValueError("must be a user name of letters, digits and . _ @ - (at most 64)")
        if info.data.get("domain") and not _ADMIN_EMAIL.match(value):
            raise ValueError(
                "must be the admin's e-mail address in lowercase (e.g. admin@example.com) when a domain turns on "
                "Cognito login: users sign in with their e-mail and JupyterHub names them by it"
            )
        return value

    @field_validator("notebook_image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not value:
            return value
        expected = f"ray-{versions.RAY_VERSION}-py{versions.RAY_PYTHON_VERSION}"
        if not re.match(r"^[a-z0-9][a-z0-9._/:-]*:[A-Za-z0-9_.-]+$", value) or not value.endswith(":" + expected):
            raise ValueError(
                f"must be a pinned image whose tag says it carries the cluster's Ray and Python, i.e. '<repo>:{expected}' "
                "(leave empty to build images/notebook at deploy time)"
            )
        return value

    @field_validator("allowed_cidrs")
    @classmethod
    def _cidrs(cls, cidrs: tuple[str, ...]) -> tuple[str, ...]:
        _check_client_allowlist(cidrs, opens="the hub's load balancer",
                                when_empty="an empty list admits any address, each still asked to sign in")
        return cidrs

    @model_validator(mode="after")
    def _https_mode(self) -> "JupyterHubConfig":
        fields = {"domain": self.domain, "certificate_arn": self.certificate_arn}
        given = {k for k, v in fields.items() if v}
        if given and given != set(fields):
            missing = ", ".join(sorted(set(fields) - given))
            raise ValueError(f"HTTPS with Cognito login needs domain and certificate_arn together; missing: {missing}")
        if self.cognito_domain_prefix and not self.domain:
            raise ValueError("cognito_domain_prefix only applies with a domain (Cognito login)")
        problems = []
        if self.domain and not _DOMAIN.match(self.domain):
            problems.append(f"domain {self.domain!r} is not a DNS name such as hub.example.com")
        if self.certificate_arn and not _ACM_ARN.match(self.certificate_arn):
            problems.append(f"certificate_arn {self.certificate_arn!r} is not an ACM certificate ARN")
        if self.cognito_domain_prefix and (not _COGNITO_PREFIX.match(self.cognito_domain_prefix)
                                           or any(w in self.cognito_domain_prefix for w in ("aws", "amazon", "cognito"))):
            problems.append(f"cognito_domain_prefix {self.cognito_domain_prefix!r} must be lowercase letters, digits and "
                            "hyphens and may not contain 'aws', 'amazon' or 'cognito' (or leave it empty: derived)")
        if (self.internal_load_balancer or self.allowed_cidrs) and not self.domain:
            problems.append("internal_load_balancer and allowed_cidrs only apply when a domain exposes the hub")
        if problems:
            raise ValueError("; ".join(problems))
        return self


_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
_CONNECTION_ARN = re.compile(
    r"^arn:aws(-cn|-us-gov)?:(codeconnections|codestar-connections):[a-z0-9-]+:\d{12}:connection/[0-9a-f-]{36}$"
)
_REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_BRANCH = re.compile(r"^[A-Za-z0-9._/-]{1,255}$")


def _check_env(account: str, region: str) -> None:
    problems = []
    if not _ACCOUNT.match(account):
        problems.append(f"account {account!r} must be a 12-digit AWS account id")
    if not _REGION.match(region):
        problems.append(f"region {region!r} must be an AWS region such as eu-west-1")
    if problems:
        raise ValueError("; ".join(problems))


class DeploymentStageConfig(_Model):
    """One environment the pipeline deploys the platform to.

    ``approval``: a manual approval before this stage deploys. Unset, it is decided by the stage's place in
    ``pipeline.stages`` (PipelineConfig): the first stage deploys automatically, every later one waits for a person.
    """

    name: str
    account: str
    region: str
    approval: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z][A-Za-z0-9-]{0,19}$", value):
            raise ValueError("must be 1-20 letters, digits and hyphens, starting with a letter")
        return value

    @model_validator(mode="after")
    def _env(self) -> "DeploymentStageConfig":
        _check_env(self.account, self.region)
        return self


class PipelineConfig(_Model):
    """CDK Pipelines delivery: off by default (the default synth needs no AWS account)."""

    enabled: bool = False
    connection_arn: str = ""
    repository: str = ""
    branch: str = "main"
    account: str = ""
    region: str = ""
    stages: tuple[DeploymentStageConfig, ...] = ()

    @field_validator("stages")
    @classmethod
    def _approval_after_the_first(cls, stages: tuple[DeploymentStageConfig, ...]) -> tuple[DeploymentStageConfig, ...]:
        """Every stage after the first waits for a manual approval unless it says ``approval: false``: a change
        reaches a later environment (production) only once a person has looked at the first one."""
        return tuple(
            stage if index == 0 or "approval" in stage.model_fields_set else stage.model_copy(update={"approval": True})
            for index, stage in enumerate(stages)
        )

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> "PipelineConfig":
        if not self.enabled:
            return self
        problems = []
        if not _CONNECTION_ARN.match(self.connection_arn):
            problems.append(
                f"connection_arn {self.connection_arn!r} must be a CodeConnections ARN "
                "(arn:aws:codeconnections:<region>:<account>:connection/<uuid>)"
            )
        if not _REPOSITORY.match(self.repository):
            problems.append(f"repository {self.repository!r} must be 'owner/name'")
        if not _BRANCH.match(self.branch):
            problems.append(f"branch {self.branch!r} is not a valid branch name")
        try:
            _check_env(self.account, self.region)
        except ValueError as err:
            problems.append(f"pipeline {err}")
        if not self.stages:
            problems.append("stages must list at least one deployment stage {name, account, region}")
        envs = [(s.account, s.region) for s in self.stages]
        if len(set(envs)) != len(envs):
            problems.append("two stages deploy to the same account and region (their resources would collide)")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            problems.append("stage names must be unique")
        if problems:
            raise ValueError("the pipeline is enabled but " + "; ".join(problems))
        return self


def default_idle_budget(region: str, *, observability: bool) -> float:
    """The default idle budget of ``region`` (cost/prices.yaml): above the idle of the default platform there, with
    or without metrics, and below the same plus one always-on Karpenter node (tests/unit/test_cost.py)."""
    import yaml

    table = yaml.safe_load((Path(__file__).resolve().parent / "cost" / "prices.yaml").read_text())["regions"][region]
    return float(table["default_idle_budget"]["observability_on" if observability else "observability_off"])


class CostConfig(_Model):
    """The budget synth enforces (see cost/estimate.py and `make cost`)."""

    price_region: str = "us-east-1"
    # Unset: the price region's default for the platform as configured (PlatformConfig.idle_budget): in us-east-1
    # $0.40/h with metrics on, $0.30/h with them off. null: no idle budget.
    max_idle_usd_per_hour: float | None = Field(None, gt=0)
    max_ceiling_usd_per_hour: float | None = Field(None, gt=0)

    @field_validator("price_region")
    @classmethod
    def _region(cls, value: str) -> str:
        import yaml

        known = sorted(yaml.safe_load((Path(__file__).resolve().parent / "cost" / "prices.yaml").read_text())["regions"])
        if value not in known:
            raise ValueError(f"must be a region with prices in cost/prices.yaml: {', '.join(known)}")
        return value


class LogsConfig(_Model):
    """Logs that outlive their pods (charts/log_shipping.py): how long CloudWatch Logs keeps them."""

    retention_days: int = log_shipping.DEFAULT_RETENTION_DAYS

    @field_validator("retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value not in log_shipping.RETENTION_DAYS_ALLOWED:
            allowed = ", ".join(str(d) for d in log_shipping.RETENTION_DAYS_ALLOWED)
            raise ValueError(f"must be one of the retention periods CloudWatch Logs accepts, in days: {allowed}")
        return value


_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")


# cluster.system_nodes' sizes when observability is on and none is set (_default_system_nodes_for_metrics).
METRICS_SYSTEM_NODE_SIZES = {"desired_size": 3, "min_size": 3, "max_size": 4}
LEAN_SYSTEM_NODES = 2  # SystemNodesConfig's default desired_size


class ObservabilityConfig(_Model):
    """Metrics and alarms (issue #14): Prometheus + Grafana with the dashboards as code (charts/metrics.py,
    charts/dashboards.py) and CloudWatch alarms to an SNS topic (stacks/observability_stack.py). Off: neither runs and
    the default idle budget drops to the lean one; the logs (``logs``) are shipped either way."""

    enabled: bool = True
    # Prometheus keeps this much history (a number of hours, days or weeks), on an encrypted gp3 volume of this size.
    retention: str = metrics.DEFAULT_RETENTION
    volume_gib: int = Field(metrics.DEFAULT_VOLUME_GIB, ge=2, le=1000)
    # Who the alarms notify (each address confirms its subscription by e-mail). Empty: the alarms still exist and
    # change state in the console; nobody is told.
    alarm_emails: tuple[str, ...] = ()
    # With jupyterhub.domain: also serve Grafana through the hub's proxy at https://<domain>/services/grafana/. Off by
    # default: it would share an origin with every user's notebook server, and a page a user serves there could use
    # a signed-in Grafana session (JupyterHub's security overview: nothing else should live on the hub's domain).
    grafana_behind_hub: bool = False

    @field_validator("retention")
    @classmethod
    def _retention(cls, value: str) -> str:
        match = re.match(r"^(\d+)([hdw])$", value)
        if not match or int(match.group(1)) < 1:
            raise ValueError("must be a whole number of hours, days or weeks, such as 12h, 3d or 2w")
        hours = int(match.group(1)) * {"h": 1, "d": 24, "w": 168}[match.group(2)]
        if not 2 <= hours <= 90 * 24:
            raise ValueError("must be between 2h and 90d (a longer history needs a larger volume and memory)")
        return value

    @field_validator("alarm_emails")
    @classmethod
    def _emails(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if not _EMAIL.match(v)]
        if bad:
            raise ValueError(f"{bad} are not e-mail addresses (name@example.com)")
        if len(set(v.lower() for v in value)) != len(value):
            raise ValueError("lists an address twice")
        return value


class PlatformConfig(_Model):
    cluster: ClusterConfig = ClusterConfig()
    network: NetworkConfig = NetworkConfig()
    karpenter: KarpenterConfig = KarpenterConfig()
    ray: RayConfig = RayConfig()
    jupyterhub: JupyterHubConfig = JupyterHubConfig()
    pipeline: PipelineConfig = PipelineConfig()
    cost: CostConfig = CostConfig()
    logs: LogsConfig = LogsConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    tags: dict[str, str] = Field(default_factory=lambda: {"project": "dynamic-factory"})

    @property
    def idle_budget(self) -> float | None:
        """The idle budget synth enforces: ``cost.max_idle_usd_per_hour`` when set (null: none), else the default of
        the price region for this platform, with or without metrics (cost/prices.yaml ``default_idle_budget``)."""
        if "max_idle_usd_per_hour" in self.cost.model_fields_set:
            return self.cost.max_idle_usd_per_hour
        return default_idle_budget(self.cost.price_region, observability=self.observability.enabled)

    @model_validator(mode="after")
    def _ray_pods_fit_their_nodes(self) -> "PlatformConfig":
        from charts.raycluster import pod_fit_problem

        nodes = self.cluster.system_nodes
        pools = {p.name: p for p in self.karpenter.node_pools()}
        pools["system"] = kn.node_group_pool("system", nodes.instance_type, nodes=nodes.min_size)
        ray = self.ray
        problems = [
            pod_fit_problem("ray head", pools[ray.head_placement], ray.head_cpu, ray.head_memory_gib, sidecar=True),
            pod_fit_problem("ray worker", pools["spot"], ray.workers.cpu, ray.workers.memory_gib),
        ]
        if ray.gpu_workers.max_workers and "gpu" in pools:
            problems.append(pod_fit_problem("ray gpu worker", pools["gpu"], ray.gpu_workers.cpu,
                                            ray.gpu_workers.memory_gib, gpus=ray.gpu_workers.gpus))
        problems = [p for p in problems if p]
        if problems:
            raise ValueError("; ".join(problems) + " (change the pod size, the instance types or ray.head_placement)")
        return self

    @model_validator(mode="after")
    def _grafana_behind_the_hub_needs_its_domain(self) -> "PlatformConfig":
        if self.observability.grafana_behind_hub and not (self.observability.enabled and self.jupyterhub.domain):
            raise ValueError("observability.grafana_behind_hub needs observability.enabled and jupyterhub.domain "
                             "(Grafana is served by the hub's proxy over the hub's HTTPS listener)")
        return self

    @model_validator(mode="after")
    def _gpu_workers_need_the_gpu_pool(self) -> "PlatformConfig":
        if self.ray.gpu_workers.max_workers > 0 and not self.karpenter.gpu.enabled:
            raise ValueError(
                "ray.gpu_workers.max_workers > 0 needs GPU nodes: set karpenter.gpu.enabled to true "
                "(or ray.gpu_workers.max_workers to 0)"
            )
        return self

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: dict[str, str]) -> dict[str, str]:
        for key, value in tags.items():
            if not 1 <= len(key) <= 128 or key.lower().startswith("aws:"):
                raise ValueError(f"tag key {key!r} must be 1-128 characters and must not start with 'aws:'")
            if len(value) > 256:
                raise ValueError(f"tag {key!r} has a value longer than 256 characters")
        return tags


# --------------------------------------------------------------------------- loading


def _fields_at(path: tuple[Any, ...]) -> list[str] | None:
    """Allowed keys of the model that sits at ``path`` (for 'unknown key' messages)."""
    model: Any = PlatformConfig
    for part in path:
        if isinstance(part, int):  # an item of a tuple[Model, ...]
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        if typing.get_origin(annotation) is tuple:
            annotation = typing.get_args(annotation)[0]
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return sorted(model.model_fields)


def _format(err: Mapping[str, Any]) -> str:
    loc = tuple(p for p in err["loc"])
    path = ".".join([CONTEXT_KEY, *[str(p) for p in loc]])
    value = err.get("input")
    if err["type"] == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return f"{path}: unknown key (value {json.dumps(value)}){hint}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if isinstance(value, dict):  # a rule over several fields: the message names them
        return f"{path}: {msg}"
    return f"{path}: {json.dumps(value, default=str)} is not allowed: {msg}"


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _annotation_at(path: list[str]) -> Any:
    model: Any = PlatformConfig
    for part in path:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return None
        model = fields[part].annotation
    return model


def _parse_override(raw: Any, path: list[str] | None = None) -> Any:
    """A command-line value: JSON when it parses, except for text fields ("1.36" stays a string); a bracketed
    list that is not JSON is a list of text items."""
    if not isinstance(raw, str):
        return raw
    if path is not None and _annotation_at(path) is str:
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        pass
    # A list whose quotes the shell removed (make deploy CTX='-c x=["a","b"]' reaches the app as x=[a,b]):
    # the items are text, separated by commas.
    if raw.startswith("[") and raw.endswith("]"):
        inner = raw[1:-1].strip()
        return [item.strip() for item in inner.split(",")] if inner else []
    return raw


def _default_system_nodes_for_metrics(tree: dict[str, Any]) -> None:
    """With observability on (the default), the system node group's sizes default to 3/3/4 instead of 2/2/3:
    Prometheus, Grafana and the rest (about 270m CPU, 1.2 GiB) do not fit beside the Ray head on two t3a.large with
    the 10% headroom the first-boot model requires (the README's "What it costs" compares the options). Sizes the
    user sets are kept as given: the defaults apply only when none of the three is set. Malformed input is left for
    validation to report."""
    observability = tree.get("observability")
    enabled = observability.get("enabled", True) if isinstance(observability, dict) else True
    cluster = tree.get("cluster", {})
    nodes = cluster.get("system_nodes", {}) if isinstance(cluster, dict) else None
    if enabled is not True or not isinstance(nodes, dict) or any(k in nodes for k in METRICS_SYSTEM_NODE_SIZES):
        return
    tree["cluster"] = {**cluster, "system_nodes": {**nodes, **METRICS_SYSTEM_NODE_SIZES}}


def build_config(base: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None = None) -> PlatformConfig:
    """Merge ``overrides`` (dotted paths under ``platform.``) into ``base`` and validate.

    Raises ``ConfigError`` listing every problem.
    """
    if base is not None and not isinstance(base, Mapping):
        raise ConfigError([f"{CONTEXT_KEY}: must be a JSON object, got {type(base).__name__}"])
    tree: dict[str, Any] = json.loads(json.dumps(dict(base or {})))
    for key, raw in sorted((overrides or {}).items()):
        dotted = key[len(CONTEXT_KEY) + 1:]
        if not dotted:
            raise ConfigError([f"{key}: an override needs a field path, e.g. -c {CONTEXT_KEY}.cluster.name=ml-prod"])
        _set_path(tree, dotted, _parse_override(raw, dotted.split(".")))
    _default_system_nodes_for_metrics(tree)
    try:
        return PlatformConfig.model_validate_json(json.dumps(tree), strict=True)
    except ValidationError as err:
        raise ConfigError([_format(e) for e in err.errors(include_url=False)]) from None


def read_cdk_json_platform(path: Path = CDK_JSON) -> dict[str, Any]:
    """The ``platform`` object of cdk.json (for callers that run outside the CDK CLI)."""
    return json.loads(path.read_text())["context"].get(CONTEXT_KEY, {})


def load_from_context(context: Mapping[str, Any]) -> PlatformConfig:
    """Build the config from a CDK app's context (cdk.json ``platform`` + ``-c platform.x=y``)."""
    base = context.get(CONTEXT_KEY)
    if base is None:
        base = read_cdk_json_platform()
    if isinstance(base, str):  # -c platform='{"cluster": ...}' replaces the whole object
        base = _parse_override(base)
    overrides = {k: v for k, v in context.items() if k.startswith(CONTEXT_KEY + ".")}
    return build_config(base, overrides)
