"""Run in its own process by test_multinode.py: a head and two worker nodes (ray.cluster_utils);
the same videos processed twice, undisturbed and with a worker node killed mid-run; writes the
row ids of both and how the windows spread over the nodes, as JSON."""

import json
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
from ray.cluster_utils import Cluster

from stream2dataset.cluster import ray_env_defaults
from stream2dataset.config import parse_config
from stream2dataset.processing.pipeline import file_segments, process


def frame_ids(root: Path) -> list[str]:
    return sorted(i for p in (root / "dataset" / "frames").rglob("*.parquet")
                  for i in pq.read_table(p, columns=["frame_id"]).column(0).to_pylist())


def config(root: Path):
    return parse_config({"storage": {"root": str(root)},
                         "processing": {"sample_fps": 4, "window_s": 2, "min_crop_px": 32, "dedup_distance": 0,
                                        "transforms": [{"resize": {"size": 64, "mode": "pad"}}]}})


def main(videos: str, work: str, out: str) -> None:
    import ray

    ray_env_defaults()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the driver's node does no work
    nodes = [cluster.add_node(num_cpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    segments = file_segments([Path(videos)])
    try:
        calm = process(config(Path(work) / "calm"), segments)
        root = Path(work) / "killed"
        staging = root / "dataset" / "_staging"
        done: dict = {}
        job = threading.Thread(target=lambda: done.update(report=process(config(root), segments)))
        job.start()
        deadline = time.monotonic() + 120
        while not list(staging.glob("*/*.done")) and time.monotonic() < deadline:
            time.sleep(0.05)
        staged_at_kill = len(list(staging.glob("*/*.done")))
        cluster.remove_node(nodes[1], allow_graceful=False)  # SIGKILL its raylet and workers
        job.join(timeout=240)
        Path(out).write_text(json.dumps({
            "calm_nodes": len(calm["nodes"]), "calm_per_node": calm["nodes"], "calm_windows": calm["windows"], "staged_at_kill": staged_at_kill,
            "finished": "report" in done, "calm_ids": frame_ids(Path(work) / "calm"), "killed_ids": frame_ids(root)}))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
