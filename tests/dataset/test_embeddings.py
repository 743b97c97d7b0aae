"""Nearest-face search without the face model: dlib-shaped embeddings (identities of 50 frames) with
frame rows, searched exactly in DuckDB and through the persisted faiss index, which covers the shards
written since its build by an exact search beside it and is rebuilt when a covered shard changes."""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from stream2dataset.dataset.catalog import open_catalog
from stream2dataset.dataset.embeddings import EmbeddingIndex, nearest_frames
from stream2dataset.errors import UserError
from stream2dataset.layout import Storage

_spec = importlib.util.spec_from_file_location("bench_lookalike", Path(__file__).parents[2] / "bench" / "lookalike.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.fixture
def root(tmp_path):
    centres = bench.make_root(tmp_path / "data", 3000)
    return Storage(tmp_path / "data"), centres


def test_exact_and_indexed_agree_and_the_index_persists(root):
    storage, centres = root
    qs = bench.queries(centres, 5)
    with open_catalog(storage.root) as con:
        for q in qs:
            exact, how = nearest_frames(storage, con, q, bench.MODEL, 8, use_index=False)
            assert how["method"] == "exact" and len(exact) == 8
            person = {r["source_id"] for r in exact}
            assert len(person) == 1  # 8 nearest: one identity's frames
            indexed, how = nearest_frames(storage, con, q, bench.MODEL, 8, use_index=True)
            assert how["method"] == "index"
            assert [r["frame_id"] for r in indexed] == [r["frame_id"] for r in exact]
            assert [r["distance"] for r in indexed] == pytest.approx([r["distance"] for r in exact], abs=1e-4)
    meta = EmbeddingIndex(storage, bench.MODEL)
    assert meta.load() and meta.meta["rows"] == 3000


def test_where_filter_and_sql(root):
    storage, centres = root
    q = bench.queries(centres, 1)[0]
    with open_catalog(storage.root) as con:
        rows, _ = nearest_frames(storage, con, q, bench.MODEL, 4, where="source_id = 'p7'")
        assert {r["source_id"] for r in rows} == {"p7"} and len(rows) == 4
        sql = con.execute("SELECT frame_id FROM embeddings ORDER BY array_distance(vector, ?::FLOAT[128]) LIMIT 3",
                          [q.tolist()]).fetchall()
        best, _ = nearest_frames(storage, con, q, bench.MODEL, 3)
    assert [r[0] for r in sql] == [r["frame_id"] for r in best]


def test_new_shards_are_searched_beside_the_index_and_a_changed_one_rebuilds_it(root, tmp_path):
    storage, centres = root
    with open_catalog(storage.root) as con:
        nearest_frames(storage, con, centres[0], bench.MODEL, 1, use_index=True)
    built = EmbeddingIndex(storage, bench.MODEL)
    built.load()
    # one more identity in a new shard (fewer rows than STALE_SHARE of the index: no rebuild)
    extra = tmp_path / "extra"
    new_centres = bench.make_root(extra, 50, seed=9)
    for table in ("frames", "embeddings"):
        src = next((extra / "dataset" / table).rglob("*.parquet"))
        t = pq.read_table(src)
        ids = [f"ff{i:022x}" for i in range(t.num_rows)]
        t = t.set_column(0, "frame_id", __import__("pyarrow").array(ids))
        if table == "frames":
            t = t.set_column(t.schema.get_field_index("source_id"), "source_id",
                             __import__("pyarrow").array(["newcomer"] * t.num_rows))
        pq.write_table(t, storage.root / "dataset" / table / "channel=bench" / "date=2026-01-01" / "late-0000.parquet")
    with open_catalog(storage.root) as con:
        rows, how = nearest_frames(storage, con, new_centres[0], bench.MODEL, 3, use_index=True)
    assert how["index_delta_files"] == 1 and how["index_rows"] == 3000
    assert {r["source_id"] for r in rows} == {"newcomer"}
    # a covered shard rewritten (a compaction): the index is rebuilt over everything
    first = sorted((storage.root / "dataset/embeddings").rglob("bench-0000.parquet"))[0]
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10**9))
    with open_catalog(storage.root) as con:
        _, how = nearest_frames(storage, con, new_centres[0], bench.MODEL, 3, use_index=True)
    assert how["index_delta_files"] == 0 and how["index_rows"] == 3050


def test_no_embeddings_is_a_user_error(tmp_path):
    bench.make_root(tmp_path / "data", 100)
    for p in (tmp_path / "data" / "dataset" / "embeddings").rglob("*.parquet"):
        p.unlink()
    storage = Storage(tmp_path / "data")
    with open_catalog(storage.root) as con, pytest.raises(UserError, match="no dlib_resnet_v1 embeddings.*embed"):
        nearest_frames(storage, con, np.zeros(128, np.float32), bench.MODEL, 3)


def test_embeddings_config_needs_a_face_output():
    from stream2dataset.config import parse_config

    assert parse_config({"processing": {"embeddings": True, "outputs": ["facecam", "face"]}}).processing.embeddings
    with pytest.raises(UserError, match="embeddings: true needs aligned_face or face in outputs"):
        parse_config({"processing": {"embeddings": True}})
