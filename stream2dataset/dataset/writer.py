"""Writing rows: staged per processing window, committed per batch of segments.

Processing actors stage each window's rows under `dataset/_staging/<segment>/` (invisible to
readers). When a batch of segments is done, `commit_segments` turns their staged rows into
shards in one pass:

1. an intent `dataset/_commits/<batch>.json` names the segments (and their completion markers);
2. shards `dataset/<table>/channel=<c>/date=<d>/<batch>-NNNN.parquet`, each written to a hidden
   temp file and renamed; names come from the batch, so a replay rewrites the same files;
3. a completion marker `dataset/_done/<segment>` per segment, written last of all;
4. the staging folders move to `_staging/.trash` and the intent is removed; a background
   thread deletes the trash (writes are not fsynced: they are safe against killed processes,
   and durability against power loss is the filesystem's, as for any Parquet writer).

Kill the process anywhere: readers only ever see whole shards, and `recover_commits` (run before
every commit) replays a leftover intent exactly, so the rows land once, none lost, none twice. The
hidden temp file of a shard being written when the process died is removed when its batch is
replayed (`_sweep_temps`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pyarrow as pa

from ..layout import Storage, atomic_output, atomic_write_bytes
from .clips import CLIP_SCHEMA
from .schema import DROP_SCHEMA, EMBEDDING_SCHEMA, FRAME_SCHEMA
from .shards import read_shard, write_shards

TABLES = {"frames": FRAME_SCHEMA, "clips": CLIP_SCHEMA, "drops": DROP_SCHEMA, "embeddings": EMBEDDING_SCHEMA}


# A temp file untouched this long has no live writer: writers fill theirs without pause, and even
# an object-store upload of a full shard (before the rename) ends well within it.
STALE_TEMP_S = 3600.0


def _sweep_temps(folder: Path, batch: str | None = None) -> None:
    """Remove the hidden temp files (`.<name>.<random>.tmp`, storage.atomic_output) that killed
    writers left in `folder`: this batch's at once (whoever applies a batch's intent owns its files;
    two processes applying one intent at the same moment is not supported), anyone else's (a
    recorder's thumbnails, another commit) only once STALE_TEMP_S old, as its writer may be at work."""
    if not folder.is_dir():
        return
    stale = time.time() - STALE_TEMP_S
    with os.scandir(folder) as entries:
        temps = [e for e in entries if e.name.startswith(".") and e.name.endswith(".tmp")
                 and e.is_file(follow_symlinks=False)]
    for entry in temps:
        try:
            if (batch and entry.name.startswith(f".{batch}-")) or entry.stat(follow_symlinks=False).st_mtime < stale:
                os.unlink(entry.path)
        except FileNotFoundError:  # its writer renamed or removed it meanwhile
            pass


# staging -------------------------------------------------------------------------------------
def stage_rows(storage: Storage, table: str, segment_id: str, part: str, rows: list[dict],
               start_ts: float) -> Path | None:
    """Stage one window's rows of `table` for `segment_id` (whose recording started at
    `start_ts`, the date folder its shards go to). Writing the same part again replaces it."""
    if not rows:
        return None
    folder = storage.stage_dir(segment_id)
    meta = folder / "segment.json"
    if not meta.exists():
        atomic_write_bytes(meta, json.dumps({"channel": rows[0]["channel"], "start_ts": start_ts}).encode(), sync=False)
    # Arrow IPC, not Parquet: staging is written once and read once, by the commit, with no
    # encoding either way (a memory map), so the rows cost one Parquet encode in all.
    path = folder / table / f"{part}.arrow"
    with atomic_output(path) as tmp, pa.OSFile(str(tmp), "wb") as sink:
        with pa.ipc.new_file(sink, TABLES[table]) as writer:
            writer.write_table(pa.Table.from_pylist(rows, schema=TABLES[table]))
    return path


# commit --------------------------------------------------------------------------------------
def commit_segments(storage: Storage, markers: dict[str, dict], target_mb: float = 256,
                    row_group_rows: int = 2048, before_write: Callable[[], None] | None = None) -> list[Path]:
    """Commit the staged rows of these segments (id -> completion marker payload) as shards.

    `before_write` runs once the intent is on disk (the pipeline quarantines broken files
    there: a crash after it still ends with the good rows committed)."""
    recover_commits(storage, target_mb, row_group_rows)
    markers = {sid: m for sid, m in sorted(markers.items()) if not storage.done_marker(sid).exists()}
    if not markers:
        return []
    batch = hashlib.sha256("\n".join(markers).encode()).hexdigest()[:16]
    intent = storage.commits_dir / f"{batch}.json"
    atomic_write_bytes(intent, json.dumps({"batch": batch, "markers": markers}).encode(), sync=False)
    if before_write:
        before_write()
    return _apply(storage, intent, target_mb, row_group_rows)


def recover_commits(storage: Storage, target_mb: float = 256, row_group_rows: int = 2048) -> list[Path]:
    """Finish the commits a killed process left behind, exactly as they were begun."""
    if storage.stage_trash.exists():
        threading.Thread(target=empty_trash, args=(storage,), daemon=True).start()
    folder = storage.commits_dir
    storage.pull(folder.relative_to(storage.root).as_posix(), mirror=True)
    for leftovers in (folder, storage.done_dir):  # intents and markers cut short
        _sweep_temps(leftovers)
    paths: list[Path] = []
    for intent in sorted(folder.glob("*.json")) if folder.exists() else []:
        paths += _apply(storage, intent, target_mb, row_group_rows)
    return paths


def _apply(storage: Storage, intent: Path, target_mb: float, row_group_rows: int) -> list[Path]:
    spec = json.loads(intent.read_text())
    batch, markers = spec["batch"], spec["markers"]
    paths: list[Path] = []
    if not all(storage.done_marker(sid).exists() for sid in markers):  # else only the clean-up is left
        for sid in markers:  # windows staged on other nodes (object-store root)
            storage.pull(storage.stage_dir(sid).relative_to(storage.root).as_posix(), mirror=True)
        for table, schema in TABLES.items():
            for (channel, day), parts in sorted(_staged(storage, markers, table).items()):
                folder = storage.shard_dir(table, channel, day)
                _sweep_temps(folder, batch)
                tables = (pa.ipc.open_file(pa.memory_map(str(p))).read_all() for p in parts)
                paths += write_shards(folder, batch, schema, tables, target_mb, row_group_rows)
        for sid, marker in markers.items():
            atomic_write_bytes(storage.done_marker(sid), json.dumps(marker).encode(), sync=False)
    trash = storage.stage_trash / batch
    for sid in markers:  # a rename now; deleting the files waits for a background thread
        if storage.remote:
            storage.remote.delete(storage.stage_dir(sid))
        if storage.stage_dir(sid).exists():
            trash.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(trash / sid, ignore_errors=True)
            os.replace(storage.stage_dir(sid), trash / sid)
    storage.delete(intent)
    threading.Thread(target=shutil.rmtree, args=(trash,), kwargs={"ignore_errors": True}, daemon=True).start()
    return paths


def empty_trash(storage: Storage) -> None:
    """Delete committed staging left by a process that exited before its clean-up thread ended."""
    shutil.rmtree(storage.stage_trash, ignore_errors=True)


def _staged(storage: Storage, segment_ids, table: str) -> dict[tuple[str, str], list[Path]]:
    """Staged parts of `table` grouped by (channel, date of the segment's start), in order."""
    groups: dict[tuple[str, str], list[Path]] = defaultdict(list)
    for sid in sorted(segment_ids):
        folder = storage.stage_dir(sid)
        if not (folder / table).exists():
            continue
        meta = json.loads((folder / "segment.json").read_text())
        day = datetime.fromtimestamp(meta["start_ts"], timezone.utc).strftime("%Y-%m-%d")
        groups[(meta["channel"], day)] += sorted((folder / table).glob("*.arrow"))
    return groups


# direct writes (thumbnails) and reads ---------------------------------------------------------
def write_frames(storage: Storage, rows: list[dict], prefix: str = "part") -> list[Path]:
    """Write rows straight to shards grouped by channel and UTC date (small batches that need no
    staging, e.g. thumbnails). The name comes from the rows' ids: writing them again replaces."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["channel"], row["timestamp"].strftime("%Y-%m-%d"))].append(row)
    paths = []
    for (channel, day), group in sorted(groups.items()):
        ids = "\n".join(sorted(r["frame_id"] for r in group))
        stem = f"{prefix}-{hashlib.sha256(ids.encode()).hexdigest()[:16]}"
        folder = storage.shard_dir("frames", channel, day)
        paths += write_shards(folder, stem, FRAME_SCHEMA, [pa.Table.from_pylist(group, schema=FRAME_SCHEMA)],
                              target_mb=1e9)
    return paths


def read_frame_column(storage: Storage, column: str, channel: str | None = None,
                      kind: str | None = None) -> list:
    """One column of the stored frames (e.g. the source ids a channel already has)."""
    base = storage.table_dir("frames") / f"channel={channel}" if channel else storage.table_dir("frames")
    storage.pull(base.relative_to(storage.root).as_posix(), mirror=True)
    values: list = []
    for path in sorted(base.rglob("*.parquet")) if base.exists() else []:
        table = read_shard(path, columns=[column, "kind"])
        if kind:
            table = table.filter(pa.compute.equal(table["kind"], kind))
        values.extend(table[column].to_pylist())
    return values
