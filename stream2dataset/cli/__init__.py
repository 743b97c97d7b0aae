"""The `stream2dataset` command, the face of the package: imported by nothing below it.

`options` holds the root command and the shared options, `tables` what the commands print, and one
module per command group registers its commands: `recording`, `processing`, `demo`, `dataset`,
`training`, `ui`. `main` runs it."""

from .main import app, main

__all__ = ["app", "main"]
