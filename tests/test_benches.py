"""Every benchmark runs at HEAD: each with its smallest settings, as a user would start it.

Benches are not run by anything else, so they rot silently (bench/process_speed.py and
bench/stats.py both had, after changes elsewhere). Figures are not checked here, only that each
bench finishes and prints its table: the figures live in bench/RESULTS.md.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

# bench script -> its smallest settings ({tmp}: a fresh folder of the test's own)
SMALLEST = {
    "dedup.py": ["--sizes", "2000", "--repeat", "1", "--prefix", "1000", "--samples", "10"],
    "dedup_index.py": ["--history", "2000", "--new", "200", "--rounds", "2"],
    "stats.py": ["--rows", "2000", "--repeat", "1", "--root", "{tmp}/stats"],
    "write_speed.py": ["--rows", "200", "--segments", "2", "--repeat", "1"],
    "process_accuracy.py": ["--split", "tune", "--limit", "2"],
    "process_speed.py": ["--seconds", "2", "--long-minutes", "0"],
    "record_streams.py": ["--streams", "1", "--seconds", "6"],
    "object_store.py": ["--videos", "1", "--seconds", "2"],
    "train_throughput.py": ["--steps", "2", "--warmup", "1", "--batch", "2", "--rows", "16", "--cpu-small",
                            "--root", "{tmp}/train"],
    "foreground.py": ["--files", "2", "--seconds", "4", "--height", "360"],
    "history.py": ["--segments", "2000", "--frames", "20000", "--channels", "2", "--rounds", "1"],
    "load.py": ["--streams", "1", "--seconds", "20", "--baseline-seconds", "0", "--out", "{tmp}/load"],
    "rounds.py": ["--channels", "2", "--rounds", "3"],
    "merge_memory.py": ["--inputs", "2", "--rows", "20", "--row-kb", "4"],
    "lookalike.py": ["--sizes", "2000", "--queries", "3", "--no-identity", "--root", "{tmp}/lookalike"],
}


def test_every_bench_has_its_smallest_settings():
    assert sorted(SMALLEST) == sorted(p.name for p in BENCH.glob("*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMALLEST))
def test_bench_runs_at_head(script, tmp_path):
    args = [a.replace("{tmp}", str(tmp_path)) for a in SMALLEST[script]]
    ray_tmp = tempfile.mkdtemp(prefix="s2db", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    try:
        done = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=280, env={**os.environ, "COLUMNS": "200", "RAY_TMPDIR": ray_tmp})
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "┃" in done.stdout or "|" in done.stdout, done.stdout[-2000:]  # a table was printed
