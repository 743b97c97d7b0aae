"""`stats` on a million frame rows (issue 4): is the summary fast enough to run on every look?

Builds a synthetic storage root shaped like one made with the default config (60-s segments,
1 sampled frame/s, facecam crops): N frame rows over C channels and D days in one shard per channel
and day (~100 shards, written like dataset/shards.py does: 2048-row groups, image bytes stored
as-is), one manifest file per segment (~17,000 for 1M rows), ~10% in-segment near-duplicates,
a dedup pass's cross-segment links (~2%), drop counts per segment and reason, and small random
image bytes (real weight on disk that `stats` must not read). Then times `dataset_stats` (the
library call behind the command) cold and warm, the parts of it, and the whole command.

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
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from stream2dataset.dataset.schema import DROP_SCHEMA, DUP_SCHEMA, FRAME_SCHEMA, SCHEMA_KEY, SCHEMA_VERSION
from stream2dataset.dataset.manifest import SEGMENT_SCHEMA

REASONS = ("no_face", "low_score", "too_small", "blurred")
_META = {SCHEMA_KEY: str(SCHEMA_VERSION).encode()}


def _write(table: pa.Table, path: Path) -> None:
    """As dataset/shards.py writes: 2048-row groups, image bytes stored as they are (no compression,
    dictionary or statistics), zstd for the rest, the schema version key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = table.column_names
    raw = [n for n in names if n in ("image", "mask", "frames")]
    pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), **_META}), path,
                   row_group_size=2048, compression={n: "none" if n in raw else "zstd" for n in names},
                   use_dictionary=[n for n in names if n not in raw],
                   write_statistics=[n for n in names if n not in raw])


def _frames(rng, n: int, name: str, platform: str, seg_ids: list[str], per_segment: int, day0: datetime,
            image_bytes: int) -> pa.Table:
    ids = pa.array([r.tobytes().hex() for r in rng.integers(0, 256, size=(n, 12), dtype=np.uint8)])
    dup = rng.random(n) < 0.10  # in-segment near-duplicates point at the previous frame
    dup_of = pc.if_else(pa.array(dup), pa.concat_arrays([ids[-1:], ids[:-1]]), pa.nulls(n, pa.string()))
    sizes = rng.integers(image_bytes // 2, image_bytes * 3 // 2, n)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
    blob = rng.integers(0, 256, int(sizes.sum()), dtype=np.uint8).tobytes()
    images = pa.BinaryArray.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(blob)])
    ts = np.datetime64(day0.replace(tzinfo=None), "ms") + (np.arange(n) * 1000).astype("timedelta64[ms]")
    return pa.table({
        "frame_id": ids, "channel": pa.array([name] * n), "platform": pa.array([platform] * n),
        "segment_id": pa.array([seg_ids[i // per_segment] for i in range(n)]), "source_id": pa.nulls(n, pa.string()),
        "title": pa.array([f"{name} live"] * n), "timestamp": pa.array(ts, FRAME_SCHEMA.field("timestamp").type),
        "frame_index": pa.array(np.arange(n) % per_segment, pa.int32()), "kind": pa.array(["facecam"] * n),
        "width": pa.array(np.full(n, 256), pa.int32()), "height": pa.array(np.full(n, 256), pa.int32()),
        "image": images, "image_format": pa.array(["png"] * n), "mask": pa.nulls(n, pa.binary()),
        "crop_box": pa.array([[960, 40, 300, 300]] * n, FRAME_SCHEMA.field("crop_box").type),
        "detector": pa.array(["mediapipe"] * n), "score": pa.array(rng.random(n, dtype=np.float32)),
        "phash": pa.array(rng.integers(0, 2**63, n, dtype=np.uint64), pa.uint64()), "dup_of": dup_of,
        "transforms": pa.array([["resize"]] * n, pa.list_(pa.string())), "config_hash": pa.array(["cfg0"] * n),
        "layout": pa.array(["overlay"] * n), "layout_confidence": pa.array(np.full(n, 0.9, np.float32)),
    }, schema=FRAME_SCHEMA)


def build(root: Path, rows: int, channels: int = 8, days: int = 12, segment_s: int = 60, image_bytes: int = 384,
          seed: int = 0) -> dict:
    """Write the synthetic dataset under `root` (one frame per second of video); returns counts."""
    rng = np.random.default_rng(seed)
    n = rows // (channels * days)
    t0 = datetime(2026, 11, 1, 2, tzinfo=timezone.utc)
    kept: list[pa.Array] = []
    segments = 0
    for c in range(channels):
        name, platform = f"channel{c}", ("twitch", "youtube")[c % 2]
        for d in range(days):
            day0, day = t0 + timedelta(days=d), f"{t0 + timedelta(days=d):%Y-%m-%d}"
            seg_ids = [f"{platform}.{name}.{d:02d}{s:05d}" for s in range(-(-n // segment_s))]
            frames = _frames(rng, n, name, platform, seg_ids, segment_s, day0, image_bytes)
            _write(frames, root / f"dataset/frames/channel={name}/date={day}/part-{c}{d:02d}.parquet")
            kept.append(frames["frame_id"].filter(pc.is_null(frames["dup_of"])).combine_chunks())
            drops = [{"segment_id": s, "channel": name, "platform": platform, "timestamp": day0, "reason": r,
                      "count": int(rng.integers(0, 10))} for s in seg_ids for r in REASONS]
            _write(pa.Table.from_pylist(drops, schema=DROP_SCHEMA),
                   root / f"dataset/drops/channel={name}/date={day}/part-{c}{d:02d}.parquet")
            seg_dir = _mkdir(root / f"manifests/segments/{name}")
            for s, sid in enumerate(seg_ids):  # the manifest: one file per segment, as ingest writes it
                start = day0 + timedelta(seconds=s * segment_s)
                row = {"segment_id": sid, "channel": name, "platform": platform, "source": f"https://example/{name}",
                       "path": f"raw/{platform}/{name}/{day}/{sid}.ts", "start": start,
                       "end": start + timedelta(seconds=segment_s), "duration_s": float(segment_s),
                       "bytes": 20_000_000, "video_codec": "h264", "width": 1280, "height": 720, "fps": 30.0,
                       "status": "ok", "config_hash": "cfg0", "recorded_at": start}
                pq.write_table(pa.Table.from_pylist([row], schema=SEGMENT_SCHEMA), seg_dir / f"{sid}.parquet")
            segments += len(seg_ids)
    ids = pa.concat_arrays(kept)
    pick = rng.choice(len(ids), size=len(ids) // 50, replace=False)
    _write(pa.table({"frame_id": ids.take(pa.array(pick)), "dup_of": ids.take(pa.array(np.roll(pick, 1))),
                     "distance": pa.array(rng.integers(0, 5, len(pick)), pa.int8())}, schema=DUP_SCHEMA),
           root / "dataset/dups/links-0000.parquet")
    return {"rows": n * channels * days, "frame_shards": channels * days, "segments": segments,
            "dup_links": len(pick)}


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


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
    ap.add_argument("--segment-s", type=int, default=60, help="segment length (the config's default: 60)")
    ap.add_argument("--root", type=Path, default=Path("/tmp/s2d-bench-stats"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="reuse --root if it already holds a dataset")
    args = ap.parse_args()

    from stream2dataset.dataset import stats as st
    from stream2dataset.dataset.catalog import open_catalog
    from stream2dataset.layout import CATALOG

    if not (args.keep and (args.root / "dataset").exists()):
        shutil.rmtree(args.root, ignore_errors=True)
        t = time.perf_counter()
        print(f"built {build(args.root, args.rows, segment_s=args.segment_s)} in {time.perf_counter() - t:.0f} s")
    (args.root / "stream2dataset.yaml").write_text("storage:\n  root: .\n")
    files = list(args.root.rglob("*.parquet"))
    frames_mb = sum(p.stat().st_size for p in files if "/frames/" in str(p)) / 1e6

    def cold():  # a root nobody has looked at: the catalog file and the manifest cache are built
        (args.root / CATALOG).unlink(missing_ok=True)
        (args.root / st.SEGMENTS_CACHE).unlink(missing_ok=True)
        st.dataset_stats(args.root)

    first = _best(cold, 1)
    warm = _best(lambda: st.dataset_stats(args.root), args.repeat)
    parts = {}
    with open_catalog(args.root) as con:
        total = con.sql("SELECT count(*) FROM frames_all").fetchall()[0][0]
        cache = st.segment_cache(args.root, con)
        parts["manifest cache check (scandir + footer)"] = _best(lambda: st.segment_cache(args.root, con), args.repeat)
        for name, sql in st._QUERIES.items():
            sql = sql.format(segments=f"read_parquet('{cache}')") if name == "segments" else sql
            parts[f"query: {name}"] = _best(lambda: con.sql(sql).to_arrow_table(), args.repeat)
        parts["manifest read whole (segments view)"] = _best(
            lambda: con.sql(st._QUERIES["segments"].format(segments="segments")).to_arrow_table(), 1)
        parts["image column scan (what stats avoids)"] = _best(
            lambda: con.sql("SELECT sum(octet_length(image)) FROM frames_all").fetchall(), args.repeat)
    parts["open_catalog()"] = _best(lambda: open_catalog(args.root).close(), args.repeat)
    env = {**os.environ, "COLUMNS": "200"}
    cfg = ["-c", str(args.root / "stream2dataset.yaml")]
    cli = _best(lambda: subprocess.run([sys.executable, "-m", "stream2dataset", "stats", *cfg], check=True,
                                       capture_output=True, env=env), args.repeat)
    start = _best(lambda: subprocess.run([sys.executable, "-m", "stream2dataset", "check", *cfg], check=True,
                                         capture_output=True, env=env), args.repeat)

    table = Table(title=f"stats on {total:,} frame rows: {len(files):,} Parquet files ({frames_mb:,.0f} MB of "
                        f"frame shards), {os.cpu_count()} cores; best of {args.repeat}")
    table.add_column("what")
    table.add_column("seconds", justify="right")
    table.add_row("dataset_stats(), cold (writes catalog.duckdb and the manifest cache)", f"{first:.3f}")
    table.add_row("[b]dataset_stats(), warm[/b]", f"[b]{warm:.3f}[/b]")
    for name, secs in parts.items():
        table.add_row(f"  {name}" if not name.startswith(("manifest read", "image")) else f"  baseline: {name}",
                      f"{secs:.3f}")
    table.add_row("`stream2dataset stats` command (whole process)", f"{cli:.3f}")
    table.add_row("  baseline: `stream2dataset check` (Python start, imports, config)", f"{start:.3f}")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
