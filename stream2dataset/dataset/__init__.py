"""The dataset: row schemas, staged writes and committed Parquet shards, thumbnails, contact sheets.

The DuckDB side (`catalog`, `stats`, `snapshots`, `dedup_pass`) is imported from its module where
it is used: recorder and processing actors import this package and need none of it."""

from .clips import CLIP_SCHEMA, clip_id, clips_dir, read_clips
from .schema import DROP_SCHEMA, DUP_SCHEMA, FRAME_KINDS, FRAME_SCHEMA, SCHEMA_VERSION, frame_id
from .shards import read_shard, write_shards
from .thumbnails import thumbnail_row
from .writer import (commit_segments, frames_dir, read_frame_column, recover_commits, stage_rows, staging_dir,
                     write_frames)

__all__ = [
    "CLIP_SCHEMA", "DROP_SCHEMA", "DUP_SCHEMA", "FRAME_KINDS", "FRAME_SCHEMA", "SCHEMA_VERSION", "clip_id",
    "clips_dir", "commit_segments", "frame_id", "frames_dir", "read_clips", "read_frame_column", "read_shard",
    "recover_commits", "stage_rows", "staging_dir", "thumbnail_row", "write_frames", "write_shards",
]
