"""The dataset: row schemas, Parquet shard writers, thumbnails, contact sheets."""

from .clips import CLIP_SCHEMA, clip_id, clips_dir, read_clips, write_clips
from .schema import FRAME_KINDS, FRAME_SCHEMA, frame_id
from .thumbnails import thumbnail_row
from .writer import frames_dir, read_frame_column, write_frames

__all__ = [
    "CLIP_SCHEMA", "FRAME_KINDS", "FRAME_SCHEMA", "clip_id", "clips_dir", "frame_id", "frames_dir",
    "read_clips", "read_frame_column", "thumbnail_row", "write_clips", "write_frames",
]
