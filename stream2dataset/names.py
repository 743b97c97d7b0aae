"""The names users and the code give things: channels, snapshots and runs (one rule each)."""

from __future__ import annotations

import re

__all__ = ["ARTIFACT_NAME", "CHANNEL_NAME", "slug"]

# A channel's name is a folder under raw/ and a partition value of every table: lower case.
CHANNEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# Snapshots (snapshots/<name>.json) and training runs (runs/<name>/): letters, digits, '.', '_', '-'.
ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def slug(text: str) -> str:
    """A folder-safe channel name from a login, handle, host or file name."""
    s = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_")
    return s[:64] or "channel"
