"""Numbers and times as people read them: what the CLI's tables and the dashboard's pages print."""

from __future__ import annotations

from datetime import datetime, timezone


def human_bytes(n: int | None) -> str:
    """`512 B`, `1.5 MB`: decimal units, one decimal past bytes."""
    n = float(n or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def since(iso: str | None) -> str:
    """`11:20:37 (3m ago)`: when the state began, and how long it has lasted."""
    if not iso:
        return ""
    t = datetime.fromisoformat(iso)
    secs = int((datetime.now(timezone.utc) - t).total_seconds())
    ago = f"{secs}s" if secs < 120 else f"{secs // 60}m" if secs < 7200 else f"{secs // 3600}h"
    return f"{t.astimezone(timezone.utc):%H:%M:%S} ({ago} ago)"

