"""Compaction: many small files become few large ones, so a round costs the same on day 1 and day 300.

Two kinds of merge, planned together (`plan_compaction`) and applied as one intent:

- **the manifest**: per-segment files go into their channel's file of the day (processed ones in
  batches, soon after their commit; unprocessed ones after an hour), and a closed day's file into
  its month's (`manifests/segments/<channel>/_periods/<YYYY-MM-DD|YYYY-MM>.<id>[.open].parquet`,
  manifest.py). The time a file was committed picks its day (a stat, not a read). So a channel
  has a file per past month, one for the day and the few segments of the last minutes;
- **shards**: a partition's small shards (under half of `dataset.shard_target_mb`) are merged into
  `compact-<id>-NNNN.parquet` once they add up to a full shard, or once the partition's day is over;
  meanwhile, small shards of like size are merged `FANOUT` at a time (size tiers, as an LSM tree
  does), so an open day's folder holds tens of files, not one per commit. A long-running writer
  passes the folders it wrote to (`ShardWatch`): a round's planning follows what is new, and
  everything is looked at once an hour.

Like the commit (writer.py), each step is atomic and a killed compaction is finished or undone:

1. `begin`: an intent `dataset/_compact/<id>.json` (state `writing`) names the old files and the
   name prefix of the new ones; readers skip files under that prefix (live.py);
2. `write_outputs`: the new files, each written to a temp file and renamed;
3. `publish`: the intent is rewritten with state `published`; readers now skip the old files;
4. `finish`: old shards a snapshot pins move to `dataset/_retired/<same path>` (a hard link, then
   the old name goes), the others are deleted; then the intent goes.

`recover_compactions` rolls a `writing` intent back (its new files are deleted) and finishes a
`published` one. At every moment each row is in exactly one file a reader sees.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UserError
from ..layout import COMPACT, MANIFEST, PERIODS, RETIRED, Storage, atomic_output, atomic_write_bytes
from .live import hidden, parquet_files, visible
from .manifest import OPEN, SEGMENT_SCHEMA, manifest_files, period_of
from .shards import MB, read_shard, write_shards
from .writer import TABLES as SHARD_TABLES

GRACE_S = 600.0   # a day is closed this long after midnight: late commits land first
SETTLED_BATCH = 10  # a channel's processed segments merged at once (or once one is GRACE_S old)
UNSETTLED_S = 3600.0  # unprocessed segments (processing off, or behind) are merged after this long
SMALL = 0.5       # a shard under this share of the target size is small
FANOUT = 16       # small shards of one size tier merged at once (each row is rewritten ~log16(target/size) times)
TIER_BASE = 64 * 1024  # tier 0: shards under this size (merged outputs there may stay small)


class Busy(UserError):
    """Another compaction (or a snapshot being taken) holds the root's compaction lock."""


@contextmanager
def compaction_lock(storage: Storage, wait: bool = True) -> Iterator[None]:
    """One compaction at a time, and none while a snapshot pins files (a lock file of this node's
    copy: `.cache/` never travels to an object store)."""
    path = storage.root / ".cache" / "compact.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise Busy(f"{storage.where}: a compaction or a snapshot is in progress; try again when it ends") from None
        yield
    finally:
        os.close(fd)  # releases the lock


# periods ----------------------------------------------------------------------------------------
def _period_bounds(period: str) -> tuple[datetime, datetime]:
    if period.count("-") == 2:
        start = datetime.strptime(period, "%Y-%m-%d").replace(tzinfo=timezone.utc)
        return start, start + timedelta(days=1)
    start = datetime.strptime(period, "%Y-%m").replace(tzinfo=timezone.utc)
    return start, (start + timedelta(days=32)).replace(day=1)


def _target(t: datetime, now: float) -> str:
    """The period file that takes rows of time `t`: its day while the day is open, else its month."""
    t = t.astimezone(timezone.utc)
    day = t.strftime("%Y-%m-%d")
    return day if _period_bounds(day)[1].timestamp() + GRACE_S > now else t.strftime("%Y-%m")


def _gid(old: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(old)).encode()).hexdigest()[:16]


# planning ---------------------------------------------------------------------------------------
def _plan_manifest(storage: Storage, now: float, max_files: int | None) -> list[dict]:
    root, groups = storage.root, []
    by_channel: dict[str, list[Path]] = {}
    for p in manifest_files(root):
        by_channel.setdefault(p.parent.name if not period_of(p) else p.parent.parent.name, []).append(p)
    budget = max_files
    for channel, files in sorted(by_channel.items()):
        inputs: dict[str, list[Path]] = {}
        periods = {p: period_of(p) for p in files if period_of(p)}
        for p, period in periods.items():  # a closed day goes into its month
            target = _target(_period_bounds(period)[0], now)
            if target != period:
                inputs.setdefault(target, []).append(p)
        singles = []
        for p in files:
            try:
                singles += [(p, p.stat().st_mtime)] if p not in periods else []
            except FileNotFoundError:
                continue
        # Processed segments go soon, a batch at a time (a marker's stat each: the file is named by
        # the segment's id); the others after an hour. A file's time (when it was committed), not
        # its rows', picks the period: planning reads no file.
        settled = [(p, m) for p, m in singles if storage.done_marker(p.stem).exists()]
        if len(settled) < SETTLED_BATCH and not any(m < now - GRACE_S for _, m in settled):
            settled = []
        due = sorted(set(settled) | {(p, m) for p, m in singles if m < now - UNSETTLED_S}, key=lambda pm: pm[1])
        if budget is not None:
            due, budget = due[:max(0, budget)], budget - len(due)
        for p, mtime in due:
            inputs.setdefault(_target(datetime.fromtimestamp(mtime, timezone.utc), now), []).append(p)
        for target, old in sorted(inputs.items()):
            old = sorted(set(old) | {p for p, period in periods.items() if period == target})  # + the period's file so far
            rels = [p.relative_to(root).as_posix() for p in old]
            gid = _gid(rels)
            prefix = f"{MANIFEST}/{channel}/{PERIODS}/{target}.{gid}."
            groups.append({"table": "segments", "channel": channel, "period": target, "old": rels, "prefix": prefix,
                           "bytes": sum(p.stat().st_size for p in old if p.exists())})
        if budget is not None and budget <= 0:
            break
    return groups


def _tier(size: int) -> int:
    """A shard's size class: tier k ≥ 1 holds sizes from TIER_BASE × FANOUT^(k-1) up to FANOUT times
    that, so FANOUT files of a tier merge into one of a higher tier and are not merged again at
    their own (with the upper bound inclusive instead, 16 × 1 MB = 16 MB stayed in 1-16 MB's tier and
    was rewritten with each new batch)."""
    return 0 if size < TIER_BASE else 1 + int(np.floor(np.log(size / TIER_BASE) / np.log(FANOUT) + 1e-9))


def _shard_folders(storage: Storage, folders: Iterable[str] | None) -> list[Path]:
    """The partition folders to look at: these (relative to the root), or every one."""
    if folders is not None:
        return sorted({storage.root / f for f in folders})
    return [folder for table in SHARD_TABLES for folder in sorted(storage.table_dir(table).glob("channel=*/date=*"))]


def _plan_shards(storage: Storage, target_mb: float, now: float, max_mb: float | None,
                 folders: Iterable[str] | None = None) -> list[dict]:
    root, limit, groups = storage.root, target_mb * MB, []
    hide = hidden(root)
    spent = 0
    for folder in _shard_folders(storage, folders):
        table = folder.parent.parent.name
        if table not in SHARD_TABLES:
            continue
        small = []
        for p in visible(parquet_files(folder), hide):
            if p.name.startswith("part-"):  # direct writes (thumbnails) are replaced by name when written again
                continue
            try:
                size = p.stat().st_size
            except FileNotFoundError:
                continue
            if size < SMALL * limit:
                small.append((p, size))
        total = sum(size for _, size in small)
        try:
            closed = _period_bounds(folder.name[len("date="):])[1].timestamp() + GRACE_S <= now
        except ValueError:  # not a date folder
            continue
        if len(small) < 2:
            continue
        if not (closed or total >= limit):  # an open day: merge a size tier once it holds FANOUT files
            tiers: dict[int, list] = {}
            for p, size in small:
                tiers.setdefault(_tier(size), []).append((p, size))
            small = next((files for _, files in sorted(tiers.items()) if len(files) >= FANOUT), [])
            if not small:
                continue
            total = sum(size for _, size in small)
        if max_mb is not None and spent and spent + total > max_mb * MB:
            return groups
        spent += total
        rels = [p.relative_to(root).as_posix() for p, _ in small]
        gid = _gid(rels)
        groups.append({"table": table, "folder": folder.relative_to(root).as_posix(), "old": rels,
                       "prefix": f"{folder.relative_to(root).as_posix()}/compact-{gid}-", "bytes": total})
    return groups


class ShardWatch:
    """The shard folders a long-running writer's compaction looks at: those it wrote to since the
    last sweep; every folder (files other writers left, days that closed) once per `sweep_s`."""

    def __init__(self, sweep_s: float = 3600.0):
        self.sweep_s, self.touched, self.next_sweep = sweep_s, set(), 0.0

    def wrote(self, folders: Iterable[str]) -> None:
        self.touched |= set(folders)

    def folders(self, now: float | None = None) -> list[str] | None:
        """This round's folders; None means all of them (a sweep is due)."""
        now = time.time() if now is None else now
        return None if now >= self.next_sweep else sorted(self.touched)

    def compacted(self, folders: list[str] | None, now: float | None = None) -> None:
        """A compaction over `folders` finished (not one that found the lock held): after a sweep,
        the next is an hour away and only folders written from now on are looked at."""
        if folders is None:
            now = time.time() if now is None else now
            self.next_sweep, self.touched = now + self.sweep_s, set()


def plan_compaction(storage: Storage, target_mb: float = 256, now: float | None = None,
                    max_mb: float | None = None, max_files: int | None = None,
                    folders: Iterable[str] | None = None) -> list[dict]:
    """What is due: groups of old files, each to become one manifest period file or a few shards.
    `max_mb` / `max_files` bound one round's work (the service compacts a little after each commit);
    `folders` (shard folders relative to the root) limits the shards looked at, None is all."""
    now = time.time() if now is None else now
    storage.pull(MANIFEST, COMPACT, mirror=True)  # shards: those in this node's copy (a full pull costs a round)
    return _plan_manifest(storage, now, max_files) + _plan_shards(storage, target_mb, now, max_mb, folders)


# the steps --------------------------------------------------------------------------------------
def begin(storage: Storage, groups: list[dict]) -> Path:
    """Write the intent (state `writing`): from now on readers skip the new files' names."""
    intent = storage.root / COMPACT / f"{_gid([g['prefix'] for g in groups])}.json"
    atomic_write_bytes(intent, json.dumps({"state": "writing", "groups": groups}).encode(), sync=False)
    return intent


def _settled(storage: Storage, rows: list[dict]) -> bool:
    """Whether processing is done with every one of these segments (processed, or its file gone)."""
    return all(storage.done_marker(r["segment_id"]).exists() or not (storage.root / r["path"]).exists()
               for r in rows)


def _write_period(storage: Storage, group: dict) -> list[str]:
    import pyarrow.dataset as pads

    root = storage.root
    paths = [root / r for r in group["old"]]
    # Rows of settled period files are settled still; the others are checked (a marker or a stat each).
    sure = [str(p) for p in paths if period_of(p) and not p.name.endswith(OPEN)]
    unsure = sorted({str(p) for p in paths} - set(sure))
    tables = [pads.dataset(f, schema=SEGMENT_SCHEMA, format="parquet").to_table() for f in (sure, unsure) if f]
    open_ = bool(unsure) and not _settled(storage, tables[-1].select(["segment_id", "path"]).to_pylist())
    # One row per segment (a segment rewritten after its period was compacted: the newest wins).
    table = pa.concat_tables(tables).sort_by([("segment_id", "ascending"), ("recorded_at", "descending")])
    ids = table["segment_id"].to_numpy(zero_copy_only=False)
    first = np.ones(len(ids), dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    table = table.filter(pa.array(first)).sort_by([("start", "ascending"), ("segment_id", "ascending")])
    path = root / f"{group['prefix']}{'open.' if open_ else ''}parquet"
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return [path.relative_to(root).as_posix()]


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A shard of an older schema version, with the columns it lacks as nulls (as the views read it)."""
    for field in schema:
        if field.name not in table.column_names:
            table = table.append_column(field.name, pa.nulls(table.num_rows, field.type))
    return table


def write_outputs(storage: Storage, intent: Path, target_mb: float = 256, row_group_rows: int = 2048) -> None:
    """Write every group's new files (under its prefix); the intent records them."""
    spec = json.loads(intent.read_text())
    root = storage.root
    for group in spec["groups"]:
        if group["table"] == "segments":
            group["new"] = _write_period(storage, group)
            continue
        schema = SHARD_TABLES[group["table"]]
        tables = (_conform(read_shard(root / rel), schema) for rel in group["old"])  # one file in memory at a time
        paths = write_shards(root / group["folder"], group["prefix"].rsplit("/", 1)[1].rstrip("-"), schema, tables,
                             target_mb, row_group_rows)
        group["new"] = [p.relative_to(root).as_posix() for p in paths]
    atomic_write_bytes(intent, json.dumps(spec).encode(), sync=False)


def publish(storage: Storage, intent: Path) -> None:
    """The switch: readers see the new files and skip the old ones from now on."""
    spec = json.loads(intent.read_text())
    if any("new" not in g for g in spec["groups"]):
        raise RuntimeError(f"{intent}: publish before every group's files were written")
    atomic_write_bytes(intent, json.dumps({**spec, "state": "published"}).encode(), sync=False)


def pinned_files(storage: Storage) -> set[str]:
    """Every file (relative to the root) a snapshot names."""
    pins: set[str] = set()
    for path in sorted(storage.snapshots_dir.glob("*.json")) if storage.snapshots_dir.exists() else []:
        try:
            spec = json.loads(path.read_bytes())
            pins |= {e["path"] for entries in spec["files"].values() for e in entries}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # a broken snapshot cannot be opened anyway (snapshots.py says so by name)
    return pins


def finish(storage: Storage, intent: Path) -> None:
    """Retire the old files (moved aside if a snapshot pins them, else deleted), then the intent."""
    spec = json.loads(intent.read_text())
    pins = pinned_files(storage)
    root = storage.root
    for group in spec["groups"]:
        for rel in group["old"]:
            old = root / rel
            if rel in pins and old.exists():
                dest = root / RETIRED / rel
                if not dest.exists():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        os.link(old, dest)  # same bytes, no copy; a reader holding it open keeps reading
                    except OSError:
                        with atomic_output(dest) as tmp:
                            tmp.write_bytes(old.read_bytes())
                storage.push(dest)
            storage.delete(old)
    storage.delete(intent)


def rollback(storage: Storage, intent: Path) -> None:
    """Undo an intent that was not published: its new files (and their temp files) go."""
    spec = json.loads(intent.read_text())
    root = storage.root
    for group in spec["groups"]:
        folder, stem = (root / group["prefix"]).parent, (root / group["prefix"]).name
        for p in list(folder.glob(f"{stem}*")) + list(folder.glob(f".{stem}*.tmp")) if folder.exists() else []:
            storage.delete(p)
    storage.delete(intent)


def recover_compactions(storage: Storage) -> int:
    """Finish the published compactions a killed process left, undo the others; how many there were."""
    folder = storage.root / COMPACT
    storage.pull(COMPACT, mirror=True)
    intents = sorted(p for p in folder.glob("*.json") if not p.name.startswith(".")) if folder.exists() else []
    for intent in intents:
        state = json.loads(intent.read_text())["state"]
        finish(storage, intent) if state == "published" else rollback(storage, intent)
    return len(intents)


def recover_if_idle(storage: Storage) -> bool:
    """Recover a killed compaction unless one is at work now (whose intent is not left over)."""
    try:
        with compaction_lock(storage, wait=False):
            recover_compactions(storage)
    except Busy:
        return False
    return True


def compact(storage: Storage, target_mb: float = 256, row_group_rows: int = 2048, dry_run: bool = False,
            now: float | None = None, max_mb: float | None = None, max_files: int | None = None,
            wait: bool = True, folders: Iterable[str] | None = None) -> list[dict]:
    """Compact what is due (see the module); returns the groups (planned only, with `dry_run`).
    Raises Busy when `wait` is false and another compaction holds the lock."""
    if not storage.root.is_dir():
        raise UserError(f"{storage.where}: storage root not found; record or process something first, or check --config")
    with compaction_lock(storage, wait=wait):
        if not dry_run:
            recover_compactions(storage)
        groups = plan_compaction(storage, target_mb, now, max_mb, max_files, folders)
        if dry_run or not groups:
            return groups
        intent = begin(storage, groups)
        write_outputs(storage, intent, target_mb, row_group_rows)
        publish(storage, intent)
        done = json.loads(intent.read_text())["groups"]
        finish(storage, intent)
    return done


def sweep_retired(storage: Storage) -> list[str]:
    """Delete the retired files no snapshot pins any more; returns them (relative to `_retired/`)."""
    base = storage.root / RETIRED
    storage.pull(RETIRED, mirror=True)
    pins = pinned_files(storage)
    freed = []
    for path in sorted(base.rglob("*.parquet")) if base.exists() else []:
        rel = path.relative_to(base).as_posix()
        if rel not in pins:
            storage.delete(path)
            freed.append(rel)
    return freed


__all__ = ["Busy", "ShardWatch", "compact", "compaction_lock", "plan_compaction", "recover_compactions", "recover_if_idle",
           "sweep_retired",
           "begin", "write_outputs", "publish", "finish", "rollback", "pinned_files"]
