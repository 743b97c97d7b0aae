"""A service's commit rounds, replayed fast (issue 16): does a round's cost or the process's memory grow?

The Supervisor commits a round every `processing.interval_s` (10 s) for as long as the service
runs. This replays those rounds back to back in a plain process, with the real code: each round,
every one of C channels gets one new 10-s segment (its manifest file, R staged frame rows of small
random images, its done marker), then the round's steps as the pool runs them: `commit_segments`,
the incremental `dedup_dataset`, and `compact` bounded as the pool bounds it and looking only at
the folders the commit wrote to (`ShardWatch`). Each step is timed, and the process's resident
memory is read after every round. The replay runs once per Arrow memory pool in a child process
of its own (`ARROW_DEFAULT_MEMORY_POOL`): mimalloc (Arrow's default) and the system's malloc, which
the service's Supervisor uses.

    .venv/bin/python bench/rounds.py --channels 20 --rounds 200
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from history import _segments  # noqa: E402  (the manifest rows of bench/history.py)
from stats import _frames  # noqa: E402  (the frame rows of bench/stats.py)

POOLS = ("mimalloc", "system")


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def replay(channels: int, rounds: int, rows: int) -> None:
    """The child: one JSON line per round on stdout."""
    from stream2dataset.dataset.compaction import ShardWatch, compact
    from stream2dataset.dataset.dedup_pass import dedup_dataset
    from stream2dataset.dataset.manifest import write_segment
    from stream2dataset.dataset.writer import commit_segments, stage_rows
    from stream2dataset.layout import Storage

    with tempfile.TemporaryDirectory(prefix="s2d-rounds-") as tmp:
        storage, watch = Storage(Path(tmp) / "data"), ShardWatch()
        for r in range(rounds):
            now = time.time()
            start = datetime.fromtimestamp(now - 10, timezone.utc)
            markers = {}
            for c in range(channels):
                name = f"c{c:03d}"
                row = _segments(name, 1, now).to_pylist()[0]
                sid = f"{row['segment_id']}.r{r}"
                write_segment(storage, {**row, "segment_id": sid})
                frames = _frames(np.random.default_rng(r * 1000 + c), rows, name, "twitch", [sid], rows, start, 16)
                stage_rows(storage, "frames", sid, f"{sid}.w0000", frames.to_pylist(), start.timestamp())
                markers[sid] = {"segment_id": sid, "error": ""}
            t0 = time.perf_counter()
            shards = commit_segments(storage, markers)
            t1 = time.perf_counter()
            dedup_dataset(storage, 4)
            t2 = time.perf_counter()
            watch.wrote({p.parent.relative_to(storage.root).as_posix() for p in shards})
            folders = watch.folders()
            compact(storage, max_mb=4 * 256, max_files=20_000, wait=False, folders=folders)
            watch.compacted(folders)
            t3 = time.perf_counter()
            files = sum(len(f) for _, _, f in os.walk(storage.root))
            print(json.dumps({"round": r + 1, "commit": t1 - t0, "dedup": t2 - t1, "compact": t3 - t2,
                              "rss_mb": _rss_mb(), "files": files}), flush=True)


def _slope(ys: list[float]) -> float:
    return float(np.polyfit(np.arange(len(ys)), ys, 1)[0]) if len(ys) > 2 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--rows", type=int, default=20, help="frame rows per segment (10 s at 1 fps, facecam + face)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return replay(args.channels, args.rounds, args.rows)
    console = Console()
    table = Table(title=f"{args.rounds} commit rounds of {args.channels} channels ({args.rows} frame rows a segment), "
                        f"back to back ({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})")
    for col in ("Arrow pool", "commit s (median)", "dedup s (median)", "compact s, median 1st / 2nd half",
                "compact s, max", "files at end", "RSS MB after round 10 / at end", "RSS trend MB / 100 rounds, 2nd half"):
        table.add_column(col)
    for pool in POOLS:
        console.print(f"replaying with {pool}...")
        out = subprocess.run([sys.executable, __file__, "--child", "--channels", str(args.channels), "--rounds",
                              str(args.rounds), "--rows", str(args.rows)], capture_output=True, text=True,
                             env={**os.environ, "ARROW_DEFAULT_MEMORY_POOL": pool}, check=True)
        rs = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        half = len(rs) // 2
        compact_s = [r["compact"] for r in rs]
        rss = [r["rss_mb"] for r in rs]
        table.add_row(pool, f"{statistics.median(r['commit'] for r in rs):.3f}",
                      f"{statistics.median(r['dedup'] for r in rs):.3f}",
                      f"{statistics.median(compact_s[:half] or compact_s):.3f} / {statistics.median(compact_s[half:]):.3f}",
                      f"{max(compact_s):.2f}", f"{rs[-1]['files']:,}",
                      f"{rss[min(9, len(rss) - 1)]:.0f} / {rss[-1]:.0f}", f"{100 * _slope(rss[half:]):+.1f}")
    console.print(table)


if __name__ == "__main__":
    main()
