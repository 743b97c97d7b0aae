"""An object-store storage root against a real local S3 server (moto): what goes up, what comes
down, and that nothing half-written is ever visible under a real name."""

import json

import pyarrow.parquet as pq
import pytest
from pyarrow import fs as pafs

from stream2dataset.config import parse_config
from stream2dataset.layout import Storage, atomic_write_bytes


def objects(uri: str) -> dict[str, bytes]:
    """Every object in the bucket (hidden ones too), by key below the bucket."""
    s3, bucket = pafs.FileSystem.from_uri(uri)
    out = {}
    for info in s3.get_file_info(pafs.FileSelector(bucket, recursive=True)):
        if info.type == pafs.FileType.File:
            with s3.open_input_stream(info.path) as f:
                out[info.path[len(bucket) + 1:]] = f.read()
    return out


def test_an_s3_root_becomes_a_working_copy_under_the_cache(tmp_path):
    cfg = parse_config({"storage": {"root": "s3://bucket/datasets/a/", "cache": "cache/{node}"}}, base_dir=tmp_path)
    assert cfg.storage.uri == "s3://bucket/datasets/a" and cfg.storage.any_node
    assert cfg.storage.root.parent == tmp_path / "cache" / "{node}"
    root = Storage.of(cfg).root  # {node}: the Ray node id in a Ray process, else "local"
    assert root.parent.parent == tmp_path / "cache" and "{" not in root.parent.name
    assert root.name == cfg.storage.root.name


@pytest.mark.parametrize("root,field", [("ftp://host/x", "unknown scheme 'ftp'"), ("s3://", "give a bucket"),
                                        ("s3://b/../etc", "give a bucket"), ("s3://b?region=x", "AWS_ENDPOINT_URL"),
                                        ("s3://AKIA:secret@b/x", "credentials do not go in the config")])
def test_a_bad_uri_is_a_one_line_error(tmp_path, root, field):
    from stream2dataset.errors import ConfigError

    with pytest.raises(ConfigError, match=field) as err:
        parse_config({"storage": {"root": root}})
    assert "\n" not in str(err.value) and "secret" not in str(err.value)


def test_atomic_writes_go_to_the_store_first_and_other_nodes_pull_them(s3, tmp_path):
    a = Storage(tmp_path / "node-a", s3 + "/root")
    b = Storage(tmp_path / "node-b", s3 + "/root")
    atomic_write_bytes(a.done_marker("seg-1"), b'{"ok": 1}')
    (a.root / "catalog.duckdb").write_bytes(b"local only")
    atomic_write_bytes(a.root / "catalog.duckdb", b"local only")
    assert objects(s3) == {"root/dataset/_done/seg-1": b'{"ok": 1}'}  # no temp key, no catalog
    assert not b.done_marker("seg-1").exists()
    b.pull("dataset/_done")
    assert b.done_marker("seg-1").read_bytes() == b'{"ok": 1}'
    mtime = b.done_marker("seg-1").stat().st_mtime_ns
    b.pull("dataset/_done")  # current: not downloaded again
    assert b.done_marker("seg-1").stat().st_mtime_ns == mtime
    assert b.files("dataset") == {"dataset/_done/seg-1"}


def test_a_mirror_pull_drops_what_the_store_deleted_and_keeps_the_rest(s3, tmp_path):
    a = Storage(tmp_path / "a", s3)
    b = Storage(tmp_path / "b", s3)
    for name in ("x", "y"):
        atomic_write_bytes(a.root / "dataset" / "_commits" / f"{name}.json", b"{}")
    b.pull("dataset/_commits", mirror=True)
    a.delete(a.root / "dataset" / "_commits" / "x.json")
    assert not (a.root / "dataset" / "_commits" / "x.json").exists()
    b.pull("dataset/_commits")  # without mirror, nothing is removed
    assert (b.root / "dataset" / "_commits" / "x.json").exists()
    b.pull("dataset/_commits", mirror=True)
    assert sorted(p.name for p in (b.root / "dataset" / "_commits").iterdir()) == ["y.json"]


def test_fetch_downloads_one_file_and_push_uploads_one_written_in_place(s3, tmp_path):
    a = Storage(tmp_path / "a", s3)
    b = Storage(tmp_path / "b", s3)
    seg = a.root / "raw" / "hls" / "cam" / "2026-12-04" / "x.ts"
    seg.parent.mkdir(parents=True)
    seg.write_bytes(b"\x47" * 188 * 100)
    assert not b.exists(b.root / "raw/hls/cam/2026-12-04/x.ts")
    a.push(seg)
    there = b.root / "raw/hls/cam/2026-12-04/x.ts"
    assert b.exists(there) and not there.exists()
    assert b.fetch(there).read_bytes() == seg.read_bytes()


def test_an_upload_that_fails_midway_leaves_no_object_under_its_name(s3, tmp_path):
    a = Storage(tmp_path / "a", s3)
    path = a.root / "dataset" / "frames" / "channel=c" / "date=d" / "s.parquet"

    class NoMove:  # the upload finished, the rename to the real name did not (connection lost)
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def move(self, src, dest):
            raise OSError("connection reset")

    a.remote.fs = NoMove(a.remote.fs)
    with pytest.raises(OSError):
        atomic_write_bytes(path, b"PAR1...")
    assert not path.exists()
    assert [k for k in objects(s3)] and all(k.rsplit("/", 1)[1].startswith(".") for k in objects(s3))
    assert Storage(tmp_path / "b", s3).files("dataset") == set()  # readers see nothing


def test_quarantine_moves_the_object_too(s3, tmp_path):
    a = Storage(tmp_path / "a", s3)
    seg = a.root / "raw" / "hls" / "cam" / "d" / "bad.ts"
    seg.parent.mkdir(parents=True)
    seg.write_bytes(b"junk")
    a.push(seg)
    a.quarantine(seg, "does not decode")
    keys = objects(s3)
    assert "raw/hls/cam/d/bad.ts" not in keys and keys["quarantine/raw/hls/cam/d/bad.ts"] == b"junk"
    assert json.loads(keys["quarantine/raw/hls/cam/d/bad.ts.reason.json"])["reason"] == "does not decode"
    assert pq  # (parquet round trips are covered end to end in test_object_store_root)


def test_a_uri_written_out_is_checked_too_and_never_echoed():
    from stream2dataset.errors import ConfigError

    with pytest.raises(ConfigError, match="credentials do not go in the config") as err:
        parse_config({"storage": {"root": "/tmp/x", "uri": "s3://AKIA:secret@b/x"}})
    assert "secret" not in str(err.value)
