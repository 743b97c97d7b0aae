"""Snapshots: a frozen dataset version that a training run pins.

`snapshots/<name>.json` lists the exact shard files (frames, clips, the dedup links copied
beside it as `<name>.dups.parquet`, since dedup rounds merge and replace the live ones), each with
its sha256, bytes and rows, plus the filter. The filter selects frames (one condition on a frame's
own columns: it is applied again to the pinned files alone); clips come along for the segments those
frames are from, identity embeddings for the frames themselves. Opening a snapshot re-hashes its files and refuses one that changed or went
missing, so a run always trains on what was pinned; a snapshot file that is not one (truncated,
edited, a filter that is not one condition, a path out of the root) is refused by name.

Compaction (compaction.py) never breaks a snapshot: a pinned shard it replaces moves to
`dataset/_retired/<its path>`, where `snapshot_file` finds it, and stays until `remove_snapshot`
removes the last snapshot that pins it.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UserError
from ..media import sha256_file
from ..names import ARTIFACT_NAME
from ..layout import GLOBS, RETIRED, SNAPSHOTS, Storage, atomic_output, atomic_write_bytes
from .catalog import check_where, open_catalog
from .compaction import compaction_lock, sweep_retired
from .live import live_files
from .sandbox import DEFAULT_TIMEOUT_S, connect, lock_down, time_limit
from .schema import EMBEDDING_DIM, SCHEMA_VERSION



def snapshots_dir(storage: Storage) -> Path:
    return storage.snapshots_dir


def snapshot_file(storage: Storage, rel: str) -> Path:
    """Where a pinned file is now: moved to `_retired/` once compaction replaced it, else in place."""
    retired = storage.root / RETIRED / rel
    if retired.exists() or (storage.remote and storage.exists(retired)):
        return retired
    return storage.root / rel


def _entry(storage: Storage, path: Path) -> dict:
    return {"path": path.relative_to(storage.root).as_posix(), "sha256": sha256_file(path),
            "bytes": path.stat().st_size, "rows": pq.read_metadata(path).num_rows}


class BrokenSnapshot(UserError):
    """A snapshot file that is not a snapshot (truncated, edited by hand, from a bad copy)."""


def create_snapshot(storage: Storage, name: str, where: str | None = None,
                    timeout_s: float | None = DEFAULT_TIMEOUT_S) -> dict:
    """Freeze the current shards (and the filter) as snapshot `name`; returns its manifest.
    Counting the filter's frames stops after `timeout_s` seconds (dataset.sql_timeout_s)."""
    if not ARTIFACT_NAME.match(name):
        raise UserError(f"snapshot name {name!r}: use letters, digits, '.', '_' or '-' (at most 64, no '/')")
    where = check_where(where.strip(), tables=()) if where and where.strip() else None
    storage.pull_dataset()
    out = snapshots_dir(storage) / f"{name}.json"
    if out.exists():
        raise UserError(f"snapshot {name!r} exists ({out}); snapshots never change: pick another name")
    with compaction_lock(storage):  # no compaction moves the files between their listing and the pin
        with open_catalog(storage.root) as con, time_limit(con, timeout_s, "--where"):
            try:
                frames = con.execute(f"SELECT count(*) FROM frames WHERE ({where or 'true'})").fetchall()[0][0]
            except duckdb.InterruptException:
                raise
            except duckdb.Error as err:
                raise UserError(f"--where {where!r}: {str(err).splitlines()[0]}") from None
        if not frames:
            raise UserError(f"snapshot {name!r}: no frames{' match ' + repr(where) if where else ''}; nothing to freeze")
        files = {table: [_entry(storage, p) for p in live_files(storage.root, GLOBS[table])]
                 for table in ("frames", "clips", "embeddings")}
        dups = sorted(storage.root.glob(GLOBS["dups"]))
        if dups:  # dedup rounds merge and replace the live links files: keep this one's copy, as one file
            copy = snapshots_dir(storage) / f"{name}.dups.parquet"
            with atomic_output(copy) as tmp:
                pq.write_table(pa.concat_tables([pq.read_table(p) for p in dups]).sort_by("frame_id"), tmp)
            files["dups"] = [_entry(storage, copy)]
        manifest = {"name": name, "created": datetime.now(timezone.utc).isoformat(), "where": where,
                    "schema_version": SCHEMA_VERSION, "frames": frames, "files": files}
        atomic_write_bytes(out, json.dumps(manifest, indent=1).encode())
    return manifest


def remove_snapshot(storage: Storage, name: str) -> list[str]:
    """Delete snapshot `name` (and its copy of the dedup links), then the retired files no other
    snapshot pins; returns those files (relative to `dataset/_retired/`)."""
    path = snapshots_dir(storage) / f"{name}.json"
    if ARTIFACT_NAME.match(name):
        storage.pull(f"{SNAPSHOTS}/{name}.json")
    if not ARTIFACT_NAME.match(name) or not path.exists():
        known = sorted(p.stem for p in snapshots_dir(storage).glob("*.json")) if snapshots_dir(storage).exists() else []
        raise UserError(f"no snapshot named {name!r} under {snapshots_dir(storage)} (known: {', '.join(known) or 'none'})")
    with compaction_lock(storage):
        storage.delete(path)  # first: a killed rm leaves retired files the next rm or sweep frees
        storage.delete(snapshots_dir(storage) / f"{name}.dups.parquet")
        return sweep_retired(storage)


def _shape_error(m) -> str | None:
    """What makes `m` not a snapshot manifest (as create_snapshot writes them), or None."""
    if not isinstance(m, dict):
        return f"not a snapshot (a JSON {type(m).__name__}, not an object)"
    for key, types in (("name", str), ("created", str), ("where", (str, type(None))), ("frames", int),
                       ("files", dict)):
        if not isinstance(m.get(key), types) or isinstance(m.get(key), bool):
            return f"not a snapshot (`{key}` is missing or not a {getattr(types, '__name__', 'string or null')})"
    for table, entries in m["files"].items():
        if not isinstance(entries, list) or not all(
                isinstance(e, dict) and isinstance(e.get("path"), str) and isinstance(e.get("sha256"), str)
                and isinstance(e.get("bytes"), int) and isinstance(e.get("rows"), int) for e in entries):
            return f"not a snapshot (`files.{table}` is not a list of path, sha256, bytes and rows)"
    return None


def _inside(root: Path, rel: str) -> bool:
    path = (root / rel).resolve()
    return not Path(rel).is_absolute() and (path == root or root in path.parents)


def _read_manifest(storage: Storage, path: Path) -> dict:
    """The manifest in `path`, checked; a BrokenSnapshot naming the file and the fix otherwise."""
    def broken(why: str) -> BrokenSnapshot:
        return BrokenSnapshot(f"{path}: {why}; the snapshot is broken: delete it or restore it from a copy")

    try:
        manifest = json.loads(path.read_bytes())
    except OSError as err:
        raise broken(f"cannot be read ({err.strerror})") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise broken(f"not JSON ({str(err).splitlines()[0]})") from None
    if why := _shape_error(manifest):
        raise broken(why)
    for entries in manifest["files"].values():
        for e in entries:
            if not _inside(storage.root, e["path"]):
                raise broken(f"file {e['path']!r} lies outside the storage root")
    if manifest["where"] is not None:
        try:  # an older stream2dataset let a filter be more than one condition
            check_where(manifest["where"], tables=(), what="filter")
        except UserError as err:
            raise broken(str(err)) from None
    return manifest


def list_snapshots(storage: Storage) -> list[dict]:
    """Every snapshot's manifest (files not checked), by name; a broken snapshot file is listed as
    `{"name", "path", "error"}` (one line) among the others."""
    folder = snapshots_dir(storage)
    storage.pull(SNAPSHOTS, mirror=True)
    listed = []
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        try:
            listed.append(_read_manifest(storage, path))
        except BrokenSnapshot as err:
            listed.append({"name": path.stem, "path": str(path), "error": str(err)})
    return listed


def load_snapshot(storage: Storage, name: str, verify: bool = True) -> dict:
    """The manifest of snapshot `name`, its files checked against their sha256."""
    path = snapshots_dir(storage) / f"{name}.json"
    if ARTIFACT_NAME.match(name):
        storage.pull(f"{SNAPSHOTS}/{name}.json")
    if not ARTIFACT_NAME.match(name) or not path.exists():
        known = sorted(p.stem for p in snapshots_dir(storage).glob("*.json")) if snapshots_dir(storage).exists() else []
        raise UserError(f"no snapshot named {name!r} under {snapshots_dir(storage)} (known: {', '.join(known) or 'none'}); "
                        "make one with `stream2dataset snapshot NAME`")
    manifest = _read_manifest(storage, path)
    for table, entries in manifest["files"].items() if verify else ():
        for e in entries:
            f = storage.fetch(snapshot_file(storage, e["path"]))
            if not f.exists():
                raise UserError(f"snapshot {name!r}: {e['path']} is missing; the snapshot cannot be trained on "
                                "(restore the file, or take a new snapshot)")
            if f.stat().st_size != e["bytes"] or sha256_file(f) != e["sha256"]:
                raise UserError(f"snapshot {name!r}: {e['path']} changed since the snapshot (sha256 differs); "
                                "restore it, or take a new snapshot")
    return manifest


def open_snapshot(storage: Storage, name: str) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with views `frames_all`, `frames`, `clips` and `embeddings` over exactly the
    snapshot's files, filter applied (frames: unique only; clips: of the selected segments).
    It reads only files under the root (the filter was checked to be one condition, this is the
    second line of defence)."""
    manifest = load_snapshot(storage, name)
    con = connect()
    con.execute("SET TimeZone = 'UTC'")
    tables = manifest["files"]

    def files(table: str) -> str:
        return "[" + ", ".join("'" + str(snapshot_file(storage, e["path"])).replace("'", "''") + "'"
                               for e in tables.get(table, [])) + "]"

    where = manifest["where"] or "true"
    dups = tables.get("dups")
    link = (f"LEFT JOIN read_parquet({files('dups')}) d USING (frame_id)" if dups else "")
    dup_of = "coalesce(f.dup_of, d.dup_of)" if dups else "f.dup_of"
    if tables.get("frames"):
        con.execute(f"CREATE VIEW frames_all AS SELECT * FROM (SELECT f.* REPLACE ({dup_of} AS dup_of) "
                    f"FROM read_parquet({files('frames')}) f {link}) WHERE ({where})")
        con.execute("CREATE VIEW frames AS SELECT * FROM frames_all WHERE dup_of IS NULL")
    if tables.get("clips") and tables.get("frames"):
        con.execute(f"CREATE VIEW clips AS SELECT * FROM read_parquet({files('clips')}) "
                    "WHERE segment_id IN (SELECT segment_id FROM frames_all)")
    if tables.get("embeddings") and tables.get("frames"):  # identity embeddings of the selected frames
        con.execute(f"CREATE VIEW embeddings AS SELECT frame_id, model, CAST(vector AS FLOAT[{EMBEDDING_DIM}]) AS vector "
                    f"FROM read_parquet({files('embeddings')}) WHERE frame_id IN (SELECT frame_id FROM frames_all)")
    lock_down(con, storage.root)
    return con
