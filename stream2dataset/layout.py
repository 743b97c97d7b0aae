"""The storage root's layout: every path under it, local or in an object store, and atomic writes
(DESIGN.md, "Storage root"). Every stage asks `Storage` (or the keys below) for its paths; no other
module spells a folder of the root.

Every file a reader can see is complete: writers fill a hidden temp file in the same folder and
rename it into place, and completion markers are written last.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from .cluster import node_id
from .config import Config, StorageConfig, dump_config
from .names import CHANNEL_NAME
from .remote import Remote

PART_SUFFIX = ".part"

# The folders of the root, as keys relative to it (an object store's keys are the same).
RAW = "raw"                                  # raw/<platform>/<channel>/<YYYY-MM-DD>/<start>.ts
MANIFESTS = "manifests"
MANIFEST = f"{MANIFESTS}/segments"           # one Parquet row file per committed segment
PERIODS = "_periods"                         # <channel>/_periods/<period>.<id>.parquet: closed hours, days, months
ARCHIVES = f"{MANIFESTS}/archives"           # yt-dlp download archives, one per channel
COMMITTED = f"{MANIFESTS}/committed"         # what each recorder committed (keyframes, sequences)
DATASET = "dataset"
TABLES = {t: f"{DATASET}/{t}" for t in ("frames", "clips", "drops", "dups", "embeddings")}  # committed shards
STAGING = f"{DATASET}/_staging"              # rows of windows staged before their segment commits
COMMITS = f"{DATASET}/_commits"              # commit intents: a killed commit is finished from them
DONE = f"{DATASET}/_done"                    # completion markers, one per processed segment
DEDUP = f"{DATASET}/_dedup"                  # the dedup index: index.json + runs/ (dedup_index.py)
COMPACT = f"{DATASET}/_compact"              # compaction intents (+ a lock): a killed compaction is finished
RETIRED = f"{DATASET}/_retired"              # compacted shards a snapshot still pins, at their old place below
THUMBNAILS = f"{DATASET}/thumbnails"
EMBEDDING_INDEX = f"{DATASET}/_index"         # the lookalike vector index (faiss) over the embeddings
SNAPSHOTS = "snapshots"                      # <name>.json (+ the dedup links each pins)
RUNS = "runs"                                # training runs: checkpoints, samples, metrics
QUARANTINE = "quarantine"                    # undecodable input, with the reason
CONFIGS = "configs"                          # <hash>.yaml, the config every output names
CATALOG = "catalog.duckdb"                   # the node's own views
LOCAL_ONLY = (CATALOG, ".cache")             # what never travels to an object store (remote.py)

# The Parquet files of each table the catalog reads (hive folders channel=/date= are not columns).
# Fixed depths, not `**`; hidden temp files end in .tmp and never match.
GLOBS = {**{t: f"{TABLES[t]}/*/*/*.parquet" for t in ("frames", "clips", "drops", "embeddings")},
         "dups": f"{TABLES['dups']}/*.parquet", "segments": f"{MANIFEST}/*/*.parquet"}
PERIOD_GLOB = f"{MANIFEST}/*/{PERIODS}/*.parquet"  # the manifest's compacted rows (the segments view reads both)
# What a reader (SQL, stats, previews) needs in its working copy of an object-store root.
READ_SET = (MANIFEST, *TABLES.values(), SNAPSHOTS, COMPACT)
# Folders no export or rendered file may be written into.
DATA_FOLDERS = (DATASET, SNAPSHOTS, MANIFESTS, RAW, QUARANTINE)

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: there is no way to read the umask without setting it
_ID_PART = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def utc_stamp(t: datetime) -> str:
    """`20261123T103512.123Z`: sortable, folder-safe, millisecond resolution."""
    t = t.astimezone(timezone.utc)
    return t.strftime("%Y%m%dT%H%M%S.") + f"{t.microsecond // 1000:03d}Z"


def _checked(part: str, what: str) -> str:
    if not _ID_PART.match(part) or part in (".", ".."):
        raise ValueError(f"{what} {part!r} is not a safe path component")
    return part


_REMOTES: dict[Path, Remote] = {}  # local working copy -> its object store, for `atomic_output`


class Storage:
    """Paths under one storage root. Nothing outside the root is ever produced.

    With an object-store `uri`, `root` is this node's working copy of it (`remote.py`): the
    `pull`, `fetch` and `delete` methods keep the two in step; for a local root they do nothing.
    """

    def __init__(self, root: str | Path, uri: str | None = None):
        text = str(root)
        if uri and "{node}" in text:  # several nodes on one host each keep their own copy
            text = text.replace("{node}", node_id()[:12] or "local")
        self.root = Path(text).expanduser().resolve()
        self.uri = uri
        self.remote = Remote(uri, self.root, LOCAL_ONLY) if uri else None
        if self.remote:
            _REMOTES[self.root] = self.remote

    @classmethod
    def of(cls, cfg: Config | StorageConfig) -> Storage:
        s = cfg.storage if isinstance(cfg, Config) else cfg
        return cls(s.root, s.uri)

    @property
    def where(self) -> str:
        """The root as users name it: the URI of an object store, else the path."""
        return self.uri or str(self.root)

    # keeping an object-store root's working copy in step ------------------------------------
    def pull(self, *rels: str, mirror: bool = False) -> None:
        """Download what is new under these folders (`mirror`: also drop what the store lost)."""
        for rel in rels if self.remote else ():
            self.remote.pull(rel, mirror=mirror)

    def fetch(self, path: Path) -> Path:
        """`path`, downloaded first when only the store has it."""
        path = Path(path)
        if self.remote and not path.exists() and (rel := self.remote.rel(path)) is not None:
            self.remote.download(rel)
        return path

    def push(self, path: Path) -> None:
        """Upload a file written in place (not through `atomic_output`), e.g. a finished segment."""
        if self.remote:
            self.remote.push(Path(path))

    def delete(self, path: Path) -> None:
        """Remove a file or folder from the store, then here."""
        if self.remote:
            self.remote.delete(Path(path))
        if Path(path).is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            Path(path).unlink(missing_ok=True)

    def pull_dataset(self) -> Path:
        """Bring the working copy's dataset, manifest and snapshots up to date for reading
        (SQL, stats, previews); returns the local root."""
        self.pull(*READ_SET, mirror=True)
        return self.root

    def exists(self, path: Path) -> bool:
        return Path(path).exists() or bool(self.remote and self.remote.exists(Path(path)))

    def files(self, rel: str) -> set[str]:
        """Keys (relative to the root) of every file under `rel`, here or in the store."""
        if self.remote:
            return set(self.remote.listing(rel))
        folder = self.root / rel
        return {p.relative_to(self.root).as_posix() for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()

    # raw segments -------------------------------------------------------------------------
    def channel_dir(self, platform: str, channel: str) -> Path:
        if not CHANNEL_NAME.match(channel):
            raise ValueError(f"channel name {channel!r} is not folder-safe")
        return self.root / RAW / _checked(platform, "platform") / channel

    def segment_path(self, platform: str, channel: str, start: datetime, key: str | None = None,
                     ext: str = ".ts") -> Path:
        """raw/<platform>/<channel>/<YYYY-MM-DD>/<key or start stamp><ext>."""
        day = start.astimezone(timezone.utc).strftime("%Y-%m-%d")
        if not re.match(r"^\.[a-z0-9]{1,8}$", ext):
            raise ValueError(f"extension {ext!r} is not safe")
        return self.channel_dir(platform, channel) / day / f"{_checked(key or utc_stamp(start), 'segment key')}{ext}"

    @staticmethod
    def segment_id(platform: str, channel: str, key: str) -> str:
        return f"{platform}.{channel}.{_checked(key, 'segment key')}"

    def downloads_dir(self, platform: str, channel: str) -> Path:
        """Where adapters download unfinished files (videos mode); never read as data."""
        return self.channel_dir(platform, channel) / "_staging"

    # manifests ------------------------------------------------------------------------------
    @property
    def segments_manifest(self) -> Path:
        return self.root / MANIFEST

    def archive_path(self, channel: str) -> Path:
        """yt-dlp's download archive for one channel (ids already fetched)."""
        return self.root / ARCHIVES / f"{channel}.txt"

    def committed_path(self, channel: str) -> Path:
        """What one channel's recorder committed (ingest/memory.py)."""
        if not CHANNEL_NAME.match(channel):
            raise ValueError(f"channel name {channel!r} is not folder-safe")
        return self.root / COMMITTED / f"{channel}.json"

    # the dataset ----------------------------------------------------------------------------
    def table_dir(self, table: str) -> Path:
        """dataset/<frames|clips|drops|dups>: a table's committed shards."""
        return self.root / TABLES[table]

    def shard_dir(self, table: str, channel: str, day: str) -> Path:
        """A table's partition folder: dataset/<table>/channel=<c>/date=<YYYY-MM-DD>."""
        return self.table_dir(table) / f"channel={channel}" / f"date={day}"

    @property
    def dups_links(self) -> list[Path]:
        """The dedup pass's links files (one per run of the dedup index)."""
        return sorted(self.root.glob(GLOBS["dups"]))

    def stage_dir(self, segment_id: str) -> Path:
        """Where processing stages one segment's window rows until the segment commits."""
        return self.root / STAGING / _checked(segment_id, "segment id")

    @property
    def stage_trash(self) -> Path:
        """Committed staging folders, renamed here and deleted in the background."""
        return self.root / STAGING / ".trash"

    @property
    def commits_dir(self) -> Path:
        return self.root / COMMITS

    @property
    def done_dir(self) -> Path:
        return self.root / DONE

    def done_marker(self, segment_id: str) -> Path:
        return self.done_dir / _checked(segment_id, "segment id")

    @property
    def thumbnails_dir(self) -> Path:
        return self.root / THUMBNAILS

    @property
    def catalog_path(self) -> Path:
        return self.root / CATALOG

    # snapshots, runs, quarantine, configs ----------------------------------------------------
    @property
    def snapshots_dir(self) -> Path:
        return self.root / SNAPSHOTS

    @property
    def runs_dir(self) -> Path:
        return self.root / RUNS

    @property
    def quarantine_dir(self) -> Path:
        return self.root / QUARANTINE

    def save_config(self, cfg: Config) -> str:
        """Write the resolved config as configs/<hash>.yaml (once) and return its hash."""
        h = cfg.hash
        path = self.root / CONFIGS / f"{h}.yaml"
        if not path.exists():
            atomic_write_bytes(path, dump_config(cfg).encode())
        return h

    def quarantine(self, path: Path, reason: str, move: bool = True) -> Path:
        """Move a bad file out of the data, keeping its place in the tree and why it was moved.

        `move=False` records only the reason: for an operator's own files outside the root.
        """
        path = Path(path).resolve()
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            rel = Path("external") / path.name
        dest = self.quarantine_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if move and self.exists(path):
            self.fetch(path)
            shutil.move(str(path), dest)
            self.push(dest)
            self.delete(path)
        info = {"file": str(rel), "reason": reason, "at": datetime.now(timezone.utc).isoformat()}
        atomic_write_bytes(dest.with_name(dest.name + ".reason.json"), json.dumps(info, indent=1).encode())
        return dest

    def free_gb(self) -> float:
        self.root.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(self.root).free / 1e9


def _remote_for(path: Path) -> Remote | None:
    if not _REMOTES:
        return None
    for parent in Path(path).resolve().parents:
        if parent in _REMOTES:
            return _REMOTES[parent]
    return None


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a hidden temp path beside `path`; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; data must be readable like any new file
        remote = _remote_for(path)
        if remote:  # the store first: a file visible here is already there (remote.py)
            remote.upload(Path(tmp), path)
        os.replace(tmp, path)
        if remote:
            remote.stamp(path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def push_file(path: Path) -> None:
    """Upload a file written in place under an object-store root this process has opened."""
    if remote := _remote_for(path):
        remote.push(Path(path))


def atomic_write_bytes(path: Path, data: bytes, sync: bool = True) -> None:
    """Write `data` to `path` atomically; `sync=False` skips the fsync (safe against killed
    processes, not against a machine that loses power before the page cache is written)."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
