"""`snapshot export`: the rows a snapshot selects, as WebDataset tars, Parquet and a Hugging Face folder."""

import io
import json
from datetime import timedelta

import cv2
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from stream2dataset.dataset import clip_id, commit_segments, frame_id, stage_rows
from stream2dataset.dataset.dedup_pass import dedup_dataset
from stream2dataset.dataset.export import export_snapshot
from stream2dataset.dataset.snapshots import load_snapshot, open_snapshot
from stream2dataset.errors import UserError
from stream2dataset.layout import Storage

from .test_writer import T0

BASE = 0x0F0F_1234_5678_9ABC


def encoded(seed: int, fmt: str = "png") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    return cv2.imencode({"png": ".png", "jpeg": ".jpg"}[fmt], pixels)[1].tobytes()


def make(storage: Storage, sid: str, channel: str, hashes: list[int], offset_s: int, fmt: str = "png",
         dup_of: dict[int, str] | None = None, clip: bool = False) -> list[str]:
    rows = [{"frame_id": frame_id(sid, i, "facecam"), "channel": channel, "platform": "twitch", "segment_id": sid,
             "timestamp": T0 + timedelta(seconds=offset_s + i), "frame_index": i, "kind": "facecam", "width": 16,
             "height": 12, "image": encoded(offset_s + i, fmt), "image_format": fmt, "crop_box": [1, 2, 16, 12],
             "detector": "mediapipe", "score": 0.9, "phash": h, "dup_of": (dup_of or {}).get(i),
             "transforms": ["crop", "resize(size=16)"], "config_hash": "abc"} for i, h in enumerate(hashes)]
    stage_rows(storage, "frames", sid, f"{sid}.w0000", rows, T0.timestamp())
    if clip:  # the segment's first three frames as a clip
        stage_rows(storage, "clips", sid, f"{sid}.w0000", [{
            "clip_id": clip_id(sid, 0, "facecam"), "channel": channel, "platform": "twitch", "segment_id": sid,
            "kind": "facecam", "start": T0 + timedelta(seconds=offset_s), "fps": 2.0, "frame_count": 3, "width": 16,
            "height": 12, "frames": [r["image"] for r in rows[:3]], "image_format": fmt, "crop_box": [1, 2, 16, 12],
            "motion": 0.5, "transforms": ["crop"], "config_hash": "abc"}], T0.timestamp())
    commit_segments(storage, {sid: {}})
    return [r["frame_id"] for r in rows]


@pytest.fixture
def root(tmp_path):
    """alice (6 frames, one jpeg) and bob (4 frames: one a near-duplicate of alice's first across
    segments, one marked in its segment), a clip of 3 frames in alice.s1 and in bob.s1."""
    (tmp_path / "stream2dataset.yaml").write_text("storage:\n  root: data\n")
    storage = Storage(tmp_path / "data")
    far = [0x1111_2222_3333_4444 * (i + 1) & (2**64 - 1) for i in range(8)]
    make(storage, "twitch.alice.s1", "alice", [BASE, *far[:4]], 0, clip=True)
    make(storage, "twitch.alice.s2", "alice", [far[4]], 50, fmt="jpeg")
    make(storage, "twitch.bob.s1", "bob", [BASE ^ 0b101, far[5], far[6], far[7]], 100, dup_of={3: "in-segment"},
         clip=True)
    assert dedup_dataset(storage, radius=4)["linked"] == 1
    return storage.root


def selected(root, name: str) -> list[str]:
    """The ids the snapshot's `frames` view shows, in the export's order (the pinned files', row by row)."""
    shown = {r[0] for r in open_snapshot(Storage(root), name).execute("SELECT frame_id FROM frames").fetchall()}
    files = load_snapshot(Storage(root), name)["files"]["frames"]
    ids = [i for e in files for i in pq.read_table(root / e["path"], columns=["frame_id"])["frame_id"].to_pylist()]
    assert len(ids) == len(set(ids))
    return [i for i in ids if i in shown]


def source_images(root) -> dict[str, tuple[bytes, str]]:
    con = open_snapshot(Storage(root), "all")
    return {r[0]: (r[1], r[2]) for r in con.execute("SELECT frame_id, image, image_format FROM frames_all").fetchall()}


def test_export_each_format_reads_back(root, cli, tmp_path):
    assert cli(root, "snapshot", "all").returncode == 0  # the old spelling still creates a snapshot
    ids = selected(root, "all")
    assert len(ids) == 8 and len(set(ids)) == 8  # 10 frames, 2 duplicates left out
    images = source_images(root)

    # WebDataset: tars of KEY.png|jpg + KEY.json, read back by webdataset itself.
    import webdataset as wds

    done = cli(root, "snapshot", "export", "all", "--format", "webdataset", str(tmp_path / "wds"), "--shard-size", "3")
    assert done.returncode == 0, done.stderr
    assert "8 frames as webdataset in 3 file(s)" in done.stdout
    stats = json.loads((tmp_path / "wds" / "_stats.json").read_text())
    assert [s["path"] for s in stats["shards"]] == ["00000.tar", "00001.tar", "00002.tar"]
    assert [s["rows"] for s in stats["shards"]] == [3, 3, 2] and stats["rows"] == 8
    urls = [str(tmp_path / "wds" / s["path"]) for s in stats["shards"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))
    assert [s["json"]["frame_id"] for s in samples] == ids
    for s in samples:
        img, fmt = images[s["json"]["frame_id"]]
        pil = s["png"] if fmt == "png" else s["jpg"]
        assert isinstance(pil, Image.Image) and pil.size == (16, 12)
        assert np.array_equal(np.asarray(pil), cv2.cvtColor(cv2.imdecode(np.frombuffer(img, np.uint8), 1),
                                                            cv2.COLOR_BGR2RGB))
        meta = s["json"]
        assert meta["timestamp"].startswith("2026-03-0") and meta["crop_box"] == [1, 2, 16, 12]
        assert meta["channel"] in ("alice", "bob") and isinstance(meta["phash"], int) and "image" not in meta
    raw = list(wds.WebDataset(urls, shardshuffle=False))  # undecoded: the stored bytes exactly
    assert all((r.get("png") or r.get("jpg")) == images[json.loads(r["json"])["frame_id"]][0] for r in raw)
    assert sum("jpg" in r for r in raw) == 1

    # Parquet: plain files pandas reads, the image bytes as stored.
    assert cli(root, "snapshot", "export", "all", "--format", "parquet", str(tmp_path / "pq")).returncode == 0
    df = pd.read_parquet(tmp_path / "pq")
    assert list(df["frame_id"]) == ids and all(df["image"].map(bytes) == df["frame_id"].map(lambda i: images[i][0]))
    assert set(df["channel"]) == {"alice", "bob"} and df["dup_of"].isna().all()

    # Hugging Face: load_dataset(OUT) reads split train with the image decoded as a PIL image.
    import datasets

    assert cli(root, "snapshot", "export", "all", "-f", "hf", str(tmp_path / "hf"), "--shard-size", "5").returncode == 0
    ds = datasets.load_dataset(str(tmp_path / "hf"), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert isinstance(ds.features["image"], datasets.Image) and ds["frame_id"] == ids
    first = ds[0]
    assert isinstance(first["image"], Image.Image) and first["image"].size == (16, 12)
    assert np.array_equal(np.asarray(first["image"].convert("RGB")),
                          np.asarray(Image.open(io.BytesIO(images[ids[0]][0])).convert("RGB")))


def test_the_filter_and_duplicates_select_the_rows(root, tmp_path):
    storage = Storage(root)
    from stream2dataset.dataset.snapshots import create_snapshot

    create_snapshot(storage, "alice", where="channel = 'alice'")
    report = export_snapshot(storage, "alice", "parquet", tmp_path / "out")
    df = pd.read_parquet(tmp_path / "out")
    assert report["rows"] == len(df) == 6 and set(df["channel"]) == {"alice"}
    assert list(df["frame_id"]) == selected(root, "alice")
    assert not list(tmp_path.joinpath("out").glob(".*"))  # no temp files left


def test_errors_are_one_line(root, cli, tmp_path):
    assert cli(root, "snapshot", "create", "v1").returncode == 0
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    cases = [
        (["v1", "--format", "parquet", str(tmp_path / "full")], "not an empty folder"),
        (["v1", "--format", "zip", str(tmp_path / "o1")], "zip"),
        (["nope", "--format", "parquet", str(tmp_path / "o2")], "no snapshot named 'nope'"),
        (["v1", "--format", "parquet", str(root / "dataset" / "x")], "data folders"),
        (["v1", "--format", "parquet", "--shard-size", "0", str(tmp_path / "o3")], "--shard-size"),
    ]
    for args, message in cases:
        done = cli(root, "snapshot", "export", *args)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o3").exists()  # a failed export leaves nothing


def test_snapshot_name_still_creates_and_snapshots_lists_json(root, cli):
    done = cli(root, "snapshot", "v1", "--where", "channel = 'bob'")
    assert done.returncode == 0 and "snapshot v1: 2 frames where channel = 'bob'" in done.stdout
    assert cli(root, "snapshot", "--where", "channel = 'alice'", "v2").returncode == 0  # options first, too
    assert cli(root, "snapshot", "create", "v3").returncode == 0
    listed = json.loads(cli(root, "snapshots", "--format", "json").stdout)
    assert [m["name"] for m in listed] == ["v1", "v2", "v3"]
    assert listed[0]["frames"] == 2 and listed[0]["where"] == "channel = 'bob'" and listed[0]["files"] >= 2
    assert set(listed[0]) == {"name", "created", "frames", "files", "where"}
    assert "v3" in cli(root, "snapshots").stdout


def test_clips_export_with_their_frames_in_order(root, cli, tmp_path):
    import datasets
    import webdataset as wds

    from stream2dataset.dataset.snapshots import create_snapshot

    create_snapshot(Storage(root), "alice", where="channel = 'alice'")  # clips of alice's segments only
    done = cli(root, "snapshot", "export", "alice", "-f", "webdataset", "--table", "clips", str(tmp_path / "w"))
    assert done.returncode == 0, done.stderr
    (sample,) = list(wds.WebDataset(str(tmp_path / "w" / "00000.tar"), shardshuffle=False))
    meta = json.loads(sample["json"])
    assert meta["clip_id"] == clip_id("twitch.alice.s1", 0, "facecam") and meta["frame_count"] == 3
    assert [sample[f"{n:05d}.png"] for n in range(3)] == [encoded(i) for i in range(3)]

    assert cli(root, "snapshot", "export", "alice", "-f", "hf", "--table", "clips", str(tmp_path / "h")).returncode == 0
    ds = datasets.load_dataset(str(tmp_path / "h"), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert len(ds) == 1 and len(ds[0]["frames"]) == 3 and all(isinstance(f, Image.Image) for f in ds[0]["frames"])


def test_an_interrupted_export_leaves_nothing(root, tmp_path):
    storage = Storage(root)
    from stream2dataset.dataset.snapshots import create_snapshot

    create_snapshot(storage, "all")

    def stop(done, total):
        if done >= 2:
            raise KeyboardInterrupt

    for fmt in ("webdataset", "hf"):
        with pytest.raises(KeyboardInterrupt):
            export_snapshot(storage, "all", fmt, tmp_path / fmt, shard_size=1, progress=stop)
        assert not (tmp_path / fmt).exists()
    (tmp_path / "empty").mkdir()  # an empty folder given is kept, and left empty
    with pytest.raises(KeyboardInterrupt):
        export_snapshot(storage, "all", "parquet", tmp_path / "empty", shard_size=1, progress=stop)
    assert list((tmp_path / "empty").iterdir()) == []
    with pytest.raises(UserError, match="--format"):
        export_snapshot(storage, "all", "csv", tmp_path / "x")
