"""Benchmark: the memory of one shard merge, as compaction runs it (issue 16).

Compaction merges an open day's small shards into one (size tiers, up to the 256-MB target). It
reads the inputs one at a time and `write_shards` streams rows to the open shard a row group at a
time. The baseline, measured in the same run, is the whole shard in memory before it is written
(what `write_shards` did before). Each side runs in a fresh process with the Supervisor's
allocator settings (`LONG_LIVED_ENV`); the table shows the peak RSS above the process's start.

    .venv/bin/python bench/merge_memory.py --inputs 16 --rows 300 --row-kb 40
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from stream2dataset.dataset import FRAME_SCHEMA, read_shard, write_shards
from stream2dataset.dataset.shards import _writer


def make_inputs(folder: Path, inputs: int, rows: int, row_kb: int) -> None:
    rng = np.random.default_rng(0)
    for k in range(inputs):
        table = pa.Table.from_pylist([{
            "frame_id": f"s{k}-{i}", "channel": "c", "platform": "twitch", "segment_id": f"s{k}", "frame_index": i,
            "kind": "facecam", "width": 64, "height": 64, "image": rng.integers(0, 256, row_kb * 1024, "uint8").tobytes(),
            "image_format": "png"} for i in range(rows)], schema=FRAME_SCHEMA)
        write_shards(folder, f"in{k:03d}", FRAME_SCHEMA, [table])


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def merge(side: str, folder: Path, out: Path) -> None:
    """One merge in this process; prints the peak RSS above the start, and the start, in MB."""
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to what is resident now
    start = _status_mb("VmRSS")
    inputs = sorted(folder.glob("*.parquet"))
    if side == "streamed":
        write_shards(out, "merged", FRAME_SCHEMA, (read_shard(p) for p in inputs))
    else:  # the whole shard in memory, then written
        table = pa.concat_tables([read_shard(p) for p in inputs])
        writer = _writer(out / "merged-0000.parquet", FRAME_SCHEMA)
        for s in range(0, table.num_rows, 2048):
            writer.write_table(table.slice(s, 2048))
        writer.close()
    print(f"{_status_mb('VmHWM') - start:.0f} {start:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=16, help="shards merged into one")
    ap.add_argument("--rows", type=int, default=300, help="rows per input shard")
    ap.add_argument("--row-kb", type=int, default=40, help="image bytes per row, KB")
    ap.add_argument("--_side", choices=["streamed", "whole"], help=argparse.SUPPRESS)
    ap.add_argument("--_dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    for name in ("inputs", "rows", "row_kb"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args._side:
        out = args._dir / f"out-{args._side}"
        out.mkdir()
        merge(args._side, args._dir / "in", out)
        return
    from stream2dataset.service.supervisor import LONG_LIVED_ENV  # the merge's process stays lean: no Ray

    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_inputs(folder / "in", args.inputs, args.rows, args.row_kb)
        size = sum(p.stat().st_size for p in (folder / "in").iterdir()) / 2**20
        results = {}
        for side in ("whole", "streamed"):
            done = subprocess.run([sys.executable, __file__, "--_side", side, "--_dir", str(folder)], check=True,
                                  capture_output=True, text=True, env={**os.environ, **LONG_LIVED_ENV})
            results[side] = [float(v) for v in done.stdout.split()[-2:]]
        rows = pq.read_metadata(next((folder / "out-streamed").glob("*.parquet"))).num_rows
    table = Table(title=f"one merge of {args.inputs} shards ({size:.0f} MB, {rows} rows of {args.row_kb} KB), "
                        f"the Supervisor's allocator ({' '.join(f'{k}={v}' for k, v in LONG_LIVED_ENV.items())})")
    for col in ("side", "peak RSS above start (MB)", "start (MB)", "÷ whole shard in memory"):
        table.add_column(col)
    for side, label in (("whole", "whole shard in memory (baseline)"), ("streamed", "write_shards, streamed")):
        above, start = results[side]
        table.add_row(label, f"{above:.0f}", f"{start:.0f}", f"{above / max(results['whole'][0], 1):.2f}×")
    console.print(table)


if __name__ == "__main__":
    main()
