"""Several Ray nodes on one machine (real raylet processes via ray.cluster_utils.Cluster), in a
process of their own so the session's local Ray is untouched."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream2dataset.training.runs import load_state

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_a_training_run_puts_a_worker_on_each_node(snapshot_root):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "tests.cluster.multinode_train", str(snapshot_root.root)],
                         capture_output=True, text=True, timeout=280, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    folder = Path(out.stdout.strip().splitlines()[-1])
    started = json.loads((folder / "events.jsonl").read_text().splitlines()[0])
    assert started["workers"] == 2 and len(set(started["nodes"])) == 2, started
    assert load_state(folder)["step"] == 6
