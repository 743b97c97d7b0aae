"""Benchmark: N concurrent 720p live HLS streams on loopback, recorded by the service for T seconds.

Prints CPU per stream of the recorder actors (target: < 5% of a core) against a baseline measured
in the same run (`ffmpeg -c copy -f segment` recording the same streams), and segments lost
(target: 0): HLS media segments the server never handed to a recorder within the recorded span,
plus gaps between consecutive committed segments.

    .venv/bin/python bench/record_streams.py --streams 4 --seconds 60
"""

from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import ray
import yaml
from rich.console import Console
from rich.table import Table

from stream2dataset.cluster import ray_env_defaults
from stream2dataset.demo import DEFAULT_LAYOUT, LiveHLSServer, build_demo_hls
from stream2dataset import service
from stream2dataset.dataset.manifest import read_segments
from stream2dataset.ingest.segments import probe
from stream2dataset.layout import Storage

HLS_SEGMENT_S = 2


def record_with_service(urls: list[str], seconds: float, work: Path) -> dict:
    cfg = {"storage": {"root": str(work / "data")},
           "recording": {"segment_seconds": 10, "min_free_gb": 0.5, "poll_interval_s": 2},
           "channels": [{"source": u, "name": f"s{i}"} for i, u in enumerate(urls)]}
    cfg_path = work / "stream2dataset.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    ray_env_defaults()
    ray.init(namespace="s2d-bench", include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        service.up(cfg_path)
        actors = [ray.get_actor(f"recorder-s{i}") for i in range(len(urls))]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # measure steady state: from when all are recording
            if all(ch["state"] == "recording" and ch["bytes"] > 0 for ch in service.status()["channels"]):
                break
            time.sleep(0.5)
        cpu0 = ray.get([a.cpu_seconds.remote() for a in actors])
        t0 = time.monotonic()
        time.sleep(seconds)
        cpu1 = ray.get([a.cpu_seconds.remote() for a in actors])
        wall = time.monotonic() - t0
        service.down()
    finally:
        ray.shutdown()
    rows = read_segments(Storage(work / "data")).to_pylist()
    per_stream = [(b - a) / wall for a, b in zip(cpu0, cpu1)]
    gaps = 0
    for i in range(len(urls)):
        mine = [r for r in rows if r["channel"] == f"s{i}"]
        for prev, nxt in zip(mine, mine[1:]):
            # Consecutive segments of one stream must touch: a hole longer than an HLS segment is a loss.
            if (nxt["start"] - prev["end"]).total_seconds() > 1.5 * HLS_SEGMENT_S:
                gaps += 1
    for r in rows:
        probe(work / "data" / r["path"])
    return {"cpu": per_stream, "segments": len(rows), "gaps": gaps,
            "media_s": sum(r["duration_s"] for r in rows), "wall": wall}


def record_with_ffmpeg(urls: list[str], seconds: float, work: Path) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    procs = []
    for i, url in enumerate(urls):
        out = work / f"ff{i}"
        out.mkdir()
        procs.append(subprocess.Popen(
            ["ffmpeg", "-nostdin", "-v", "error", "-i", url, "-c", "copy", "-f", "segment", "-segment_time", "10",
             str(out / "%05d.ts")]))
    time.sleep(seconds)
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"cpu_per_stream": cpu / seconds / len(urls)}


def lost_hls_segments(server: LiveHLSServer, names: list[str]) -> int:
    lost = 0
    for name in names:
        served = sorted(server.stats(name).served)
        lost += (served[-1] - served[0] + 1 - len(served)) if served else 1
    return lost


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60)
    args = ap.parse_args()
    console = Console()
    footage = build_demo_hls(Path.home() / ".cache" / "stream2dataset" / "demo-footage", DEFAULT_LAYOUT,
                             seconds=20, segment_seconds=HLS_SEGMENT_S)
    names = [f"s{i}" for i in range(args.streams)]
    with tempfile.TemporaryDirectory() as tmp, LiveHLSServer() as server:
        urls = [server.add_stream(n, footage) for n in names]
        console.print(f"recording {args.streams} × 720p30 live streams for {args.seconds:g} s with the service...")
        ours = record_with_service(urls, args.seconds, Path(tmp))
        lost = lost_hls_segments(server, names)
    with tempfile.TemporaryDirectory() as tmp, LiveHLSServer() as server:
        urls = [server.add_stream(n, footage) for n in names]
        console.print("same streams, baseline: ffmpeg -c copy -f segment ...")
        base = record_with_ffmpeg(urls, args.seconds, Path(tmp))

    mean = sum(ours["cpu"]) / len(ours["cpu"])
    table = Table(title=f"recording {args.streams} concurrent 720p30 loopback HLS streams, "
                        f"{args.seconds:g} s ({platform.processor() or platform.machine()}, "
                        f"{__import__('os').cpu_count()} cores)")
    for col in ("what", "value", "target"):
        table.add_column(col)
    table.add_row("recorder CPU per stream (mean)", f"{mean:.2%} of a core", "< 5%")
    table.add_row("recorder CPU per stream (max)", f"{max(ours['cpu']):.2%} of a core", "< 5%")
    table.add_row("ffmpeg -c copy CPU per stream (baseline)", f"{base['cpu_per_stream']:.2%} of a core", "")
    table.add_row("recorder / ffmpeg CPU", f"{mean / base['cpu_per_stream']:.2f}×", "")
    table.add_row("segments committed (all decode)", str(ours["segments"]), "")
    table.add_row("HLS segments lost", str(lost), "0")
    table.add_row("gaps between committed segments", str(ours["gaps"]), "0")
    table.add_row("recorded media / wall time per stream",
                  f"{ours['media_s'] / args.streams / ours['wall']:.2f}", "≈ 1 (+ the stop segment)")
    console.print(table)


if __name__ == "__main__":
    main()
