"""Parquet shards: size-bounded, deterministic names, atomic, images uncompressed.

Every shard of the dataset is written here, so they all share one format: row groups of
`row_group_rows`, image columns stored as they are (they are PNG/JPEG/WebP bytes already: zstd
would spend CPU for ~0%), everything else zstd, and the schema version in the file's metadata.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UserError
from ..layout import atomic_output
from .schema import SCHEMA_KEY, SCHEMA_VERSION

IMAGE_COLUMNS = ("image", "mask", "frames")  # already-compressed image bytes
MB = 1 << 20


def versioned(schema: pa.Schema) -> pa.Schema:
    return schema.with_metadata({**(schema.metadata or {}), SCHEMA_KEY: str(SCHEMA_VERSION).encode()})


def check_version(path: Path, metadata: dict | None) -> None:
    """Refuse a shard written by a newer stream2dataset: its columns may mean something else."""
    version = int((metadata or {}).get(SCHEMA_KEY, b"1"))
    if version > SCHEMA_VERSION:
        raise UserError(f"{path}: written with dataset schema version {version}, this stream2dataset reads "
                        f"up to version {SCHEMA_VERSION}; upgrade stream2dataset (pip install -U stream2dataset)")


def read_shard(path: Path, columns: list[str] | None = None, schema: pa.Schema | None = None) -> pa.Table:
    """One shard, checked for its schema version (hive folders are not added as columns)."""
    pf = pq.ParquetFile(path)
    check_version(path, pf.schema_arrow.metadata)
    table = pf.read(columns=columns)
    return table.cast(schema) if schema is not None and columns is None else table


def _writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    names = schema.names
    return pq.ParquetWriter(
        path, versioned(schema),
        compression={n: "none" if n in IMAGE_COLUMNS else "zstd" for n in names},
        use_dictionary=[n for n in names if n not in IMAGE_COLUMNS],
        write_statistics=[n for n in names if n not in IMAGE_COLUMNS],
    )


class _OpenShard:
    """One shard being written: rows go to the file a row group at a time, so memory holds less
    than one row group of them (a compaction's 256-MB merge no longer sits in its process)."""

    def __init__(self, path: Path, schema: pa.Schema, row_group_rows: int):
        self.path, self.row_group_rows = path, row_group_rows
        self._stack = ExitStack()
        self._writer = _writer(self._stack.enter_context(atomic_output(path)), schema)
        self._rest: list[pa.Table] = []  # rows not written yet: fewer than one row group
        self.nbytes = 0                  # the shard's rows in memory, as the split counts them

    def add(self, table: pa.Table) -> None:
        self._rest.append(table)
        self.nbytes += table.nbytes
        if sum(t.num_rows for t in self._rest) >= self.row_group_rows:
            self._write(final=False)

    def _write(self, final: bool) -> None:
        table, start = pa.concat_tables(self._rest), 0
        while table.num_rows - start >= self.row_group_rows or (final and start < table.num_rows):
            self._writer.write_table(table.slice(start, self.row_group_rows))
            start += self.row_group_rows
        self._rest = [table.slice(start)] if start < table.num_rows else []

    def close(self) -> Path:
        """Write the last row group and move the file into place."""
        if self._rest:
            self._write(final=True)
        self._writer.close()
        self._stack.close()
        return self.path

    def abandon(self, err: BaseException) -> None:
        """Close without publishing: the temp file is removed, nothing appears."""
        self._writer.close()
        self._stack.__exit__(type(err), err, err.__traceback__)


def write_shards(folder: Path, stem: str, schema: pa.Schema, tables: Iterable[pa.Table],
                 target_mb: float = 256, row_group_rows: int = 2048, empty: bool = False) -> list[Path]:
    """Write `tables` (in order) as `<folder>/<stem>-0000.parquet`, `-0001`... each closed once
    its rows reach `target_mb` in memory. The split depends only on the rows, so the same input
    gives the same files: a re-run replaces them instead of adding any. With `empty`, no rows
    still give one (empty) shard, which replaces an older file of the same name. Rows stream to
    the open shard: a generator of tables is written holding one of them at a time."""
    paths: list[Path] = []
    shard: _OpenShard | None = None
    limit = target_mb * MB
    try:
        for table in tables:
            table = table.select(schema.names).cast(schema)
            while table.num_rows:
                # As many rows as fit under the target (by this table's mean row size), at least one.
                row_bytes = max(1.0, table.nbytes / table.num_rows)
                used = shard.nbytes if shard else 0
                take = max(1, min(table.num_rows, int((limit - used) // row_bytes)))
                piece, table = table.slice(0, take), table.slice(take)
                shard = shard or _OpenShard(folder / f"{stem}-{len(paths):04d}.parquet", schema, row_group_rows)
                shard.add(piece)
                if shard.nbytes + row_bytes > limit:
                    paths.append(shard.close())
                    shard = None
        if empty and shard is None and not paths:
            shard = _OpenShard(folder / f"{stem}-0000.parquet", schema, row_group_rows)
        if shard is not None:
            paths.append(shard.close())
            shard = None
    except BaseException as err:
        if shard is not None:
            shard.abandon(err)
        raise
    return paths
