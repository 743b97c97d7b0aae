"""What the dataset holds, for people: per-channel and per-day numbers, a chart, a contact sheet.

Everything goes through the catalog's views, reading only the small columns: DuckDB pushes the
projection into the Parquet scan, so the image bytes are never read (1M frame rows: 0.4 s on two
cores, bench/RESULTS.md).
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections import defaultdict
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa

from ..errors import UserError
from ..layout import MANIFEST, TABLES, atomic_output
from .manifest import manifest_files
from .catalog import check_where, open_catalog, run_query
from .sandbox import DEFAULT_TIMEOUT_S, time_limit

__all__ = ["SEGMENTS_CACHE", "cell_text", "dataset_stats", "plot_stats", "preview_sheet", "rows", "rows_csv",
           "rows_json", "segment_cache"]

# A UTC day from the epoch, not CAST(ts AS DATE): that cast goes through ICU time zones, 2x slower.
_DAY = "DATE '1970-01-01' + CAST(epoch_ms({}) // 86400000 AS INTEGER)"
_QUERIES = {
    "segments": f"""SELECT channel, {_DAY.format('start')} AS date, count(*) AS segments,
                           sum(duration_s) / 3600 AS hours_recorded, CAST(sum(bytes) AS BIGINT) AS raw_bytes
                    FROM {{segments}} GROUP BY ALL""",
    "frames": f"""SELECT channel, {_DAY.format('timestamp')} AS date, count(*) AS frames_total,
                         count(*) FILTER (dup_of IS NULL) AS frames_kept,
                         count(*) FILTER (dup_of IS NOT NULL) AS duplicates
                  FROM frames_all GROUP BY ALL""",
    "clips": f"SELECT channel, {_DAY.format('start')} AS date, count(*) AS clips FROM clips GROUP BY ALL",
    "drops": f"""SELECT channel, {_DAY.format('timestamp')} AS date, reason, CAST(sum("count") AS BIGINT) AS n
                 FROM drops GROUP BY ALL""",
}
_COUNTS = ("segments", "hours_recorded", "raw_bytes", "dataset_bytes", "frames_total", "frames_kept", "duplicates",
           "dropped", "clips")


def _empty() -> dict:
    return {**{k: 0 for k in _COUNTS}, "drops": {}}


def _add(into: dict, row: dict) -> None:
    for k in _COUNTS:
        into[k] += row[k]
    for reason, n in row["drops"].items():
        into["drops"][reason] = into["drops"].get(reason, 0) + n


def _finish(row: dict) -> dict:
    row["duplicate_rate"] = row["duplicates"] / row["frames_total"] if row["frames_total"] else 0.0
    row["drops"] = dict(sorted(row["drops"].items()))
    return row


# The manifest holds one small Parquet file per segment (atomic commits), and every Parquet reader
# pays ~0.4 ms a file: with 60-s segments, a million frames come with ~17,000 of them (8 s). So
# stats keeps the few manifest columns it needs in one cache file, keyed by file, mtime and size,
# and reads only the segment files that are new or changed since. Delete it at any time.
SEGMENTS_CACHE = Path(".cache") / "stats-segments.parquet"
_SEGMENT_COLUMNS = ("channel", "start", "duration_s", "bytes")


def _sql_text(path: Path) -> str:
    return str(path).replace("'", "''")


def _manifest_files(root: Path) -> dict[str, tuple[int, int]]:
    """The manifest's files (per segment and compacted periods) -> (mtime_ns, size), keyed by their
    path under manifests/segments."""
    listing: dict[str, tuple[int, int]] = {}
    base = root / MANIFEST
    for path in manifest_files(root):
        try:
            st = path.stat()
        except FileNotFoundError:  # compacted away meanwhile
            continue
        listing[path.relative_to(base).as_posix()] = (st.st_mtime_ns, st.st_size)
    return listing


def segment_cache(root: Path, con: duckdb.DuckDBPyConnection) -> Path | None:
    """Bring the manifest cache up to date (reading only new or changed segment files) and return
    its path; None when there are no segments, or the cache cannot be written (a read-only root).

    All in DuckDB: pyarrow's table operations import pandas, half a second of a `stats` command.
    """
    listing, cache = _manifest_files(root), root / SEGMENTS_CACHE
    if not listing:
        return None
    con.execute("CREATE OR REPLACE TEMP TABLE _listing AS SELECT unnest(?) AS file, unnest(?) AS mtime_ns, "
                "unnest(?) AS size", [list(listing), *map(list, zip(*listing.values()))])
    kept, stale = None, 0
    if cache.exists():
        kept = f"SELECT c.* FROM read_parquet('{_sql_text(cache)}') c SEMI JOIN _listing USING (file, mtime_ns, size)"
        try:
            stale = con.execute(f"SELECT count(*) FROM read_parquet('{_sql_text(cache)}') c "
                                "ANTI JOIN _listing USING (file, mtime_ns, size)").fetchone()[0]
        except duckdb.Error:  # unreadable: rebuilt below
            kept, stale = None, 1
    new = [r[0] for r in con.execute(f"SELECT file FROM _listing ANTI JOIN ({kept}) USING (file)" if kept
                                     else "SELECT file FROM _listing").fetchall()]
    if not new and not stale:
        return cache
    base = root / MANIFEST
    fresh = (f"SELECT {', '.join(_SEGMENT_COLUMNS)}, l.* FROM read_parquet(?, union_by_name=true, "
             "hive_partitioning=false, filename=true) r "
             f"JOIN _listing l ON r.filename = '{_sql_text(base)}/' || l.file")
    query = (f"{kept} UNION ALL BY NAME {fresh}" if kept else fresh) if new else kept
    try:
        with atomic_output(cache) as tmp:
            con.execute(f"COPY ({query}) TO '{_sql_text(tmp)}' (FORMAT parquet)",
                        [[str(base / f) for f in new]] if new else None)
    except (OSError, duckdb.Error):
        return None
    return cache


def _dataset_bytes(root: Path) -> dict[tuple[str, str], int]:
    """Bytes on disk of the dataset shards, by (channel, date) folder: cheaper as stat() than as SQL."""
    sizes: dict[tuple[str, str], int] = defaultdict(int)
    for table in ("frames", "clips", "drops"):
        base = root / TABLES[table]
        for path in base.glob("channel=*/date=*/*.parquet") if base.is_dir() else ():
            sizes[(path.parent.parent.name[len("channel="):], path.parent.name[len("date="):])] += path.stat().st_size
    return sizes


def dataset_stats(root: str | Path, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> dict:
    """Per channel and per (channel, day): hours recorded, segments, frames kept, duplicates, drops
    by reason, clips, raw and dataset bytes; plus the totals.

    Days are UTC days of each row's own time: a segment's (and its drops') start, a frame's
    timestamp, a clip's start; dataset bytes go by the shard's date folder (the segment's start).
    The queries stop after `timeout_s` seconds in all (dataset.sql_timeout_s; None: never).
    """
    root = Path(root).resolve()
    days: dict[tuple[str, str], dict] = defaultdict(_empty)
    with open_catalog(root) as con, time_limit(con, timeout_s, "stats"):
        cache = segment_cache(root, con)
        for name, sql in _QUERIES.items():
            if name == "segments":  # the cache when there is one, else the view (reads every file)
                sql = sql.format(segments=f"read_parquet('{_sql_text(cache)}')" if cache else "segments")
            for row in con.sql(sql).to_arrow_table().to_pylist():
                day = days[(str(row["channel"]), row["date"].isoformat() if row["date"] else "unknown")]
                if name == "drops":
                    reason = str(row["reason"])
                    day["drops"][reason] = day["drops"].get(reason, 0) + int(row["n"])
                    day["dropped"] += int(row["n"])
                else:
                    day.update({k: v for k, v in row.items() if k not in ("channel", "date")})
    for key, size in _dataset_bytes(root).items():
        days[key]["dataset_bytes"] += size
    channels: dict[str, dict] = defaultdict(_empty)
    total = _empty()
    for (channel, _), day in days.items():
        _add(channels[channel], day)
        _add(total, day)
    return {
        "root": str(root),
        "channels": [_finish({"channel": c, **row}) for c, row in sorted(channels.items())],
        "days": [_finish({"channel": c, "date": d, **row}) for (c, d), row in sorted(days.items())],
        "total": _finish(total),
    }


def plot_stats(stats: dict, out: str | Path) -> Path:
    """A PNG chart: frames kept and hours recorded per channel per day (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")  # no display; set before pyplot is imported
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    out = Path(out)
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6.5), constrained_layout=True)
    for channel in [c["channel"] for c in stats["channels"]]:
        days = [r for r in stats["days"] if r["channel"] == channel and r["date"] != "unknown"]
        x = [date.fromisoformat(r["date"]) for r in days]
        top.plot(x, [r["frames_kept"] for r in days], marker="o", label=channel)
        bottom.plot(x, [r["hours_recorded"] for r in days], marker="o", label=channel)
    top.set_ylabel("frames kept")
    bottom.set_ylabel("hours recorded")
    top.set_title(f"{stats['root']}: per channel per day (UTC)")
    known = sorted({date.fromisoformat(r["date"]) for r in stats["days"] if r["date"] != "unknown"})
    if known:  # at least a day either side: one day alone would be autoscaled to years
        bottom.set_xlim(known[0] - timedelta(days=1), known[-1] + timedelta(days=1))
    locator = mdates.AutoDateLocator()
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.set_ylim(0, max(ax.get_ylim()[1], 0.1) * 1.08)  # from zero, with room above the highest point
    if stats["channels"]:  # beside the plots, not over the lines
        fig.legend(*top.get_legend_handles_labels(), loc="outside right upper", fontsize="small")
    with atomic_output(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return out


def preview_sheet(root: str | Path, where: str | None, out: str | Path, n: int = 64, include_dups: bool = False,
                  columns: int = 8, width: int = 160, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> tuple[Path, int]:
    """A contact sheet (PNG) of the first `n` frames matching `where`, by time; returns (path, count).

    `where` is a SQL condition on the frames view (frames_all with include_dups), checked and run
    in the read-only sandbox: it cannot end the SELECT it is placed in. The query stops after
    `timeout_s` seconds (dataset.sql_timeout_s; None: never).
    """
    import av

    from .preview import tile

    view = "frames_all" if include_dups else "frames"
    cond = f"WHERE (\n{check_where(where)}\n)" if where and where.strip() else ""
    # DuckDB's top-N reads the image column only for the rows it keeps (late materialization).
    sql = f"SELECT frame_id, image FROM {view} {cond}\nORDER BY timestamp, frame_id LIMIT {int(n)}"
    with open_catalog(root) as con:
        found = run_query(con, sql, timeout_s=timeout_s).to_pylist()
    if not found:
        raise UserError(f"no frames match {where!r} in {view}" if where else f"{view} has no frames yet")
    images = []
    for row in found:
        try:
            with av.open(io.BytesIO(row["image"])) as c:
                images.append(next(c.decode(video=0)).to_ndarray(format="rgb24"))
        except (av.FFmpegError, StopIteration, TypeError):
            continue  # an undecodable image is skipped, not fatal for a look at the data
    if not images:
        raise UserError(f"none of the {len(found)} matching images decode")
    return tile(images, Path(out), columns=min(columns, len(images)), width=width), len(images)


# Query results as text ----------------------------------------------------------------------------
# Binary columns (images, masks) are `<N bytes>` in tables, base64 text in CSV and JSON.

def cell_text(value) -> str:
    """A value as a table cell: short, readable, never the raw bytes of an image."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(cell_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {cell_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    return str(value)


def _plain(value):
    """A JSON-ready value: bytes as base64 text, times as ISO 8601."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def rows(table: pa.Table):
    """The rows of a result as tuples (by position: a result may repeat a column name)."""
    return zip(*(col.to_pylist() for col in table.columns)) if table.num_columns else iter(())


def rows_json(table: pa.Table) -> str:
    """A JSON array of row objects."""
    names = table.column_names
    return json.dumps([{k: _plain(v) for k, v in zip(names, row)} for row in rows(table)], indent=1)


def rows_csv(table: pa.Table) -> str:
    """CSV with a header; NULL is an empty field, lists and structs are JSON text."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in rows(table):
        writer.writerow(["" if v is None else json.dumps(_plain(v)) if isinstance(v, (list, dict)) else _plain(v)
                         for v in row])
    return buf.getvalue()
