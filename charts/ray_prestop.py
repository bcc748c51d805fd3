"""The Ray workers' preStop: drain the node at the GCS before the pod goes (a Spot reclaim, a scale-down).

Measured with ``python -m jobs.reclaim_drill --mode all`` (a local multi-node Ray; tests/jobs/test_reclaim_drill.py
runs this very script as the reclaimed node's preStop): a ``ray stop`` preStop kills the Train worker within 0.1 s,
so every reclaim is an ordinary worker failure charged to ``FailureConfig.max_failures``; Ray's own SIGTERM drain
(``RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S``) keeps the worker training through the window but stops the raylet at
the very millisecond of the deadline it announced, so the death counts as a preemption only by chance
(ray/_private/node.py ``_drain_node_before_shutdown`` computes its wait deadline before the one it sends; the
raylet's SIGTERM handler calls it a preemption only once that deadline has passed). This script drains the node
itself with reason PREEMPTION and deadline now + T, and returns once the node is gone or T + slack has passed, so
the kubelet's SIGTERM always comes after the deadline: Ray Train's preemption watcher moves the job off the node
at the deadline, keeps the checkpoints reported meanwhile, and charges the restart to ``max_preemption_failures``
(unlimited by default) instead of ``max_failures``.

Ray 2.60 internals (pinned with the image; the drill test fails if an upgrade breaks them): the request the hidden
``ray drain-node`` CLI sends (ray/scripts/scripts.py ``drain_node``) and the node lookup ``ray.init`` uses
(ray/_private/services.py ``get_node_to_connect_for_driver``). argv: T (seconds until the announced deadline) and
the slack. ``DF_RAY_TEMP_DIR`` narrows the lookup down when several nodes share one host (the drill); in a pod the
raylet on this host is the pod's own. Needs ``RAY_ADDRESS`` (KubeRay sets it) and, with token auth, the token
variables KubeRay injects.

Standard library and Ray only: no CDK here, so the drill can import it.
"""

PRESTOP_DRAIN_SCRIPT = r"""
import os, sys, time
from ray._private.services import get_node_to_connect_for_driver
from ray._raylet import GcsClient
from ray.core.generated.autoscaler_pb2 import DrainNodeReason
from ray.core.generated.gcs_pb2 import GcsNodeInfo
from ray.core.generated.gcs_service_pb2 import GetAllNodeInfoRequest
seconds, slack = float(sys.argv[1]), float(sys.argv[2])
gcs = GcsClient(address=os.environ["RAY_ADDRESS"])
node = get_node_to_connect_for_driver(gcs, temp_dir=os.environ.get("DF_RAY_TEMP_DIR") or None)
end = time.time() + seconds + slack
accepted, message = gcs.drain_node(
    node.node_id.hex(), DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"),
    "preStop: pod terminating", int(time.time() * 1000 + seconds * 1000))
print("drain %s %s" % (node.node_id.hex(), "accepted" if accepted else "rejected: %s" % message),
      flush=True)
if not accepted:
    sys.exit(1)
mine = [GetAllNodeInfoRequest.NodeSelector(node_id=node.node_id)]
while time.time() < end:
    time.sleep(min(1.0, max(end - time.time(), 0)))
    try:
        if not gcs.get_all_node_info(timeout=5, node_selectors=mine,
                                     state_filter=GcsNodeInfo.GcsNodeState.ALIVE):
            print("node gone", flush=True)
            break
    except Exception:
        pass
"""
