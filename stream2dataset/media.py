"""Video files: which names are videos, how a folder of them is walked, their content id.

The recorder's `file` adapter, crash recovery and `process PATH` all read local videos through
these, so they agree on what a video is and name the same bytes the same way.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path


__all__ = ["VIDEO_EXTS", "content_id", "find_videos", "media_errors", "sha256_file"]

VIDEO_EXTS = frozenset({".ts", ".mp4", ".mkv", ".webm", ".mov", ".m4v", ".avi", ".flv"})


def media_errors() -> tuple[type[BaseException], ...]:
    """What PyAV and the OS raise for a file that does not decode (or is gone): a state of the
    input, not a bug. A function: PyAV is imported only by the modules that decode."""
    import av  # deferred on purpose: `sql` and config validation import this module, not PyAV

    return (av.FFmpegError, OSError, ValueError, EOFError)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (segments and shards can be GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def content_id(path: Path) -> str:
    """First 16 hex digits of the file's sha256: the same bytes get the same id under any name."""
    return sha256_file(path)[:16]


def _unreadable(path: Path) -> str | None:
    """Why `path` is not a readable regular file (a dangling link, a loop, a folder...), or None."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return "not a regular file (a folder or a device)"
        with open(path, "rb"):
            return None
    except OSError as err:
        return (err.strerror or str(err)).lower() + (" (a dangling symlink)" if path.is_symlink() and
                                                     err.errno == errno.ENOENT else "")


def find_videos(root: Path, skipped: list[tuple[str, str]]) -> list[Path]:
    """The readable video files of `root` (a file, or a folder walked in name order without following
    folder links); hidden names (temp files being written) are not videos. What looks like a video
    but cannot be read is added to `skipped` as (path, reason)."""
    if not root.is_dir():
        if why := _unreadable(root):
            skipped.append((str(root), why))
            return []
        return [root]
    found = []
    for folder, dirs, names in os.walk(root, onerror=lambda err: skipped.append((str(err.filename), err.strerror))):
        dirs.sort()
        for name in sorted(names + [d for d in dirs if Path(d).suffix.lower() in VIDEO_EXTS]):
            path = Path(folder) / name
            if path.suffix.lower() not in VIDEO_EXTS or name.startswith("."):
                continue
            if why := _unreadable(path):
                if not path.is_dir() or path.is_symlink():  # a real folder named x.mp4 is walked
                    skipped.append((str(path), why))
            else:
                found.append(path)
    return found
