"""Write frame rows as Parquet shards: dataset/frames/channel=<c>/date=<d>/<name>.parquet.

Shard names are derived from the rows they hold, so writing the same rows again replaces the same
file instead of adding a duplicate; each shard appears atomically.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..storage import Storage, atomic_output
from .schema import FRAME_SCHEMA


def frames_dir(storage: Storage) -> Path:
    return storage.root / "dataset" / "frames"


def write_frames(storage: Storage, rows: list[dict], prefix: str = "part") -> list[Path]:
    """Write rows grouped by channel and UTC date; returns the shard paths."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["channel"], row["timestamp"].strftime("%Y-%m-%d"))].append(row)
    paths = []
    for (channel, day), group in sorted(groups.items()):
        ids = "\n".join(sorted(r["frame_id"] for r in group))
        name = f"{prefix}-{hashlib.sha256(ids.encode()).hexdigest()[:16]}.parquet"
        path = frames_dir(storage) / f"channel={channel}" / f"date={day}" / name
        with atomic_output(path) as tmp:
            pq.write_table(pa.Table.from_pylist(group, schema=FRAME_SCHEMA), tmp, compression="zstd")
        paths.append(path)
    return paths


def read_frame_column(storage: Storage, column: str, channel: str | None = None,
                      kind: str | None = None) -> list:
    """One column of the stored frames (e.g. the source ids a channel already has)."""
    base = frames_dir(storage) / f"channel={channel}" if channel else frames_dir(storage)
    values: list = []
    for path in sorted(base.rglob("*.parquet")) if base.exists() else []:
        if path.name.startswith("."):
            continue
        table = pq.read_table(path, columns=[column, "kind"])
        if kind:
            table = table.filter(pa.compute.equal(table["kind"], kind))
        values.extend(table[column].to_pylist())
    return values
