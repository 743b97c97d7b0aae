"""Snapshots: a frozen dataset version that a training run pins.

`snapshots/<name>.json` lists the exact shard files (frames, clips, the dedup links copied
beside it as `<name>.dups.parquet`, since the next dedup pass rewrites the live one), each with
its sha256, bytes and rows, plus the filter. The filter selects frames; clips come along for the
segments those frames are from. Opening a snapshot re-hashes its files and refuses one that
changed or went missing, so a run always trains on what was pinned.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from ..errors import UserError
from ..storage import Storage, atomic_output, atomic_write_bytes, sha256_file
from .catalog import GLOBS, check_where, open_catalog
from .schema import SCHEMA_VERSION

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def snapshots_dir(storage: Storage) -> Path:
    return storage.root / "snapshots"


def _entry(storage: Storage, path: Path) -> dict:
    return {"path": path.relative_to(storage.root).as_posix(), "sha256": sha256_file(path),
            "bytes": path.stat().st_size, "rows": pq.read_metadata(path).num_rows}


def create_snapshot(storage: Storage, name: str, where: str | None = None) -> dict:
    """Freeze the current shards (and the filter) as snapshot `name`; returns its manifest."""
    if not NAME.match(name):
        raise UserError(f"snapshot name {name!r}: use letters, digits, '.', '_' or '-' (at most 64, no '/')")
    where = check_where(where.strip()) if where and where.strip() else None
    storage.pull_dataset()
    out = snapshots_dir(storage) / f"{name}.json"
    if out.exists():
        raise UserError(f"snapshot {name!r} exists ({out}); snapshots never change: pick another name")
    con = open_catalog(storage.root)
    try:
        frames = con.execute(f"SELECT count(*) FROM frames WHERE {where or 'true'}").fetchall()[0][0]
    except duckdb.Error as err:
        raise UserError(f"--where {where!r}: {str(err).splitlines()[0]}") from None
    finally:
        con.close()
    if not frames:
        raise UserError(f"snapshot {name!r}: no frames{' match ' + repr(where) if where else ''}; nothing to freeze")
    files = {table: [_entry(storage, p) for p in sorted(storage.root.glob(GLOBS[table]))] for table in ("frames", "clips")}
    dups = sorted(storage.root.glob(GLOBS["dups"]))
    if dups:  # the live links file is rewritten by every dedup pass: keep this one's copy
        copy = snapshots_dir(storage) / f"{name}.dups.parquet"
        with atomic_output(copy) as tmp:
            shutil.copyfile(dups[0], tmp)
        files["dups"] = [_entry(storage, copy)]
    manifest = {"name": name, "created": datetime.now(timezone.utc).isoformat(), "where": where,
                "schema_version": SCHEMA_VERSION, "frames": frames, "files": files}
    atomic_write_bytes(out, json.dumps(manifest, indent=1).encode())
    return manifest


def list_snapshots(storage: Storage) -> list[dict]:
    """Every snapshot's manifest (files not checked), by name."""
    folder = snapshots_dir(storage)
    storage.pull("snapshots", mirror=True)
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.exists() else []


def load_snapshot(storage: Storage, name: str, verify: bool = True) -> dict:
    """The manifest of snapshot `name`, its files checked against their sha256."""
    path = snapshots_dir(storage) / f"{name}.json"
    if NAME.match(name):
        storage.pull(f"snapshots/{name}.json")
    if not NAME.match(name) or not path.exists():
        known = sorted(p.stem for p in snapshots_dir(storage).glob("*.json")) if snapshots_dir(storage).exists() else []
        raise UserError(f"no snapshot named {name!r} under {snapshots_dir(storage)} (known: {', '.join(known) or 'none'}); "
                        "make one with `stream2dataset snapshot NAME`")
    manifest = json.loads(path.read_text())
    for table, entries in manifest["files"].items() if verify else ():
        for e in entries:
            f = storage.fetch(storage.root / e["path"])
            if not f.exists():
                raise UserError(f"snapshot {name!r}: {e['path']} is missing; the snapshot cannot be trained on "
                                "(restore the file, or take a new snapshot)")
            if f.stat().st_size != e["bytes"] or sha256_file(f) != e["sha256"]:
                raise UserError(f"snapshot {name!r}: {e['path']} changed since the snapshot (sha256 differs); "
                                "restore it, or take a new snapshot")
    return manifest


def open_snapshot(storage: Storage, name: str) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with views `frames_all`, `frames` and `clips` over exactly the
    snapshot's files, filter applied (frames: unique only; clips: of the selected segments)."""
    manifest = load_snapshot(storage, name)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")

    def files(table: str) -> str:
        return "[" + ", ".join("'" + str(storage.root / e["path"]).replace("'", "''") + "'"
                               for e in manifest["files"].get(table, [])) + "]"

    where = manifest["where"] or "true"
    dups = manifest["files"].get("dups")
    link = (f"LEFT JOIN read_parquet({files('dups')}) d USING (frame_id)" if dups else "")
    dup_of = "coalesce(f.dup_of, d.dup_of)" if dups else "f.dup_of"
    if manifest["files"]["frames"]:
        con.execute(f"CREATE VIEW frames_all AS SELECT * FROM (SELECT f.* REPLACE ({dup_of} AS dup_of) "
                    f"FROM read_parquet({files('frames')}) f {link}) WHERE {where}")
        con.execute("CREATE VIEW frames AS SELECT * FROM frames_all WHERE dup_of IS NULL")
    if manifest["files"]["clips"] and manifest["files"]["frames"]:
        con.execute(f"CREATE VIEW clips AS SELECT * FROM read_parquet({files('clips')}) "
                    "WHERE segment_id IN (SELECT segment_id FROM frames_all)")
    return con
