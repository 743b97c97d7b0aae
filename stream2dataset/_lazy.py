"""Package exports imported on first use: `import stream2dataset` stays light (the CLI's start-up)."""

from __future__ import annotations

from importlib import import_module


def lazy_exports(package: str, exports: dict[str, str]):
    """A module `__getattr__` that imports `name` from `package.<exports[name]>` when first asked."""
    def __getattr__(name: str):
        if name in exports:
            module = import_module(f".{exports[name]}", package)
            value = getattr(module, name)
            setattr(import_module(package), name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return __getattr__
