"""Run in its own process by test_multinode.py: the service on a head plus a worker node, recording
two live streams and processing them as they come. The `up` command is killed mid-start and run
again; then the whole cluster dies at once (every Ray process SIGKILLed: a lost head) and a new
one is started on the same storage root. Writes what the test checks as JSON."""

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import ray
import yaml
from ray.cluster_utils import Cluster

from stream2dataset.cluster import ray_env_defaults
from stream2dataset.demo import LiveHLSServer
from stream2dataset.dataset.manifest import pending_segments
from stream2dataset.layout import Storage

from .multinode_record import FAST_HEALTH_CHECK, channels, wait_for

NAMESPACE = "s2d-restart"


def write_config(work: Path, hls: LiveHLSServer, footage: Path) -> Path:
    path = work / "stream2dataset.yaml"
    path.write_text(yaml.safe_dump({
        "storage": {"root": "data", "shared": True},
        "ray": {"namespace": NAMESPACE},
        "recording": {"segment_seconds": 2, "poll_interval_s": 0.5, "poll_jitter": 0.0, "backoff_initial_s": 0.5,
                      "backoff_max_s": 2, "stream_timeout_s": 5, "min_free_gb": 0.01},
        "processing": {"auto": True, "interval_s": 2, "outputs": ["facecam"], "sample_fps": 2, "min_crop_px": 32,
                       "transforms": [{"resize": {"size": 64, "mode": "pad"}}]},
        "dataset": {"dedup_auto": False},
        "channels": [{"source": hls.add_stream(n, footage), "name": n} for n in ("cam0", "cam1")]}))
    return path


def start_cluster() -> Cluster:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "_system_config": FAST_HEALTH_CHECK})
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
    return cluster


def kill_cluster(cluster: Cluster) -> None:
    """Every process of every node SIGKILLed, the head last: nothing gets to clean up."""
    ray.shutdown()
    for node in list(cluster.worker_nodes):
        cluster.remove_node(node, allow_graceful=False)
    cluster.remove_node(cluster.head_node, allow_graceful=False)
    ray.experimental.internal_kv._internal_kv_reset()
    ray._common.utils.reset_ray_address()
    ray._private.services.find_gcs_addresses.cache_clear()


def cli(*args: str, address: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stream2dataset", *args, "--address", address],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def shards(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((root / "dataset" / "frames").rglob("*.parquet"))}


def frame_ids(root: Path) -> list[str]:
    return [i for p in (root / "dataset" / "frames").rglob("*.parquet")
            for i in pq.read_table(p, columns=["frame_id"]).column(0).to_pylist()]


def main(footage: str, work: str, out: str) -> None:
    ray_env_defaults()
    storage = Storage(Path(work) / "data")
    result: dict = {}
    with LiveHLSServer() as hls:
        cfg = write_config(Path(work), hls, Path(footage))
        cluster = start_cluster()
        # 1. The operator's `up` dies right after it created the service; running it again adopts it.
        first = cli("up", "--config", str(cfg), address=cluster.address)
        try:
            wait_for(lambda: "supervisor" in ray.util.list_named_actors(), 60, "the supervisor")
        except TimeoutError:
            first.kill()
            raise RuntimeError(first.stdout.read()) from None
        first.send_signal(signal.SIGKILL)
        result["first_up_rc"] = first.wait()
        wait_for(lambda: len(channels()) == 2 and all(c.get("pid") for c in channels().values()), 60, "the recorders")
        pids = {n: c["pid"] for n, c in channels().items()}
        again = cli("up", "--config", str(cfg), address=cluster.address)
        result["second_up_rc"], result["second_up_out"] = again.wait(60), again.stdout.read()
        result["pids_kept"] = {n: c["pid"] for n, c in channels().items()} == pids
        result["actors"] = sorted(ray.util.list_named_actors())
        # 2. Once something is processed and both recorders are mid-segment, the whole cluster dies.
        wait_for(lambda: list((storage.root / "dataset" / "_done").glob("*")), 120, "a processed segment")
        wait_for(lambda: all(c["open_bytes"] > 50_000 for c in channels().values()), 30, "bytes in flight")
        result["before"] = {"shards": shards(storage.root), "status": channels()}
        kill_cluster(cluster)
        result["parts_left"] = [str(p.relative_to(storage.root)) for p in (storage.root / "raw").rglob("*.part")]
        # 3. A new cluster, the same command: recorders salvage what the dead ones left, processing catches up.
        cluster = start_cluster()
        try:
            third = cli("up", "--config", str(cfg), address=cluster.address)
            result["third_up_rc"] = third.wait(90)
            wait_for(lambda: all(c.get("segments", 0) >= result["before"]["status"][n]["segments"] + 3
                                 for n, c in channels().items()), 90, "recording again")
            result["after"] = channels()
            down = cli("down", "--config", str(cfg), address=cluster.address)
            result["down_rc"] = down.wait(120)
            # What `down` committed last is processed by the operator's `process`, as after any stop.
            proc = cli("process", "--config", str(cfg), address=cluster.address)
            result["process_rc"], result["process_out"] = proc.wait(240), proc.stdout.read()[-2000:]
        finally:
            ray.shutdown()
            cluster.shutdown()
    result["pending"] = len(pending_segments(storage))
    result["shards"] = shards(storage.root)
    result["frame_ids"] = frame_ids(storage.root)
    Path(out).write_text(json.dumps(result, default=str))
    os._exit(0)  # the killed cluster's leftover client threads must not hold the exit


if __name__ == "__main__":
    main(*sys.argv[1:4])
