"""A pinned snapshot as Ray Data datasets for the training workers.

The driver asks DuckDB which rows the snapshot selects (ids only: small), and Ray Data reads the
snapshot's exact Parquet files, keeps those rows and decodes the images on CPU actors. Batches
leave the actors as uint8 NCHW (a quarter of float32's bytes through the object store); the
worker scales and flips them on its device (tasks.py). Ray Train splits each dataset over the
workers (`get_dataset_shard`), so no worker reads the whole snapshot. Decoding is deterministic,
so a snapshot that fits in memory is decoded once (`materialize`) instead of every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..dataset.snapshots import load_snapshot, open_snapshot, snapshot_file
from ..errors import UserError
from ..layout import Storage


@dataclass(frozen=True)
class SnapshotData:
    """What a run needs to know about its snapshot, beside the dataset itself."""

    name: str
    created: str
    rows: int            # frames (diffusion) or clips (temporal) selected
    items: int           # training items: frames, or windows of `context` frames cut from the clips
    item_bytes: int      # one decoded item
    channels: list[str]  # label i is channels[i] (channel conditioning)
    files: list[str]     # absolute paths of the shards read


def decode_image(data: bytes, size: int) -> np.ndarray:
    """An encoded frame as size x size RGB uint8; area-averaged when shrinking (no aliasing)."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("undecodable image")
    if img.shape[:2] != (size, size):
        shrink = img.shape[0] > size or img.shape[1] > size
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class DecodeFrames:
    """Ray Data stage: keep the snapshot's frames, decode, label by channel."""

    def __init__(self, keep: frozenset[str], channels: list[str], size: int):
        self.keep, self.size = keep, size
        self.label = {c: i for i, c in enumerate(channels)}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [i for i, f in enumerate(batch["frame_id"]) if f in self.keep]
        images = np.empty((len(rows), 3, self.size, self.size), np.uint8)
        for out, i in enumerate(rows):
            images[out] = decode_image(batch["image"][i], self.size).transpose(2, 0, 1)
        labels = np.array([self.label[str(batch["channel"][i])] for i in rows], np.int64)
        return {"image": images, "label": labels}


class DecodeWindows:
    """Ray Data stage: every window of `context` consecutive frames of each clip, `context // 2`
    frames apart (overlapping windows: more sequences per clip, each frame decoded once)."""

    def __init__(self, keep: frozenset[str], size: int, context: int):
        self.keep, self.size, self.context = keep, size, context

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        windows = []
        for clip_id, encoded in zip(batch["clip_id"], batch["frames"]):
            if clip_id not in self.keep or len(encoded) < self.context:
                continue
            frames = np.stack([decode_image(f, self.size) for f in encoded]).transpose(0, 3, 1, 2)
            for start in range(0, len(frames) - self.context + 1, max(1, self.context // 2)):
                windows.append(frames[start:start + self.context])
        shape = (0, self.context, 3, self.size, self.size)
        return {"clip": np.stack(windows) if windows else np.empty(shape, np.uint8)}


def snapshot_dataset(storage: Storage, snapshot: str, kind: str, settings, training) -> tuple:
    """(Ray Dataset, SnapshotData) for `kind` = diffusion (frames) or temporal (clips)."""
    import ray.data

    table = "frames" if kind == "diffusion" else "clips"
    con = open_snapshot(storage, snapshot)  # checks every file's sha256: the run trains on what was pinned
    try:
        def column(sql: str) -> list:
            return [r[0] for r in con.execute(sql).fetchall()]

        # The snapshot's views exist only for tables it has files of.
        if table not in column("SELECT view_name FROM duckdb_views() WHERE NOT internal"):
            raise UserError(f"snapshot {snapshot!r} has no {table}; {kind} training needs them"
                            + (" (enable processing.clips and take a new snapshot)" if table == "clips" else ""))
        keep = frozenset(column(f"SELECT {'frame_id' if table == 'frames' else 'clip_id'} FROM {table}"))
        channels = sorted(column(f"SELECT DISTINCT channel::VARCHAR FROM {table}"))
        if kind == "diffusion":
            items, item_bytes = len(keep), 3 * settings.resolution ** 2
        else:  # windows per clip, as DecodeWindows cuts them
            c, stride = settings.context, max(1, settings.context // 2)
            items = column(f"SELECT coalesce(sum(CASE WHEN frame_count >= {c} THEN "
                           f"(frame_count - {c}) // {stride} + 1 ELSE 0 END), 0) FROM clips")[0]
            item_bytes = 3 * settings.resolution ** 2 * c
    finally:
        con.close()
    if not keep:
        raise UserError(f"snapshot {snapshot!r}: no {table} to train on")
    manifest = load_snapshot(storage, snapshot, verify=False)
    files = [str(snapshot_file(storage, e["path"])) for e in manifest["files"].get(table, [])]
    info = SnapshotData(snapshot, manifest["created"], len(keep), int(items), item_bytes, channels, files)
    # Read tasks run on any node: an object-store root is read from the store, not this node's copy.
    where = {"filesystem": storage.remote.fs} if storage.remote else {}
    if storage.remote:
        files = [storage.remote.key(Path(f).relative_to(storage.root).as_posix()) for f in files]
    loader = dict(compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, training.workers * 2)),
                  num_cpus=training.loader_cpus, batch_format="numpy")
    if kind == "diffusion":
        ds = ray.data.read_parquet(files, **where).select_columns(["frame_id", "channel", "image"]).map_batches(
            DecodeFrames, fn_constructor_kwargs=dict(keep=keep, channels=channels, size=settings.resolution), **loader)
    else:
        ds = ray.data.read_parquet(files, **where).select_columns(["clip_id", "frames"]).map_batches(
            DecodeWindows, fn_constructor_kwargs=dict(keep=keep, size=settings.resolution, context=settings.context), **loader)
    return ds, info
