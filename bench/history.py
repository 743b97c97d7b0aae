"""A long history (issue 16): does a round cost the same on day 1 and day 300?

Builds a synthetic storage root as compaction leaves it after a long run: S segments (60 s each)
over C channels, their manifest in period files (one per past month and one for today, per
channel) plus the last two hours as per-segment files, processed (a done marker each), which the
real `compact` then merges (timed); F frame rows in one
shard per channel and day (bench/stats.py's rows: small random image bytes). Then times one more
round of the service's fixed cost, several times: commit one new segment's rows (+ its manifest
file), the cross-segment dedup pass, the catalog refresh, compaction (nothing due), the pool's
manifest scan; apart, the backlog that `process` and the UI read (`pending_segments`); and
`stream2dataset sql "SELECT count(*) FROM segments"` through the CLI's own code, in this process
and as a command.

    .venv/bin/python bench/history.py --segments 1000000 --frames 10000000 --channels 100
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stats import _frames  # noqa: E402  (the same synthetic frame rows as bench/stats.py)

from stream2dataset.dataset.catalog import open_catalog, write_catalog  # noqa: E402
from stream2dataset.dataset.compaction import _target, compact  # noqa: E402
from stream2dataset.dataset.manifest import SEGMENT_SCHEMA, manifest_files, pending_segments, write_segment  # noqa: E402
from stream2dataset.dataset.shards import write_shards  # noqa: E402
from stream2dataset.dataset.schema import FRAME_SCHEMA  # noqa: E402
from stream2dataset.dataset.writer import commit_segments  # noqa: E402
from stream2dataset.layout import MANIFEST, PERIODS, Storage, atomic_output, utc_stamp  # noqa: E402

SEGMENT_S = 60
TAIL_S = 2 * 3600  # the last two hours stay per-segment files until the real compaction runs


def _segments(name: str, n: int, end: float) -> pa.Table:
    starts = (end - SEGMENT_S * np.arange(n, 0, -1)).astype("int64") * 1000
    ts = pa.array(starts, pa.timestamp("ms", tz="UTC"))
    stamps = [utc_stamp(datetime.fromtimestamp(s / 1000, timezone.utc)) for s in starts.tolist()]
    ids = [f"twitch.{name}.{s}" for s in stamps]
    return pa.table({
        "segment_id": ids, "channel": [name] * n, "platform": ["twitch"] * n, "source": [f"https://twitch.tv/{name}"] * n,
        "source_id": pa.nulls(n, pa.string()), "title": pa.nulls(n, pa.string()),
        "path": [f"raw/twitch/{name}/{s[:4]}-{s[4:6]}-{s[6:8]}/{s}.ts" for s in stamps],
        "start": ts, "end": pa.array(starts + SEGMENT_S * 1000, pa.timestamp("ms", tz="UTC")),
        "duration_s": np.full(n, float(SEGMENT_S)), "bytes": np.full(n, 20_000_000, np.int64),
        "video_codec": ["h264"] * n, "width": pa.array(np.full(n, 1280), pa.int32()),
        "height": pa.array(np.full(n, 720), pa.int32()), "fps": pa.array(np.full(n, 30.0), pa.float32()),
        "audio_codec": ["aac"] * n, "sha256": ["0" * 64] * n, "status": ["ok"] * n, "config_hash": ["cfg0"] * n,
        "recorded_at": pa.array(starts + SEGMENT_S * 1000, pa.timestamp("ms", tz="UTC")),
    }, schema=SEGMENT_SCHEMA)


def build(storage: Storage, segments: int, frames: int, channels: int, now: float, target_mb: float) -> dict:
    """The history as compaction leaves it, but for the last two hours' per-segment files."""
    rng = np.random.default_rng(0)
    per_channel = segments // channels
    per_segment = max(1, frames // segments)
    end = (now // SEGMENT_S) * SEGMENT_S - SEGMENT_S
    period_files = singles = rows = 0
    for c in range(channels):
        name = f"c{c:03d}"
        table = _segments(name, per_channel, end)
        starts = table["start"].to_numpy().astype("datetime64[s]").astype("int64")
        days_of = starts // 86400
        targets = {d: _target(datetime.fromtimestamp(int(d) * 86400, timezone.utc), now) for d in np.unique(days_of)}
        tail = starts >= now - TAIL_S
        key = np.array([targets[d] for d in days_of.tolist()], dtype=object)
        for period in sorted(set(key[~tail].tolist())):
            part = table.filter(pa.array((key == period) & ~tail))
            gid = hashlib.sha256(f"{name}{period}".encode()).hexdigest()[:16]
            path = storage.root / MANIFEST / name / PERIODS / f"{period}.{gid}.parquet"
            with atomic_output(path) as tmp:
                pq.write_table(part, tmp, compression="zstd")
            period_files += 1
        for row in table.filter(pa.array(tail)).to_pylist():  # as recorders write them; processed since
            path = write_segment(storage, row)
            os.utime(path, (row["end"].timestamp(),) * 2)
            storage.done_marker(row["segment_id"]).parent.mkdir(parents=True, exist_ok=True)
            storage.done_marker(row["segment_id"]).write_text("{}")
            singles += 1
        # Frames: one shard per channel and day, as compaction leaves them.
        days = (starts // 86400).tolist()
        for day in sorted(set(days)):
            ids = table["segment_id"].filter(pa.array([d == day for d in days])).to_pylist()
            n = len(ids) * per_segment
            day0 = datetime.fromtimestamp(day * 86400, timezone.utc)
            part = _frames(rng, n, name, "twitch", ids, per_segment, day0, 16)
            write_shards(storage.shard_dir("frames", name, f"{day0:%Y-%m-%d}"), "compact-bench", FRAME_SCHEMA, [part],
                         target_mb)
            rows += n
    return {"segments": per_channel * channels, "frame_rows": rows, "period_files": period_files,
            "segment_files": singles}


def _stage_one(storage: Storage, round_no: int, now: float) -> dict:
    """One new segment, recorded and processed: its manifest file and 60 frame rows staged."""
    from stream2dataset.dataset.writer import stage_rows

    start = datetime.fromtimestamp(now - SEGMENT_S, timezone.utc)
    row = _segments("c000", 1, now).to_pylist()[0]
    sid = f"{row['segment_id']}.r{round_no}"
    write_segment(storage, {**row, "segment_id": sid})
    frames = _frames(np.random.default_rng(round_no), 60, "c000", "twitch", [sid], 60, start, 16).to_pylist()
    stage_rows(storage, "frames", sid, f"{sid}.w0000", frames, start.timestamp())
    return {sid: {"segment_id": sid, "error": ""}}


def _cli_sql(config: Path, sql: str) -> str:
    from stream2dataset.cli import main

    argv, out = sys.argv, io.StringIO()
    sys.argv = ["stream2dataset", "sql", sql, "-c", str(config), "--format", "csv"]
    try:
        with contextlib.redirect_stdout(out):
            main()
    except SystemExit as done:
        if done.code:
            raise
    finally:
        sys.argv = argv
    return out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--segments", type=int, default=1_000_000)
    ap.add_argument("--frames", type=int, default=10_000_000)
    ap.add_argument("--channels", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shard-target-mb", type=float, default=256)
    ap.add_argument("--root", type=Path, help="build here (default: a temp folder, removed after)")
    args = ap.parse_args()
    work = args.root or Path(tempfile.mkdtemp(prefix="s2d-history-"))
    console = Console()
    try:
        work.mkdir(parents=True, exist_ok=True)
        config = work / "stream2dataset.yaml"
        config.write_text(f"storage:\n  root: data\ndataset:\n  shard_target_mb: {args.shard_target_mb}\n")
        storage = Storage(work / "data")
        now = time.time()
        t = time.perf_counter()
        built = build(storage, args.segments, args.frames, args.channels, now, args.shard_target_mb)
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        merged = compact(storage, args.shard_target_mb)
        compact_s = time.perf_counter() - t
        after = len(manifest_files(storage.root))
        console.print(f"built {built['segments']:,} segments ({built['period_files']:,} period files, "
                      f"{built['segment_files']:,} per-segment files) and {built['frame_rows']:,} frame rows in "
                      f"{build_s:.1f} s; compaction merged {sum(len(g['old']) for g in merged):,} files in "
                      f"{compact_s:.2f} s: {after:,} manifest files")

        from stream2dataset.dataset.dedup_pass import dedup_dataset

        steps = {"commit (1 segment, 60 rows)": [], "dedup pass": [], "catalog refresh": [],
                 "compaction (after the commit)": [], "pool scan of the manifest": []}
        backlog = []
        for r in range(args.rounds):
            markers = _stage_one(storage, r, time.time())
            for name, fn in (
                    ("commit (1 segment, 60 rows)", lambda: commit_segments(storage, markers, args.shard_target_mb)),
                    ("dedup pass", lambda: dedup_dataset(storage, 4)),
                    ("catalog refresh", lambda: (write_catalog(storage.root), open_catalog(storage.root).close())),
                    ("compaction (after the commit)", lambda: compact(storage, args.shard_target_mb, wait=False,
                                                                 max_mb=4 * args.shard_target_mb, max_files=20_000)),
                    ("pool scan of the manifest", lambda: [p.stat() for p in manifest_files(storage.root, pending_only=True)])):
                t = time.perf_counter()
                fn()
                steps[name].append(time.perf_counter() - t)
            t = time.perf_counter()
            pending_segments(storage)
            backlog.append(time.perf_counter() - t)
        sql = "SELECT count(*) FROM segments"
        t = time.perf_counter()
        counted = int(_cli_sql(config, sql).splitlines()[1])
        sql_cold = time.perf_counter() - t
        t = time.perf_counter()
        _cli_sql(config, sql)
        sql_warm = time.perf_counter() - t
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "stream2dataset", "sql", sql, "-c", str(config)], check=True,
                       capture_output=True)
        sql_command = time.perf_counter() - t
        assert counted == built["segments"] + args.rounds, (counted, built)

        table = Table(title=f"one more round on {built['segments']:,} segments, {built['frame_rows']:,} frame rows, "
                            f"{args.channels} channels ({after:,} manifest files)")
        for col in ("step", "median s", "max s"):
            table.add_column(col, justify="left" if col == "step" else "right")
        for name, times in steps.items():
            table.add_row(name, f"{np.median(times):.3f}", f"{max(times):.3f}")
        fixed = [sum(times[i] for times in steps.values()) for i in range(args.rounds)]
        table.add_row("[b]round total[/b]", f"{np.median(fixed):.3f}", f"{max(fixed):.3f}")
        table.add_row("round total without dedup", f"{np.median([f - d for f, d in zip(fixed, steps['dedup pass'])]):.3f}",
                      f"{max(f - d for f, d in zip(fixed, steps['dedup pass'])):.3f}")
        table.add_row("apart: backlog of `process` / the UI (pending_segments)", f"{np.median(backlog):.3f}",
                      f"{max(backlog):.3f}")
        table.add_row(f"sql \"{sql}\" (CLI code, in process; first)", f"{sql_cold:.3f}", "")
        table.add_row("  the same, again", f"{sql_warm:.3f}", "")
        table.add_row("  the same as a command (Python start included)", f"{sql_command:.3f}", "")
        console.print(table)
        console.print(f"manifest files after the rounds: {len(manifest_files(storage.root)):,}")
    finally:
        if not args.root:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
