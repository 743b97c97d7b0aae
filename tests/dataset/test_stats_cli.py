"""`stats`, `sql` and `preview`: the library numbers, and the real command line on real shards.

The commands run in this process through `cli.main` (argv, exit status, stdout and stderr as a
user gets them, without paying a Python start per call); one test runs the installed command.
"""

import base64
import json
import os
import subprocess
import sys

import av
import pytest


from stream2dataset.dataset import stats as stats_module
from stream2dataset.dataset.stats import SEGMENTS_CACHE, dataset_stats
from stream2dataset.dataset.manifest import SEGMENT_SCHEMA
from tests.dataset.test_catalog import COLORS, DAY1, DAY2, make_root, png, segment, write_shard


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("stats")
    (base / "stream2dataset.yaml").write_text("storage:\n  root: data\n")
    make_root(base / "data")
    return base / "data"


def test_dataset_stats_per_channel_and_day(root):
    st = dataset_stats(root)
    a, b = st["channels"]
    assert a | {"duplicate_rate": 0, "hours_recorded": 0} == {
        "channel": "a", "segments": 3, "hours_recorded": 0, "raw_bytes": 2_500_000, "frames_total": 14,
        "frames_kept": 11, "duplicates": 3, "duplicate_rate": 0, "dropped": 5, "drops": {"blurred": 2, "no_face": 3},
        "clips": 2, "dataset_bytes": a["dataset_bytes"]}
    assert (a["duplicate_rate"], a["hours_recorded"]) == (pytest.approx(3 / 14), pytest.approx(1500 / 3600))
    assert (b["segments"], b["hours_recorded"], b["frames_kept"], b["duplicates"], b["drops"]) == (
        1, 0.25, 5, 1, {"no_face": 5})
    sizes = {ch: sum(p.stat().st_size for t in ("frames", "clips", "drops")
                     for p in (root / "dataset" / t).glob(f"channel={ch}/*/*.parquet")) for ch in "ab"}
    assert (a["dataset_bytes"], b["dataset_bytes"]) == (sizes["a"], sizes["b"])
    days = {(d["channel"], d["date"]): d for d in st["days"]}
    assert sorted(days) == [("a", "2026-11-01"), ("a", "2026-11-02"), ("b", "2026-11-01")]
    a2 = days[("a", "2026-11-02")]  # one segment of 300 s; 4 frames, one linked by the dedup pass
    assert (a2["segments"], a2["hours_recorded"], a2["frames_kept"], a2["duplicates"], a2["dropped"]) == (
        1, 300 / 3600, 3, 1, 0)
    assert st["total"]["frames_kept"] == 16 and st["total"]["dropped"] == 10 and st["total"]["segments"] == 4


def test_the_manifest_cache_follows_new_changed_and_deleted_segments(tmp_path):
    root = make_root(tmp_path)
    assert dataset_stats(root)["total"]["segments"] == 4
    cache = root / SEGMENTS_CACHE
    written = cache.stat().st_mtime_ns
    dataset_stats(root)
    assert cache.stat().st_mtime_ns == written  # nothing new: the cache is only read
    seg = root / "manifests/segments/a"
    write_shard(seg / "a4.parquet", [segment("a", "a4", DAY2, 120, 7)], SEGMENT_SCHEMA, version=None)
    write_shard(seg / "a1.parquet", [segment("a", "a1", DAY1, 1200, 1_000_000)], SEGMENT_SCHEMA, version=None)
    (root / "manifests/segments/b/b1.parquet").unlink()
    a, b = dataset_stats(root)["channels"]
    assert (a["segments"], a["raw_bytes"]) == (4, 2_500_007)
    assert a["hours_recorded"] == pytest.approx((1200 + 600 + 300 + 120) / 3600)
    assert (b["segments"], b["hours_recorded"], b["frames_kept"]) == (0, 0, 5)  # frames without segments


def test_stats_without_a_writable_cache_reads_the_manifest_itself(tmp_path, monkeypatch):
    root = make_root(tmp_path)

    def refuse(path):
        raise PermissionError(f"{path}: read-only file system")
    monkeypatch.setattr(stats_module, "atomic_output", refuse)
    a, b = dataset_stats(root)["channels"]
    assert (a["segments"], b["segments"], a["raw_bytes"]) == (3, 1, 2_500_000)
    assert not (root / SEGMENTS_CACHE).exists()


def test_stats_on_an_empty_root(tmp_path):
    (tmp_path / "r").mkdir()
    st = dataset_stats(tmp_path / "r")
    assert st["channels"] == [] and st["days"] == [] and st["total"]["frames_kept"] == 0


def test_stats_command_prints_tables_json_and_a_chart(cli, root, tmp_path):
    out = cli(root, "stats")
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.strip().startswith("a "))
    assert line.split()[:7] == ["a", "0.42", "3", "2.5", "MB", "11", "3"]  # hours, segments, raw, kept, dups
    assert "blurred 2, no_face 3" in out.stdout and "2026-11-02" in out.stdout
    chart = tmp_path / "stats.png"
    out = cli(root, "stats", "--format", "json", "--plot", str(chart))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["total"]["frames_kept"] == 16
    with av.open(str(chart)) as c:
        img = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert img.shape == (650, 1000, 3) and img.std() > 10  # a drawn chart, not a blank canvas


def test_sql_command_formats(cli, root):
    out = cli(root, "sql", "SELECT frame_id, image, crop_box, transforms FROM frames WHERE channel = 'b' ORDER BY 1")
    assert out.returncode == 0, out.stderr
    size = len(png(COLORS["b"]))
    assert f"<{size} bytes>" in out.stdout and "[resize]" in out.stdout and "5 rows" in out.stdout
    out = cli(root, "sql", "SELECT frame_id, image, timestamp FROM frames_all ORDER BY 1", "--format", "json",
              "--limit", "2")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert [r["frame_id"] for r in data] == ["a1-0", "a1-1"] and "--limit 0" in out.stderr
    assert base64.b64decode(data[0]["image"]) == png(COLORS["a"])
    assert data[0]["timestamp"] == "2026-11-01T10:00:00+00:00"
    out = cli(root, "sql", "SELECT channel, frames_kept, drops_none FROM (SELECT *, NULL AS drops_none FROM channels)",
              "--format", "csv")
    assert out.stdout.splitlines() == ["channel,frames_kept,drops_none", "a,11,", "b,5,"]


@pytest.mark.parametrize("sql", ["DELETE FROM frames", "SELECT 1; SELECT 2", "ATTACH 'x.db'",
                                 "SELECT * FROM read_csv('/etc/passwd')",
                                 "SELECT * FROM read_parquet('/tmp/*.parquet')",
                                 "COPY frames TO 'x.csv'", "SELECT nope FROM frames"])
def test_sql_command_refuses_with_one_line(cli, root, sql):
    out = cli(root, "sql", sql)
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith("error: ")


def test_preview_command_tiles_matching_frames(cli, root):
    sheet = root.parent / "b.png"
    out = cli(root, "preview", "--where", "channel = 'b'", "--n", "8", "--out", str(sheet))
    assert out.returncode == 0, out.stderr
    assert "5 frames" in out.stdout  # the kept frames of b; --all would add its near-duplicate
    with av.open(str(sheet)) as c:
        img = next(c.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    assert img.shape == (4 + 120 + 4, 4 + 5 * 164, 3)  # 5 tiles of 160x120 in one row, 4-px padding
    assert all(img[64, 4 + 164 * i + 80].tolist() == [0, 0, 255] for i in range(5))  # all blue
    out = cli(root, "preview", "--where", "channel = 'b'", "--all", "--out", str(sheet))
    assert "6 frames" in out.stdout
    for bad in ["channel = 'b'; DROP VIEW frames", "channel = 'b') OR (true", "channel = 'zzz'"]:
        out = cli(root, "preview", "--where", bad, "--out", str(sheet))
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_the_installed_command(root):
    """A real process: refusals exit 2 with one line on stderr; a query prints its table."""
    def run(*args):
        argv = [sys.executable, "-m", "stream2dataset", *args, "-c", str(root.parent / "stream2dataset.yaml")]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    out = run("sql", "SELECT * FROM read_parquet('/tmp/x/*.parquet')")
    assert (out.returncode, out.stdout) == (2, "") and len(out.stderr.splitlines()) == 1
    assert "only files under the storage root" in out.stderr
    out = run("sql", "SELECT channel, frames_kept FROM channels")
    assert out.returncode == 0 and [x.split() for x in out.stdout.splitlines() if x.strip()][2:5] == [
        ["a", "11"], ["b", "5"], ["2", "rows"]]


def test_sql_command_stops_at_the_configured_time_limit(cli, tmp_path):
    base = tmp_path / "slow"
    make_root(base / "data")
    (base / "stream2dataset.yaml").write_text("storage:\n  root: data\ndataset:\n  sql_timeout_s: 0.5\n")
    join = "SELECT count(*) FROM range(100000) a, range(100000) b, range(100000) c WHERE a.range + b.range = c.range"
    done = cli(base / "data", "sql", join)
    assert done.returncode == 2 and "dataset.sql_timeout_s = 0.5 s" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_snapshots_command_names_a_broken_file_and_lists_the_others(cli, tmp_path):
    base = tmp_path / "snaps"
    make_root(base / "data")
    (base / "stream2dataset.yaml").write_text("storage:\n  root: data\n")
    assert cli(base / "data", "snapshot", "good-v1", "--where", "channel = 'a'").returncode == 0
    (base / "data" / "snapshots" / "cut.json").write_text('{"name": "cut", "crea')
    done = cli(base / "data", "snapshots")
    assert done.returncode == 0, done.stderr
    assert "good-v1" in done.stdout and "cut" in done.stdout and "broken" in done.stdout
    refused = cli(base / "data", "snapshot", "x", "--where", "true UNION ALL SELECT 0")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
