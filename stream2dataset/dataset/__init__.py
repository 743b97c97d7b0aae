"""The dataset: row schemas, staged writes and committed Parquet shards, thumbnails, contact sheets."""

from .catalog import SchemaVersionError, open_catalog, query, write_catalog
from .clips import CLIP_SCHEMA, clip_id, clips_dir, read_clips
from .schema import DROP_SCHEMA, DUP_SCHEMA, FRAME_KINDS, FRAME_SCHEMA, SCHEMA_VERSION, frame_id
from .shards import read_shard, write_shards
from .stats import dataset_stats, plot_stats, preview_sheet
from .thumbnails import thumbnail_row
from .writer import (commit_segments, frames_dir, read_frame_column, recover_commits, stage_rows, staging_dir,
                     write_frames)

__all__ = [
    "CLIP_SCHEMA", "DROP_SCHEMA", "DUP_SCHEMA", "FRAME_KINDS", "FRAME_SCHEMA", "SCHEMA_VERSION", "SchemaVersionError",
    "clip_id", "clips_dir", "commit_segments", "dataset_stats", "frame_id", "frames_dir", "open_catalog",
    "plot_stats", "preview_sheet", "query", "read_clips", "read_frame_column", "read_shard", "recover_commits",
    "stage_rows", "staging_dir", "thumbnail_row", "write_catalog", "write_frames", "write_shards",
]
