"""stream2dataset: record live and recorded video channels with Ray and turn them into datasets."""

# The public names load on first use (PEP 562): `import stream2dataset` (and so every CLI start,
# `--help` included) pays for no pydantic, pyarrow or Ray until a command needs them.
_EXPORTS = {
    "Channel": "config", "Config": "config", "RecordingSettings": "config", "load_config": "config",
    "parse_config": "config", "ConfigError": "errors", "CorruptMedia": "errors", "S2DError": "errors",
    "StreamError": "errors", "UserError": "errors", "Storage": "layout",
}

__version__ = "0.1.0"

__all__ = sorted(_EXPORTS)


from ._lazy import lazy_exports

__getattr__ = lazy_exports(__name__, _EXPORTS)
