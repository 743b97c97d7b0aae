"""Ingest: platform adapters, the segmenter, the per-channel recorder and the recording service."""

from .manifest import SEGMENT_SCHEMA, read_segments
from .recorder import ChannelRecorder

__all__ = ["SEGMENT_SCHEMA", "ChannelRecorder", "read_segments"]
