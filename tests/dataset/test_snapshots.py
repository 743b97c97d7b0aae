"""Snapshots: frozen shard lists with sha256, refused when a file changes or goes missing."""

import json

import pytest

from stream2dataset.dataset import commit_segments
from stream2dataset.dataset.snapshots import create_snapshot, list_snapshots, load_snapshot, open_snapshot
from stream2dataset.errors import UserError
from stream2dataset.layout import Storage

from .test_writer import stage_segments


@pytest.fixture
def storage(tmp_path):
    storage = Storage(tmp_path / "root")
    commit_segments(storage, stage_segments(storage, segments=4, windows=2, rows=10, image_bytes=200),
                    target_mb=0.01)
    return storage


def test_snapshot_pins_files_and_filter(storage):
    manifest = create_snapshot(storage, "alice-v1", where="channel = 'alice'")
    assert manifest["frames"] == 2 * 2 * 10  # segments 1 and 3 are alice's
    saved = json.loads((storage.root / "snapshots" / "alice-v1.json").read_text())
    assert saved["where"] == "channel = 'alice'" and saved["files"]["frames"]
    assert all(len(e["sha256"]) == 64 and e["rows"] > 0 for e in saved["files"]["frames"])
    con = open_snapshot(storage, "alice-v1")
    assert con.execute("SELECT count(*), count(DISTINCT channel) FROM frames").fetchall() == [(40, 1)]

    # New rows after the snapshot do not change what it reads.
    more = stage_segments(Storage(storage.root), segments=6, windows=1, rows=5, image_bytes=100)
    commit_segments(storage, {k: v for k, v in more.items() if k.endswith(("004", "005"))})
    assert open_snapshot(storage, "alice-v1").execute("SELECT count(*) FROM frames").fetchall() == [(40,)]


def test_a_changed_or_missing_file_is_refused(storage):
    manifest = create_snapshot(storage, "all")
    first = storage.root / manifest["files"]["frames"][0]["path"]
    load_snapshot(storage, "all")  # intact
    data = bytearray(first.read_bytes())
    data[100] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(UserError, match="changed since the snapshot"):
        load_snapshot(storage, "all")
    first.unlink()
    with pytest.raises(UserError, match="is missing"):
        open_snapshot(storage, "all")


@pytest.mark.parametrize("name, where, message", [
    ("../evil", None, "snapshot name"),
    ("ok", "channel = 'x'; DROP TABLE frames", "not allowed"),
    ("ok", "no_such_column = 1", "no_such_column"),
    ("ok", "channel = 'nobody'", "no frames match"),
])
def test_bad_names_and_filters_are_one_line_errors(storage, name, where, message):
    with pytest.raises(UserError, match=message) as err:
        create_snapshot(storage, name, where=where)
    assert "\n" not in str(err.value)


def test_names_are_never_reused_and_unknown_names_are_listed(storage):
    create_snapshot(storage, "v1")
    with pytest.raises(UserError, match="exists"):
        create_snapshot(storage, "v1")
    with pytest.raises(UserError, match="known: v1"):
        load_snapshot(storage, "v2")


@pytest.mark.parametrize("where", [
    "true UNION ALL SELECT 0",  # issue 13, item 8: the set operation ended the filter
    "true) UNION ALL (SELECT 0",
    "frame_id IN (SELECT content FROM read_text('/etc/passwd'))",
    "frame_id IN (SELECT frame_id FROM frames_all)",  # the snapshot's views hold only its own files
    "channel = 'a'; SELECT 1",
])
def test_a_filter_is_one_condition_on_the_frame(storage, where):
    with pytest.raises(UserError, match="--where") as err:
        create_snapshot(storage, "v1", where=where)
    assert "\n" not in str(err.value)
    assert not (storage.root / "snapshots" / "v1.json").exists()


def write_manifest(storage, name: str, text: str | bytes):
    path = storage.root / "snapshots" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def tampered(manifest: dict, **changes) -> str:
    return json.dumps({**manifest, **changes})


@pytest.fixture
def good(storage):
    return create_snapshot(storage, "good", where="channel = 'alice'")


@pytest.mark.parametrize("broken, reason", [
    (lambda m: tampered(m)[:-40], "not JSON"),  # truncated: a killed copy, a full disk
    (lambda m: b"\x00\xff\x89PNG\r\n", "not JSON"),
    (lambda m: "[1, 2]", "not a snapshot"),
    (lambda m: '{"name": "x"}', "not a snapshot"),
    (lambda m: tampered(m, files={"frames": "all"}), "not a snapshot"),
    (lambda m: tampered(m, frames="many"), "not a snapshot"),
    (lambda m: tampered(m, files={"frames": [{**m["files"]["frames"][0], "path": "../../etc/passwd"}]}),
     "outside the storage root"),
    (lambda m: tampered(m, where="true UNION ALL SELECT 0"), "filter"),
    (lambda m: tampered(m, where="true) UNION ALL (SELECT 0"), "filter"),
])
def test_a_broken_snapshot_file_is_a_one_line_error_naming_it(storage, good, broken, reason):
    path = write_manifest(storage, "bad", broken(good))
    for load in (lambda: load_snapshot(storage, "bad"), lambda: open_snapshot(storage, "bad")):
        with pytest.raises(UserError, match=reason) as err:
            load()
        message = str(err.value)
        assert str(path) in message and "delete it or restore it" in message and "\n" not in message
    listed = list_snapshots(storage)  # the others still list, the broken one is named
    assert [m["name"] for m in listed] == ["bad", "good"]
    assert listed[0].keys() == {"name", "path", "error"} and reason in listed[0]["error"]
    assert listed[1] == good
    assert open_snapshot(storage, "good").execute("SELECT count(*) FROM frames").fetchall() == [(40,)]
