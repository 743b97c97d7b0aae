"""Parquet shards: size-bounded, deterministic names, atomic, images uncompressed.

Every shard of the dataset is written here, so they all share one format: row groups of
`row_group_rows`, image columns stored as they are (they are PNG/JPEG/WebP bytes already: zstd
would spend CPU for ~0%), everything else zstd, and the schema version in the file's metadata.
"""

from __future__ import annotations

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


def write_shards(folder: Path, stem: str, schema: pa.Schema, tables: Iterable[pa.Table],
                 target_mb: float = 256, row_group_rows: int = 2048, empty: bool = False) -> list[Path]:
    """Write `tables` (in order) as `<folder>/<stem>-0000.parquet`, `-0001`... each closed once
    its rows reach `target_mb` in memory. The split depends only on the rows, so the same input
    gives the same files: a re-run replaces them instead of adding any. With `empty`, no rows
    still give one (empty) shard, which replaces an older file of the same name."""
    paths: list[Path] = []
    pending: list[pa.Table] = []
    pending_bytes = 0

    def flush() -> None:
        nonlocal pending, pending_bytes
        if not pending:
            return
        path = folder / f"{stem}-{len(paths):04d}.parquet"
        with atomic_output(path) as tmp:
            writer = _writer(tmp, schema)
            try:
                table = pa.concat_tables(pending)
                for start in range(0, table.num_rows, row_group_rows):
                    writer.write_table(table.slice(start, row_group_rows))
            finally:
                writer.close()
        paths.append(path)
        pending, pending_bytes = [], 0

    limit = target_mb * MB
    for table in tables:
        table = table.select(schema.names).cast(schema)
        while table.num_rows:
            # As many rows as fit under the target (by this table's mean row size), at least one.
            row_bytes = max(1.0, table.nbytes / table.num_rows)
            take = max(1, min(table.num_rows, int((limit - pending_bytes) // row_bytes)))
            piece, table = table.slice(0, take), table.slice(take)
            pending.append(piece)
            pending_bytes += piece.nbytes
            if pending_bytes + row_bytes > limit:
                flush()
    if empty and not pending and not paths:
        pending.append(schema.empty_table())
    flush()
    return paths
