"""Identity embeddings for data already stored (`embed`), and lookalike search (`lookalike IMAGE`).

`embed_dataset` reads every frames shard, embeds the `aligned_face` and `face` crops that have no
embedding of the model yet and writes them as `embeddings` shards beside the frames' own partition
(`dataset/embeddings/channel=<c>/date=<d>/embed-<hash>-NNNN.parquet`, the name from the frame ids:
a re-run after a crash writes the same file again and skips what is done).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pyarrow as pa

from ..config import ProcessingConfig
from ..dataset.embeddings import fingerprint, nearest_frames
from ..dataset.schema import EMBEDDING_SCHEMA
from ..dataset.shards import read_shard, write_shards
from ..errors import UserError
from ..layout import GLOBS, Storage
from .detect import FaceDetector, align_face
from .identity import EMBEDDED_KINDS, FaceEmbedder

BATCH = 64


def decode_crop(data: bytes) -> np.ndarray:
    """A stored crop (PNG, JPEG or WebP bytes) as RGB (or RGBA) uint8."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError("the stored image does not decode")
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    return cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def _embedded_ids(storage: Storage, model: str) -> set[str]:
    done: set[str] = set()
    for path in sorted(storage.root.glob(GLOBS["embeddings"])):
        t = read_shard(path, columns=["frame_id", "model"])
        done.update(f for f, m in zip(t["frame_id"].to_pylist(), t["model"].to_pylist()) if m == model)
    return done


def embed_dataset(storage: Storage, cfg: ProcessingConfig, embedder: FaceEmbedder | None = None,
                  progress: Callable[[int, int], None] = lambda done, total: None) -> dict:
    """Embed every stored face crop that has no embedding yet; returns counts and timings."""
    storage.pull_dataset()
    started = time.perf_counter()
    embedder = embedder or FaceEmbedder()
    done = _embedded_ids(storage, embedder.model)
    shards = sorted(storage.root.glob(GLOBS["frames"]))
    todo: list[tuple[Path, list[int]]] = []
    for path in shards:
        t = read_shard(path, columns=["frame_id", "kind"])
        rows = [i for i, (f, k) in enumerate(zip(t["frame_id"].to_pylist(), t["kind"].to_pylist()))
                if k in EMBEDDED_KINDS and f not in done]
        if rows:
            todo.append((path, rows))
    total = sum(len(r) for _, r in todo)
    written, failed, files = 0, 0, []
    progress(0, total)
    for path, rows in todo:
        t = read_shard(path, columns=["frame_id", "kind", "image"]).take(rows)
        out: list[dict] = []
        for start in range(0, t.num_rows, BATCH):
            part = t.slice(start, BATCH)
            crops, kinds, ids = [], [], []
            for fid, kind, image in zip(part["frame_id"].to_pylist(), part["kind"].to_pylist(),
                                        part["image"].to_pylist()):
                try:
                    crops.append(decode_crop(image))
                except ValueError:
                    failed += 1
                    continue
                kinds.append(kind)
                ids.append(fid)
            vectors = embedder.embed(crops, kinds, cfg.face_margin)
            out += [{"frame_id": f, "model": embedder.model, "vector": v.tolist()} for f, v in zip(ids, vectors)]
            written += len(part)
            progress(written, total)
        if out:  # the frames' own partition: channel=<c>/date=<d>
            folder = storage.table_dir("embeddings") / path.parent.parent.name / path.parent.name
            files += write_shards(folder, f"embed-{fingerprint([r['frame_id'] for r in out])}", EMBEDDING_SCHEMA,
                                  [pa.Table.from_pylist(out, schema=EMBEDDING_SCHEMA)], target_mb=1e9)
    return {"embedded": written - failed, "already": len(done), "undecodable": failed, "files": [str(f) for f in files],
            "seconds": time.perf_counter() - started, "model": embedder.model}


def read_image(path: Path) -> np.ndarray:
    """An image file as RGB uint8; a one-line UserError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such image file")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise UserError(f"{path}: not an image OpenCV can read (PNG, JPEG, WebP, BMP, TIFF)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def aligned_query_face(path: Path, size: int = 256, detector: FaceDetector | None = None) -> np.ndarray:
    """The biggest face in an image file, aligned as an `aligned_face` crop of `size` pixels."""
    image = read_image(path)
    detector = detector or FaceDetector(min_score=0.5)
    faces = detector.detect(image)
    if not faces:
        raise UserError(f"{path}: no face found (mediapipe, score >= 0.5); use a photo with a frontal face")
    face = max(faces, key=lambda f: f.box[2] * f.box[3])
    return align_face(image, face, size)


def lookalike(storage: Storage, image: Path, cfg: ProcessingConfig, n: int = 8, where: str | None = None,
              out: Path | None = None, timeout_s: float | None = None, use_index: bool | None = None,
              notify=lambda line: None) -> dict:
    """The dataset frames whose faces are nearest the face in `image`; optionally a contact sheet
    (`out`: the query's aligned face, then the matches with their distance)."""
    from ..dataset.catalog import check_where, open_catalog
    from ..dataset.sandbox import time_limit

    if n < 1:
        raise UserError(f"--n {n}: ask for at least one face")
    where = check_where(where.strip(), tables=()) if where and where.strip() else None
    query = aligned_query_face(image, cfg.aligned_size)
    embedder = FaceEmbedder()
    vector = embedder.embed([query], "aligned_face")[0]
    root = storage.pull_dataset()
    with open_catalog(root) as con, time_limit(con, timeout_s, "lookalike"):
        import duckdb

        try:
            rows, info = nearest_frames(storage, con, vector, embedder.model, n, where, use_index, notify)
        except duckdb.InterruptException:
            raise
        except duckdb.Error as err:
            raise UserError(f"--where {where!r}: {str(err).splitlines()[0]}") from None
        images = dict(con.execute("SELECT frame_id, image FROM frames WHERE frame_id IN (SELECT unnest(?))",
                                  [[r["frame_id"] for r in rows]]).fetchall()) if out else {}
    result = {"query": str(image), "matches": rows, "model": embedder.model, **info}
    if out:
        result["sheet"] = str(write_sheet(query, rows, images, out))
    return result


def write_sheet(query: np.ndarray, rows: list[dict], images: dict[str, bytes], out: Path, width: int = 160) -> Path:
    """The query face, framed, then each match with its distance under it."""
    from ..dataset.preview import tile

    tiles = []
    for label, img in [("query", query)] + [(f"{r['distance']:.3f}", decode_crop(images[r["frame_id"]]))
                                             for r in rows if r["frame_id"] in images]:
        t = cv2.resize(np.ascontiguousarray(img[..., :3]), (width, width), interpolation=cv2.INTER_AREA)
        t = np.concatenate([t, np.full((22, width, 3), 24, np.uint8)])
        cv2.putText(t, label, (6, width + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (255, 200, 0) if label == "query" else (230, 230, 230), 1, cv2.LINE_AA)
        if label == "query":
            cv2.rectangle(t, (0, 0), (width - 1, width - 1), (255, 200, 0), 3)
        tiles.append(t)
    return tile(tiles, out, columns=min(len(tiles), 9), width=width)
