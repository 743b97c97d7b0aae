"""The shards read as they are in pandas, pyarrow, Ray Data and Hugging Face `datasets`.

The rows are real: demo footage processed by the pipeline on a local Ray.
"""

import io

import av
import pytest

from stream2dataset.config import parse_config
from stream2dataset.processing.pipeline import file_segments, process
from stream2dataset.layout import Storage


@pytest.fixture(scope="module")
def processed(tmp_path_factory, footage, ray_local):
    tmp = tmp_path_factory.mktemp("loaders")
    folder = tmp / "streamer"
    folder.mkdir()
    segs = sorted(footage.glob("seg*.ts"))
    for i, part in enumerate((segs[:3], segs[3:6])):
        (folder / f"part{i}.ts").write_bytes(b"".join(p.read_bytes() for p in part))
    cfg = parse_config({"storage": {"root": str(tmp / "data")},
                        "processing": {"sample_fps": 2, "min_crop_px": 32, "dedup_distance": 0}})
    report = process(cfg, file_segments([folder]))
    assert report["kept"] > 5
    return Storage(cfg.storage.root).table_dir("frames")


def decodes(image: bytes) -> bool:
    with av.open(io.BytesIO(image)) as c:
        return next(c.decode(video=0)).width == 256


def test_pandas_reads_the_folder(processed):
    import pandas as pd

    df = pd.read_parquet(processed)
    assert len(df) > 5 and set(df["channel"].astype(str)) == {"streamer"}
    assert df["frame_id"].is_unique and decodes(df["image"].iloc[0])
    assert "date" in df.columns  # the hive folder comes along


def test_pyarrow_reads_the_folder_and_single_files(processed):
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    table = pq.read_table(processed, columns=["frame_id", "channel", "phash"])
    assert table.num_rows > 5
    # Every column is in the files: no partitioning needed (with it, channel must be a dictionary).
    assert ds.dataset(processed, format="parquet").count_rows() == table.num_rows
    hive = ds.dataset(processed, format="parquet", partitioning=ds.HivePartitioning.discover(infer_dictionary=True))
    assert hive.to_table(filter=ds.field("channel") == "streamer").num_rows == table.num_rows
    one = next(processed.rglob("*.parquet"))
    assert pq.read_table(one).column("channel")[0].as_py() == "streamer"


def test_ray_data_reads_the_folder(processed, ray_local):
    ds = ray_local.data.read_parquet(str(processed), columns=["frame_id", "image", "kind"])
    rows = ds.take_all()
    assert len(rows) > 5 and {r["kind"] for r in rows} == {"facecam"} and decodes(rows[0]["image"])


def test_hugging_face_datasets_parquet_loader(processed, tmp_path):
    import datasets

    hf = datasets.load_dataset("parquet", data_files=str(processed / "*" / "*" / "*.parquet"), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert hf.num_rows > 5 and hf[0]["channel"] == "streamer" and decodes(hf[0]["image"])
