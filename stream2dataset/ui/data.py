"""What the dashboard shows, gathered through the same library calls as the CLI (no web code here).

Channels: the running service's status (`service.status`, as `stream2dataset status`), with
each channel's segments, bytes and processing backlog from the manifest (`read_segments`,
`pending_segments`), which also stand in when no service is running. Crops and frame images:
catalog queries in the read-only sandbox. Runs: `training.runs`, as `stream2dataset runs`.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import Callable

from ..config import Config
from ..dataset.catalog import query
from ..dataset.manifest import pending_segments, read_segments
from ..errors import UserError
from ..layout import Storage
from ..names import ARTIFACT_NAME
from ..training.runs import checkpoint_steps, pull_run, read_metrics, read_run_info, run_dir, run_names

__all__ = ["FRAME_ID", "NAME", "IMAGE_TYPES", "ManifestCache", "channel_status", "frame_image", "inside_root",
           "loss_points", "newest_crops", "run_detail", "run_file", "run_list"]

# What a URL may name: a frame id (24 hex digits from the pipeline; test roots use short ids) and a
# channel or run (letters, digits, '.', '_', '-'; never '/', never a leading '.').
FRAME_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
NAME = ARTIFACT_NAME  # channel and run names in URLs
IMAGE_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp"}
MEDIA_TYPES = {".png": "image/png", ".mp4": "video/mp4", ".gif": "image/gif", ".webm": "video/webm"}


def inside_root(root: str | Path, path: str | Path) -> Path | None:
    """`path` after symbolic links are resolved, if it is a regular file under `root` (resolved
    too); else None. What is served is checked here, so a link out of the root serves nothing."""
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path))
    if real_root not in real.parents or not real.is_file():
        return None
    return real


# Channels --------------------------------------------------------------------------------------------

class ManifestCache:
    """Per channel: committed segments, their bytes, and the backlog (segments not yet processed).
    Reading the manifest costs ~0.4 ms a segment file, so a page refreshing every few seconds reuses
    the numbers for `ttl_s`."""

    def __init__(self, storage: Storage, ttl_s: float = 15.0):
        self.storage, self.ttl_s = storage, ttl_s
        self._lock = threading.Lock()
        self._at, self._value = -1e9, {}

    def get(self) -> dict[str, dict]:
        with self._lock:
            if time.monotonic() - self._at > self.ttl_s:
                self._value, self._at = self._read(), time.monotonic()
            return self._value

    def _read(self) -> dict[str, dict]:

        out: dict[str, dict] = {}
        for row in read_segments(self.storage).select(["channel", "bytes"]).to_pylist():
            ch = out.setdefault(row["channel"], {"segments": 0, "bytes": 0, "backlog": 0})
            ch["segments"] += 1
            ch["bytes"] += row["bytes"] or 0
        for seg in pending_segments(self.storage):
            out.setdefault(seg["channel"], {"segments": 0, "bytes": 0, "backlog": 0})["backlog"] += 1
        return out


def channel_status(cfg: Config, service_status: Callable[[], dict] | None, manifest: ManifestCache) -> dict:
    """`stream2dataset status`'s dict (the service's own, when it answers), each channel with its
    `backlog`; without a service, the config's channels with the manifest's numbers and `note`
    saying why."""
    note = ""
    st = None
    if service_status is not None:
        try:
            st = service_status()
        except UserError as err:
            note = str(err)
        except Exception as err:  # noqa: BLE001 - Ray gone meanwhile: shown on the page, not a 500
            note = f"the service did not answer: {type(err).__name__}: {err}"
    else:
        note = "no Ray cluster with a running service was found; showing the manifest only"
    try:
        counts = manifest.get()
    except Exception as err:  # noqa: BLE001 - e.g. an unreadable manifest shard: said on the page, not a 500
        counts, note = {}, f"{note}; " * bool(note) + f"the manifest could not be read: {type(err).__name__}: {err}"
    if st is None:
        st = {"config": "", "channels": [{"channel": ch.name, "platform": ch.platform, "mode": ch.mode,
                                          "state": "not running" if ch.enabled else "disabled",
                                          **{k: v for k, v in counts.get(ch.name, {}).items() if k != "backlog"}}
                                         for ch in cfg.channels]}
    st = {**st, "note": note}
    for ch in st["channels"]:
        ch["backlog"] = counts.get(ch["channel"], {}).get("backlog", 0)
    return st


# The catalog --------------------------------------------------------------------------------------

def newest_crops(root: Path, per_channel: int, timeout_s: float, channel: str | None = None) -> list[dict]:
    """The newest kept frames of each channel (or of `channel`): ids and small columns, no images."""
    where = f"WHERE channel = '{channel}'" if channel else ""  # `channel` matched NAME: no quotes in it
    sql = (f"SELECT channel, frame_id, kind, timestamp, width, height, segment_id FROM frames {where} "
           f"QUALIFY row_number() OVER (PARTITION BY channel ORDER BY timestamp DESC, frame_id) <= {int(per_channel)} "
           "ORDER BY channel, timestamp DESC, frame_id")
    table, _ = query(root, sql, None, timeout_s=timeout_s)
    return table.to_pylist()


def frame_image(root: Path, frame_id: str, timeout_s: float) -> tuple[bytes, str] | None:
    """A frame's stored image bytes and content type (`frame_id` matched FRAME_ID), or None."""
    table, _ = query(root, f"SELECT image, image_format FROM frames_all WHERE frame_id = '{frame_id}'", 1,
                     timeout_s=timeout_s)
    if not table.num_rows or table["image"][0].as_py() is None:
        return None
    fmt = (table["image_format"][0].as_py() or "png").lower()
    return table["image"][0].as_py(), IMAGE_TYPES.get(fmt, "application/octet-stream")


# Training runs ------------------------------------------------------------------------------------

def run_list(storage: Storage) -> list[dict]:
    """The runs as `stream2dataset runs` lists them: kind, snapshot, created, newest checkpoint, last loss."""
    names = run_names(storage)
    out = []
    for name in names:
        folder = pull_run(storage, name)
        try:
            info = read_run_info(folder)
        except (UserError, ValueError) as err:
            out.append({"name": name, "error": str(err).splitlines()[0]})
            continue
        steps, metrics = checkpoint_steps(storage, name), read_metrics(folder)
        snapshot = (info.get("snapshot") or {}).get("name", "")
        out.append({"name": name, "kind": info.get("kind", ""), "snapshot": snapshot,
                    "created": str(info.get("created", ""))[:19], "checkpoint": steps[-1] if steps else None,
                    "loss": metrics[-1].get("loss") if metrics else None})
    return out


def _newest(folder: Path, patterns: tuple[str, ...]) -> Path | None:
    found = [p for pattern in patterns for p in folder.glob(pattern) if p.is_file()]
    return max(found, key=lambda p: (p.stat().st_mtime, p.name)) if found else None


def run_detail(storage: Storage, name: str) -> dict | None:
    """Run `name`'s info, metrics, and its newest sample grid and video (paths relative to the run
    folder); None if there is no such run. `name` must match NAME (names.ARTIFACT_NAME)."""
    try:
        run_dir(storage, name)  # the CLI's own name check
    except UserError:
        return None
    if f"runs/{name}/run.json" not in storage.files(f"runs/{name}"):
        return None
    folder = pull_run(storage, name)
    info, metrics = read_run_info(folder), read_metrics(folder)
    grid = _newest(folder, ("samples/*.png", "sample-*.png"))
    video = _newest(folder, ("samples/*.mp4", "*.mp4"))
    return {"name": name, "info": info, "metrics": metrics, "checkpoints": checkpoint_steps(storage, name),
            "grid": grid.relative_to(folder).as_posix() if grid else None,
            "video": video.relative_to(folder).as_posix() if video else None}


def run_file(storage: Storage, name: str, rel: str) -> tuple[Path, str] | None:
    """A sample image or video of run `name` to serve: `<file>` or `samples/<file>` with a media
    suffix, a regular file inside the storage root once links are resolved; else None."""
    parts = rel.split("/")
    if not NAME.match(name) or len(parts) > 2 or (len(parts) == 2 and parts[0] != "samples") \
            or not all(NAME.match(p) for p in parts) or Path(rel).suffix.lower() not in MEDIA_TYPES:
        return None
    path = inside_root(storage.root, storage.runs_dir / name / rel)
    return (path, MEDIA_TYPES[Path(rel).suffix.lower()]) if path else None


def loss_points(metrics: list[dict], width: int = 720, height: int = 260, pad: int = 40) -> dict:
    """The loss curve as SVG coordinates: polyline points, axes ticks (step and loss)."""
    pts = [(m["step"], m["loss"]) for m in metrics if m.get("step") is not None and m.get("loss") is not None]
    if not pts:
        return {}
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(0.0, min(p[1] for p in pts)), max(p[1] for p in pts)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def sx(x):
        return pad + (x - x0) / (x1 - x0) * (width - 2 * pad)

    def sy(y):
        return height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)
    ticks_y = [y0 + (y1 - y0) * i / 4 for i in range(5)]
    ticks_x = sorted({round(x0 + (x1 - x0) * i / 4) for i in range(5)})
    return {"width": width, "height": height, "pad": pad,
            "points": " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts),
            "yticks": [(sy(t), f"{t:.4g}") for t in ticks_y], "xticks": [(sx(t), str(t)) for t in ticks_x],
            "last": pts[-1], "n": len(pts)}
