"""Ingest: platform adapters, the segmenter, the per-channel recorder and the recording service."""

from .manifest import SEGMENT_SCHEMA, read_segments

__all__ = ["SEGMENT_SCHEMA", "ChannelRecorder", "read_segments"]


def __getattr__(name: str):
    # The recorder (PyAV) only when asked for: the catalog and training nodes import the manifest alone.
    if name == "ChannelRecorder":
        from .recorder import ChannelRecorder
        return ChannelRecorder
    raise AttributeError(name)
