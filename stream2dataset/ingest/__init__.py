"""Ingest: channel sources and platform adapters, the segmenter and the per-channel recorder.

Committed segments are rows of the manifest (`dataset.manifest`); the service that runs the
recorders sits above the stages (`stream2dataset.service`)."""

__all__ = ["ChannelRecorder"]


def __getattr__(name: str):
    # The recorder (PyAV) only when asked for: `import stream2dataset.ingest.sources` stays light.
    if name == "ChannelRecorder":
        from .recorder import ChannelRecorder
        return ChannelRecorder
    raise AttributeError(name)
