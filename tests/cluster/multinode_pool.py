"""Run in its own process by test_multinode.py: the service's processing pool on a head and two
worker nodes (ray.cluster_utils); segments committed to the manifest are processed twice,
undisturbed and with a worker node killed mid-run; writes the row ids of both and how the windows
spread over the nodes, as JSON."""

import json
import sys
import time
from pathlib import Path

from ray.cluster_utils import Cluster

from stream2dataset.cluster import ray_env_defaults
from stream2dataset.layout import Storage
from stream2dataset.service.pool import ProcessingPool
from tests.service.test_pool import all_done, commit, config, frame_ids


def run(root: Path, videos: list[Path], kill=None) -> dict:
    cfg = config(root, concurrency=4)
    storage = Storage.of(cfg)
    ids = [s for k in range(3) for s in commit(storage, videos, first=100 * k)]  # 3 x the clips, later starts
    pool = ProcessingPool(cfg)
    killed = False
    deadline = time.monotonic() + 200
    try:
        while not (all_done(pool, ids)() and not pool.segments):
            assert time.monotonic() < deadline, pool.status()
            pool.step()
            if kill and not killed and sum(pool.status()["nodes"].values()) >= 6:
                kill()  # a node dies with windows in hand and more queued
                killed = True
            time.sleep(0.05)
        return {"ids": sorted(frame_ids(storage)), "nodes": pool.status()["nodes"], "killed": killed,
                "segments": len(ids)}
    finally:
        pool.shutdown()


def main(videos: str, work: str, out: str) -> None:
    import ray

    ray_env_defaults()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the driver's node does no work
    nodes = [cluster.add_node(num_cpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    clips = sorted(Path(videos).glob("seg*.ts"))
    try:
        calm = run(Path(work) / "calm", clips)
        killed = run(Path(work) / "killed", clips, kill=lambda: cluster.remove_node(nodes[1], allow_graceful=False))
    finally:
        ray.shutdown()
        cluster.shutdown()
    Path(out).write_text(json.dumps({"calm": calm, "killed": killed}))


if __name__ == "__main__":
    main(*sys.argv[1:])
