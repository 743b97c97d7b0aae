"""Which files readers see now: every file under the live globs, minus those a compaction in
progress hides (compaction.py). Cheap when nothing is being compacted: one listing of an empty folder.

A compaction's intent names the files it replaces (`old`) and the name prefix of the files it writes
(`prefix`). Until it is published, readers skip the new files; once published, the old ones. So a
reader that lists (or a view that globs) at any moment sees each row once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from ..layout import COMPACT


def hidden(root: str | Path) -> tuple[str, ...]:
    """Absolute path prefixes of the files readers must skip now (none while nothing is compacted)."""
    root = Path(root)
    folder = root / COMPACT
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".json") and not n.startswith("."))
    except FileNotFoundError:
        return ()
    out: list[str] = []
    for name in names:
        try:
            spec = json.loads((folder / name).read_bytes())
        except (FileNotFoundError, ValueError):  # finished meanwhile
            continue
        for group in spec["groups"]:
            out += group["old"] if spec["state"] == "published" else [group["prefix"]]
    return tuple(str(root / rel) for rel in out)


def visible(paths: Iterable[Path], prefixes: tuple[str, ...]) -> list[Path]:
    """`paths` less those a compaction hides."""
    return [p for p in paths if not prefixes or not str(p).startswith(prefixes)]


def parquet_files(folder: Path) -> list[Path]:
    """The Parquet files in one folder (not hidden temp files), by name; none if it does not exist."""
    try:
        with os.scandir(folder) as entries:
            return sorted(Path(e.path) for e in entries if e.name.endswith(".parquet") and not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def live_files(root: str | Path, pattern: str) -> list[Path]:
    """The files of a glob under `root` that readers see now, sorted."""
    root = Path(root)
    return visible(sorted(p for p in root.glob(pattern) if not p.name.startswith(".")), hidden(root))
