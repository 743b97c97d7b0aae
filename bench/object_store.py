"""Benchmark: what an object-store root costs against a local root, step by step, in one run.

The same videos go through the same steps twice, once under a local root and once under
`s3://` on moto's S3 server on loopback (real HTTP, real pyarrow S3 client; no network latency,
so this measures the project's own overhead: listings, uploads, downloads, pulls):

1. ingest: a `file` channel's recorder commits every video as a segment (probe, copy, manifest row);
2. process: the processing job on a local Ray (facecam crops at 1 frame/s, 10-s windows);
3. SQL from an empty working copy (another node's first query: pulls manifest and shards);
4. SQL again (the copy is current: one listing per folder).

    .venv/bin/python bench/object_store.py --videos 12 --seconds 10
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.table import Table

from stream2dataset.cluster import ray_env_defaults
from stream2dataset.config import parse_config
from stream2dataset.demo import SMALL_LAYOUT, build_demo_hls

CACHE = Path.home() / ".cache" / "stream2dataset" / "bench-object-store"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_videos(folder: Path, count: int, seconds: int) -> list[Path]:
    """`count` streamer-layout videos of `seconds` each, cut from one demo clip's HLS segments."""
    hls = build_demo_hls(CACHE / f"hls-{seconds * count}s", SMALL_LAYOUT, seconds=seconds * count, segment_seconds=2)
    segs = sorted(hls.glob("seg*.ts"))
    per = max(1, seconds // 2)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"v{i:03d}.ts").write_bytes(b"".join(p.read_bytes() for p in segs[i * per:(i + 1) * per]))
    return sorted(folder.glob("*.ts"))


def run(root: dict, videos: Path, work: Path) -> dict:
    from stream2dataset.dataset.catalog import query
    from stream2dataset.ingest import ChannelRecorder
    from stream2dataset.dataset.manifest import pending_segments
    from stream2dataset.processing.pipeline import process
    from stream2dataset.layout import Storage

    cfg = parse_config({"storage": root, "channels": [{"source": str(videos), "name": "bench"}],
                        "recording": {"min_free_gb": 0.01},
                        "processing": {"outputs": ["facecam"], "sample_fps": 1, "window_s": 10, "dedup_distance": 0}},
                       base_dir=work)
    times = {}
    t = time.perf_counter()
    rec = ChannelRecorder(cfg, "bench")
    rec.wait(600)
    rec.stop()
    times["ingest"] = time.perf_counter() - t
    t = time.perf_counter()
    report = process(cfg, pending_segments(Storage.of(cfg)))
    times["process"] = time.perf_counter() - t
    # Another node, with nothing local yet (for a local root: the same files, a first query).
    reader = parse_config({"storage": {**root, "cache": str(work / "other-node")}}, base_dir=work) \
        if cfg.storage.uri else cfg
    for step in ("sql (empty copy)", "sql (current copy)"):
        t = time.perf_counter()
        rows = query(Storage.of(reader).pull_dataset(), "SELECT count(*) FROM frames_all")[0].column(0)[0].as_py()
        times[step] = time.perf_counter() - t
    return {"times": times, "segments": report["segments"], "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--seconds", type=int, default=10, help="length of each video")
    args = ap.parse_args()
    console = Console()
    endpoint = f"http://127.0.0.1:{free_port()}"
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", endpoint.rsplit(":", 1)[1]],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import ray
    from pyarrow import fs

    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        fs.S3FileSystem(endpoint_override=endpoint, allow_bucket_creation=True).create_dir("bench")
        ray_env_defaults()
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        with tempfile.TemporaryDirectory(prefix="s2d-objstore-") as tmp:
            work = Path(tmp)
            make_videos(work / "videos", args.videos, args.seconds)
            local = run({"root": str(work / "local")}, work / "videos", work)
            s3 = run({"root": "s3://bench/root", "cache": str(work / "cache")}, work / "videos", work)
    finally:
        ray.shutdown()
        server.terminate()
    assert local["rows"] == s3["rows"] and local["segments"] == s3["segments"] == args.videos, (local, s3)
    table = Table(title=f"{args.videos} videos × {args.seconds} s (640×360), {local['rows']} frame rows; "
                        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    for col in ("step", "local root s", "s3:// root s", "s3 ÷ local"):
        table.add_column(col, justify="right" if col != "step" else "left")
    for step, lt in local["times"].items():
        st = s3["times"][step]
        table.add_row(step, f"{lt:.2f}", f"{st:.2f}", f"{st / lt:.2f}×")
    console.print(table)


if __name__ == "__main__":
    main()
