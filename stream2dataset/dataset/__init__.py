"""The dataset: row schemas, staged writes and committed Parquet shards, thumbnails, contact sheets.

The DuckDB side (`catalog`, `stats`, `snapshots`, `dedup_pass`) is imported from its module where
it is used: recorder and processing actors import this package and need none of it."""

# The names load on first use (PEP 562): `sql` imports the catalog, which needs two schemas, not the
# writer, the thumbnails (OpenCV) and the transforms behind them.
_EXPORTS = {
    "CLIP_SCHEMA": "clips", "clip_id": "clips", "read_clips": "clips",
    "DROP_SCHEMA": "schema", "DUP_SCHEMA": "schema", "FRAME_KINDS": "schema", "FRAME_SCHEMA": "schema",
    "SCHEMA_VERSION": "schema", "frame_id": "schema", "read_shard": "shards", "write_shards": "shards",
    "thumbnail_row": "thumbnails", "commit_segments": "writer", "read_frame_column": "writer", "recover_commits": "writer", "stage_rows": "writer",
    "write_frames": "writer",
}

__all__ = [
    "CLIP_SCHEMA", "DROP_SCHEMA", "DUP_SCHEMA", "FRAME_KINDS", "FRAME_SCHEMA", "SCHEMA_VERSION", "clip_id",
    "commit_segments", "frame_id", "read_clips", "read_frame_column", "read_shard",
    "recover_commits", "stage_rows", "thumbnail_row", "write_frames", "write_shards",
]


from .._lazy import lazy_exports

__getattr__ = lazy_exports(__name__, _EXPORTS)
