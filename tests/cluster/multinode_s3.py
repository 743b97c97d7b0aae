"""Run in its own process by test_multinode.py: a head and two worker nodes, each with its own
working copy ({node}) of one S3 root on a local moto server, and nothing else shared. Segments are
committed to the store as a recorder commits them; `process` runs on both workers; the same
segments under a local root give the reference rows. Writes what happened as JSON."""

import json
import shutil
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
from ray.cluster_utils import Cluster

from stream2dataset.cluster import ray_env_defaults
from stream2dataset.config import parse_config
from stream2dataset.dataset import manifest
from stream2dataset.dataset.manifest import pending_segments
from stream2dataset.ingest.segments import probe
from stream2dataset.layout import TABLES, Storage
from stream2dataset.media import sha256_file
from stream2dataset.processing.pipeline import process

# Clips too (min_motion 0: every run of 4 frames is one), cut from the node's own copy of a segment.
PROCESSING = {"sample_fps": 4, "window_s": 2, "min_crop_px": 32, "dedup_distance": 0,
              "transforms": [{"resize": {"size": 64, "mode": "pad"}}],
              "clips": {"enabled": True, "fps": 4, "length": 4, "min_motion": 0}}


def row_ids(root: Path, table: str = "frames") -> list[str]:
    column = "frame_id" if table == "frames" else "clip_id"
    return sorted(i for p in (root / TABLES[table]).rglob("*.parquet")
                  for i in pq.read_table(p, columns=[column]).column(0).to_pylist())


def commit_segments(storage: Storage, videos: list[Path]) -> None:
    """The recorder's commit: the file under raw/, then its manifest row (write_segment)."""
    start = datetime(2026, 12, 4, 10, tzinfo=timezone.utc)
    for i, video in enumerate(videos):
        t = start + timedelta(seconds=8 * i)
        path = storage.segment_path("hls", "cam", t)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(video, path)
        info = probe(path)
        manifest.write_segment(storage, manifest.segment_row(
            segment_id=storage.segment_id("hls", "cam", path.stem), channel="cam", platform="hls", source="test",
            path=path, storage=storage, start=t, end=t + timedelta(seconds=info.duration_s), info=info,
            nbytes=path.stat().st_size, sha256=sha256_file(path), status="ok", config_hash="test"))


def main(videos: str, work: str, bucket: str, out: str) -> None:
    import ray

    ray_env_defaults()
    files = sorted(Path(videos).glob("*.ts"))
    local = parse_config({"storage": {"root": str(Path(work) / "local")}, "processing": PROCESSING})
    on_s3 = parse_config({"storage": {"root": f"{bucket}/root", "cache": str(Path(work) / "cache" / "{node}")},
                          "processing": PROCESSING})
    commit_segments(Storage.of(local), files)
    commit_segments(Storage.of(on_s3), files)  # before Ray: the driver's copy is cache/local
    shutil.rmtree(Path(work) / "cache" / "local")  # the segments are now only in the bucket

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the driver's node does no work
    for _ in range(2):
        cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        process(local, pending_segments(Storage.of(local)))  # the reference rows
        report = process(on_s3, pending_segments(Storage.of(on_s3)))
        again = process(on_s3, pending_segments(Storage.of(on_s3)))
        copies = sorted(p.name for p in (Path(work) / "cache").iterdir())
        Path(out).write_text(json.dumps({
            "reference_ids": row_ids(Path(work) / "local"), "nodes": report["nodes"], "windows": report["windows"],
            "s3_ids": row_ids(Storage.of(on_s3).pull_dataset()), "again": again["segments"], "copies": copies,
            "reference_clips": row_ids(Path(work) / "local", "clips"),
            "s3_clips": row_ids(Storage.of(on_s3).root, "clips"),
            "quarantined": len(list((Path(work) / "local").rglob("*.reason.json"))),
            "raw_left": [p.name for p in (Path(work) / "cache").rglob("*.ts")]}))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:5])
