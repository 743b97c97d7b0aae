"""Benchmark: lookalike search at growing sizes, and identity accuracy on real faces.

Targets (issue 18): a lookalike query over 1M embeddings under 100 ms with the index built once,
the build time stated; the size past which the index beats DuckDB's exact scan.

Search (`--sizes`): a storage root per size with that many frame rows (no images) and their
embeddings, shaped like dlib's: identities of 50 frames each, centres spread so two people lie
~0.9 apart and one person's frames ~0.4 apart (as measured on carphone and Megamind). Per size:
the exact path (DuckDB `array_distance` over the `embeddings` view, then the join to `frames`),
the index build (faiss IVF-Flat, persisted under dataset/_index/), the indexed query end to end
(`nearest_frames`: faiss, then the same join; the index loaded once) and faiss's search alone, each
the median of `--queries` queries (new vectors near a random identity); recall@8 of the index
against the exact answer.

Identity (`--identity`, default on): the three people of tests/faces.py (carphone's man, Megamind's
Roxanne and Hal) processed into aligned_face crops with embeddings; each query photo (a frame of
another shot, not in the dataset) must have its top 5 all of its own person.

    .venv/bin/python bench/lookalike.py --sizes 10000,100000,1000000 --queries 20
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/faces.py: the labelled footage

from stream2dataset.dataset.catalog import open_catalog  # noqa: E402
from stream2dataset.dataset.embeddings import EXACT_MAX, EmbeddingIndex, nearest_frames  # noqa: E402
from stream2dataset.dataset.schema import EMBEDDING_SCHEMA, FRAME_SCHEMA  # noqa: E402
from stream2dataset.layout import Storage  # noqa: E402

MODEL = "dlib_resnet_v1"
PER_ID = 50
CENTRE_SD, FRAME_SD = 0.9 / np.sqrt(2 * 128), 0.4 / np.sqrt(2 * 128)


def make_root(root: Path, n: int, seed: int = 0) -> np.ndarray:
    """n frame rows and their embeddings under `root`; returns the identity centres."""
    rng = np.random.default_rng(seed)
    ids = max(1, n // PER_ID)
    centres = rng.normal(0, CENTRE_SD, (ids, 128)).astype(np.float32)
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    chunk = 200_000
    for part, start in enumerate(range(0, n, chunk)):
        m = min(chunk, n - start)
        idx = np.arange(start, start + m)
        person = idx // PER_ID
        vec = centres[np.minimum(person, ids - 1)] + rng.normal(0, FRAME_SD, (m, 128)).astype(np.float32)
        fids = [f"{i:024x}" for i in idx]
        frames = pa.table({
            "frame_id": fids, "channel": pa.array(["bench"] * m).dictionary_encode().cast(FRAME_SCHEMA.field("channel").type),
            "platform": ["file"] * m, "segment_id": [f"file.bench.p{p}" for p in person], "source_id": [f"p{p}" for p in person],
            "title": [None] * m, "timestamp": [t0 + timedelta(seconds=int(i)) for i in idx],
            "frame_index": (idx % PER_ID).astype(np.int32), "kind": ["aligned_face"] * m,
        })
        frames = frames.cast(pa.schema([FRAME_SCHEMA.field(c) for c in frames.column_names]))
        for field in FRAME_SCHEMA:  # the other columns, empty
            if field.name not in frames.column_names:
                frames = frames.append_column(field, pa.nulls(m, field.type))
        frames = frames.select(FRAME_SCHEMA.names)
        emb = pa.table({"frame_id": fids, "model": [MODEL] * m,
                        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vec.reshape(-1)), 128)}, schema=EMBEDDING_SCHEMA)
        for table, t in (("frames", frames), ("embeddings", emb)):
            folder = root / "dataset" / table / "channel=bench" / "date=2026-01-01"
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(t, folder / f"bench-{part:04d}.parquet", row_group_size=65536)
    return centres


def queries(centres: np.ndarray, k: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (centres[rng.integers(0, len(centres), k)] + rng.normal(0, FRAME_SD, (k, 128))).astype(np.float32)


def ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def search_bench(base: Path, n: int, nq: int, console: Console) -> dict:
    root = base / f"n{n}"
    shutil.rmtree(root, ignore_errors=True)
    t = time.perf_counter()
    centres = make_root(root, n)
    made = time.perf_counter() - t
    storage = Storage(root)
    qs = queries(centres, nq)
    out = {"n": n, "write_s": made}
    with open_catalog(root) as con:
        exact, found = [], []
        for q in qs[: max(1, min(nq, 5 if n >= 1_000_000 else nq))]:
            t = time.perf_counter()
            rows, _ = nearest_frames(storage, con, q, MODEL, 8, use_index=False)
            exact.append(time.perf_counter() - t)
            found.append([r["frame_id"] for r in rows])
        out["exact_ms"] = ms(exact)
        index = EmbeddingIndex(storage, MODEL)
        t = time.perf_counter()
        meta = index.build()
        out["build_s"] = time.perf_counter() - t
        out["nlist"] = meta["nlist"]
        out["index_mb"] = index.path.stat().st_size / 1e6
        indexed, raw, recall = [], [], []
        for i, q in enumerate(qs):
            t = time.perf_counter()
            rows, info = nearest_frames(storage, con, q, MODEL, 8, use_index=True)
            indexed.append(time.perf_counter() - t)
            t = time.perf_counter()
            index.search(q, 64)
            raw.append(time.perf_counter() - t)
            if i < len(found):
                recall.append(len(set(found[i]) & {r["frame_id"] for r in rows}) / len(found[i]))
        out.update(index_ms=ms(indexed), faiss_ms=ms(raw), recall=float(np.mean(recall)))
    shutil.rmtree(root, ignore_errors=True)
    console.print(f"  {n:,}: done", style="dim")
    return out


def identity_bench(base: Path, console: Console) -> dict:
    import yaml

    from stream2dataset import cluster
    from stream2dataset.config import load_config
    from stream2dataset.processing.lookalike import lookalike
    from stream2dataset.processing.pipeline import file_segments, process_inline
    from tests.faces import PEOPLE, astronaut_png, identity_footage

    cluster.drop_native_logs()  # mediapipe's LiteRT notes on fd 2, once per detector
    folder = base / "identity"
    videos, photos = identity_footage(folder)
    (folder / "stream2dataset.yaml").write_text(yaml.safe_dump({
        "storage": {"root": "data"},
        "processing": {"auto": False, "outputs": ["aligned_face"], "sample_fps": 6, "min_crop_px": 32,
                       "dedup_distance": 0, "embeddings": True}}))
    cfg = load_config(folder / "stream2dataset.yaml")
    t = time.perf_counter()
    report = process_inline(cfg, file_segments([videos]))
    seconds = time.perf_counter() - t
    storage = Storage.of(cfg)
    rows = []
    for person, paths in photos.items():
        for path in paths:
            r = lookalike(storage, path, cfg.processing, n=5)
            got = [m["source_id"].removesuffix(".mp4") for m in r["matches"]]
            rows.append({"person": person, "query": path.name, "top5_all_p": got == [person] * 5,
                         "nearest": r["matches"][0]["distance"],
                         "nearest_other": min((m["distance"] for m in lookalike(
                             storage, path, cfg.processing, n=1, where=f"source_id != '{person}.mp4'")["matches"]),
                             default=float("nan"))})
    stranger = lookalike(storage, astronaut_png(folder), cfg.processing, n=1)["matches"][0]["distance"]
    return {"people": len(PEOPLE), "frames": report["kept"], "process_s": seconds,
            "embed_s": report["seconds"].get("embed", 0.0), "rows": rows, "stranger": stranger}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="embeddings per root, comma-separated")
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--identity", action=argparse.BooleanOptionalAction, default=True,
                    help="also the identity accuracy on real faces (~1-2 min)")
    ap.add_argument("--root", type=Path, default=None, help="work folder (default: a temp folder, removed)")
    args = ap.parse_args()
    console = Console()
    base = args.root or Path(tempfile.mkdtemp(prefix="s2d-lookalike-"))
    base.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    console.print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
                  f"{load[0]:.1f} at start; exact search up to EXACT_MAX = {EXACT_MAX:,} embeddings")
    try:
        results = [search_bench(base, int(n), args.queries, console) for n in args.sizes.split(",")]
        table = Table(title="lookalike search: 8 nearest of n embeddings (median per query)")
        for col in ("embeddings", "exact (DuckDB) ms", "index build s", "cells", "index MB", "indexed query ms",
                    "faiss search ms", "recall@8"):
            table.add_column(col, justify="right")
        for r in results:
            table.add_row(f"{r['n']:,}", f"{r['exact_ms']:.1f}", f"{r['build_s']:.1f}", str(r["nlist"]),
                          f"{r['index_mb']:.0f}", f"{r['index_ms']:.1f}", f"{r['faiss_ms']:.2f}", f"{r['recall']:.3f}")
        console.print(table)
        if args.identity:
            ident = identity_bench(base, console)
            table = Table(title=f"identity: {ident['people']} people, {ident['frames']} aligned_face frames in the "
                                f"dataset (processing {ident['process_s']:.0f} s, of it embedding {ident['embed_s']:.0f} s)")
            for col in ("person", "query (not in the dataset)", "top 5 all P", "nearest", "nearest other person"):
                table.add_column(col)
            for r in ident["rows"]:
                table.add_row(r["person"], r["query"], "yes" if r["top5_all_p"] else "NO", f"{r['nearest']:.3f}",
                              f"{r['nearest_other']:.3f}")
            console.print(table)
            ok = sum(r["top5_all_p"] for r in ident["rows"])
            console.print(f"top-5 all the query's person: {ok}/{len(ident['rows'])}; a stranger (astronaut) is "
                          f"{ident['stranger']:.3f} from the nearest face (dlib's same-person threshold: 0.6)")
    finally:
        if args.root is None:
            shutil.rmtree(base, ignore_errors=True)
    load = os.getloadavg()
    console.print(f"load average {load[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
