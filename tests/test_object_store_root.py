"""The whole service on an object-store root (s3:// on a local moto server): record from live HLS,
process while up (with the dedup pass and retention), then read, snapshot, train and sample from a
node whose working copy starts empty. The bucket is the only thing the steps share."""

import shutil

import pytest
import yaml

from stream2dataset.config import load_config
from stream2dataset.dataset.catalog import query
from stream2dataset.dataset.snapshots import create_snapshot
from stream2dataset import service
from stream2dataset.dataset.manifest import read_segments
from stream2dataset.dataset.manifest import pending_segments
from stream2dataset.processing.pipeline import process
from stream2dataset.layout import Storage
from stream2dataset.training.runs import checkpoint_steps, read_metrics
from stream2dataset.training.sample import sample_diffusion
from stream2dataset.training.trainer import train

from .conftest import wait_for, write_config
from .test_remote import objects
from .training.conftest import tiny

pytestmark = pytest.mark.slow


@pytest.fixture
def running(ray_local):
    yield
    service.down()


def count(storage: Storage, sql: str) -> int:
    return query(storage.pull_dataset(), sql)[0].column(0)[0].as_py()


def test_record_process_query_train_on_an_s3_root(tmp_path, s3, hls, footage, ray_local, running):
    url = hls.add_stream("cam", footage)
    cfg_path = write_config(tmp_path, [{"source": url, "name": "cam"}],
                            processing={"auto": True, "interval_s": 1, "outputs": ["facecam"], "sample_fps": 4,
                                        "min_crop_px": 32, "dedup_distance": 0,
                                        "transforms": [{"resize": {"size": 32, "mode": "pad"}}]})
    doc = yaml.safe_load(cfg_path.read_text())
    doc["storage"] = {"root": f"{s3}/data", "cache": str(tmp_path / "cache" / "{node}")}
    doc["retention"] = {"raw_keep_hours": 0}  # processed raw files leave the bucket too
    cfg_path.write_text(yaml.safe_dump(doc))
    cfg = load_config(cfg_path)
    storage = Storage.of(cfg)
    assert storage.uri == f"{s3}/data" and storage.root.parent.parent == tmp_path / "cache"

    service.up(cfg_path)
    wait_for(lambda: "cross-segment duplicates" in service.status()["processing"]["last"], 120, interval=0.5,
             what="a processing round while up, then the dedup pass")
    service.down()
    left = pending_segments(storage)  # recorded after the service's last round
    process(cfg, left)

    keys = objects(s3)
    assert not [k for k in keys if k.rsplit("/", 1)[1].startswith(".")], "a temp object was left behind"
    rows = read_segments(storage).to_pylist()
    assert len(rows) >= 3 and {f"data/manifests/segments/cam/{r['segment_id']}.parquet" for r in rows} <= set(keys)
    assert {f"data/dataset/_done/{r['segment_id']}" for r in rows} <= set(keys)  # every segment processed once
    raw = {k for k in keys if k.startswith("data/raw/")}  # retention removed the processed ones from the store
    assert raw == {f"data/{s['key']}" for s in left} and len(raw) < len(rows)
    assert not [k for k in keys if "/_staging/" in k or "/_commits/" in k]  # commits cleaned up
    assert "data/dataset/_dedup/index.json" in keys and "data/catalog.duckdb" not in keys
    assert [k for k in keys if k.startswith("data/dataset/dups/links-")]  # the dedup index's links files
    frames = count(storage, "SELECT count(*) FROM frames_all")
    assert frames > 0
    assert process(cfg, pending_segments(storage))["segments"] == 0  # a re-run adds nothing

    # Another node: an empty working copy sees the same dataset, snapshots it and trains on it.
    shutil.rmtree(tmp_path / "cache")
    fresh = Storage.of(cfg)
    assert not fresh.root.exists()
    assert count(fresh, "SELECT count(*) FROM frames_all") == frames
    assert count(fresh, "SELECT count(*) FROM segments") == len(rows)
    create_snapshot(fresh, "s3-v1")
    assert "data/snapshots/s3-v1.json" in objects(s3)
    folder = train(fresh, "diffusion", "s3-v1", tiny(steps=4, checkpoint_every=2, sample_every=4, workers=1,
                                                     batch_size=2, log_every=1), run="on-s3")
    keys = objects(s3)
    assert {"data/runs/on-s3/run.json", "data/runs/on-s3/metrics.csv"} <= set(keys)
    assert checkpoint_steps(fresh, "on-s3") == [2, 4]  # Ray Train wrote its checkpoints to the bucket
    assert [int(r["step"]) for r in read_metrics(folder)] == [1, 2, 3, 4]

    shutil.rmtree(tmp_path / "cache")  # sampling on yet another node: the newest checkpoint comes down
    result = sample_diffusion(Storage.of(cfg), "on-s3", n=4, steps=2, memorisation=False, out=tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 0 and result
