"""Nearest faces: exact search in DuckDB for small sets, a faiss index past `EXACT_MAX` embeddings.

The `embeddings` view types `vector` as FLOAT[128], so one SQL statement finds the nearest faces:

    SELECT frame_id, array_distance(vector, ?::FLOAT[128]) AS distance FROM embeddings
    ORDER BY distance LIMIT 8

That scan costs ~2-3.5 us an embedding on the loaded 2-core machine (bench/lookalike.py), fine to
~50k. Past it the index (faiss IVF-Flat: ~sqrt(n) k-means cells, 16 probed per query) answers in
~2 ms at 1M, ~90 ms with the join to the frames. It
is persisted under `dataset/_index/` with the list of shard files it covers; shards added since are
searched exactly beside it (the service keeps writing), and it is rebuilt once they hold more than
a tenth of its size or a covered shard changed or went away (a compaction rewrote it).
Candidates from either path are then joined to the `frames` view (kept frames only) and the
`--where` filter, and one row per sampled frame is kept (its `face` and `aligned_face` crops
share the frame).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from datetime import timezone
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UserError
from ..layout import EMBEDDING_INDEX, GLOBS, Storage, atomic_output, atomic_write_bytes
from .schema import EMBEDDING_DIM

EXACT_MAX = 50_000       # above this many embeddings, search through the index: DuckDB's exact scan
                         # passes ~100 ms there on the 2-core machine (bench/lookalike.py: 36 ms at 10k,
                         # 207 ms at 100k, 3.6 s at 1M; the index: 6, 14 and 89 ms)
STALE_SHARE = 0.1        # rebuild when shards added since the build hold more than this share
NPROBE = 16              # cells probed per query: recall@8 >= 0.99 on clustered embeddings (bench)
RESULT_COLUMNS = ("frame_id", "channel", "source_id", "segment_id", "timestamp", "distance")


def _files(storage: Storage) -> list[Path]:
    return sorted(storage.root.glob(GLOBS["embeddings"]))


def _stamp(path: Path) -> list:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def read_vectors(files: list[Path], model: str) -> tuple[list[str], np.ndarray]:
    """(frame ids, [n, 128] float32) of `model` in these shards, in file order."""
    ids: list[str] = []
    parts = []
    for path in files:
        t = pq.read_table(path, columns=["frame_id", "model", "vector"])
        t = t.filter(pa.compute.equal(t["model"], model))
        ids += t["frame_id"].to_pylist()
        parts.append(t["vector"].combine_chunks().values.to_numpy(zero_copy_only=False).reshape(-1, EMBEDDING_DIM)
                     if t.num_rows else np.zeros((0, EMBEDDING_DIM), np.float32))
    return ids, (np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros((0, EMBEDDING_DIM), np.float32))


def _faiss():
    try:
        import faiss
    except ImportError:
        raise UserError("faiss is not installed: pip install faiss-cpu==1.15.1 (or ./run setup)") from None
    return faiss


def build_ivf(vectors: np.ndarray, seed: int = 0):
    """A faiss IVF-Flat index over `vectors` (exact distances within the probed cells): about
    sqrt(n) cells, trained on at most 40 points a cell."""
    faiss = _faiss()
    n = len(vectors)
    nlist = int(min(4096, max(16, round(math.sqrt(n)))))
    quantizer = faiss.IndexFlatL2(EMBEDDING_DIM)
    index = faiss.IndexIVFFlat(quantizer, EMBEDDING_DIM, nlist)
    rng = np.random.default_rng(seed)
    train = vectors[rng.choice(n, min(n, 40 * nlist), replace=False)] if n > 40 * nlist else vectors
    index.cp.seed = seed
    index.train(np.ascontiguousarray(train, np.float32))
    index.add(np.ascontiguousarray(vectors, np.float32))
    index.nprobe = NPROBE
    return index


_LOADED: dict[tuple[str, int], tuple] = {}  # (meta file, its mtime) -> (meta, faiss index, ids)


class EmbeddingIndex:
    """The persisted index of one model: `dataset/_index/<model>.faiss`, `.ids.npy` and `.json`."""

    def __init__(self, storage: Storage, model: str):
        self.storage, self.model = storage, model
        folder = storage.root / EMBEDDING_INDEX
        self.path, self.ids_path, self.meta_path = (folder / f"{model}{ext}" for ext in (".faiss", ".ids.npy", ".json"))
        self.index = None
        self.ids: np.ndarray | None = None
        self.meta: dict = {}

    def load(self) -> bool:
        """Load the index if there is one (kept in this process for the next query); False if none."""
        if not (self.meta_path.exists() and self.path.exists() and self.ids_path.exists()):
            return False
        key = (str(self.meta_path), self.meta_path.stat().st_mtime_ns)
        if key not in _LOADED:
            meta = json.loads(self.meta_path.read_text())
            index = _faiss().read_index(str(self.path))
            index.nprobe = NPROBE
            _LOADED.clear()  # one index per process at a time: a million embeddings hold ~0.5 GB
            _LOADED[key] = (meta, index, np.load(self.ids_path))
        self.meta, self.index, self.ids = _LOADED[key]
        return True

    def build(self) -> dict:
        """Index every shard now present; returns the metadata (rows, seconds)."""
        started = time.perf_counter()
        files = _files(self.storage)
        stamps = {p.relative_to(self.storage.root).as_posix(): _stamp(p) for p in files}
        ids, vectors = read_vectors(files, self.model)
        if not ids:
            raise UserError("no embeddings to index yet: run `stream2dataset embed` first")
        index = build_ivf(vectors)
        faiss = _faiss()
        with atomic_output(self.path) as tmp:
            faiss.write_index(index, str(tmp))
        with atomic_output(self.ids_path) as tmp, open(tmp, "wb") as f:
            np.save(f, np.array(ids, dtype="S24"))
        self.meta = {"model": self.model, "rows": len(ids), "files": stamps, "nlist": index.nlist,
                     "seconds": round(time.perf_counter() - started, 2), "built": time.time()}
        atomic_write_bytes(self.meta_path, json.dumps(self.meta).encode())  # written last: the commit
        self.index, self.ids = index, np.array(ids, dtype="S24")
        _LOADED.clear()
        _LOADED[(str(self.meta_path), self.meta_path.stat().st_mtime_ns)] = (self.meta, self.index, self.ids)
        return self.meta

    def delta(self) -> tuple[list[Path], bool]:
        """(shards not in the index, whether the index is stale: a covered shard changed or is gone)."""
        files = {p.relative_to(self.storage.root).as_posix(): p for p in _files(self.storage)}
        covered = self.meta.get("files", {})
        changed = any(rel not in files or _stamp(files[rel]) != stamp for rel, stamp in covered.items())
        return [p for rel, p in sorted(files.items()) if rel not in covered], changed

    def search(self, vector: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
        dist, idx = self.index.search(np.asarray(vector, np.float32).reshape(1, -1), k)
        keep = idx[0] >= 0
        return [self.ids[i].decode() for i in idx[0][keep]], np.sqrt(np.maximum(dist[0][keep], 0))


def count_embeddings(con: duckdb.DuckDBPyConnection, model: str) -> int:
    return con.execute("SELECT count(*) FROM embeddings WHERE model = ?", [model]).fetchall()[0][0]


def _exact(con: duckdb.DuckDBPyConnection, source: str, vector: np.ndarray, model: str, k: int,
           params: list | None = None) -> tuple[list[str], np.ndarray]:
    rows = con.execute(
        f"SELECT frame_id, array_distance(CAST(vector AS FLOAT[{EMBEDDING_DIM}]), CAST(? AS FLOAT[{EMBEDDING_DIM}])) AS d "
        f"FROM {source} WHERE model = ? ORDER BY d LIMIT {int(k)}", [*(params or []), vector.tolist(), model]).fetchall()
    return [r[0] for r in rows], np.array([r[1] for r in rows], np.float64)


def _files_sql(files: list[Path]) -> str:
    return "read_parquet([" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in files) + "])"


def _resolve(con: duckdb.DuckDBPyConnection, ids: list[str], dists: np.ndarray, n: int, where: str | None) -> list[dict]:
    """The candidates that are kept frames matching `where`, one per sampled frame, nearest first."""
    if not ids:
        return []
    # the timestamp as naive UTC (the connection's time zone): a TIMESTAMPTZ into Python needs pytz
    cols = ", ".join(f"CAST(f.{c} AS TIMESTAMP)" if c == "timestamp" else f"f.{c}"
                     for c in RESULT_COLUMNS if c != "distance")
    rows = con.execute(
        f"SELECT {cols}, c.distance, f.kind FROM (SELECT unnest(?) AS frame_id, unnest(?) AS distance) c "
        f"JOIN frames f USING (frame_id) WHERE ({where or 'true'}) "
        "QUALIFY row_number() OVER (PARTITION BY f.segment_id, f.frame_index ORDER BY c.distance, f.kind) = 1 "
        f"ORDER BY c.distance, f.frame_id LIMIT {int(n)}", [ids, [float(d) for d in dists]]).fetchall()
    found = [dict(zip((*RESULT_COLUMNS, "kind"), r)) for r in rows]
    for r in found:
        r["timestamp"] = r["timestamp"].replace(tzinfo=timezone.utc) if r["timestamp"] else None
    return found


def nearest_frames(storage: Storage, con: duckdb.DuckDBPyConnection, vector: np.ndarray, model: str, n: int = 8,
                   where: str | None = None, use_index: bool | None = None,
                   notify=lambda line: None) -> tuple[list[dict], dict]:
    """The `n` kept frames nearest `vector` (one per sampled frame, `where` applied), and how they
    were found: {"method": "exact" | "index", "embeddings", "seconds", ...}. `use_index` None:
    the index past EXACT_MAX embeddings (built, or rebuilt when stale, here); True/False: force."""
    vector = np.asarray(vector, np.float32).reshape(-1)
    total = count_embeddings(con, model)
    if not total:
        raise UserError(f"the dataset has no {model} embeddings yet: set processing.embeddings and process "
                        "aligned_face or face crops, or run `stream2dataset embed`")
    index_path = use_index if use_index is not None else total > EXACT_MAX
    info: dict = {"embeddings": total, "method": "index" if index_path else "exact"}
    started = time.perf_counter()
    k = max(n * 8, 64)  # candidates: near-duplicates, a frame's second crop and the filter take some
    while True:
        if index_path:
            ids, dists = _index_candidates(storage, con, vector, model, k, info, notify)
        else:
            ids, dists = _exact(con, "embeddings", vector, model, k)
        found = _resolve(con, ids, dists, n, where)
        if len(found) >= n or len(ids) < k or k >= total:
            break
        k *= 8  # a selective filter: widen until n frames pass it or every embedding was a candidate
    info["seconds"] = time.perf_counter() - started
    info["candidates"] = k
    return found, info


def _index_candidates(storage: Storage, con, vector, model, k, info, notify) -> tuple[list[str], np.ndarray]:
    index = EmbeddingIndex(storage, model)
    if index.load():
        new, stale = index.delta()
    else:
        new, stale = [], True
    if stale or (new and sum(pq.read_metadata(p).num_rows for p in new) > STALE_SHARE * index.meta.get("rows", 0)):
        notify(f"building the lookalike index of {info['embeddings']:,} embeddings under {index.path.parent} ...")
        meta = index.build()
        notify(f"index built: {meta['rows']:,} embeddings in {meta['seconds']:.1f} s")
        new = []
    ids, dists = index.search(vector, k)
    if new:  # shards written since the build: exact over them, merged
        more, more_d = _exact(con, _files_sql(new), vector, model, k)
        ids, dists = ids + more, np.concatenate([dists, more_d])
        order = np.argsort(dists, kind="stable")[:k]
        ids, dists = [ids[i] for i in order], dists[order]
    info.update(index_rows=index.meta.get("rows"), index_delta_files=len(new))
    return ids, dists


def fingerprint(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]
