"""An object-store storage root (s3://, gs://, ... through pyarrow's filesystems) and this node's
working copy of it.

The object store is the source of truth; every process works on local files under its node's copy,
so the readers and writers of the rest of the code (PyAV, DuckDB, Parquet, Ray Train) need nothing
new. Three rules keep the copies honest:

- `atomic_output` uploads a file before it renames it into place locally: a file a local reader
  can see is already in the store. Uploads go to a hidden temp key and are then moved (a server-side
  copy): a killed upload leaves only a hidden key, never a partial object under the real name.
- Readers `pull` a prefix before they list it (new and changed objects are downloaded; with
  `mirror`, local files the store no longer has are removed) or `fetch` the one file they need.
- Deletes go to the store first (`delete`), then to the local copy.

Hidden names (`.x`) and the node's own files (`catalog.duckdb`, `.cache/`) never travel.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from functools import lru_cache
from pathlib import Path

from pyarrow import fs as pafs

CHUNK = 8 << 20


@lru_cache(maxsize=None)
def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """One filesystem per URI per process (S3 clients are costly to make)."""
    return pafs.FileSystem.from_uri(uri)


class Remote:
    def __init__(self, uri: str, local: Path, local_only: tuple[str, ...] = ()):
        """`local_only`: top-level names under the root that stay on this node (layout.py names them)."""
        self.uri, self.local, self.local_only = uri, local, local_only
        self.fs, self.base = _filesystem(uri)

    # names ---------------------------------------------------------------------------------
    def rel(self, path: Path) -> str | None:
        """`path`'s key below the root, or None for files that stay on this node."""
        try:
            rel = Path(path).relative_to(self.local)
        except ValueError:
            return None
        if not rel.parts or rel.parts[0] in self.local_only or any(p.startswith(".") for p in rel.parts):
            return None
        return rel.as_posix()

    def key(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    # writes --------------------------------------------------------------------------------
    def upload(self, src: Path, dest: Path) -> None:
        """Upload the local file `src` as `dest`'s object (nothing if `dest` stays local)."""
        rel = self.rel(dest)
        if rel is None:
            return
        final = self.key(rel)
        parent, _, name = final.rpartition("/")
        tmp = f"{parent}/.{name}.{uuid.uuid4().hex[:12]}.tmp"
        with open(src, "rb") as f, self.fs.open_output_stream(tmp) as out:
            while chunk := f.read(CHUNK):
                out.write(chunk)
        self.fs.move(tmp, final)

    def push(self, path: Path) -> None:
        """Upload a local file written in place as its own object, and stamp it."""
        self.upload(path, path)
        self.stamp(path)

    def stamp(self, path: Path) -> None:
        """Give a local file its object's modification time, so `pull` sees it as current."""
        rel = self.rel(path)
        if rel is not None:
            info = self.fs.get_file_info(self.key(rel))
            if info.mtime_ns is not None:
                os.utime(path, ns=(info.mtime_ns, info.mtime_ns))

    def delete(self, path: Path) -> None:
        """Delete a file or a folder from the store (missing is fine)."""
        rel = self.rel(path)
        if rel is None:
            return
        info = self.fs.get_file_info(self.key(rel))
        if info.type == pafs.FileType.File:
            self.fs.delete_file(info.path)
        elif info.type == pafs.FileType.Directory:
            self.fs.delete_dir(info.path)

    # reads ---------------------------------------------------------------------------------
    def listing(self, rel: str) -> dict[str, pafs.FileInfo]:
        """Every visible object under `rel`, by its key below the root."""
        start = len(self.base) + 1
        first = self.fs.get_file_info(self.key(rel))
        if first.type != pafs.FileType.Directory:  # one file, or nothing
            infos = [first]
        else:
            infos = self.fs.get_file_info(pafs.FileSelector(self.key(rel), recursive=True))
        out = {}
        for info in infos:
            if info.type == pafs.FileType.File and self.rel(self.local / info.path[start:]) is not None:
                out[info.path[start:]] = info
        return out

    def exists(self, path: Path) -> bool:
        rel = self.rel(path)
        return rel is not None and self.fs.get_file_info(self.key(rel)).type == pafs.FileType.File

    def download(self, rel: str, info: pafs.FileInfo | None = None, dest: Path | None = None) -> Path:
        """Copy one object into the local copy (or to `dest`), atomically, with the object's mtime."""
        dest = dest or self.local / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as f, self.fs.open_input_stream(self.key(rel)) as src:
                while chunk := src.read(CHUNK):
                    f.write(chunk)
            mtime = (info or self.fs.get_file_info(self.key(rel))).mtime_ns
            if mtime is not None:
                os.utime(tmp, ns=(mtime, mtime))
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return dest

    def pull(self, rel: str, mirror: bool = False) -> int:
        """Bring the local copy of `rel` up to date; returns how many files were downloaded.

        `mirror` also removes local files that the store no longer has: only for prefixes whose
        files are written through `atomic_output` (uploaded before they appear locally)."""
        remote = self.listing(rel)
        fetched = 0
        for name, info in remote.items():
            local = self.local / name
            try:
                st = local.stat()
                current = st.st_size == info.size and st.st_mtime_ns // 10**9 >= (info.mtime_ns or 0) // 10**9
            except FileNotFoundError:
                current = False
            if not current:
                self.download(name, info)
                fetched += 1
        folder = self.local / rel
        if mirror and folder.is_dir():
            for path in [p for p in folder.rglob("*") if p.is_file()]:
                name = self.rel(path)
                if name is not None and name not in remote:
                    path.unlink(missing_ok=True)
        return fetched
