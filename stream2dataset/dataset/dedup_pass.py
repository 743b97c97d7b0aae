"""The dedup pass: near-duplicate links across segments and channels, stored beside the shards.

Reads only the small columns of every frame shard (never the images), runs the index of
`dedup.find_duplicates` per frame kind (a facecam crop is never a duplicate of a silhouette), and
writes every link as one file `dataset/dups/links.parquet` (temp + rename). Frames are ordered by
(timestamp, frame_id), so the earliest frame is the one kept and the same shards always give the
same file: the pass is deterministic and idempotent. Links, not deletions: `frames_all` keeps
every row and the `frames` view leaves the linked ones out.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..layout import TABLES, Storage
from .dedup import find_duplicates, find_duplicates_ray
from .schema import DUP_SCHEMA
from .shards import read_shard, write_shards

COLUMNS = ["frame_id", "timestamp", "kind", "phash", "dup_of"]


def frame_hashes(storage: Storage) -> pa.Table:
    """frame_id, timestamp, kind, phash of every frame not already a duplicate within its segment."""
    storage.pull(TABLES["frames"], mirror=True)
    frames = storage.table_dir("frames")
    paths = sorted(frames.rglob("*.parquet")) if frames.exists() else []
    tables = [read_shard(p, columns=COLUMNS) for p in paths]
    if not tables:
        return pa.table({c: pa.array([], t) for c, t in
                         [("frame_id", pa.string()), ("timestamp", pa.timestamp("ms", tz="UTC")),
                          ("kind", pa.string()), ("phash", pa.uint64())]})
    table = pa.concat_tables(tables)
    table = table.filter(pc.and_(pc.is_null(table["dup_of"]), pc.is_valid(table["phash"])))
    return table.drop_columns(["dup_of"]).sort_by([("kind", "ascending"), ("timestamp", "ascending"),
                                                   ("frame_id", "ascending")])


def dedup_dataset(storage: Storage, radius: int, use_ray: bool = False) -> dict:
    """Recompute the cross-segment links from the current shards; returns a small report."""
    t0 = time.perf_counter()
    table = frame_hashes(storage)
    ids = table["frame_id"].to_numpy(zero_copy_only=False)
    kinds = table["kind"].to_numpy(zero_copy_only=False)
    hashes = table["phash"].to_numpy()
    find = find_duplicates_ray if use_ray else find_duplicates
    frame_ids: list[np.ndarray] = []
    dup_ids: list[np.ndarray] = []
    distances: list[np.ndarray] = []
    bounds = np.flatnonzero(np.r_[True, kinds[1:] != kinds[:-1], True]) if len(kinds) else np.array([0])
    for lo, hi in zip(bounds[:-1], bounds[1:]):  # one kind at a time, in (timestamp, id) order
        dup_of, dist = find(hashes[lo:hi], radius)
        linked = np.flatnonzero(dup_of >= 0)
        frame_ids.append(ids[lo:hi][linked])
        dup_ids.append(ids[lo:hi][dup_of[linked]])
        distances.append(dist[linked])
    links = pa.table({
        "frame_id": pa.array(np.concatenate(frame_ids) if frame_ids else [], pa.string()),
        "dup_of": pa.array(np.concatenate(dup_ids) if dup_ids else [], pa.string()),
        "distance": pa.array(np.concatenate(distances) if distances else [], pa.int8()),
    }, schema=DUP_SCHEMA)
    links = links.sort_by("frame_id")
    path = storage.dups_links
    write_shards(path.parent, "links", DUP_SCHEMA, [links], target_mb=1e9, empty=True)
    return {"frames": len(ids), "linked": links.num_rows, "radius": radius,
            "seconds": round(time.perf_counter() - t0, 3), "path": str(path)}
