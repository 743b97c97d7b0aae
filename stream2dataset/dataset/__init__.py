"""The dataset: frame row schema and the Parquet shard writer."""

from .schema import FRAME_KINDS, FRAME_SCHEMA, frame_id
from .thumbnails import thumbnail_row
from .writer import frames_dir, read_frame_column, write_frames

__all__ = ["FRAME_KINDS", "FRAME_SCHEMA", "frame_id", "frames_dir", "read_frame_column", "thumbnail_row", "write_frames"]
