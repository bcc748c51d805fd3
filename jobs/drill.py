"""Fault drill: kill a Ray Train worker process from outside, mid-training.

A small coordinator actor (0 CPUs) learns each round of the target worker's *first* attempt.
When the target has boosted ``after_round`` rounds, the coordinator SIGKILLs the worker's
process through a 0-CPU task pinned to the worker's node (so it works on a multi-node cluster,
where a Spot reclaim looks much the same), and waits for the kill to land. The worker does not
kill itself; it only announces its progress and blocks until the coordinator answers, which
makes the kill land at a deterministic round instead of racing the end of training.

Nothing here runs unless the job is started with ``--drill-kill-after-round``.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Dict, List

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@ray.remote(num_cpus=0, max_retries=0)
def _sigkill(pid: int) -> Dict:
    """Runs on the worker's node, in another process: the kill comes from outside."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return {"pid": pid, "killed_by_pid": os.getpid(), "confirmed": True}
        time.sleep(0.01)
    return {"pid": pid, "killed_by_pid": os.getpid(), "confirmed": False}


@ray.remote(num_cpus=0, max_restarts=0)
class FaultDrill:
    def __init__(self, rank: int, after_round: int):
        self.rank = rank
        self.after_round = after_round
        self.kills: List[Dict] = []
        self.progress_events: List[Dict] = []

    def progress(self, rank: int, done_rounds: int, resumed_from: int, pid: int, node_id: str) -> bool:
        """Called by the target worker after each round; returns True if the drill fired."""
        event = dict(rank=rank, round=done_rounds, resumed_from=resumed_from, pid=pid, node_id=node_id)
        self.progress_events.append(event)
        if self.kills or rank != self.rank or resumed_from != 0 or done_rounds < self.after_round:
            return False
        strategy = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
        outcome = ray.get(_sigkill.options(scheduling_strategy=strategy).remote(pid))
        self.kills.append({**event, **outcome, "time": time.time()})
        return True

    def report(self) -> Dict:
        return {"rank": self.rank, "after_round": self.after_round, "kills": list(self.kills)}
