"""`stats` on a million frame rows (issue 4): is the summary fast enough to run on every look?

Builds a synthetic storage root shaped like a real one: N frame rows over C channels and D days
(one shard per channel and day, ~100 shards), 10-minute segments sampled at 1 frame/s (one manifest
file per segment), ~10% in-segment near-duplicates, a dedup pass's cross-segment links (~2%),
drop counts per segment and reason, and small random image bytes (so the image column is real
weight on disk that `stats` must not read). Then times `dataset_stats` (the library call the
command makes) and the whole `stream2dataset stats` command.

    .venv/bin/python bench/stats.py --rows 1000000
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from stream2dataset.dataset.schema import DROP_SCHEMA, DUP_SCHEMA, FRAME_SCHEMA, SCHEMA_KEY, SCHEMA_VERSION
from stream2dataset.ingest.manifest import SEGMENT_SCHEMA

FRAMES_PER_SEGMENT = 600  # 10-minute segments, one sampled frame a second
REASONS = ("no_face", "low_score", "too_small", "blurred")
_META = {SCHEMA_KEY: str(SCHEMA_VERSION).encode()}


def _write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), **_META}), path,
                   compression="zstd")


def _hex_ids(rng: np.random.Generator, n: int) -> pa.Array:
    raw = rng.integers(0, 256, size=(n, 12), dtype=np.uint8)
    return pa.array([r.tobytes().hex() for r in raw], pa.string())


def build(root: Path, rows: int, channels: int = 8, days: int = 12, image_bytes: int = 384, seed: int = 0) -> dict:
    """Write the synthetic dataset under `root`; returns what was written."""
    rng = np.random.default_rng(seed)
    per_shard = rows // (channels * days)
    t0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
    n_files = n_segments = 0
    kept_ids: list[pa.Array] = []
    for c in range(channels):
        name, platform = f"channel{c}", ("twitch", "youtube")[c % 2]
        for d in range(days):
            n = per_shard
            segs = -(-n // FRAMES_PER_SEGMENT)
            seg_ids = [f"{platform}.{name}.{d:02d}{s:04d}" for s in range(segs)]
            seg_of = np.arange(n) // FRAMES_PER_SEGMENT
            day0 = t0 + timedelta(days=d, hours=2)
            ts = np.datetime64(day0.replace(tzinfo=None), "ms") + (np.arange(n) * 1000).astype("timedelta64[ms]")
            ids = _hex_ids(rng, n)
            dup = rng.random(n) < 0.10
            dup_of = pa.array(np.where(dup, np.roll(np.asarray(ids.to_pylist(), dtype=object), 1), None), pa.string())
            sizes = rng.integers(image_bytes // 2, image_bytes * 3 // 2, n)
            blob = rng.integers(0, 256, int(sizes.sum()), dtype=np.uint8).tobytes()
            offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
            images = pa.BinaryArray.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(blob)])
            table = pa.table({
                "frame_id": ids, "channel": pa.array([name] * n), "platform": pa.array([platform] * n),
                "segment_id": pa.array([seg_ids[i] for i in seg_of]), "source_id": pa.nulls(n, pa.string()),
                "title": pa.array([f"{name} live"] * n), "timestamp": pa.array(ts, FRAME_SCHEMA.field("timestamp").type),
                "frame_index": pa.array(np.arange(n) % FRAMES_PER_SEGMENT, pa.int32()),
                "kind": pa.array(np.where(np.arange(n) % 2 == 0, "facecam", "silhouette")),
                "width": pa.array(np.full(n, 256), pa.int32()), "height": pa.array(np.full(n, 256), pa.int32()),
                "image": images, "image_format": pa.array(["png"] * n), "mask": pa.nulls(n, pa.binary()),
                "crop_box": pa.array([[960, 40, 300, 300]] * n, FRAME_SCHEMA.field("crop_box").type),
                "detector": pa.array(["mediapipe"] * n), "score": pa.array(rng.random(n, dtype=np.float32)),
                "phash": pa.array(rng.integers(0, 2**63, n, dtype=np.uint64), pa.uint64()), "dup_of": dup_of,
                "transforms": pa.array([["resize"]] * n, pa.list_(pa.string())), "config_hash": pa.array(["cfg0"] * n),
            }, schema=FRAME_SCHEMA)
            day = f"{day0:%Y-%m-%d}"
            _write(table, root / f"dataset/frames/channel={name}/date={day}/part-{c}{d:02d}.parquet")
            kept_ids.append(pa.compute.filter(ids, pa.array(~dup)))
            drops = [{"segment_id": s, "channel": name, "platform": platform, "timestamp": day0, "reason": r,
                      "count": int(rng.integers(0, 40))} for s in seg_ids for r in REASONS]
            _write(pa.Table.from_pylist(drops, schema=DROP_SCHEMA), root / f"dataset/drops/channel={name}/date={day}/part-{c}{d:02d}.parquet")
            for s, sid in enumerate(seg_ids):
                start = day0 + timedelta(seconds=s * FRAMES_PER_SEGMENT)
                row = {"segment_id": sid, "channel": name, "platform": platform, "source": f"https://example/{name}",
                       "path": f"raw/{platform}/{name}/{day}/{sid}.ts", "start": start,
                       "end": start + timedelta(seconds=FRAMES_PER_SEGMENT), "duration_s": float(FRAMES_PER_SEGMENT),
                       "bytes": 200_000_000, "video_codec": "h264", "width": 1280, "height": 720, "fps": 30.0,
                       "status": "ok", "config_hash": "cfg0", "recorded_at": start}
                _write(pa.Table.from_pylist([row], schema=SEGMENT_SCHEMA), root / f"manifests/segments/{name}/{sid}.parquet")
            n_files += 2 + segs
            n_segments += segs
    kept = pa.concat_arrays(kept_ids)
    pick = rng.choice(len(kept), size=len(kept) // 50, replace=False)
    links = pa.table({"frame_id": kept.take(pa.array(pick)), "dup_of": kept.take(pa.array(np.roll(pick, 1))),
                      "distance": pa.array(rng.integers(0, 5, len(pick)), pa.int8())}, schema=DUP_SCHEMA)
    _write(links, root / "dataset/dups/pass-0001.parquet")
    return {"rows": per_shard * channels * days, "frame_shards": channels * days, "segments": n_segments,
            "files": n_files + 1, "dup_links": len(pick)}


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--root", type=Path, default=Path("/tmp/s2d-bench-stats"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="reuse --root if it already holds a dataset")
    args = ap.parse_args()

    from stream2dataset.dataset.catalog import open_catalog
    from stream2dataset.dataset.stats import dataset_stats

    if not (args.keep and (args.root / "dataset").exists()):
        shutil.rmtree(args.root, ignore_errors=True)
        t = time.perf_counter()
        info = build(args.root, args.rows)
        print(f"built {info} in {time.perf_counter() - t:.1f} s")
    (args.root / "stream2dataset.yaml").write_text("storage:\n  root: .\n")
    size = sum(p.stat().st_size for p in args.root.rglob("*.parquet"))
    frames_size = sum(p.stat().st_size for p in (args.root / "dataset/frames").rglob("*.parquet"))

    with open_catalog(args.root) as con:
        total = con.sql("SELECT count(*) FROM frames_all").fetchall()[0][0]
        scan = _best(lambda: con.sql("SELECT count(*), sum(length(image)) FROM frames_all").fetchall(), args.repeat)
    first = _best(lambda: dataset_stats(args.root), 1)  # first call: a cold process's view creation
    warm = _best(lambda: dataset_stats(args.root), args.repeat)
    env = {**os.environ, "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "stream2dataset", "stats", "-c", str(args.root / "stream2dataset.yaml")]
    cli = _best(lambda: subprocess.run(cmd, check=True, capture_output=True, env=env), args.repeat)
    helpcmd = [sys.executable, "-m", "stream2dataset", "--help"]
    startup = _best(lambda: subprocess.run(helpcmd, check=True, capture_output=True, env=env), args.repeat)

    table = Table(title=f"stats on {total:,} frame rows ({os.cpu_count()} cores)")
    table.add_column("what")
    table.add_column("seconds", justify="right")
    table.add_row(f"files under the root (Parquet, {size / 1e6:,.0f} MB; frames {frames_size / 1e6:,.0f} MB)",
                  str(sum(1 for _ in args.root.rglob("*.parquet"))))
    table.add_row("dataset_stats(), first call", f"{first:.3f}")
    table.add_row(f"dataset_stats(), best of {args.repeat}", f"{warm:.3f}")
    table.add_row(f"`stream2dataset stats` command, best of {args.repeat}", f"{cli:.3f}")
    table.add_row("  of which process start (`--help`)", f"{startup:.3f}")
    table.add_row("baseline: scan of the image column (count, sum(length))", f"{scan:.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()
