"""Benchmark: incremental dedup rounds (issue 16) against an index holding a large history.

State build (timed apart): `--history` planted codes (bench/dedup.py's data: random 64-bit codes,
10% near-copies of earlier ones) linked by `find_duplicates` and written as one index run, as a
rebuild would leave it. Then `--rounds` rounds: each writes one shard of `--new` frames (the next
codes of the same planted sequence, so some copy history frames) and times `dedup_dataset` on it,
the call the service makes after a commit: read the new shard, look its frames up by frame_id and
by band keys, link them, write the round's run and links file, merge small runs, publish.

Check (`--check`, default on): one `find_duplicates` over history + every round's frames in order
must give every new frame the same link (target and distance) as the rounds did.

    .venv/bin/python bench/dedup_index.py --history 10000000 --new 10000 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from dedup import planted  # noqa: E402  (the same synthetic data as the full-pass bench)

from stream2dataset.dataset.dedup import find_duplicates  # noqa: E402
from stream2dataset.dataset.dedup_index import DedupIndex, band_plan, build_run  # noqa: E402
from stream2dataset.dataset.dedup_pass import _links, dedup_dataset  # noqa: E402
from stream2dataset.dataset.schema import FRAME_SCHEMA  # noqa: E402
from stream2dataset.dataset.shards import write_shards  # noqa: E402
from stream2dataset.layout import Storage  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def frame_ids(start: int, n: int) -> pa.Array:
    """n distinct 24-hex-digit ids (as `schema.frame_id` makes), built from buffers (10M in a second)."""
    rng = np.random.default_rng(start)
    data = rng.integers(0, 256, (n, 12), dtype=np.uint8).tobytes().hex().encode()
    offsets = np.arange(0, 24 * n + 1, 24, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data))


def build_state(storage: Storage, codes: np.ndarray, ids: pa.Array, radius: int) -> tuple[float, float, np.ndarray]:
    """The history as one run of a fresh index (round 0); (full pass s, index write s, dup_of)."""
    t0 = time.perf_counter()
    dup_of, dist = find_duplicates(codes, radius)
    t1 = time.perf_counter()
    names = np.asarray(ids, object)
    targets = np.full(len(codes), None, object)
    targets[dup_of >= 0] = names[dup_of[dup_of >= 0]]
    index = DedupIndex(storage, None)
    index.state.update(radius=radius, round=0, kinds=["facecam"], shards={})
    tables = build_run(ids, codes, np.zeros(len(codes), np.uint8), np.arange(len(codes), dtype=np.int64),
                       dup_of < 0, band_plan(radius)[0])
    index.state["runs"] = [index.write_run("r0000000-0000000-g1", tables, _links(names, targets, dist))]
    index.publish()
    return t1 - t0, time.perf_counter() - t1, dup_of


def write_round(storage: Storage, codes: np.ndarray, ids: pa.Array, first: int, stem: str) -> None:
    n = len(codes)
    cols = {"frame_id": ids, "channel": pa.array(["bench"] * n, FRAME_SCHEMA.field("channel").type),
            "kind": pa.array(["facecam"] * n), "phash": pa.array(codes, pa.uint64()),
            "timestamp": pa.array([T0 + timedelta(milliseconds=first + i) for i in range(n)], pa.timestamp("ms", tz="UTC"))}
    table = pa.table({f.name: cols[f.name] if f.name in cols else pa.nulls(n, f.type) for f in FRAME_SCHEMA})
    write_shards(storage.shard_dir("frames", "bench", "2026-01-01"), stem, FRAME_SCHEMA, [table])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--history", type=int, default=10_000_000)
    ap.add_argument("--new", type=int, default=10_000, help="new frames per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--radius", type=int, default=4)
    ap.add_argument("--planted", type=float, default=0.1)
    ap.add_argument("--check", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--root", help="storage root (default: a temp folder, removed after)")
    args = ap.parse_args()
    console = Console(width=max(Console().width, 140))
    load = os.getloadavg()
    console.print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {load[0]:.1f} "
                  f"{load[1]:.1f} {load[2]:.1f}, numpy {np.__version__}, radius {args.radius}, "
                  f"bands/probe bits {len(band_plan(args.radius)[0])}/{band_plan(args.radius)[1]}")
    with tempfile.TemporaryDirectory(dir=args.root) as tmp:
        storage = Storage(Path(tmp) / "root")
        total = args.history + args.new * args.rounds
        codes, _, _ = planted(total, args.radius, args.planted, 0)
        ids = frame_ids(0, total)
        full_s, write_s, _ = build_state(storage, codes[:args.history], ids.slice(0, args.history), args.radius)
        run_bytes = sum(p.stat().st_size for p in (storage.root / "dataset" / "_dedup" / "runs").iterdir())
        console.print(f"state build: {args.history:,} hashes, full pass {full_s:.1f} s, index run written in "
                      f"{write_s:.1f} s ({run_bytes / 1e6:.0f} MB)")
        table = Table("round", "new frames", "wall s", "CPU s", "index rows read", "linked", "runs after",
                      "peak RSS MB")
        links = {}
        for r in range(1, args.rounds + 1):
            lo = args.history + (r - 1) * args.new
            write_round(storage, codes[lo:lo + args.new], ids.slice(lo, args.new), lo, f"round{r:03d}")
            t0, c0 = time.perf_counter(), time.process_time()
            report = dedup_dataset(storage, args.radius)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            table.add_row(str(r), f"{report['frames']:,}", f"{wall:.2f}", f"{cpu:.2f}", f"{report['index_rows_read']:,}",
                          f"{report['linked']:,}", str(report["runs"]),
                          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
        for p in storage.dups_links:
            links.update((row["frame_id"], (row["dup_of"], row["distance"])) for row in pq.read_table(p).to_pylist()
                         if not p.name.startswith("links-r0000000-0000000"))
        console.print(table)
        if args.check:
            dup_of, dist = find_duplicates(codes, args.radius)
            names = np.asarray(ids, object)
            want = {names[i]: (names[dup_of[i]], int(dist[i])) for i in range(args.history, total) if dup_of[i] >= 0}
            console.print(f"check against one full pass over all {total:,} hashes: "
                          f"{'equal' if want == links else 'DIFFERS'} ({len(want):,} links of new frames)")


if __name__ == "__main__":
    main()
