"""Snapshots: frozen shard lists with sha256, refused when a file changes or goes missing."""

import json

import pytest

from stream2dataset.dataset import commit_segments
from stream2dataset.dataset.snapshots import create_snapshot, load_snapshot, open_snapshot
from stream2dataset.errors import UserError
from stream2dataset.storage import Storage

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
