"""Several Ray nodes on one machine (real raylet processes via ray.cluster_utils.Cluster), in a
process of their own so the session's local Ray is untouched."""

import json
import os
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest

from stream2dataset.layout import Storage
from stream2dataset.training.runs import load_state

from ..ingest.test_recorder import assert_manifest_sound

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def run_script(module: str, *args, timeout: float) -> subprocess.CompletedProcess:
    """`python -m module args` with a Ray temp dir of its own: its cluster's session files (and
    the "current cluster" that ray.init looks for) never mix with the test session's Ray."""
    with tempfile.TemporaryDirectory(prefix="s2dray", dir="/tmp") as ray_tmp:  # short: Unix socket paths
        env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": ray_tmp}
        env.pop("RAY_ADDRESS", None)
        return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=ROOT)


def test_a_training_run_puts_a_worker_on_each_node(snapshot_root):
    out = run_script("tests.cluster.multinode_train", snapshot_root.root, timeout=280)
    assert out.returncode == 0, out.stderr[-3000:]
    folder = Path(out.stdout.strip().splitlines()[-1])
    started = json.loads((folder / "events.jsonl").read_text().splitlines()[0])
    assert started["workers"] == 2 and len(set(started["nodes"])) == 2, started
    assert load_state(folder)["step"] == 6


def test_processing_spreads_over_nodes_and_survives_losing_one(footage, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    segs = sorted(footage.glob("seg*.ts"))
    for i in range(6):  # six different 8 s streamer videos (1 s segments rotated), windows of 2 s
        (videos / f"part{i}.ts").write_bytes(b"".join(p.read_bytes() for p in segs[i:] + segs[:i]))
    result = tmp_path / "result.json"
    out = run_script("tests.cluster.multinode_process", videos, tmp_path, result, timeout=290)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(result.read_text())
    assert r["calm_windows"] >= 12 and r["calm_nodes"] == 2, r["calm_per_node"]  # both worker nodes worked
    assert r["finished"] and r["staged_at_kill"] < r["calm_windows"]  # the node died while windows were left
    assert len(r["calm_ids"]) >= 120  # ~27 of 32 sampled frames kept per video
    assert r["killed_ids"] == r["calm_ids"]  # no row lost, none twice


def test_the_service_pool_spreads_over_nodes_and_survives_losing_one(footage, tmp_path):
    result = tmp_path / "result.json"
    out = run_script("tests.cluster.multinode_pool", footage, tmp_path, result, timeout=290)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(result.read_text())
    assert len(r["calm"]["nodes"]) == 2, r["calm"]["nodes"]  # both worker nodes' actors took windows
    assert r["killed"]["killed"] and r["calm"]["ids"]  # a node died mid-run
    assert r["killed"]["ids"] == r["calm"]["ids"]  # no row lost, none twice


def test_up_spreads_recorders_and_a_killed_node_s_recorders_move(footage, tmp_path):
    result = tmp_path / "result.json"
    out = run_script("tests.cluster.multinode_record", footage, tmp_path, result, timeout=290)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(result.read_text())
    before, after = r["before"], r["after"]
    assert {c["node"] for c in before.values()} == set(r["nodes"])  # `up` used both worker nodes
    assert r["moved"], before
    for name in r["moved"]:
        assert after[name]["node"] == r["nodes"][0] and after[name]["restarted"], after[name]
        assert after[name]["recovered"] == 1  # the new incarnation found the dead one's open segment
    rows = assert_manifest_sound(Storage(tmp_path / "data"))  # ids unique, files = manifest, no .part left
    quarantined = [p.parent.parent.name for p in (tmp_path / "data" / "quarantine").rglob("*.reason.json")]
    for name, ch in after.items():
        mine = sorted((r_ for r_ in rows if r_["channel"] == name), key=lambda r_: r_["start"])
        assert len(mine) == r["final"][name]["segments"]
        for prev, nxt in zip(mine, mine[1:]):  # no media recorded twice
            assert nxt["start"] >= prev["end"] - timedelta(seconds=0.5), (name, prev, nxt)
        salvaged = sum(r_["status"] == "salvaged" for r_ in mine) + quarantined.count(name)
        if name in r["moved"]:
            # Every segment committed before the kill is there; the one in flight was salvaged (or
            # quarantined if empty); the only hole is the restart time, while the live edge moved on.
            assert sum(r_["end"].timestamp() <= r["killed_at"] for r_ in mine) >= r["at_kill"][name]["segments"]
            assert salvaged == 1 and "salvaged" in [r_["status"] for r_ in mine], ([r_["status"] for r_ in mine], quarantined)
            holes = [nxt["start"] - prev["end"] for prev, nxt in zip(mine, mine[1:])
                     if nxt["start"] - prev["end"] > timedelta(seconds=1.5)]
            assert len(holes) <= 1 and all(h.total_seconds() < r["restarted_after_s"] + 15 for h in holes), holes
        else:
            assert salvaged == 0 and ch["pid"] == before[name]["pid"], ch  # the other node's recorders untouched


def test_the_service_survives_a_killed_up_and_a_lost_head(footage, tmp_path):
    result = tmp_path / "result.json"
    out = run_script("tests.cluster.multinode_restart", footage, tmp_path, result, timeout=290)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(result.read_text())
    # A killed `up` leaves a working service; the next `up` adopts it instead of starting a second one.
    assert r["first_up_rc"] == -9 and r["second_up_rc"] == 0 and r["pids_kept"], r["second_up_out"]
    assert r["actors"] == ["recorder-cam0", "recorder-cam1", "supervisor"]
    # After the whole cluster died, a new `up` recovered everything from the storage root alone.
    assert r["parts_left"] and r["third_up_rc"] == 0 and r["down_rc"] == 0 and r["process_rc"] == 0, r["process_out"]
    assert all(ch["recovered"] >= 1 for ch in r["after"].values()), r["after"]
    rows = assert_manifest_sound(Storage(tmp_path / "data"))  # the .part files became segments, once each
    assert sum(row["status"] == "salvaged" for row in rows) >= 1
    assert r["pending"] == 0  # every committed segment ends up processed
    assert len(r["frame_ids"]) == len(set(r["frame_ids"])) > 0  # and none twice
    before = r["before"]["shards"]
    assert before and all(r["shards"].get(path) == digest for path, digest in before.items())  # kept as they were
    assert len(r["shards"]) > len(before)


def test_an_s3_root_is_all_two_nodes_share(footage, tmp_path, s3):
    videos = tmp_path / "videos"
    videos.mkdir()
    segs = sorted(footage.glob("seg*.ts"))
    whole = b"".join(p.read_bytes() for p in segs)
    for i in range(4):  # four 8 s streamer segments, four 2-s windows each: enough work for both nodes
        (videos / f"part{i}.ts").write_bytes(whole)
    result = tmp_path / "result.json"
    out = run_script("tests.cluster.multinode_s3", videos, tmp_path, s3, result, timeout=290)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(result.read_text())
    assert r["windows"] == 16 and len(r["nodes"]) == 2, r["nodes"]  # both workers decoded from the bucket
    assert r["quarantined"] == 0 and len(r["reference_ids"]) >= 100
    assert r["s3_ids"] == r["reference_ids"]  # the same rows as a local root
    # clips too: each worker cuts them from its own copy of the segment, not the driver's path
    assert r["s3_clips"] == r["reference_clips"] and len(r["reference_clips"]) >= 16, len(r["s3_clips"])
    assert r["again"] == 0  # the markers are in the bucket: nothing is processed twice
    assert len(r["copies"]) == 3  # the head's and each worker's own working copy
    # Segments come down only as an actor's private copy, dropped after their last window (an actor
    # that ran only an earlier window keeps its one copy until it moves on: one per actor at most).
    assert all(name.startswith(".") for name in r["raw_left"]) and len(r["raw_left"]) <= 4, r["raw_left"]
