"""Benchmark: the dataset writer against a plain pyarrow write of the same rows.

Target (issue 4): write throughput at least 0.8x a plain `pyarrow.parquet.write_table` of the
same rows, measured in the same run.

Rows are frames rows with real PNG crops: 256x256 facecam frames of the demo footage (real
carphone face), encoded once and reused with distinct ids. They are staged window by window (as
processing actors do) and committed as shards (`commit_segments`: read the staged parts, write
256 MB shards, markers last). The baseline writes the same rows from memory with pyarrow's
defaults (snappy everywhere) into one file. Each is timed best of `--repeat`, page cache warm.

    .venv/bin/python bench/write_speed.py --rows 8000
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from stream2dataset.dataset import FRAME_SCHEMA, commit_segments, frame_id, stage_rows
from stream2dataset.demo import SMALL_LAYOUT, build_demo_hls
from stream2dataset.processing.decode import sample_frames
from stream2dataset.layout import Storage

CACHE = Path.home() / ".cache" / "stream2dataset"
T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


def crops() -> list[bytes]:
    hls = build_demo_hls(CACHE / "test-footage", SMALL_LAYOUT, seconds=8, segment_seconds=1)
    out = []
    for seg in sorted(hls.glob("seg*.ts")):
        for f in sample_frames(seg, 4.0):
            x, y, w, h = SMALL_LAYOUT.facecam
            crop = cv2.resize(f.image[y:y + h, x:x + w], (256, 256), interpolation=cv2.INTER_AREA)
            out.append(cv2.imencode(".png", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3])[1].tobytes())
    return out


def rows_for(n: int, images: list[bytes], segments: int) -> dict[str, list[dict]]:
    per = n // segments
    out = {}
    for s in range(segments):
        sid = f"twitch.alice.seg{s:04d}"
        out[sid] = [{
            "frame_id": frame_id(sid, i, "facecam"), "channel": "alice", "platform": "twitch", "segment_id": sid,
            "timestamp": T0 + timedelta(seconds=s * per + i), "frame_index": i, "kind": "facecam", "width": 256,
            "height": 256, "image": images[(s * per + i) % len(images)], "image_format": "png",
            "crop_box": [10, 10, 120, 98], "detector": "mediapipe+facecam", "score": 0.93,
            "phash": int(np.uint64(hash((sid, i)) & 0xFFFFFFFFFFFFFFFF)), "transforms": ["resize(size=256)"],
            "config_hash": "0123456789abcdef",
        } for i in range(per)]
    return out


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=8000)
    ap.add_argument("--segments", type=int, default=20)
    ap.add_argument("--window-rows", type=int, default=60, help="rows per staged window (60 s at 1 fps)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    images = crops()
    by_segment = rows_for(args.rows, images, args.segments)
    all_rows = [r for rows in by_segment.values() for r in rows]
    table = pa.Table.from_pylist(all_rows, schema=FRAME_SCHEMA)
    mb = table.nbytes / 2**20
    work = Path(tempfile.mkdtemp(prefix="s2d-write-", dir=os.environ.get("TMPDIR")))
    try:
        def plain() -> None:
            pq.write_table(table, work / "plain.parquet")

        def stage(root: Path) -> None:
            shutil.rmtree(root, ignore_errors=True)
            storage = Storage(root)
            for sid, rows in by_segment.items():
                for w in range(0, len(rows), args.window_rows):
                    stage_rows(storage, "frames", sid, f"{sid}.w{w // args.window_rows:04d}",
                               rows[w:w + args.window_rows], T0.timestamp())

        def commit_only() -> float:
            stage(work / "ours")
            t0 = time.perf_counter()
            commit_segments(Storage(work / "ours"), {sid: {} for sid in by_segment})
            return time.perf_counter() - t0

        t_plain = best(plain, args.repeat)
        t_plain_rows = best(lambda: pq.write_table(pa.Table.from_pylist(all_rows, schema=FRAME_SCHEMA),
                                                   work / "plain2.parquet"), args.repeat)
        t_stage = best(lambda: stage(work / "staged"), args.repeat)
        t_commit = min(commit_only() for _ in range(args.repeat))
        shards = list((work / "ours" / "dataset" / "frames").rglob("*.parquet"))
        ours_bytes = sum(p.stat().st_size for p in shards)
        plain_bytes = (work / "plain.parquet").stat().st_size
    finally:
        shutil.rmtree(work, ignore_errors=True)

    console = Console(width=max(Console().width, 120))
    out = Table(title=f"writing {len(all_rows)} frame rows ({mb:.0f} MB, real 256² PNG crops, "
                      f"{np.mean([len(i) for i in images]) / 1024:.0f} KiB each) — {os.cpu_count()} cores")
    for col in ("write", "seconds", "MB/s", "rows/s", "file MB", "throughput ÷ its baseline"):
        out.add_column(col)
    for label, t, base, size in (
            ("plain pq.write_table of an Arrow table (baseline A)", t_plain, t_plain, plain_bytes),
            ("commit_segments: staged parts → shards  (vs A)", t_commit, t_plain, ours_bytes),
            ("plain from Python rows: from_pylist + write_table (baseline B)", t_plain_rows, t_plain_rows, None),
            ("stage_rows per window, from Python rows (vs B)", t_stage, t_plain_rows, None),
            ("stage + commit, from Python rows (vs B)", t_stage + t_commit, t_plain_rows, None)):
        out.add_row(label, f"{t:.3f}", f"{mb / t:.0f}", f"{len(all_rows) / t:.0f}",
                    f"{size / 2**20:.0f}" if size else "", f"{base / t:.2f}×")
    out.caption = f"{len(shards)} shard(s); target: commit throughput ≥ 0.8× plain pyarrow"
    console.print(out)


if __name__ == "__main__":
    main()
