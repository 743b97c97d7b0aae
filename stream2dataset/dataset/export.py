"""Export a snapshot's rows for other tools: WebDataset tars, plain Parquet, a Hugging Face folder.

The rows are exactly the ones the snapshot selects (its pinned files, its filter, near-duplicates
left out: what `open_snapshot`'s `frames` or `clips` view shows), in the pinned files' order, read
straight from those files (the ids come from DuckDB, the bytes from pyarrow, as training reads them).

    webdataset  OUT/00000.tar, 00001.tar, ... (the img2dataset/video2dataset layout): per row
                KEY.png|jpg|webp (the image as stored) + KEY.json (every other column, JSON-safe);
                a clip is KEY.json + KEY.00000.png, KEY.00001.png, ... (its frames in order).
                KEY is the row's id made filesystem-safe (no dots: WebDataset splits keys there).
    parquet     OUT/00000.parquet, ...: the rows as stored, images as binary (pandas.read_parquet(OUT)).
    hf          OUT/data/train-00000-of-0000N.parquet + OUT/README.md: `datasets.load_dataset(OUT)`
                reads split "train" with `image` typed `datasets.Image()` (the Parquet schema carries
                the features under its `huggingface` metadata key, which the Parquet loader honours).

Every file is written under a hidden temp name and renamed when complete; `OUT/_stats.json` (the
shards, their rows and bytes) is written last, so an export without it did not finish. A failed
export removes what it wrote.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import tarfile
import time
from datetime import datetime
from itertools import accumulate
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import UserError
from ..layout import DATA_FOLDERS, Storage, atomic_write_bytes
from .snapshots import load_snapshot, open_snapshot, snapshot_file

FORMATS = ("webdataset", "parquet", "hf")
TABLES = ("frames", "clips")
ID = {"frames": "frame_id", "clips": "clip_id"}
IMAGES = {"frames": ("image", "mask"), "clips": ("frames",)}  # encoded image bytes, not metadata
EXT = {"png": "png", "jpeg": "jpg", "jpg": "jpg", "webp": "webp"}
STATS = "_stats.json"
# The root's own folders: an export there would be read as dataset shards (or clobber them).

Progress = Callable[[int, int], None]  # (rows done, rows in all)


def check_out(storage: Storage, out: str | Path) -> Path:
    """`out` resolved, if it may receive an export: empty or missing, not among the root's data."""
    out = Path(out).expanduser().resolve()
    root = storage.root.resolve()
    if out == root or any(out == root / d or root / d in out.parents for d in DATA_FOLDERS):
        raise UserError(f"{out} lies in the storage root's data folders; export to a folder of its own "
                        f"(e.g. {root.parent / 'exports'})")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not an empty folder; export into a new or empty folder")
    return out


def _selection(storage: Storage, name: str, table: str) -> tuple[list[Path], pa.Array]:
    """The snapshot's pinned files of `table` and the ids its view keeps."""
    con = open_snapshot(storage, name)  # checks every pinned file's sha256
    try:
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        if table not in views:
            raise UserError(f"snapshot {name!r} has no {table}"
                            + (" (enable processing.clips and take a new snapshot)" if table == "clips" else ""))
        keep = con.sql(f"SELECT {ID[table]} FROM {table}").to_arrow_table().column(0).combine_chunks()
    finally:
        con.close()
    manifest = load_snapshot(storage, name, verify=False)
    return [snapshot_file(storage, e["path"]) for e in manifest["files"][table]], keep


def _kept_rows(files: list[Path], keep: pa.Array, id_col: str) -> Iterator[pa.Table]:
    """The kept rows of `files`, in file order, a few hundred at a time, dictionary columns decoded."""
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=256):
            batch = batch.filter(pc.is_in(batch.column(id_col), value_set=keep))
            if batch.num_rows:
                table = pa.Table.from_batches([batch])
                for i, field in enumerate(table.schema):
                    if pa.types.is_dictionary(field.type):
                        table = table.set_column(i, field.name, table.column(i).cast(field.type.value_type))
                yield table


def safe_key(row_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", row_id)


def _json_safe(value):
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (bytes, bytearray)):
        return None
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


class _Shard:
    """One output file, written under a hidden temp name and renamed into place by `close`."""

    def __init__(self, path: Path):
        self.path, self.tmp, self.rows = path, path.with_name(f".{path.name}.tmp"), 0
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def close(self) -> dict:
        self._finish()
        os.replace(self.tmp, self.path)
        return {"path": self.path.name, "rows": self.rows, "bytes": self.path.stat().st_size}


class _TarShard(_Shard):
    def __init__(self, path: Path, table: str):
        super().__init__(path)
        self.table, self.tar = table, tarfile.open(self.tmp, "w", format=tarfile.GNU_FORMAT)

    def _add(self, name: str, data: bytes, mtime: int) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), mtime, 0o644
        self.tar.addfile(info, io.BytesIO(data))

    def write(self, rows: pa.Table) -> None:
        images = {c: rows.column(c).to_pylist() for c in IMAGES[self.table] if c in rows.column_names}
        meta = rows.drop_columns(list(images)).to_pylist()
        for i, row in enumerate(meta):
            key = safe_key(row[ID[self.table]])
            ext = EXT.get(row.get("image_format") or "png", "png")
            stamp = row.get("timestamp") or row.get("start")
            mtime = int(stamp.timestamp()) if isinstance(stamp, datetime) else 0  # an int: no pax header
            if self.table == "frames":
                self._add(f"{key}.{ext}", images["image"][i], mtime)
                if images.get("mask") and images["mask"][i]:
                    self._add(f"{key}.mask.png", images["mask"][i], mtime)
            else:
                for n, frame in enumerate(images["frames"][i] or []):
                    self._add(f"{key}.{n:05d}.{ext}", frame, mtime)
            self._add(f"{key}.json", json.dumps({k: _json_safe(v) for k, v in row.items()}).encode(), mtime)
        self.rows += rows.num_rows

    def _finish(self) -> None:
        self.tar.close()


class _ParquetShard(_Shard):
    def __init__(self, path: Path, table: str, hf: bool = False):
        super().__init__(path)
        self.table, self.hf, self.writer = table, hf, None

    def write(self, rows: pa.Table) -> None:
        if self.hf:
            rows = _hf_table(rows, self.table)
        if self.writer is None:  # images are compressed already: only the metadata columns get zstd
            names, images = rows.schema.names, IMAGES[self.table]
            self.writer = pq.ParquetWriter(self.tmp, rows.schema, use_dictionary=[n for n in names if n not in images],
                                           compression={n: "none" if n in images else "zstd" for n in names})
        self.writer.write_table(rows.cast(self.writer.schema), row_group_size=1024)
        self.rows += rows.num_rows

    def _finish(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _image_structs(images: pa.Array, names: pa.Array) -> pa.StructArray:
    """Binary images as `datasets.Image`'s storage: struct<bytes, path> (path: a file name only)."""
    return pa.StructArray.from_arrays([images, names], names=["bytes", "path"], mask=images.is_null())


def _hf_table(rows: pa.Table, table: str) -> pa.Table:
    """`rows` with the image columns as `datasets.Image` storage and the features in the schema."""
    keys = [safe_key(k) for k in rows.column(ID[table]).to_pylist()]
    exts = [EXT.get(f or "png", "png") for f in rows.column("image_format").to_pylist()]
    features = {}
    for col in IMAGES[table]:
        if col not in rows.column_names:
            continue
        data = rows.column(col).combine_chunks()
        if table == "frames":
            names = pa.array([f"{k}.mask.png" if col == "mask" else f"{k}.{e}" for k, e in zip(keys, exts)])
            arr = _image_structs(data, names)
            features[col] = {"_type": "Image"}
        else:  # clips: a list of encoded frames -> a list of images
            lengths = data.value_lengths().fill_null(0).to_pylist()
            names = pa.array([f"{k}.{n:05d}.{e}" for k, e, m in zip(keys, exts, lengths) for n in range(m)],
                             pa.string())
            flat = data.flatten()
            arr = pa.ListArray.from_arrays(pa.array([0, *accumulate(lengths)], pa.int32()), _image_structs(flat, names),
                                           mask=data.is_null())
            features[col] = {"feature": {"_type": "Image"}, "_type": "List"}
        rows = rows.set_column(rows.column_names.index(col), col, arr)
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    return rows.replace_schema_metadata(meta)


HF_README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.parquet
---

# {name}

The {table} of stream2dataset snapshot `{name}` ({rows:,} rows{where}), exported {when}.
Read it with `datasets.load_dataset("{out}")`: split `train`, images typed `datasets.Image()`.
"""


def export_snapshot(storage: Storage, name: str, fmt: str, out: str | Path, shard_size: int = 10_000,
                    table: str = "frames", progress: Progress | None = None) -> dict:
    """Write the rows snapshot `name` selects from `table` to the folder `out` as `fmt` (see the
    module's docstring); returns the report that `out/_stats.json` holds."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if table not in TABLES:
        raise UserError(f"--table {table!r}: use one of {', '.join(TABLES)}")
    if shard_size < 1:
        raise UserError(f"--shard-size {shard_size}: use a positive number of rows per file")
    out = check_out(storage, out)
    files, keep = _selection(storage, name, table)
    total, started = len(keep), time.monotonic()
    count = max(1, math.ceil(total / shard_size))

    def shard(i: int) -> _Shard:
        if fmt == "webdataset":
            return _TarShard(out / f"{i:05d}.tar", table)
        if fmt == "parquet":
            return _ParquetShard(out / f"{i:05d}.parquet", table)
        return _ParquetShard(out / "data" / f"train-{i:05d}-of-{count:05d}.parquet", table, hf=True)

    made_out = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    shards, current, done = [], None, 0
    try:
        for rows in _kept_rows(files, keep, ID[table]):
            while rows.num_rows:
                current = current or shard(len(shards))
                take = min(rows.num_rows, shard_size - current.rows)
                current.write(rows.slice(0, take))
                rows, done = rows.slice(take), done + take
                if current.rows == shard_size:
                    shards.append(current.close())
                    current = None
            if progress:
                progress(done, total)
        if current is not None or not shards:  # an empty selection still gets one (empty) file
            shards.append((current or shard(0)).close())
        manifest = load_snapshot(storage, name, verify=False)
        report = {"snapshot": name, "created": manifest["created"], "where": manifest["where"], "table": table,
                  "format": fmt, "out": str(out), "rows": done, "shards": shards,
                  "bytes": sum(s["bytes"] for s in shards), "seconds": round(time.monotonic() - started, 3)}
        if fmt == "hf":
            where = f", where {manifest['where']}" if manifest["where"] else ""
            card = HF_README.format(name=name, table=table, rows=done, where=where, when=manifest["created"][:10],
                                    out=out)
            atomic_write_bytes(out / "README.md", card.encode(), sync=False)
        atomic_write_bytes(out / STATS, json.dumps(report, indent=1).encode())  # last: the export is complete
        return report
    except BaseException:
        _remove_partial(out, made_out)
        raise


def _remove_partial(out: Path, made_out: bool) -> None:
    """Undo a failed export: everything under `out` is this export's (it was empty)."""
    for path in sorted(out.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    if made_out:
        out.rmdir()
