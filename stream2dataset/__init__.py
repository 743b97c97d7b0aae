"""stream2dataset: record live and recorded video channels with Ray and turn them into datasets."""

from .config import Channel, Config, RecordingSettings, load_config, parse_config
from .errors import ConfigError, CorruptMedia, S2DError, StreamError, UserError
from .storage import Storage

__version__ = "0.1.0"

__all__ = [
    "Channel", "Config", "ConfigError", "CorruptMedia", "RecordingSettings", "S2DError", "Storage",
    "StreamError", "UserError", "load_config", "parse_config",
]
