"""Reclaim drill: what a Spot reclaim of one training worker's node costs a running job.

    python -m jobs.reclaim_drill [--mode hook|drain|predrain|none|all] [--rows 200000]
        [--rounds 2000] [--checkpoint-every 50] [--reclaim-after-round 150] [--grace 20] ...

A local multi-node Ray on this one machine stands in for the platform's RayCluster: a head
(``ray start --head --num-cpus 0``) and N worker "nodes", each its own
``ray start --address ... --block --num-cpus 1`` process (own session, own temp dir; a custom
resource ``drill_node_<i>`` tells the nodes apart; an environment tag marks every process a node
spawns, so a reclaim touches that node's processes only). The validation job's training
(jobs/train.py, 2 workers x 1 CPU, ``max_failures`` >= 1) runs on it; one node stays spare,
standing in for the replacement Spot node Karpenter brings (so the drill leaves out the time a
real replacement node takes to arrive).

When training worker ``--reclaim-rank`` finishes round ``--reclaim-after-round`` of its first
attempt it reports to a coordinator actor on the head (through the ``drill`` hook that
``CheckpointEveryK`` already calls) and waits until the drill has *started* reclaiming its node,
so the reclaim lands at a deterministic round; then it trains on, as a worker does after a Spot
notice (tests may hold it there longer: ``DrillSettings.hold_target_s``). The pod's grace period
is scaled down to ``--grace`` seconds (real worker pods: 90 s):

``hook``      today's chart: the preStop ``ray stop`` done on that node only (its raylet, then its
              other Ray processes, then any gcs_server; each bucket SIGTERM, then SIGKILL after a
              third of ``ray stop``'s 16 s grace, as ray/scripts/scripts.py ``stop`` does), then
              SIGTERM to the node's ``ray start --block`` (the kubelet, after preStop).
``drain``     Ray's built-in path: no preStop, SIGTERM to the node's ``ray start --block`` only
              (started with ``RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S`` = ``--drain-timeout``, just
              under the grace period): it drains the node at the GCS (reason PREEMPTION, deadline
              now + timeout), waits, then stops the node's processes.
``predrain``  a preStop (:data:`PRESTOP_DRAIN_SCRIPT`, run in the node's environment) that drains
              the node itself (what ``ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION
              --deadline-remaining-seconds T`` sends, T = ``--drain-timeout``) and sleeps until
              1 s past that deadline; then SIGTERM to ``ray start --block``, started with
              ``RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0``.
``none``      no reclaim: the baseline (the hook still notes when the round is reached).

Every mode ends with SIGKILL, at the grace deadline, to whatever is left of the node.

Why ``predrain``: the raylet reports its death as a preemption (``AUTOSCALER_DRAIN_PREEMPTED``,
which Ray Train charges to ``FailureConfig.max_preemption_failures``, unlimited by default) only if
it gets SIGTERM *after* the drain deadline (raylet main.cc signal handler). In ``drain`` the
deadline sent to the GCS and the moment ``ray start`` stops the raylet are both "SIGTERM time +
timeout" (ray/_private/node.py ``_drain_node_before_shutdown``), a few milliseconds apart: the
death is a preemption or an ``EXPECTED_TERMINATION`` (charged to ``max_failures``) by chance.

Every mode gets a fresh cluster (``--mode all`` runs none, hook, drain, predrain; ``--repeat``
runs that several times). The table gives the fit wall time, the time lost against ``none``, the
same for the time after the reclaim round only, Ray Train's retry decision and what it was
charged to, the restart time, the round resumed from, the rounds redone, the final rounds, the
validation AUC/logloss of the final model (scored on the driver over the whole validation split),
and when the training worker and ``ray start`` died.

Every Ray process the drill starts is killed when it ends, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import psutil

from jobs.config import MAX_RAY_TEMP_DIR_CHARS, DrillConfig, JobConfig
from jobs.data import DataSpec
from charts.ray_prestop import PRESTOP_DRAIN_SCRIPT

MODES = ("hook", "drain", "predrain", "none")
RUN_ORDER = ("none", "hook", "drain", "predrain")
LOG_PREFIX = "[reclaim-drill]"

# The chart's worker pods: terminationGracePeriodSeconds (charts/raycluster.py, worker_grace).
PRODUCTION_GRACE_S = 90
DEFAULT_GRACE_S = 20.0
# Margin between Ray's drain timeout and the grace period: after the drain wait `ray start`
# still stops its processes (up to ~1 s each, ray/_private/node.py _kill_process_impl).
DEFAULT_DRAIN_MARGIN_S = 3.0
# `ray stop` defaults (ray/scripts/scripts.py: --grace-period 16, split over 3 buckets).
RAY_STOP_GRACE_S = 16.0
# predrain: the preStop hook sleeps this long past the drain deadline it announced, so the
# node dies strictly after it (the raylet calls a SIGTERM a preemption only then).
PREDRAIN_SLACK_S = 1.0
# Environment variable that marks every process of one drill node (inherited by the raylet,
# its agents and its worker processes): "<cluster tag>/<node name>".
NODE_TAG_ENV = "DF_RECLAIM_DRILL_NODE"
HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
PREEMPTION_POLL_ENV = "RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S"
DRAIN_TIMEOUT_ENV = "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"
NODE_IP = "127.0.0.1"
OBJECT_STORE_BYTES = 100 * 1024 * 1024
NODE_MEMORY_BYTES = 2 * 1024 ** 3
START_TIMEOUT_S = 90.0
# How long the target worker waits for the drill to start the reclaim before training on.
HOOK_ACK_TIMEOUT_S = 60.0


def log(msg: str) -> None:
    print(f"{LOG_PREFIX} {msg}", flush=True)


# ------------------------------------------------------------------------------------------
# Settings and results
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DrillSettings:
    rows: int = 200_000
    features: int = 20
    seed: int = 42
    rounds: int = 2000
    checkpoint_every: int = 50
    max_depth: int = 6
    reclaim_after_round: int = 150
    reclaim_rank: int = 1
    workers: int = 2
    spare_nodes: int = 1
    max_failures: int = 3
    grace_s: float = DEFAULT_GRACE_S
    drain_timeout_s: Optional[float] = None  # None: grace_s - DEFAULT_DRAIN_MARGIN_S
    # Controller poll (Ray's default 2 s per poll and per report barrier; jobs/ uses 0.2 locally).
    health_check_interval_s: float = 0.2
    # Train V2's drain-state poll (Ray's default: 5 s).
    preemption_poll_interval_s: float = 1.0
    storage_root: Optional[str] = None  # None: a temp dir, removed afterwards
    # Tests: the target worker stays in the hook this long after the reclaim started (a training
    # step spanning the drain window), so its node dies under the running job on a machine of any
    # speed. None: it trains on at once, as a real worker does (the measured runs).
    hold_target_s: Optional[float] = None

    @property
    def drain_timeout(self) -> float:
        if self.drain_timeout_s is not None:
            return self.drain_timeout_s
        return max(self.grace_s - DEFAULT_DRAIN_MARGIN_S, 1.0)

    @property
    def worker_nodes(self) -> int:
        return self.workers + self.spare_nodes

    def problems(self) -> List[str]:
        out = []
        if self.workers < 1:
            out.append(f"--workers {self.workers}: must be >= 1")
        if self.spare_nodes < 1:
            out.append(f"--spare-nodes {self.spare_nodes}: must be >= 1 (the replacement node)")
        if not self.checkpoint_every < self.reclaim_after_round < self.rounds:
            out.append(f"--reclaim-after-round {self.reclaim_after_round}: must be after the first "
                       f"checkpoint ({self.checkpoint_every}) and before the last round ({self.rounds})")
        if not 0 <= self.reclaim_rank < self.workers:
            out.append(f"--reclaim-rank {self.reclaim_rank}: must be in [0, {self.workers})")
        if self.max_failures == 0:
            out.append("--max-failures 0: the job must be allowed to restart its workers")
        if self.grace_s <= 0:
            out.append(f"--grace {self.grace_s}: must be > 0")
        if not 0 < self.drain_timeout < self.grace_s - PREDRAIN_SLACK_S:
            out.append(f"--drain-timeout {self.drain_timeout}: must be in (0, --grace "
                       f"{self.grace_s:g} - {PREDRAIN_SLACK_S:g})")
        return out

    def job_config(self, address: str, storage_path: str, run_name: str) -> JobConfig:
        return JobConfig(
            data=DataSpec(rows=self.rows, features=self.features, seed=self.seed),
            workers=self.workers, cpus_per_worker=1, rounds=self.rounds,
            checkpoint_every=self.checkpoint_every, max_depth=self.max_depth,
            max_failures=self.max_failures, storage_path=storage_path, run_name=run_name,
            address=address, min_auc=None,
        )


@dataclasses.dataclass
class ReclaimReport:
    """What the drill did to the node and what it saw, times in seconds from the first signal."""

    mode: str
    node: str
    node_id: str
    rank: int
    round: int
    worker_pid: int
    worker_on_node: bool
    grace_s: float
    drain_timeout_s: float
    started_at: float = 0.0  # monotonic
    steps: List[str] = dataclasses.field(default_factory=list)
    raylet_gone_s: Optional[float] = None
    worker_gone_s: Optional[float] = None
    ray_start_exit_s: Optional[float] = None
    ray_start_returncode: Optional[int] = None
    all_gone_s: Optional[float] = None
    sigkilled_at_deadline: List[str] = dataclasses.field(default_factory=list)
    error: Optional[str] = None


@dataclasses.dataclass
class ModeResult:
    mode: str
    fit_seconds: float
    rounds: int
    resumed_from_round: int
    auc: float
    logloss: float
    reclaim: Optional[ReclaimReport] = None
    # Seconds into the fit when the target worker reached round ``round_n`` (every mode).
    round_n: int = 0
    round_reached_s: Optional[float] = None
    failure_decisions: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    node_alive_after: Optional[bool] = None
    node_death_reason: Optional[str] = None
    nodes_alive_after: int = 0
    run_name: str = ""
    checkpoint_path: str = ""
    trial: int = 1
    # Rank 0's xgb.train time in the final attempt (rounds resumed_from_round..rounds).
    final_boost_seconds: Optional[float] = None

    @property
    def reclaim_round(self) -> Optional[int]:
        return self.reclaim.round if self.reclaim else None

    @property
    def restarted(self) -> bool:
        """The final attempt resumed from a checkpoint (a first attempt starts at round 0)."""
        return self.resumed_from_round > 0

    @property
    def rounds_redone(self) -> Optional[int]:
        """Reclaim round - resumed round (0 without a restart; negative: the drain window's
        progress was checkpointed). Rounds trained in the drain window after its last
        checkpoint are lost as well: they show in the time lost."""
        if self.reclaim is None:
            return None
        return self.reclaim.round - self.resumed_from_round if self.restarted else 0

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["reclaim_round"] = self.reclaim_round
        d["rounds_redone"] = self.rounds_redone
        d["restarted"] = self.restarted
        return d


# ------------------------------------------------------------------------------------------
# Processes
# ------------------------------------------------------------------------------------------


def _free_ports(n: int) -> List[int]:
    """``n`` distinct free TCP ports (all held open until every one is chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tag_of(proc: psutil.Process) -> Optional[str]:
    try:
        return proc.environ().get(NODE_TAG_ENV)
    except (psutil.Error, OSError):
        return None


def tagged_processes(predicate: Callable[[str], bool]) -> List[psutil.Process]:
    """Live processes of this user whose node tag satisfies ``predicate``."""
    me = os.getuid()
    out = []
    for proc in psutil.process_iter(["uids", "status"]):
        try:
            if proc.info["uids"] is None or proc.info["uids"].real != me:
                continue
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
        except (psutil.Error, KeyError):
            continue
        tag = _tag_of(proc)
        if tag is not None and predicate(tag):
            out.append(proc)
    return out


def _alive(pid: Optional[int]) -> bool:
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return "?"


def _sigkill(procs: Sequence[psutil.Process]) -> List[str]:
    killed = []
    for proc in procs:
        try:
            name = proc.name()
            proc.kill()
            killed.append(f"{name}[{proc.pid}]")
        except psutil.Error:
            pass
    psutil.wait_procs(list(procs), timeout=3)
    return killed


@dataclasses.dataclass
class NodeProc:
    name: str  # "head", "node-0", ...
    tag: str
    popen: subprocess.Popen
    log_path: str
    resource: Optional[str] = None  # custom resource of a worker node
    args: List[str] = dataclasses.field(default_factory=list)  # node-specific `ray start` args
    restarts: int = 0
    env: Dict[str, str] = dataclasses.field(default_factory=dict, repr=False)
    temp_dir: str = ""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def processes(self) -> List[psutil.Process]:
        return tagged_processes(lambda t: t == self.tag)


# Run by a watchdog process next to the driver: once the driver is gone (even SIGKILLed, or
# SIGTERMed: Ray's signal handler in the driver ends it without unwinding), SIGKILL every process
# tagged for the cluster and remove its temp dir. argv: driver pid, tag prefix, temp dir or "".
_WATCHDOG = r"""
import os, shutil, signal, sys, time
driver, prefix, temp_dir = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]
key = b"%s=" % sys.argv[4].encode()
while os.getppid() == driver:
    time.sleep(0.5)
for _ in range(20):
    found = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open("/proc/%s/environ" % pid, "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if any(e.startswith(key + prefix) for e in env):
            found += 1
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
    if not found:
        break
    time.sleep(0.5)
if temp_dir:
    shutil.rmtree(temp_dir, ignore_errors=True)
"""


class LocalRayCluster:
    """A head and ``worker_nodes`` worker nodes, each a ``ray start --block`` process.

    A watchdog process kills them all if this process dies without tearing them down.
    """

    def __init__(self, worker_nodes: int, drain_timeout_s: float,
                 temp_dir: Optional[str] = None):
        self.worker_nodes = worker_nodes
        self.drain_timeout_s = drain_timeout_s
        self.cluster_tag = uuid.uuid4().hex[:12]
        self._own_temp = temp_dir is None
        self.temp_dir = temp_dir or tempfile.mkdtemp(prefix="rd-", dir="/tmp")
        if len(self.temp_dir) > MAX_RAY_TEMP_DIR_CHARS:
            raise ValueError(f"Ray temp dir {self.temp_dir!r} is longer than "
                             f"{MAX_RAY_TEMP_DIR_CHARS} characters (Unix socket paths)")
        self.gcs_port, self._client_port = _free_ports(2)
        self.address = f"{NODE_IP}:{self.gcs_port}"
        self.head: Optional[NodeProc] = None
        self.workers: List[NodeProc] = []
        self._connected = False
        self._watchdog: Optional[subprocess.Popen] = None

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> "LocalRayCluster":
        try:
            self.start()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.teardown()

    def _env(self, node_name: str) -> Dict[str, str]:
        env = dict(os.environ)
        for key in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
            env.pop(key, None)
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
        env[NODE_TAG_ENV] = f"{self.cluster_tag}/{node_name}"
        env[DRAIN_TIMEOUT_ENV] = f"{self.drain_timeout_s:g}"
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        # `ray start --head` turns token auth on by itself when ~/.ray/auth_token exists; the
        # drill's driver connects without a token.
        env["RAY_AUTH_MODE"] = "disabled"
        return env

    def _ray_start(self, name: str, args: List[str], resource: Optional[str] = None) -> NodeProc:
        ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
        # One temp dir per node, as in separate pods: nodes started together would otherwise race
        # for the same socket and log file names in one session dir.
        node_dir = os.path.join(self.temp_dir, name)
        ports = _free_ports(6)
        os.makedirs(node_dir, exist_ok=True)
        cmd = [ray_bin if os.path.exists(ray_bin) else "ray", "start", "--block",
               f"--temp-dir={node_dir}", f"--node-ip-address={NODE_IP}",
               f"--object-store-memory={OBJECT_STORE_BYTES}", f"--memory={NODE_MEMORY_BYTES}",
               f"--dashboard-agent-listen-port={ports[0]}",
               f"--dashboard-agent-grpc-port={ports[1]}",
               f"--metrics-export-port={ports[2]}",
               f"--runtime-env-agent-port={ports[3]}",
               f"--node-manager-port={ports[4]}", f"--object-manager-port={ports[5]}",
               "--min-worker-port=0", "--max-worker-port=0",
               # The driver shows no worker output (log_to_driver=False): no log monitors.
               "--include-log-monitor=false", "--disable-usage-stats", *args]
        log_path = os.path.join(self.temp_dir, f"{name}.log")
        env = self._env(name)
        with open(log_path, "wb") as out:
            popen = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        return NodeProc(name=name, tag=f"{self.cluster_tag}/{name}", popen=popen,
                        log_path=log_path, resource=resource, args=list(args), env=env,
                        temp_dir=node_dir)

    def start(self) -> None:
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(os.getpid()), f"{self.cluster_tag}/",
             self.temp_dir if self._own_temp else "", NODE_TAG_ENV],
            stdin=subprocess.DEVNULL, start_new_session=True)
        self.head = self._ray_start("head", [
            "--head", f"--port={self.gcs_port}", "--num-cpus=0", "--include-dashboard=false",
            f"--ray-client-server-port={self._client_port}",
            '--resources={"drill_head": 1}'])
        self._wait_for_port(self.gcs_port, self.head)
        for i in range(self.worker_nodes):
            resource = f"drill_node_{i}"
            self.workers.append(self._ray_start(f"node-{i}", [
                f"--address={self.address}", "--num-cpus=1",
                "--resources=" + json.dumps({resource: 1})], resource=resource))

    def _wait_for_port(self, port: int, node: NodeProc) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if node.popen.poll() is not None:
                raise RuntimeError(f"{node.name} exited ({node.popen.returncode}):\n"
                                   + self.log_tail(node))
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                if s.connect_ex((NODE_IP, port)) == 0:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"{node.name}: GCS port {port} not open after {START_TIMEOUT_S:.0f} s")

    def connect(self) -> None:
        """Connect this process as the driver (on the head: Ray prefers the head on one host)."""
        import logging

        import ray

        if ray.is_initialized():
            raise RuntimeError("Ray is already initialised in this process")
        ray.init(address=self.address, _node_ip_address=NODE_IP, log_to_driver=False,
                 logging_level=logging.WARNING)
        self._connected = True
        if ray.get_runtime_context().get_node_id() != self.node_id(self.head):
            raise RuntimeError("the driver did not attach to the head node")
        self.wait_for_nodes()

    def disconnect(self) -> None:
        if self._connected:
            import ray

            ray.shutdown()
            self._connected = False

    def wait_for_nodes(self) -> None:
        import ray

        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            alive = {r for n in ray.nodes() if n["Alive"] for r in n["Resources"]}
            missing = [w for w in self.workers if w.resource not in alive]
            if not missing:
                return
            for node in missing:
                if node.popen.poll() is not None:
                    if node.restarts >= 1:
                        raise RuntimeError(f"{node.name} exited ({node.popen.returncode}):\n"
                                           + self.log_tail(node))
                    # `ray start` gives its raylet 30 s to register (node.py); on a loaded
                    # 2-core machine a node started together with others can miss that once.
                    log(f"{node.name} failed to start ({node.popen.returncode}); retrying once")
                    _sigkill(node.processes())
                    again = self._ray_start(node.name, node.args, resource=node.resource)
                    again.restarts = node.restarts + 1
                    self.workers[self.workers.index(node)] = again
                    deadline = max(deadline, time.monotonic() + START_TIMEOUT_S)
            if time.monotonic() > deadline:
                raise TimeoutError(f"nodes {[n.name for n in missing]} did not join in "
                                   f"{START_TIMEOUT_S:.0f} s")
            time.sleep(0.2)

    def teardown(self) -> None:
        """Kill every process of every node (workers first), then remove the temp dir."""
        try:
            self.disconnect()
        except Exception as exc:  # never let a driver problem keep `ray start`s alive
            log(f"ray.shutdown() failed: {exc!r}")
        nodes = list(self.workers) + ([self.head] if self.head else [])
        for node in nodes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(node.pid, signal.SIGKILL)
        prefix = f"{self.cluster_tag}/"
        deadline = time.monotonic() + 15
        while True:
            left = tagged_processes(lambda t: t.startswith(prefix))
            if not left:
                break
            _sigkill(left)
            if time.monotonic() > deadline:
                log(f"could not kill {[p.pid for p in left]}")
                break
        for node in nodes:
            with contextlib.suppress(Exception):
                node.popen.wait(timeout=5)
        if self._own_temp:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None

    # -- lookups -----------------------------------------------------------------------------

    def log_tail(self, node: NodeProc, lines: int = 30) -> str:
        try:
            with open(node.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""

    @staticmethod
    def _node_entry(node: NodeProc) -> Optional[Dict[str, Any]]:
        import ray

        key = node.resource or "drill_head"
        entries = [n for n in ray.nodes() if key in n.get("Resources", {})
                   or key in n.get("TotalResources", {}) or key in n.get("Labels", {})]
        if not entries:  # a dead node may have lost its resources in the table: match by tag
            return None
        entries.sort(key=lambda n: n["Alive"], reverse=True)
        return entries[0]

    def node_id(self, node: NodeProc) -> Optional[str]:
        entry = self._node_entry(node)
        return entry["NodeID"] if entry else None

    def node_ids(self) -> Dict[str, NodeProc]:
        """Alive NodeID -> node, from the custom resources in Ray's node table."""
        import ray

        by_resource = {n.resource: n for n in self.workers}
        out = {}
        for entry in ray.nodes():
            if not entry["Alive"]:
                continue
            for res in entry["Resources"]:
                if res in by_resource:
                    out[entry["NodeID"]] = by_resource[res]
                elif res == "drill_head" and self.head:
                    out[entry["NodeID"]] = self.head
        return out


# ------------------------------------------------------------------------------------------
# The reclaim
# ------------------------------------------------------------------------------------------


def _ray_processes_spec():
    """``ray stop``'s process list (keyword, match on name?), from Ray itself."""
    from ray.autoscaler._private.constants import RAY_PROCESSES

    return [tuple(p) for p in RAY_PROCESSES]


def _matches(proc: psutil.Process, keyword: str, by_name: bool) -> bool:
    try:
        corpus = proc.name() if by_name else subprocess.list2cmdline(proc.cmdline())
    except psutil.Error:
        return False
    return keyword in corpus


class Reclaimer:
    """Reclaims one drill node like Kubernetes deleting its pod (``hook``, ``drain``, ``predrain``).

    Waits by polling the node's processes found when the reclaim began (cheap), not by scanning
    every process's environment (~30 ms a scan here, which would steal CPU from the training
    during the drain window); one full scan at the grace deadline finds anything left.
    """

    def __init__(self, node: NodeProc, mode: str, grace_s: float, drain_timeout_s: float,
                 rank: int, round_: int, worker_pid: int, node_id: str, gcs_address: str):
        self.node = node
        self.mode = mode
        self.gcs_address = gcs_address
        self.report = ReclaimReport(mode=mode, node=node.name, node_id=node_id, rank=rank,
                                    round=round_, worker_pid=worker_pid, worker_on_node=False,
                                    grace_s=grace_s, drain_timeout_s=drain_timeout_s)
        self._raylet_pids: List[int] = []
        self._pids: List[int] = []

    def _t(self) -> float:
        return round(time.monotonic() - self.report.started_at, 3)

    def _step(self, text: str) -> None:
        self.report.steps.append(f"{self._t():7.2f}s {text}")

    def _observe(self) -> None:
        """Record when the raylet, the training worker and `ray start` went away."""
        r = self.report
        if r.raylet_gone_s is None and self._raylet_pids and not any(
                _alive(p) for p in self._raylet_pids):
            r.raylet_gone_s = self._t()
        if r.worker_gone_s is None and not _alive(r.worker_pid):
            r.worker_gone_s = self._t()
        if r.ray_start_exit_s is None and self.node.popen.poll() is not None:
            r.ray_start_exit_s = self._t()
            r.ray_start_returncode = self.node.popen.returncode

    def _node_down(self) -> bool:
        return self.node.popen.poll() is not None and not any(_alive(p) for p in self._pids)

    def _sleep_until(self, deadline: float, until: Callable[[], bool]) -> bool:
        while time.monotonic() < deadline:
            self._observe()
            if until():
                return True
            time.sleep(0.05)
        self._observe()
        return until()

    def run(self, on_started: Callable[[], None]) -> ReclaimReport:
        r = self.report
        procs = self.node.processes()
        self._pids = [p.pid for p in procs]
        r.worker_on_node = r.worker_pid in self._pids
        self._raylet_pids = [p.pid for p in procs if _name(p) == "raylet"]
        r.started_at = time.monotonic()
        deadline = r.started_at + r.grace_s
        try:
            if self.mode == "hook":
                self._pre_stop_ray_stop(deadline, on_started)
                if time.monotonic() < deadline and self.node.popen.poll() is None:
                    self._step("preStop done; SIGTERM to `ray start --block`")
                    os.kill(self.node.pid, signal.SIGTERM)
            elif self.mode == "drain":
                self._step(f"SIGTERM to `ray start --block` ({DRAIN_TIMEOUT_ENV}="
                           f"{r.drain_timeout_s:g})")
                os.kill(self.node.pid, signal.SIGTERM)
                on_started()
            elif self.mode == "predrain":
                self._pre_stop_drain(on_started)
                if time.monotonic() < deadline and self.node.popen.poll() is None:
                    self._step(f"preStop done; SIGTERM to `ray start --block` ({DRAIN_TIMEOUT_ENV}=0)")
                    os.kill(self.node.pid, signal.SIGTERM)
            else:
                raise ValueError(f"unknown reclaim mode {self.mode!r}")
        except Exception as exc:  # still kill the node at the deadline
            r.error = f"{type(exc).__name__}: {exc}"
            on_started()
        finally:
            self._sleep_until(deadline, self._node_down)
            left = self.node.processes()
            if left:
                r.sigkilled_at_deadline = _sigkill(left)
                self._step(f"grace period over: SIGKILL {r.sigkilled_at_deadline}")
            with contextlib.suppress(Exception):
                os.killpg(self.node.pid, signal.SIGKILL)
            self._sleep_until(time.monotonic() + 5, lambda: self.node.popen.poll() is not None)
            r.all_gone_s = self._t()
            self._step("node gone")
        return r

    def _pre_stop_drain(self, on_started: Callable[[], None]) -> None:
        """Run :data:`PRESTOP_DRAIN_SCRIPT` as the node's preStop hook, in the node's environment."""
        r = self.report
        env = dict(self.node.env)
        env.update({"RAY_ADDRESS": self.gcs_address, "DF_RAY_TEMP_DIR": self.node.temp_dir})
        hook = subprocess.Popen([sys.executable, "-c", PRESTOP_DRAIN_SCRIPT,
                                 f"{r.drain_timeout_s:g}", f"{PREDRAIN_SLACK_S:g}"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True)
        try:
            first = hook.stdout.readline().strip()  # "drain <node id> accepted", after the RPC
            self._step(f"preStop: {first or 'no output'} (deadline +{r.drain_timeout_s:g} s), "
                       f"sleeping {r.drain_timeout_s + PREDRAIN_SLACK_S:g} s")
            on_started()
            if not first.endswith("accepted"):
                raise RuntimeError(f"preStop drain failed: {first} {hook.stdout.read()[-2000:]}")
            # The kubelet runs the hook to its end, unless the container's main process exits.
            self._sleep_until(r.started_at + r.grace_s,
                              lambda: hook.poll() is not None or self.node.popen.poll() is not None)
        finally:
            if hook.poll() is None:
                hook.kill()
            hook.wait()
            hook.stdout.close()

    def _pre_stop_ray_stop(self, deadline: float, on_started: Callable[[], None]) -> None:
        """``ray stop`` (scripts.py ``stop``), restricted to this node's processes."""
        spec = _ray_processes_spec()
        buckets = [spec[:1], spec[1:-1], spec[-1:]]
        per_bucket = RAY_STOP_GRACE_S / len(buckets)
        self._step("preStop `ray stop`")
        started = False
        for bucket in buckets:
            if time.monotonic() >= deadline:
                return
            found = []
            for proc in self.node.processes():
                if proc.pid == self.node.pid:
                    continue
                if any(_matches(proc, kw, by_name) for kw, by_name in bucket):
                    found.append(proc)
            for proc in found:
                with contextlib.suppress(psutil.Error):
                    proc.terminate()
            if found:
                self._step(f"ray stop: SIGTERM {[f'{_name(p)}[{p.pid}]' for p in found]}")
            if not started:
                on_started()
                started = True
            pids = {p.pid for p in found}
            self._sleep_until(min(deadline, time.monotonic() + per_bucket),
                              lambda: not any(_alive(p) for p in pids))
            alive = [p for p in found if _alive(p.pid)]
            if alive:
                self._step(f"ray stop: SIGKILL {[p.pid for p in alive]}")
                _sigkill(alive)
        if not started:
            on_started()


# ------------------------------------------------------------------------------------------
# The coordination hook (called by CheckpointEveryK through the loop config's "drill" entry)
# ------------------------------------------------------------------------------------------


def _hook_actor_class():
    import ray

    @ray.remote(num_cpus=0, max_restarts=0)
    class ReclaimHook:
        """Learns when the target worker reaches the reclaim round; holds it until the reclaim starts.

        Same ``progress`` signature as jobs.drill.FaultDrill, which CheckpointEveryK calls.
        """

        def __init__(self, rank: int, after_round: int, hold_s: float = 0.0):
            self.rank = rank
            self.after_round = after_round
            self.hold_s = hold_s
            self.event: Optional[Dict[str, Any]] = None
            self._fired = asyncio.Event()
            self._started = asyncio.Event()

        async def progress(self, rank: int, done_rounds: int, resumed_from: int, pid: int,
                           node_id: str) -> bool:
            if (self.event is not None or rank != self.rank or resumed_from != 0
                    or done_rounds < self.after_round):
                return False
            self.event = dict(rank=rank, round=done_rounds, resumed_from=resumed_from, pid=pid,
                              node_id=node_id, time=time.time())
            self._fired.set()
            try:
                await asyncio.wait_for(self._started.wait(), HOOK_ACK_TIMEOUT_S)
            except asyncio.TimeoutError:
                self.event["ack_timeout"] = True
            if self.hold_s:
                await asyncio.sleep(self.hold_s)
            return True

        async def wait_fired(self, timeout: float) -> Optional[Dict[str, Any]]:
            try:
                await asyncio.wait_for(self._fired.wait(), timeout)
            except asyncio.TimeoutError:
                return None
            return self.event

        async def reclaim_started(self) -> None:
            self._started.set()

    return ReclaimHook


class _ReclaimThread(threading.Thread):
    """Driver side: waits for the hook to fire, then reclaims the worker's node (unless ``none``)."""

    def __init__(self, cluster: LocalRayCluster, hook, mode: str, settings: DrillSettings):
        super().__init__(name="reclaim-drill", daemon=True)
        self.cluster = cluster
        self.hook = hook
        self.mode = mode
        self.settings = settings
        self.stop = threading.Event()
        self.event: Optional[Dict[str, Any]] = None
        self.report: Optional[ReclaimReport] = None
        self.fired_at: Optional[float] = None  # monotonic, when the target reached the round
        self.error: Optional[str] = None

    def run(self) -> None:
        import ray

        try:
            while not self.stop.is_set() and self.event is None:
                self.event = ray.get(self.hook.wait_fired.remote(0.5))
            if self.event is None:
                return
            event = self.event
            self.fired_at = time.monotonic()
            node = self.cluster.node_ids().get(event["node_id"])
            if node is None or node is self.cluster.head:
                raise RuntimeError(f"worker rank {event['rank']} is on node {event['node_id']}, "
                                   "which is not a drill worker node")
            if self.mode == "none":  # the baseline: only note when the round was reached
                ray.get(self.hook.reclaim_started.remote())
                return
            reclaimer = Reclaimer(node, self.mode, self.settings.grace_s,
                                  self.settings.drain_timeout, event["rank"], event["round"],
                                  event["pid"], event["node_id"], self.cluster.address)
            self.report = reclaimer.report
            log(f"{self.mode}: reclaiming {node.name} (rank {event['rank']} after round "
                f"{event['round']}, pid {event['pid']})")
            reclaimer.run(lambda: ray.get(self.hook.reclaim_started.remote()))
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                ray.get(self.hook.reclaim_started.remote(), timeout=5)


# ------------------------------------------------------------------------------------------
# One run
# ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _driver_env(settings: DrillSettings) -> Iterator[None]:
    """Train V2 reads these in the driver and propagates them to its controller and workers."""
    values = {HEALTH_CHECK_ENV: f"{settings.health_check_interval_s:g}",
              PREEMPTION_WATCHER_ENV: "1",
              PREEMPTION_POLL_ENV: f"{settings.preemption_poll_interval_s:g}"}
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _death_reason(entry: Optional[Dict[str, Any]]) -> Optional[str]:
    """The node table's death reason as its NodeDeathInfo name (e.g. AUTOSCALER_DRAIN_PREEMPTED)."""
    if not entry or entry.get("DeathReason") in (None, ""):
        return None
    reason = entry["DeathReason"]
    try:
        from ray.core.generated.common_pb2 import NodeDeathInfo

        return NodeDeathInfo.Reason.Name(int(reason))
    except Exception:
        return str(reason)


def _controller_logs(cluster: LocalRayCluster) -> set:
    import glob

    pattern = os.path.join(cluster.temp_dir, "head", "session_latest", "logs", "train",
                           "ray-train-sys-controller-*.log")
    return set(glob.glob(pattern))


def _failure_decisions(paths: Sequence[str]) -> List[Dict[str, Any]]:
    """Ray Train's FailurePolicy decisions (controller system log, JSON lines), with the time
    from each RETRY to the next started worker group. Best effort: internal log format."""
    import datetime

    entries = []
    for path in sorted(paths):
        with contextlib.suppress(OSError):
            with open(path) as f:
                for line in f:
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        d = json.loads(line)
                        t = datetime.datetime.strptime(d["asctime"], "%Y-%m-%d %H:%M:%S,%f")
                        entries.append((t, d["message"]))
    entries.sort(key=lambda e: e[0])
    out: List[Dict[str, Any]] = []
    for i, (t, msg) in enumerate(entries):
        if not msg.startswith("[FailurePolicy]"):
            continue
        lines = msg.splitlines()
        fields = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:3])}
        err = next((ln[len("Error:"):].strip() for ln in lines if ln.startswith("Error:")), "")
        restart = next((t2 for t2, m2 in entries[i + 1:]
                        if m2.startswith("Started training worker group")), None)
        out.append({"decision": lines[0].replace("[FailurePolicy]", "").strip(),
                    "source": fields.get("Source"), "count": fields.get("Error count"),
                    "error": err[:200],
                    "restart_s": round((restart - t).total_seconds(), 2) if restart else None})
    return out


def _fit_with_hook(cfg: JobConfig, run_name: str, hook) -> Dict[str, Any]:
    """jobs.train.fit(), with the drill's hook where fit() would create its FaultDrill.

    The same steps (build_trainer, Trainer.fit, the final checkpoint's booster); fit() builds
    FaultDrill itself and takes no other hook.
    """
    from jobs import train

    plan_device = getattr(train, "plan_device", None)  # fit() decides `--device auto` first
    if plan_device is not None:
        cfg = plan_device(cfg)
    trainer = train.build_trainer(cfg, run_name, drill=hook)
    t0 = time.monotonic()
    result = trainer.fit()
    fit_seconds = time.monotonic() - t0
    if result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    return {"result": result, "booster": train.load_booster(result.checkpoint),
            "fit_seconds": fit_seconds, "started_at": t0, "worker": result.return_value or {}}


def run_mode(cluster: LocalRayCluster, settings: DrillSettings, mode: str,
             storage_root: str) -> ModeResult:
    """Run the training once on ``cluster`` (driver connected), reclaiming a node unless ``none``.

    Every mode takes the same path: the hook fires at the same round; ``none`` only notes when.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from jobs.xgboost_validation import evaluate

    if mode not in MODES:
        raise ValueError(f"mode {mode!r} not in {MODES}")
    run_name = f"reclaim-{mode}-{uuid.uuid4().hex[:6]}"
    cfg = dataclasses.replace(
        settings.job_config(cluster.address, os.path.join(storage_root, mode), run_name),
        drill=DrillConfig(rank=settings.reclaim_rank, after_round=settings.reclaim_after_round))
    logs_before = _controller_logs(cluster)
    hook = _hook_actor_class().options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(cluster.node_id(cluster.head),
                                                           soft=False)
    ).remote(settings.reclaim_rank, settings.reclaim_after_round,
             settings.hold_target_s if mode != "none" else 0.0)
    thread = _ReclaimThread(cluster, hook, mode, settings)
    thread.start()
    try:
        with _driver_env(settings):
            out = _fit_with_hook(cfg, run_name, hook)
    finally:
        thread.stop.set()
        thread.join(timeout=settings.grace_s + 30)
        with contextlib.suppress(Exception):
            ray.kill(hook)
    if thread.error:
        raise RuntimeError(f"{mode}: the reclaim failed: {thread.error}")
    if thread.event is None or thread.fired_at is None:
        raise RuntimeError(f"{mode}: rank {settings.reclaim_rank} never reached round "
                           f"{settings.reclaim_after_round}")
    booster, worker = out["booster"], out["worker"]
    auc, loss, _ = evaluate(booster, cfg)
    res = ModeResult(mode=mode, fit_seconds=out["fit_seconds"], rounds=booster.num_boosted_rounds(),
                     resumed_from_round=int(worker.get("start_round", 0)), auc=auc, logloss=loss,
                     run_name=run_name, checkpoint_path=out["result"].checkpoint.path)
    res.round_n = int(thread.event["round"])
    res.round_reached_s = round(thread.fired_at - out["started_at"], 3)
    res.final_boost_seconds = float(worker.get("boost_seconds", 0.0)) or None
    res.nodes_alive_after = sum(1 for n in ray.nodes() if n["Alive"])
    res.failure_decisions = _failure_decisions(sorted(_controller_logs(cluster) - logs_before))
    res.reclaim = thread.report
    if thread.report is not None:
        entry = next((n for n in ray.nodes() if n["NodeID"] == thread.report.node_id), None)
        res.node_alive_after = bool(entry and entry["Alive"])
        res.node_death_reason = _death_reason(entry)
    return res


# ------------------------------------------------------------------------------------------
# Several runs, the table
# ------------------------------------------------------------------------------------------


def node_drain_timeout(settings: DrillSettings, mode: str) -> float:
    """``RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S`` of the nodes: 0 with predrain (its preStop
    has drained the node already; `ray start` then stops at once, after the deadline)."""
    return 0.0 if mode == "predrain" else settings.drain_timeout


def run_drill(settings: DrillSettings, modes: Sequence[str], repeat: int = 1) -> List[ModeResult]:
    """Each mode on a fresh local cluster, ``none`` first (the baseline); ``repeat`` times."""
    problems = settings.problems()
    if problems:
        raise ValueError("; ".join(problems))
    import ray

    if ray.is_initialized():
        raise RuntimeError("Ray is already initialised in this process: the drill runs its own")
    own_storage = settings.storage_root is None
    storage_root = settings.storage_root or tempfile.mkdtemp(prefix="reclaim-drill-")
    results = []
    try:
        for trial, mode in [(t, m) for t in range(1, repeat + 1) for m in RUN_ORDER if m in modes]:
            t0 = time.monotonic()
            with LocalRayCluster(settings.worker_nodes, node_drain_timeout(settings, mode)) as cluster:
                cluster.connect()
                log(f"{mode}: cluster up in {time.monotonic() - t0:.1f} s "
                    f"(head + {settings.worker_nodes} nodes, {cluster.temp_dir})")
                res = run_mode(cluster, settings, mode, storage_root)
                res.trial = trial
                results.append(res)
                log(f"{mode}: fit {res.fit_seconds:.1f} s, rounds {res.rounds}, resumed from "
                    f"{res.resumed_from_round}, AUC {res.auc:.5f}")
                if res.reclaim:
                    for step in res.reclaim.steps:
                        log(f"  {step}")
    finally:
        if own_storage:
            shutil.rmtree(storage_root, ignore_errors=True)
    return results


def _fmt(value, spec: str = "", none: str = "-") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return none
    return format(value, spec)


def _lost(r: ModeResult, base: Optional[ModeResult]) -> Optional[float]:
    """Wall time lost by ``r`` against the baseline ``base`` of its trial (None if not comparable)."""
    if base is None or r is base:
        return None
    return r.fit_seconds - base.fit_seconds


def _summary_lines(results: Sequence[ModeResult], bases: Dict[int, ModeResult]) -> List[str]:
    """Per reclaim mode over the trials: median time lost and restart time, what was charged."""
    import statistics

    lines = []
    for mode in [m for m in RUN_ORDER if m != "none"]:
        runs = [r for r in results if r.mode == mode]
        lost = [x for x in (_lost(r, bases.get(r.trial)) for r in runs) if x is not None]
        restarts = [d["restart_s"] for r in runs for d in r.failure_decisions
                    if d.get("restart_s") is not None]
        charged = [str(d.get("source")) for r in runs for d in r.failure_decisions
                   if d.get("decision") == "RETRY"]
        if not runs:
            continue
        parts = [f"{mode} ({len(runs)} runs):"]
        if lost:
            parts.append(f"median lost {statistics.median(lost):+.1f} s")
        if restarts:
            parts.append(f"median restart {statistics.median(restarts):.1f} s")
        if charged:
            parts.append("retries charged to " + ", ".join(
                f"{c} x{charged.count(c)}" for c in sorted(set(charged))))
        lines.append(parts[0] + " " + ", ".join(parts[1:]))
    nones = [r.fit_seconds for r in results if r.mode == "none"]
    if nones:
        lines.append(f"none: fit {min(nones):.1f}-{max(nones):.1f} s (the run-to-run spread on "
                     "this shared machine)")
    return lines


def format_table(results: Sequence[ModeResult], settings: DrillSettings) -> str:
    bases = {r.trial: r for r in results if r.mode == "none"}
    several = len({r.trial for r in results}) > 1
    head = ["mode", "fit s", "lost s", f"round {settings.reclaim_after_round} at s",
            "restart (charged to)", "restart s", "resumed", "redone", "rounds", "AUC", "logloss",
            "worker dead s", "ray start exit s", "SIGKILL@grace", "node after"]
    rows = []
    for r in results:
        rec = r.reclaim
        lost = _lost(r, bases.get(r.trial))
        retries = [d for d in r.failure_decisions if d.get("decision") == "RETRY"]
        rows.append([
            f"{r.mode}#{r.trial}" if several else r.mode, _fmt(r.fit_seconds, ".1f"),
            _fmt(lost, "+.1f"),
            _fmt(r.round_reached_s, ".1f"),
            ", ".join(str(d.get("source")) for d in retries) or ("yes" if r.restarted else "no"),
            ", ".join(_fmt(d.get("restart_s"), ".1f") for d in retries) or "-",
            str(r.resumed_from_round), _fmt(r.rounds_redone), str(r.rounds), f"{r.auc:.5f}",
            f"{r.logloss:.5f}", _fmt(rec.worker_gone_s if rec else None, ".1f"),
            _fmt(rec.ray_start_exit_s if rec else None, ".1f"),
            ("yes" if rec.sigkilled_at_deadline else "no") if rec else "-",
            "-" if r.node_alive_after is None else ("alive" if r.node_alive_after else
                                                    f"dead: {r.node_death_reason or '?'}"),
        ])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = [
        f"reclaim drill: {settings.rows} rows x {settings.features} features, {settings.rounds} "
        f"rounds, checkpoint every {settings.checkpoint_every}, {settings.workers} workers x 1 CPU "
        f"+ {settings.spare_nodes} spare node; rank {settings.reclaim_rank}'s node reclaimed "
        f"after round {settings.reclaim_after_round}",
        f"grace period scaled to {settings.grace_s:g} s (real worker pods: {PRODUCTION_GRACE_S} s); "
        f"{DRAIN_TIMEOUT_ENV}={settings.drain_timeout:g}; {HEALTH_CHECK_ENV}="
        f"{settings.health_check_interval_s:g}; {PREEMPTION_POLL_ENV}="
        f"{settings.preemption_poll_interval_s:g}",
        "  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip(),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    if several:
        lines += _summary_lines(results, bases)
    lines += [
        "lost s = fit s - fit s of none in the same trial (one reclaimed worker per run)",
        "restart: Ray Train's FailurePolicy retries and the budget charged (preemption: "
        "max_preemption_failures, unlimited by default; worker group: max_failures); restart s = "
        "retry decision to the new worker group started",
        "redone = reclaim round - resumed round (negative: checkpoints taken during the drain "
        "window); worker dead / ray start exit = seconds after the first signal",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    d = DrillSettings()
    p = argparse.ArgumentParser(prog="python -m jobs.reclaim_drill",
                                description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--mode", choices=(*MODES, "all"), default="all")
    p.add_argument("--rows", type=int, default=d.rows)
    p.add_argument("--features", type=int, default=d.features)
    p.add_argument("--rounds", type=int, default=d.rounds)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--max-depth", type=int, default=d.max_depth)
    p.add_argument("--reclaim-after-round", type=int, default=d.reclaim_after_round)
    p.add_argument("--reclaim-rank", type=int, default=d.reclaim_rank)
    p.add_argument("--spare-nodes", type=int, default=d.spare_nodes)
    p.add_argument("--max-failures", type=int, default=d.max_failures)
    p.add_argument("--grace", type=float, default=d.grace_s,
                   help=f"pod termination grace period, scaled down (real: {PRODUCTION_GRACE_S} s)")
    p.add_argument("--drain-timeout", type=float, default=None,
                   help=f"{DRAIN_TIMEOUT_ENV} of the nodes (default: grace - "
                        f"{DEFAULT_DRAIN_MARGIN_S:g})")
    p.add_argument("--health-check-interval", type=float, default=d.health_check_interval_s,
                   help=HEALTH_CHECK_ENV)
    p.add_argument("--preemption-poll-interval", type=float, default=d.preemption_poll_interval_s,
                   help=PREEMPTION_POLL_ENV)
    p.add_argument("--repeat", type=int, default=1, help="run the modes this many times")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results here")
    return p


def _exit_on_sigterm(signum, frame) -> None:
    sys.exit(128 + signum)  # unwinds through the clusters' teardown (ray.init sets the same)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ns = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    settings = DrillSettings(
        rows=ns.rows, features=ns.features, rounds=ns.rounds, checkpoint_every=ns.checkpoint_every,
        max_depth=ns.max_depth, reclaim_after_round=ns.reclaim_after_round,
        reclaim_rank=ns.reclaim_rank, spare_nodes=ns.spare_nodes, max_failures=ns.max_failures,
        grace_s=ns.grace, drain_timeout_s=ns.drain_timeout,
        health_check_interval_s=ns.health_check_interval,
        preemption_poll_interval_s=ns.preemption_poll_interval)
    problems = settings.problems()
    if problems:
        build_parser().error("; ".join(problems))
    modes = MODES if ns.mode == "all" else (ns.mode,)
    if ns.repeat < 1:
        build_parser().error(f"--repeat {ns.repeat}: must be >= 1")
    results = run_drill(settings, modes, repeat=ns.repeat)
    print(format_table(results, settings), flush=True)
    if ns.json:
        with open(ns.json, "w") as f:
            json.dump({"settings": dataclasses.asdict(settings),
                       "results": [r.to_dict() for r in results]}, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
