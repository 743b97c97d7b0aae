"""The DuckDB catalog: views over the Parquet shards (DESIGN.md "Storage root", `catalog.duckdb`).

The shards are the source of truth; the catalog holds only view definitions (SQL text). Views read
globs, so a new shard shows up in the next query without touching the catalog. A glob that matches
no file is an error in DuckDB, so a table without files is a typed empty SELECT instead; views are
re-created only when the set of tables that have files changes (or the root moves).

Queries run on an in-memory connection that defines the same views, never on catalog.duckdb
itself: DuckDB lets one writer process exclude every reader, so our reads must not depend on the
file's lock. catalog.duckdb is refreshed best-effort, for people who open it in their own tools.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.types as pat

from ..errors import UserError
from ..storage import atomic_output
from .clips import CLIP_SCHEMA
from .schema import DROP_SCHEMA, DUP_SCHEMA, FRAME_SCHEMA, SCHEMA_KEY, SCHEMA_VERSION

__all__ = ["CATALOG_NAME", "VIEWS", "SchemaVersionError", "open_catalog", "tables_with_files", "view_sql",
           "write_catalog"]

log = logging.getLogger(__name__)

CATALOG_NAME = "catalog.duckdb"

# Table -> glob under the root. Fixed depths, not `**`: hidden temp files end in .tmp and never match.
GLOBS = {
    "frames": "dataset/frames/*/*/*.parquet",
    "clips": "dataset/clips/*/*/*.parquet",
    "drops": "dataset/drops/*/*/*.parquet",
    "dups": "dataset/dups/*.parquet",
    "segments": "manifests/segments/*/*.parquet",
}
# The views users see, in creation order (later ones read earlier ones), with their comments.
VIEWS = {
    "segments": "one row per recorded segment (the manifest)",
    "clips": "consecutive frames for the temporal model",
    "drops": "frames not kept, counted per segment and reason",
    "dups": "near-duplicate links across segments, from the dedup pass",
    "frames_all": "every frame row; dup_of = in-segment mark, else the cross-segment link",
    "frames": "kept frames: frames_all where dup_of is null",
    "channels": "one row per channel: segments, hours recorded, frames kept, duplicates, drops",
}


class SchemaVersionError(UserError):
    """A shard was written by a newer stream2dataset than this one."""


def _schema(table: str) -> pa.Schema:
    if table == "segments":  # imported here: stream2dataset.ingest pulls in the recorder (~1 s)
        from ..ingest.manifest import SEGMENT_SCHEMA
        return SEGMENT_SCHEMA
    return {"frames": FRAME_SCHEMA, "clips": CLIP_SCHEMA, "drops": DROP_SCHEMA, "dups": DUP_SCHEMA}[table]


def _sql_type(t: pa.DataType) -> str:
    """The DuckDB type that DuckDB gives a column of this Arrow type when it reads our Parquet."""
    if pat.is_list(t) or pat.is_fixed_size_list(t) or pat.is_large_list(t):
        return _sql_type(t.value_type) + "[]"  # Parquet has no fixed-size list: DuckDB reads a LIST
    if pat.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    simple = {pa.string(): "VARCHAR", pa.large_string(): "VARCHAR", pa.binary(): "BLOB", pa.bool_(): "BOOLEAN",
              pa.int8(): "TINYINT", pa.int16(): "SMALLINT", pa.int32(): "INTEGER", pa.int64(): "BIGINT",
              pa.uint64(): "UBIGINT", pa.float32(): "FLOAT", pa.float64(): "DOUBLE", pa.date32(): "DATE"}
    return simple[t]


def _quote(path: Path | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _table_sql(root: Path, table: str, present: set[str]) -> str:
    if table in present:
        # hive_partitioning off: channel is a real column, the folder name would clash with it.
        return (f"SELECT * FROM read_parquet({_quote(root / GLOBS[table])}, hive_partitioning=false, "
                "union_by_name=true)")
    cols = ", ".join(f'CAST(NULL AS {_sql_type(f.type)}) AS "{f.name}"' for f in _schema(table))
    return f"SELECT {cols} LIMIT 0"


_CHANNELS_SQL = """\
WITH seg AS (SELECT channel, count(*) AS segments, sum(duration_s) / 3600 AS hours_recorded,
                    sum(bytes) AS raw_bytes, min(start) AS first_recorded, max("end") AS last_recorded
             FROM segments GROUP BY channel),
     fr AS (SELECT channel, count(*) AS frames_total, count(*) FILTER (dup_of IS NULL) AS frames_kept,
                   count(*) FILTER (dup_of IS NOT NULL) AS duplicates FROM frames_all GROUP BY channel),
     dr AS (SELECT channel, sum("count") AS dropped FROM drops GROUP BY channel),
     cl AS (SELECT channel, count(*) AS clips FROM clips GROUP BY channel),
     names AS (SELECT channel FROM seg UNION SELECT channel FROM fr UNION SELECT channel FROM dr
               UNION SELECT channel FROM cl)
SELECT channel, coalesce(segments, 0) AS segments, coalesce(hours_recorded, 0) AS hours_recorded,
       coalesce(raw_bytes, 0) AS raw_bytes, coalesce(frames_total, 0) AS frames_total,
       coalesce(frames_kept, 0) AS frames_kept, coalesce(duplicates, 0) AS duplicates,
       coalesce(duplicates / nullif(frames_total, 0), 0) AS duplicate_rate,
       coalesce(dropped, 0) AS dropped, coalesce(clips, 0) AS clips, first_recorded, last_recorded
FROM names LEFT JOIN seg USING (channel) LEFT JOIN fr USING (channel) LEFT JOIN dr USING (channel)
           LEFT JOIN cl USING (channel)
ORDER BY channel"""


def view_sql(root: str | Path, present: set[str]) -> dict[str, str]:
    """Each view's SELECT, given which tables have files (`present`)."""
    root = Path(root).resolve()
    sql = {t: _table_sql(root, t, present) for t in ("segments", "clips", "drops", "dups")}
    frames = _table_sql(root, "frames", present)
    if "dups" in present:  # cross-segment links from the dedup pass; an in-segment mark wins
        sql["frames_all"] = (f"SELECT f.* REPLACE (coalesce(f.dup_of, d.dup_of) AS dup_of) FROM ({frames}) f "
                             "LEFT JOIN (SELECT frame_id, min(dup_of) AS dup_of FROM dups GROUP BY frame_id) d "
                             "USING (frame_id)")
    else:
        sql["frames_all"] = frames
    sql["frames"] = "SELECT * FROM frames_all WHERE dup_of IS NULL"
    sql["channels"] = _CHANNELS_SQL
    return {name: sql[name] for name in VIEWS}


def tables_with_files(root: str | Path) -> set[str]:
    """The tables that have at least one shard: stops at the first file found in each."""
    root = Path(root)
    return {t for t, pattern in GLOBS.items() if next(root.glob(pattern), None) is not None}


def check_schema_versions(con: duckdb.DuckDBPyConnection, root: Path, present: set[str]) -> None:
    """Refuse shards from a newer stream2dataset. Reads only Parquet footers (one pass, all threads)."""
    globs = [str(root / GLOBS[t]) for t in sorted(present)]
    if not globs:
        return
    rows = con.execute(
        "SELECT file_name, CAST(value AS VARCHAR) FROM parquet_kv_metadata(?) "
        "WHERE CAST(key AS VARCHAR) = ? AND coalesce(TRY_CAST(CAST(value AS VARCHAR) AS INTEGER), 1 << 30) > ? "
        "ORDER BY file_name LIMIT 1", [globs, SCHEMA_KEY.decode(), SCHEMA_VERSION]).fetchall()
    if rows:
        path, version = rows[0]
        raise SchemaVersionError(
            f"{path} has schema version {version}, newer than this stream2dataset's {SCHEMA_VERSION}: "
            "upgrade stream2dataset (pip install -U stream2dataset) to read it")


def _signature(sql: dict[str, str]) -> str:
    return hashlib.sha256(repr(sorted(sql.items())).encode()).hexdigest()[:16]


def _create_views(con: duckdb.DuckDBPyConnection, sql: dict[str, str]) -> None:
    # The comment carries a hash of every view's SQL: DuckDB re-renders the SQL text it stores.
    sig = _signature(sql)
    for name, select in sql.items():
        con.execute(f'CREATE OR REPLACE VIEW "{name}" AS {select}')
        con.execute(f'COMMENT ON VIEW "{name}" IS {_quote(f"{VIEWS[name]} [catalog {sig}]")}')


def write_catalog(root: str | Path, present: set[str] | None = None) -> bool:
    """Write <root>/catalog.duckdb (views only) if its views differ from what the files need.

    Built in a temp file and renamed into place, so a tool that has the old one open keeps it and
    nobody waits on a lock. Best-effort: returns False (and logs why) when it cannot be written.
    """
    root = Path(root).resolve()
    sql = view_sql(root, tables_with_files(root) if present is None else present)
    path = root / CATALOG_NAME
    try:
        if path.exists():
            with duckdb.connect(str(path), read_only=True) as con:
                have = dict(con.execute("SELECT view_name, comment FROM duckdb_views() WHERE NOT internal").fetchall())
            if set(have) == set(sql) and all(str(c).endswith(f"[catalog {_signature(sql)}]") for c in have.values()):
                return False
        with atomic_output(path) as tmp:
            os.unlink(tmp)  # DuckDB wants to create the file itself
            with duckdb.connect(str(tmp)) as con:
                _create_views(con, sql)
    except (duckdb.Error, OSError) as err:
        log.warning("could not refresh %s: %s", path, str(err).splitlines()[0])
        return False
    return True


def open_catalog(root: str | Path, read_only: bool = True, refresh: bool = True) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the catalog's views over the shards under `root`.

    `read_only` sandboxes it: after the views exist, only files under the root can be read, and
    settings are locked, so neither COPY, ATTACH, INSTALL nor a file path elsewhere gets through.
    Raises SchemaVersionError for a shard from a newer stream2dataset.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise UserError(f"{root}: storage root not found; record or process something first, or check --config")
    present = tables_with_files(root)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")  # dates are UTC days, like the date= folders
    check_schema_versions(con, root, present)
    _create_views(con, view_sql(root, present))
    if refresh:
        write_catalog(root, present)
    if read_only:
        con.execute("SET allowed_directories = [?]", [f"{root}/"])
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    return con
