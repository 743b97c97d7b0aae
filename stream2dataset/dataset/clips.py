"""The clips table: consecutive frames for the temporal model (DESIGN.md "Rows", `clips`).

Shards live at dataset/clips/channel=<c>/date=<d>/<name>.parquet, written like every table by
`writer.commit_segments`.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

from ..layout import Storage
from .schema import CHANNEL
from .shards import read_shard

__all__ = ["CLIP_SCHEMA", "clip_id", "read_clips"]

CLIP_SCHEMA = pa.schema([
    ("clip_id", pa.string()),          # stable: hash of segment id + start frame index + kind
    ("channel", CHANNEL),
    ("platform", pa.string()),
    ("segment_id", pa.string()),
    ("kind", pa.string()),             # facecam | person | frame ...
    ("start", pa.timestamp("ms", tz="UTC")),  # the first frame's wall-clock time
    ("fps", pa.float32()),
    ("frame_count", pa.int32()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("frames", pa.list_(pa.binary())),  # encoded images, in order
    ("image_format", pa.string()),     # png | jpeg | webp
    ("crop_box", pa.list_(pa.int32(), 4)),  # x, y, w, h in the sampled frame's pixels
    ("motion", pa.float32()),
    ("transforms", pa.list_(pa.string())),
    ("config_hash", pa.string()),
])


def clip_id(segment_id: str, start_index: int, kind: str) -> str:
    return hashlib.sha256(f"{segment_id}\0{start_index}\0{kind}".encode()).hexdigest()[:24]


def read_clips(storage: Storage, channel: str | None = None) -> pa.Table:
    """All stored clips (of one channel), in shard path order; an empty table if none."""
    base = storage.table_dir("clips") / f"channel={channel}" if channel else storage.table_dir("clips")
    paths = sorted(p for p in base.rglob("*.parquet") if not p.name.startswith(".")) if base.exists() else []
    # File by file, not as a dataset: pyarrow would add the hive folders as extra columns.
    tables = [read_shard(p, schema=CLIP_SCHEMA) for p in paths]
    return pa.concat_tables(tables) if tables else CLIP_SCHEMA.empty_table()
