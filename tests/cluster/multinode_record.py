"""Run in its own process by test_multinode.py: a head and two worker nodes (ray.cluster_utils),
four live streams recorded by the service on a shared storage root; the worker node of one
recorder is SIGKILLed mid-segment and its recorders must come back on the other node. Writes what
the test checks as JSON: each recorder's node before and after, and the segment counts."""

import json
import sys
import time
from pathlib import Path

import yaml
from ray.cluster_utils import Cluster

from stream2dataset.cluster import ray_env_defaults
from stream2dataset.demo import LiveHLSServer
from stream2dataset import service

CHANNELS = [f"cam{i}" for i in range(4)]
# Notice a dead node in ~3 s instead of Ray's default ~15 s, so the test stays short.
FAST_HEALTH_CHECK = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    try:
        state = json.dumps(service.status(), default=str)
    except Exception as err:  # noqa: BLE001 - the service may be what is missing
        state = repr(err)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}: {state}")


def channels() -> dict[str, dict]:
    return {ch["channel"]: ch for ch in service.status()["channels"]}


def write_config(work: Path, hls: LiveHLSServer, footage: Path) -> Path:
    path = work / "stream2dataset.yaml"
    path.write_text(yaml.safe_dump({
        "storage": {"root": "data", "shared": True},  # every node sees the same root: recorders may move
        "recording": {"segment_seconds": 2, "poll_interval_s": 0.5, "poll_jitter": 0.0, "backoff_initial_s": 0.5,
                      "backoff_max_s": 2, "stream_timeout_s": 5, "min_free_gb": 0.01},
        "processing": {"auto": False},
        "channels": [{"source": hls.add_stream(n, footage), "name": n} for n in CHANNELS]}))
    return path


def main(footage: str, work: str, out: str) -> None:
    import ray

    ray_env_defaults()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "_system_config": FAST_HEALTH_CHECK})
    nodes = [cluster.add_node(num_cpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="s2d-multinode", log_to_driver=False)
    try:
        with LiveHLSServer() as hls:
            service.up(write_config(Path(work), hls, Path(footage)))
            wait_for(lambda: all(c.get("segments", 0) >= 2 for c in channels().values()), 90, "two segments each")
            before = channels()
            doomed = nodes[1].node_id
            moved = sorted(n for n, c in before.items() if c["node"] == doomed)
            # Kill mid-segment: once the open segments of the doomed node's recorders hold some data.
            wait_for(lambda: all(channels()[n]["open_bytes"] > 50_000 for n in moved), 30, "bytes in flight")
            at_kill = channels()
            cluster.remove_node(nodes[1], allow_graceful=False)  # SIGKILL its raylet and workers
            killed_at = time.time()
            wait_for(lambda: all(channels()[n].get("restarted") for n in moved), 90, "the recorders to restart")
            restarted_after_s = time.time() - killed_at
            after_restart = channels()
            wait_for(lambda: all(c["segments"] >= after_restart[n]["segments"] + 2 for n, c in channels().items()),
                     60, "two more segments each")
            after = channels()
            final = {ch["channel"]: ch for ch in service.down()}  # each finishes its open segment
    finally:
        ray.shutdown()
        cluster.shutdown()
    Path(out).write_text(json.dumps({
        "nodes": [n.node_id for n in nodes], "doomed": doomed, "moved": moved, "killed_at": killed_at,
        "restarted_after_s": restarted_after_s,
        "before": before, "at_kill": at_kill, "after_restart": after_restart, "after": after,
        "final": final}, default=str))


if __name__ == "__main__":
    main(*sys.argv[1:4])
