"""Several Ray nodes on one machine (real raylet processes via ray.cluster_utils.Cluster), in a
process of their own so the session's local Ray is untouched."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from stream2dataset.training.runs import load_state

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
