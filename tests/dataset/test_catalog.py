"""The DuckDB catalog: views over real Parquet shards, the sandbox, schema versions, concurrency."""

import functools
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import av
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stream2dataset.dataset.catalog import (
    SchemaVersionError, check_query, check_where, open_catalog, query, tables_with_files,
)
from stream2dataset.dataset.clips import CLIP_SCHEMA
from stream2dataset.dataset.schema import DROP_SCHEMA, DUP_SCHEMA, FRAME_SCHEMA, SCHEMA_KEY, SCHEMA_VERSION
from stream2dataset.errors import UserError
from stream2dataset.dataset.manifest import SEGMENT_SCHEMA
from stream2dataset.layout import CATALOG, atomic_output

DAY1 = datetime(2026, 11, 1, 10, tzinfo=timezone.utc)
DAY2 = datetime(2026, 11, 2, 10, tzinfo=timezone.utc)
COLORS = {"a": (255, 0, 0), "b": (0, 0, 255)}


@functools.lru_cache
def png(rgb, size=(24, 32)) -> bytes:
    """A real PNG of one colour, encoded by the same library the pipeline uses."""
    frame = av.VideoFrame.from_ndarray(np.full((*size, 3), rgb, np.uint8), format="rgb24")
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = size[1], size[0], "rgb24"
    return b"".join(bytes(p) for p in codec.encode(frame))


def write_shard(path: Path, rows: list[dict], schema: pa.Schema, version: int | None = SCHEMA_VERSION) -> Path:
    table = pa.Table.from_pylist(rows, schema=schema)
    if version is not None:
        table = table.replace_schema_metadata({SCHEMA_KEY: str(version).encode()})
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp)
    return path


def frame(channel: str, segment: str, i: int, t: datetime, dup_of: str | None = None) -> dict:
    return {"frame_id": f"{segment}-{i}", "channel": channel, "platform": "twitch", "segment_id": segment,
            "timestamp": t + timedelta(seconds=i), "frame_index": i, "kind": "facecam", "width": 32, "height": 24,
            "image": png(COLORS[channel]), "image_format": "png", "crop_box": [1, 2, 32, 24], "phash": 2**63 + i,
            "dup_of": dup_of, "transforms": ["resize"], "config_hash": "c0"}


def segment(channel: str, sid: str, start: datetime, seconds: float, nbytes: int) -> dict:
    return {"segment_id": sid, "channel": channel, "platform": "twitch", "source": f"https://x/{channel}",
            "path": f"raw/twitch/{channel}/{sid}.ts", "start": start, "end": start + timedelta(seconds=seconds),
            "duration_s": seconds, "bytes": nbytes, "status": "ok", "recorded_at": start}


def write_frames(root: Path, channel: str, day: datetime, rows: list[dict], name: str) -> Path:
    path = root / f"dataset/frames/channel={channel}/date={day:%Y-%m-%d}/{name}.parquet"
    return write_shard(path, rows, FRAME_SCHEMA)


def make_root(root: Path, dups: bool = True) -> Path:
    """A small storage root: channel a over two days (3 segments), channel b one day (1 segment).

    Frames: a/day1 10 (2 marked in-segment), a/day2 4 (1 linked across segments by the dedup pass
    when `dups`), b/day1 6 (1 marked). Drops: a no_face 3 + blurred 2, b no_face 5. Clips: a 2.
    """
    for ch, sid, start, secs, nbytes in [("a", "a1", DAY1, 600, 1_000_000),
                                         ("a", "a2", DAY1 + timedelta(hours=1), 600, 1_000_000),
                                         ("a", "a3", DAY2, 300, 500_000), ("b", "b1", DAY1, 900, 2_000_000)]:
        write_shard(root / f"manifests/segments/{ch}/{sid}.parquet", [segment(ch, sid, start, secs, nbytes)],
                    SEGMENT_SCHEMA, version=None)  # the manifest carries no schema key
    a1 = [frame("a", "a1", i, DAY1, dup_of="a1-0" if i in (3, 4) else None) for i in range(10)]
    write_frames(root, "a", DAY1, a1, "part-a1")
    write_frames(root, "a", DAY2, [frame("a", "a3", i, DAY2) for i in range(4)], "part-a3")
    write_frames(root, "b", DAY1, [frame("b", "b1", i, DAY1, dup_of="b1-0" if i == 5 else None) for i in range(6)],
                 "part-b1")
    if dups:
        write_shard(root / "dataset/dups/pass-1.parquet", [{"frame_id": "a3-2", "dup_of": "a1-1", "distance": 3}],
                    DUP_SCHEMA)
    for ch, reasons in [("a", {"no_face": 3, "blurred": 2}), ("b", {"no_face": 5})]:
        write_shard(root / f"dataset/drops/channel={ch}/date=2026-11-01/{ch}.parquet",
                    [{"segment_id": f"{ch}1", "channel": ch, "platform": "twitch", "timestamp": DAY1, "reason": r,
                      "count": n} for r, n in reasons.items()], DROP_SCHEMA)
    write_shard(root / "dataset/clips/channel=a/date=2026-11-01/a1.parquet",
                [{"clip_id": f"c{i}", "channel": "a", "platform": "twitch", "segment_id": "a1", "kind": "facecam",
                  "start": DAY1, "fps": 2.0, "frame_count": 2, "frames": [b"x", b"y"]} for i in range(2)], CLIP_SCHEMA)
    return root


def rows(con, sql: str) -> list[dict]:
    return con.sql(sql).to_arrow_table().to_pylist()


def describe(con, view: str) -> list[tuple]:
    return [(r["column_name"], r["column_type"]) for r in rows(con, f"DESCRIBE {view}")]


def test_empty_root_has_every_view_typed_like_the_files(tmp_path):
    empty, full = tmp_path / "empty", make_root(tmp_path / "full")
    empty.mkdir()
    with open_catalog(empty) as e, open_catalog(full) as f:
        for view in ("frames", "frames_all", "clips", "segments", "drops", "dups", "channels"):
            assert rows(e, f"SELECT count(*) AS n FROM {view}") == [{"n": 0}]
            assert describe(e, view) == describe(f, view), view  # same names and types, files or not
    with duckdb.connect(str(empty / CATALOG), read_only=True) as con:  # a user's own tool
        assert con.execute("SELECT count(*) FROM duckdb_tables()").fetchone() == (0,)  # views only
        assert con.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal").fetchone() == (8,)  # with `embeddings`


def test_views_join_cross_segment_links_and_summarise_channels(tmp_path):
    root = make_root(tmp_path)
    with open_catalog(root) as con:
        assert rows(con, "SELECT count(*) AS n FROM frames_all") == [{"n": 20}]
        assert rows(con, "SELECT frame_id, dup_of FROM frames_all WHERE dup_of IS NOT NULL ORDER BY 1") == [
            {"frame_id": "a1-3", "dup_of": "a1-0"}, {"frame_id": "a1-4", "dup_of": "a1-0"},
            {"frame_id": "a3-2", "dup_of": "a1-1"}, {"frame_id": "b1-5", "dup_of": "b1-0"}]
        assert rows(con, "SELECT channel, count(*) AS n FROM frames GROUP BY 1 ORDER BY 1") == [
            {"channel": "a", "n": 11}, {"channel": "b", "n": 5}]
        ch = rows(con, "SELECT * FROM channels")
    assert [(r["channel"], r["segments"], r["hours_recorded"], r["raw_bytes"], r["frames_total"], r["frames_kept"],
             r["duplicates"], r["dropped"], r["clips"]) for r in ch] == [
        ("a", 3, 1500 / 3600, 2_500_000, 14, 11, 3, 5, 2), ("b", 1, 900 / 3600, 2_000_000, 6, 5, 1, 5, 0)]
    assert ch[0]["duplicate_rate"] == pytest.approx(3 / 14)


def test_new_shards_show_up_without_rewriting_the_catalog(tmp_path):
    root = make_root(tmp_path, dups=False)
    with open_catalog(root) as con:
        assert rows(con, "SELECT count(*) AS n FROM frames") == [{"n": 17}]
    catalog = root / CATALOG
    before = catalog.stat()
    write_frames(root, "b", DAY2, [frame("b", "b2", i, DAY2) for i in range(3)], "part-b2")  # a new shard
    with open_catalog(root) as con:
        assert rows(con, "SELECT count(*) AS n FROM frames") == [{"n": 20}]
    assert (catalog.stat().st_ino, catalog.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # The first dedup links: a table gains its first file, so the views change and the file is rewritten.
    write_shard(root / "dataset/dups/p.parquet", [{"frame_id": "b2-1", "dup_of": "b1-1", "distance": 1}], DUP_SCHEMA)
    assert tables_with_files(root) == {"frames", "clips", "drops", "dups", "segments"}
    with open_catalog(root) as con:
        assert rows(con, "SELECT count(*) AS n FROM frames") == [{"n": 19}]
    assert catalog.stat().st_ino != before.st_ino
    with duckdb.connect(str(catalog), read_only=True) as con:  # what a user's tool sees
        assert con.execute("SELECT count(*) FROM frames").fetchone() == (19,)


def test_the_sandbox_reads_only_under_the_root(tmp_path):
    root = make_root(tmp_path / "root")
    outside = tmp_path / "outside.parquet"
    pq.write_table(pa.table({"x": [1]}), outside)
    with open_catalog(root) as con:
        shard = root / "dataset/frames/channel=a/date=2026-11-01/part-a1.parquet"
        assert rows(con, f"SELECT count(*) AS n FROM read_parquet('{shard}')") == [{"n": 10}]
        for sql in ["SELECT * FROM read_csv('/etc/passwd')", f"SELECT * FROM read_parquet('{outside}')",
                    f"SELECT * FROM read_parquet('{root}/../outside.parquet')",
                    f"COPY (SELECT 1) TO '{tmp_path}/x.csv'",
                    f"ATTACH '{tmp_path}/x.db'", "SET enable_external_access = true", "INSTALL httpfs",
                    "LOAD httpfs", f"SET allowed_directories = ['{tmp_path}/']"]:
            with pytest.raises(duckdb.Error):
                con.execute(sql)
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "x.db").exists()
    # The sandbox still lets COPY and ATTACH write *inside* the root: the statement check refuses them.
    for sql in [f"COPY (SELECT 1) TO '{root}/x.csv'", f"ATTACH '{root}/x.db'"]:
        with pytest.raises(UserError, match="refused"):
            query(root, sql)
    assert not (root / "x.csv").exists() and not (root / "x.db").exists()
    with open_catalog(root, read_only=False) as con:  # for library code: the same views, no sandbox
        assert rows(con, f"SELECT count(*) AS n FROM read_parquet('{outside}')") == [{"n": 1}]


@pytest.mark.parametrize("sql", [
    "INSERT INTO frames VALUES (1)", "UPDATE frames SET kind = 'x'", "DELETE FROM frames", "CREATE TABLE t AS SELECT 1",
    "DROP VIEW frames", "ALTER VIEW frames RENAME TO f", "ATTACH 'x.db'", "DETACH catalog", "COPY frames TO 'x.csv'",
    "INSTALL httpfs", "LOAD httpfs", "EXPORT DATABASE 'x'", "SET threads = 1", "RESET threads", "PRAGMA threads = 1",
    "PRAGMA enable_profiling", "USE memory", "CALL pragma_version()", "CHECKPOINT", "BEGIN", "PREPARE p AS SELECT 1",
    "SELECT 1; SELECT 2", "SELECT 1; DROP VIEW frames", "", "-- nothing", "SELEC 1",
])
def test_only_single_read_only_statements_pass(sql):
    with pytest.raises(UserError) as err:
        check_query(sql)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("sql", [
    "SELECT 1", "select 1;", "WITH x AS (SELECT 1) SELECT * FROM x", "FROM frames", "DESCRIBE frames", "SHOW TABLES",
    "SUMMARIZE frames", "EXPLAIN SELECT 1", "PRAGMA table_info('frames')", "VALUES (1)",
])
def test_queries_pass(sql):
    assert check_query(sql) == sql.rstrip(";")


@pytest.mark.parametrize("where", [
    "channel = 'a'; DROP VIEW frames", "channel = 'a' -- rest", "channel = 'a' /* x */",
    "1=1) UNION SELECT 1 WHERE (1=1",
    "(channel = 'a'", "channel = 'a')",
])
def test_a_where_condition_cannot_escape_its_parentheses(where):
    with pytest.raises(UserError):
        check_where(where)


def test_where_conditions_may_use_strings_and_subqueries():
    for where in ["channel = 'a;b' AND (kind = 'facecam')", "frame_id IN (SELECT frame_id FROM dups)", "title = ')'",
                  "CAST(width AS VARCHAR) = '32' AND list_filter(transforms, t -> t = 'resize') <> []",
                  "timestamp > TIMESTAMP '2026-11-01' AND kind IN ('facecam', 'frame') AND phash BETWEEN 1 AND 9",
                  "segment_id IN (SELECT s.segment_id FROM segments s JOIN channels c USING (channel) "
                  "WHERE c.frames_kept > 1 ORDER BY 1 LIMIT 3)", "(SELECT 1) = 1", "x IN (VALUES (1), (2))"]:
        assert check_where(where) == where


@pytest.mark.parametrize("where, message", [
    ("true UNION ALL SELECT 0", "syntax error"),  # cannot leave its parentheses, so not a set operation either
    ("frame_id IN (SELECT frame_id FROM dups UNION SELECT 'x')", "UNION"),
    ("frame_id IN (SELECT frame_id FROM dups EXCEPT SELECT 'x')", "UNION, EXCEPT"),
    ("frame_id IN (SELECT content FROM read_text('/etc/passwd'))", "table functions"),
    ("EXISTS (FROM glob('/*'))", "table functions"),
    ("frame_id IN (FROM query('SELECT 1'))", "table functions"),
    ("EXISTS (SELECT 1 FROM range(10))", "table functions"),
    ("EXISTS (FROM '/etc/passwd')", "'/etc/passwd' is not a table here"),
    ("EXISTS (FROM catalog.frames)", "'frames' is not a table here"),
    ("EXISTS (FROM duckdb_settings())", "table functions"),
    ("x IN (WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT n FROM c)", "WITH RECURSIVE"),
    ("x IN (WITH c AS (SELECT 1) SELECT * FROM c)", "'c' is not a table here"),
    ("x = 1 SELECT 1", "syntax error"),
    (" ", "give one condition"),
])
def test_a_where_condition_reads_only_the_views(where, message):
    with pytest.raises(UserError, match=message) as err:
        check_where(where)
    assert str(err.value).startswith("--where: ") and "\n" not in str(err.value)


def test_a_snapshot_filter_reads_the_frame_alone():
    assert check_where("channel = 'a'", tables=()) == "channel = 'a'"
    with pytest.raises(UserError, match="subqueries are not allowed"):
        check_where("frame_id IN (SELECT frame_id FROM dups)", tables=())


def test_query_limits_rows_and_maps_errors_to_one_line(tmp_path):
    root = make_root(tmp_path)
    table, more = query(root, "SELECT frame_id FROM frames_all ORDER BY 1", limit=5)
    assert (table.num_rows, more) == (5, True)
    table, more = query(root, "SELECT frame_id FROM frames_all", limit=20)
    assert (table.num_rows, more) == (20, False)
    with pytest.raises(UserError, match="only files under the storage root") as err:
        query(root, "SELECT * FROM read_csv('/etc/passwd')")
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="nope"):
        query(root, "SELECT nope FROM frames")


def test_a_shard_from_a_newer_version_is_refused_by_name(tmp_path):
    root = make_root(tmp_path)
    newer = write_frames(root, "a", DAY2, [frame("a", "a9", 0, DAY2)], "part-new")
    write_shard(newer, [frame("a", "a9", 0, DAY2)], FRAME_SCHEMA, version=SCHEMA_VERSION + 1)
    with pytest.raises(SchemaVersionError) as err:
        open_catalog(root)
    msg = str(err.value)
    assert str(newer) in msg and "upgrade stream2dataset" in msg and "\n" not in msg


_WRITER = """
import os, sys, time
import pyarrow as pa, pyarrow.parquet as pq
template, folder = sys.argv[1:]
table = pq.read_table(template)  # keeps the shard's schema version metadata
table = table.set_column(table.schema.get_field_index("channel"), "channel", pa.array(["w"] * len(table)))
os.makedirs(folder)
for k in range(30):  # as the writer does: a hidden temp file, renamed into place
    tmp = os.path.join(folder, f".part-{k:03d}.parquet.x.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, os.path.join(folder, f"part-{k:03d}.parquet"))
    time.sleep(0.03)
"""


def test_queries_work_while_another_process_writes_shards(tmp_path):
    root = make_root(tmp_path)
    template = root / "dataset/frames/channel=a/date=2026-11-01/part-a1.parquet"  # 10 rows, 2 of them dups
    folder = root / "dataset/frames/channel=w/date=2026-11-03"
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(template), str(folder)])
    counts = []
    try:
        while writer.poll() is None:
            with open_catalog(root) as con:
                counts.append(rows(con, "SELECT count(*) AS n FROM frames WHERE channel = 'w'")[0]["n"])
    finally:
        writer.wait(timeout=60)
    assert writer.returncode == 0
    with open_catalog(root) as con:
        counts.append(rows(con, "SELECT count(*) AS n FROM frames WHERE channel = 'w'")[0]["n"])
    assert counts == sorted(counts) and counts[-1] == 30 * 8 and all(c % 8 == 0 for c in counts)
    assert len(set(counts)) >= 3  # it really did read while the writer was half done


def test_a_tool_holding_the_catalog_for_writing_does_not_block_queries(tmp_path):
    root = make_root(tmp_path)
    open_catalog(root).close()  # writes catalog.duckdb
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, sys
        con = duckdb.connect({str(root / CATALOG)!r})  # read-write, as the duckdb CLI opens it
        print(con.execute("SELECT count(*) FROM frames").fetchone()[0], flush=True)
        sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "16"
        t = time.monotonic()
        with open_catalog(root) as con:  # falls back to the same views in memory
            assert rows(con, "SELECT count(*) AS n FROM frames") == [{"n": 16}]
            with pytest.raises(duckdb.Error):
                con.execute("SELECT * FROM read_csv('/etc/passwd')")
        assert time.monotonic() - t < 5
    finally:
        holder.communicate("", timeout=30)
