"""The DuckDB catalog: views over the Parquet shards (DESIGN.md "Storage root", `catalog.duckdb`).

The shards are the source of truth; catalog.duckdb holds only view definitions. Views read globs,
so a new shard shows up in the next query without touching the catalog. A glob that matches no
file is an error in DuckDB, so a table without files is a typed empty SELECT instead, and the
views are rewritten only when the set of tables that have files changes (or the root moves).

catalog.duckdb is written to a temp file and renamed into place, and we only ever open it
read-only: DuckDB lets one writing process lock out every reader, so nobody may hold it for
writing. If a user's tool does, queries fall back to the same views in an in-memory database.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Collection

import duckdb
import pyarrow as pa
import pyarrow.types as pat

from ..errors import UserError
from ..layout import CATALOG, GLOBS, MANIFEST, PERIOD_GLOB, TABLES, atomic_output, atomic_write_bytes
from . import sqlcheck
from .clips import CLIP_SCHEMA
from .live import hidden
from .manifest import SEGMENT_SCHEMA
from .sandbox import DEFAULT_TIMEOUT_S, check_links, connect, lock_down, time_limit
from .schema import DROP_SCHEMA, DUP_SCHEMA, EMBEDDING_DIM, EMBEDDING_SCHEMA, FRAME_SCHEMA, SCHEMA_KEY, SCHEMA_VERSION
from .sqlcheck import check_query, one_line

__all__ = ["DEFAULT_TIMEOUT_S", "VIEWS", "SchemaVersionError", "check_query", "check_where",
           "open_catalog", "query", "run_query", "tables_with_files", "view_sql", "write_catalog"]

log = logging.getLogger(__name__)


VERSIONED = ("frames", "clips", "drops", "dups", "embeddings")  # the dataset tables whose shards carry SCHEMA_KEY

# The views, in creation order (later ones read earlier ones), with the comment each carries.
VIEWS = {
    "segments": "one row per recorded segment (the manifest)",
    "clips": "consecutive frames for the temporal model",
    "drops": "frames not kept, counted per segment and reason",
    "dups": "near-duplicate links across segments, from the dedup pass",
    "embeddings": "identity embeddings of face crops: frame_id, model, vector FLOAT[128]",
    "frames_all": "every frame row; dup_of = the in-segment mark, else the cross-segment link",
    "frames": "kept frames: frames_all where dup_of is null",
    "channels": "one row per channel: segments, hours recorded, frames kept, duplicates, drops",
}


class SchemaVersionError(UserError):
    """A shard was written by a newer stream2dataset than this one."""


def _schema(table: str) -> pa.Schema:
    return {"frames": FRAME_SCHEMA, "clips": CLIP_SCHEMA, "drops": DROP_SCHEMA, "dups": DUP_SCHEMA,
            "segments": SEGMENT_SCHEMA, "embeddings": EMBEDDING_SCHEMA}[table]


_SIMPLE_TYPES = {pa.string(): "VARCHAR", pa.binary(): "BLOB", pa.bool_(): "BOOLEAN", pa.int8(): "TINYINT",
                 pa.int16(): "SMALLINT", pa.int32(): "INTEGER", pa.int64(): "BIGINT", pa.uint64(): "UBIGINT",
                 pa.float32(): "FLOAT", pa.float64(): "DOUBLE", pa.date32(): "DATE"}


def _sql_type(t: pa.DataType) -> str:
    """The type DuckDB gives a column of this Arrow type when it reads our Parquet files."""
    if pat.is_list(t) or pat.is_fixed_size_list(t):
        return _sql_type(t.value_type) + "[]"  # Parquet has no fixed-size list: DuckDB reads a LIST
    if pat.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pat.is_dictionary(t):  # `channel`: dictionary-encoded in the files, a VARCHAR to DuckDB
        return _sql_type(t.value_type)
    return _SIMPLE_TYPES[t]


def _quote(text: Path | str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def _sources(root: Path, table: str) -> list[str]:
    """The globs a table's view reads: the manifest has per-segment files and compacted period files."""
    if table != "segments":
        return [GLOBS[table]]
    return [g for g in (GLOBS["segments"], PERIOD_GLOB) if next(root.glob(g), None) is not None] or [GLOBS[table]]


def _table_sql(root: Path, table: str, present: set[str], hide: tuple[str, ...] = ()) -> str:
    if table in present:
        globs = "[" + ", ".join(_quote(root / g) for g in _sources(root, table)) + "]"
        # hive_partitioning off: channel is a real column and the folder name would clash with it;
        # union_by_name: shards of an older schema version may lack newer columns.
        base = str(root / (MANIFEST if table == "segments" else TABLES[table])) + "/"
        mine = [h for h in hide if h.startswith(base)]
        if not mine:
            return f"SELECT * FROM read_parquet({globs}, hive_partitioning=false, union_by_name=true)"
        # A compaction is under way: skip the files it hides (DuckDB prunes them by name, unread).
        skip = " OR ".join(f"starts_with(filename, {_quote(h)})" for h in mine)
        return (f"SELECT * EXCLUDE (filename) FROM read_parquet({globs}, hive_partitioning=false, "
                f"union_by_name=true, filename=true) WHERE NOT ({skip})")
    cols = ", ".join(f'CAST(NULL AS {_sql_type(f.type)}) AS "{f.name}"' for f in _schema(table))
    return f"SELECT {cols} LIMIT 0"


_CHANNELS_SQL = """\
WITH seg AS (SELECT channel, count(*) AS segments, sum(duration_s) / 3600 AS hours_recorded,
                    CAST(sum(bytes) AS BIGINT) AS raw_bytes, min(start) AS first_recorded, max("end") AS last_recorded
             FROM segments GROUP BY channel),
     fr AS (SELECT channel, count(*) AS frames_total, count(*) FILTER (dup_of IS NULL) AS frames_kept,
                   count(*) FILTER (dup_of IS NOT NULL) AS duplicates FROM frames_all GROUP BY channel),
     dr AS (SELECT channel, CAST(sum("count") AS BIGINT) AS dropped FROM drops GROUP BY channel),
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
    hide = hidden(root)
    sql = {t: _table_sql(root, t, present, hide) for t in ("segments", "clips", "drops", "dups")}
    # a fixed-size ARRAY, not Parquet's LIST: array_distance / array_cosine_distance take it as it is
    sql["embeddings"] = (f"SELECT frame_id, model, CAST(vector AS FLOAT[{EMBEDDING_DIM}]) AS vector "
                         f"FROM ({_table_sql(root, 'embeddings', present, hide)})")
    frames = _table_sql(root, "frames", present, hide)
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
    """The tables that have at least one shard (stops at the first file found in each)."""
    root = Path(root)
    found = {t for t, pattern in GLOBS.items() if next(root.glob(pattern), None) is not None}
    return found | ({"segments"} if next(root.glob(PERIOD_GLOB), None) is not None else set())


def _signature(sql: dict[str, str]) -> str:
    return hashlib.sha256(repr(sorted(sql.items())).encode()).hexdigest()[:16]


def _create_views(con: duckdb.DuckDBPyConnection, sql: dict[str, str]) -> None:
    # Each comment ends with a hash of all the views' SQL: DuckDB re-renders the SQL text it keeps.
    sig = _signature(sql)
    for name, select in sql.items():
        con.execute(f'CREATE OR REPLACE VIEW "{name}" AS {select}')
        con.execute(f'COMMENT ON VIEW "{name}" IS {_quote(f"{VIEWS[name]} [catalog {sig}]")}')


def _current(con: duckdb.DuckDBPyConnection, sql: dict[str, str], database: str) -> bool:
    have = dict(con.execute("SELECT view_name, comment FROM duckdb_views() WHERE database_name = ? AND NOT internal",
                            [database]).fetchall())
    return set(have) == set(sql) and all(str(c).endswith(f"[catalog {_signature(sql)}]") for c in have.values())


def _attach(con: duckdb.DuckDBPyConnection, path: Path, name: str) -> None:
    # ATTACH into a fresh in-memory database, not duckdb.connect(path): connect() shares one
    # database instance per file in a process, and with it the (locked) sandbox settings.
    con.execute(f"ATTACH {_quote(path)} AS {name} (READ_ONLY)")


def write_catalog(root: str | Path, present: set[str] | None = None) -> bool:
    """Write <root>/catalog.duckdb (views only) unless it already has the views the files need.

    Built in a temp file and renamed into place: a tool that has the old file open keeps it, and
    nobody waits on a lock. Returns whether it was written; best-effort (a read-only root, say).
    """
    root = Path(root).resolve()
    sql = view_sql(root, tables_with_files(root) if present is None else present)
    path = root / CATALOG
    try:
        if path.exists():
            with duckdb.connect() as con:
                _attach(con, path, "old")
                if _current(con, sql, "old"):
                    return False
        with atomic_output(path) as tmp:
            os.unlink(tmp)  # DuckDB creates its file itself
            with duckdb.connect() as con:
                con.execute("SET parquet_metadata_cache = true")  # each view binds its tables' footers again
                con.execute("SET enable_progress_bar = false")
                con.execute(f"ATTACH {_quote(tmp)} AS new")
                con.execute("USE new")
                _create_views(con, sql)
    except (duckdb.Error, OSError) as err:
        log.warning("could not write %s: %s", path, str(err).splitlines()[0])
        return False
    return True


def _use_catalog_file(con: duckdb.DuckDBPyConnection, root: Path, sql: dict[str, str], present: set[str]) -> bool:
    """Attach catalog.duckdb read-only (refreshed first if stale) and make it the default database."""
    path = root / CATALOG
    for attempt in range(2):
        if path.exists():
            try:
                _attach(con, path, "catalog")
            except duckdb.Error as err:  # e.g. a user's tool holds it open for writing
                log.info("%s: %s; using in-memory views", path, str(err).splitlines()[0])
                return False
            if _current(con, sql, "catalog"):
                con.execute("USE catalog")
                return True
            con.execute("DETACH catalog")
        if attempt or not write_catalog(root, present):
            return False
    return False


VERSIONS_CACHE = Path(".cache") / "schema-checked.json"  # shards already found readable: name -> mtime, size


def check_schema_versions(con: duckdb.DuckDBPyConnection, root: Path, present: set[str]) -> None:
    """Refuse shards from a newer stream2dataset. Reads only the footers of shards not checked
    before (a file of this node's `.cache/`), so opening the catalog does not cost more as the
    dataset grows."""
    files: dict[str, list[int]] = {}
    for t in VERSIONED if present else ():
        if t in present:
            for p in root.glob(GLOBS[t]):
                try:
                    st = p.stat()
                except FileNotFoundError:  # compacted away meanwhile
                    continue
                files[str(p)] = [st.st_mtime_ns, st.st_size]
    cache = root / VERSIONS_CACHE
    try:
        checked = json.loads(cache.read_bytes())
    except (OSError, ValueError):
        checked = {}
    new = sorted(f for f, stamp in files.items() if checked.get(f) != stamp)
    if not new:
        return
    rows = con.execute(
        "SELECT file_name, CAST(value AS VARCHAR) FROM parquet_kv_metadata(?) WHERE CAST(key AS VARCHAR) = ? "
        "AND coalesce(TRY_CAST(CAST(value AS VARCHAR) AS INTEGER), 1 << 30) > ? ORDER BY file_name LIMIT 1",
        [new, SCHEMA_KEY.decode(), SCHEMA_VERSION]).fetchall()
    if rows:
        path, version = rows[0]
        raise SchemaVersionError(f"{path} has schema version {version}, newer than this stream2dataset's "
                                 f"{SCHEMA_VERSION}: upgrade stream2dataset (pip install -U stream2dataset)")
    try:  # best-effort: a read-only root checks every time
        atomic_write_bytes(cache, json.dumps(files).encode(), sync=False)
    except OSError:
        pass


def open_catalog(root: str | Path, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection whose views (VIEWS) read the shards under `root`.

    read_only=True sandboxes it (sandbox.py): only files under the root can be read, and settings
    are locked, so COPY, ATTACH, INSTALL and paths elsewhere are refused; a root holding a symbolic
    link that SQL could leave it through is refused (UnsafeLink). read_only=False leaves file access
    open (for library code that copies rows out); the catalog file itself is never opened for
    writing either way. Works while other processes write shards. Raises SchemaVersionError.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise UserError(f"{root}: storage root not found; record or process something first, or check --config")
    if read_only:
        check_links(root)
    present = tables_with_files(root)
    sql = view_sql(root, present)
    con = connect()
    # union_by_name reads every footer when a query binds a view, and the scan would read them
    # again; this connection's own cache (checked against file times) saves the second read.
    con.execute("SET parquet_metadata_cache = true")
    con.execute("SET enable_progress_bar = false")  # it draws on stdout, into CSV and JSON output
    if not _use_catalog_file(con, root, sql, present):
        _create_views(con, sql)  # the same views in memory; DuckDB binds each one as it is created
    con.execute("SET TimeZone = 'UTC'")  # days are UTC days, like the date= folders
    check_schema_versions(con, root, present)
    if read_only:
        lock_down(con, root)
    return con


# Read-only queries ------------------------------------------------------------------------------

def check_where(where: str, tables: Collection[str] = tuple(VIEWS), what: str = "--where") -> str:
    """`where` if it is one condition for `WHERE (...)` whose subqueries read only `tables`
    (the catalog's views by default); else a one-line UserError (sqlcheck.check_where)."""
    return sqlcheck.check_where(where, tables, what)


def run_query(con: duckdb.DuckDBPyConnection, sql: str, limit: int | None = None,
              timeout_s: float | None = DEFAULT_TIMEOUT_S) -> pa.Table:
    """Run one checked read-only statement; at most `limit` rows (None: all), stopped after
    `timeout_s` seconds or on Ctrl-C. Errors a user can fix (syntax, unknown column, refused file
    access, the time limit) become one-line UserErrors."""
    sql = check_query(sql)
    with time_limit(con, timeout_s, "SQL: the query"):
        try:
            reader = con.sql(sql).to_arrow_reader(min(limit or 65536, 65536))
            batches, rows = [], 0
            for batch in reader:
                batches.append(batch)
                rows += batch.num_rows
                if limit is not None and rows >= limit:
                    break
            table = pa.Table.from_batches(batches, reader.schema)
        except (duckdb.InternalException, duckdb.FatalException, duckdb.InterruptException):
            raise
        except duckdb.PermissionException as err:
            raise UserError(f"SQL: {one_line(err)} (only files under the storage root can be read)") from None
        except duckdb.Error as err:
            raise UserError(f"SQL: {one_line(err)}") from None
    return table if limit is None else table.slice(0, limit)


def query(root: str | Path, sql: str, limit: int | None = None,
          timeout_s: float | None = DEFAULT_TIMEOUT_S) -> tuple[pa.Table, bool]:
    """Run one read-only statement on the catalog of `root`: (at most `limit` rows, whether more exist).
    `timeout_s`: the time limit (dataset.sql_timeout_s); None for none."""
    check_query(sql)  # refuse before touching the storage root
    with open_catalog(root) as con:
        table = run_query(con, sql, None if limit is None else limit + 1, timeout_s)
    if limit is not None and table.num_rows > limit:
        return table.slice(0, limit), True
    return table, False
