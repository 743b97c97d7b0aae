"""The recording service on a real local Ray: actor restarts, hot reload, and the CLI."""

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest
import ray
import yaml

from stream2dataset.config import load_config
from stream2dataset import service
from stream2dataset.dataset.manifest import read_segments
from stream2dataset.layout import Storage

from ..conftest import wait_for, write_config
from .test_recorder import assert_manifest_sound


def channel_status(name):
    for ch in service.status()["channels"]:
        if ch["channel"] == name:
            return ch
    return None


@pytest.fixture
def running(ray_local):
    yield
    service.down()


@pytest.mark.slow  # ~7 s on the 2-core machine
def test_killed_recorder_restarts_and_loses_nothing(tmp_path, hls, footage, ray_local, running):
    url = hls.add_stream("cam", footage)
    cfg_path = write_config(tmp_path, [{"source": url, "name": "cam"}], segment_seconds=3)
    service.up(cfg_path)
    wait_for(lambda: (channel_status("cam") or {}).get("segments", 0) >= 1, 60, what="a first segment")
    first = channel_status("cam")
    # Kill mid-segment: wait until the open segment has some bytes, then kill the process.
    wait_for(lambda: channel_status("cam")["bytes"] > first["bytes"], 10, interval=0.05, what="bytes in flight")
    ray_local.kill(ray_local.get_actor("recorder-cam"), no_restart=False)
    wait_for(lambda: (channel_status("cam") or {}).get("restarted"), 60, what="the actor to be restarted")
    after = channel_status("cam")
    assert after["pid"] != first["pid"] and after["recovered"] == 1  # it found and fixed the .part
    wait_for(lambda: channel_status("cam")["segments"] >= after["segments"] + 1, 60, what="recording again")
    service.down()
    rows = assert_manifest_sound(Storage(load_config(cfg_path).storage.root))
    statuses = [r["status"] for r in rows]
    # The unfinished segment was trimmed and committed (or, if empty, quarantined): never lost silently.
    quarantined = list((tmp_path / "data" / "quarantine").rglob("*.reason.json"))
    assert statuses.count("salvaged") + len(quarantined) == 1


@pytest.mark.slow  # ~9 s on the 2-core machine
def test_hot_reload_adds_and_removes_channels(tmp_path, hls, footage, ray_local, running):
    a, b = hls.add_stream("a", footage), hls.add_stream("b", footage)
    cfg_path = write_config(tmp_path, [{"source": a, "name": "cam-a"}])
    service.up(cfg_path)
    wait_for(lambda: (channel_status("cam-a") or {}).get("state") == "recording", 60, what="cam-a recording")
    pid_a = channel_status("cam-a")["pid"]

    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["channels"].append({"source": b, "name": "cam-b"})
    cfg_path.write_text(yaml.safe_dump(cfg))
    wait_for(lambda: (channel_status("cam-b") or {}).get("state") == "recording", 60, what="cam-b to start")
    assert channel_status("cam-a")["pid"] == pid_a  # untouched by the reload

    cfg["channels"] = [c for c in cfg["channels"] if c["name"] != "cam-a"]
    cfg_path.write_text(yaml.safe_dump(cfg))
    wait_for(lambda: channel_status("cam-a") is None, 60, what="cam-a to stop")

    def actor_gone():
        try:
            ray_local.get_actor("recorder-cam-a")
        except ValueError:
            return True
        return False

    wait_for(actor_gone, 30, what="cam-a's actor to be gone")  # Ray deregisters a killed name asynchronously
    # A broken edit is refused and shown; recording goes on with the last good config.
    cfg_path.write_text("recording: {segment_seconds: -1}\n")
    wait_for(lambda: "config not reloaded" in service.status()["config_error"], 10, what="reload error")
    assert channel_status("cam-b")["state"] == "recording"
    service.down()
    storage = Storage(tmp_path / "data")
    rows = assert_manifest_sound(storage)
    assert {"cam-a", "cam-b"} == {r["channel"] for r in rows}  # cam-a's open segment was finished


@pytest.mark.slow
def test_cli_up_status_down_on_a_local_ray(tmp_path, hls, footage):
    url = hls.add_stream("cli", footage)
    cfg_path = write_config(tmp_path, [{"source": url, "name": "cli"}])
    ray_tmp = tempfile.mkdtemp(prefix="s2d-", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    env = {**os.environ, "S2D_STATE_DIR": str(tmp_path / "state"), "RAY_TMPDIR": ray_tmp, "COLUMNS": "200"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "stream2dataset", *args, "-c", str(cfg_path)],
                              capture_output=True, text=True, env=env, timeout=180)

    assert cli("status").returncode == 2  # not up yet: a clear error, not a traceback
    try:
        started = cli("up")
        assert started.returncode == 0, started.stderr
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            st = cli("status")
            if "recording" in st.stdout and st.returncode == 0:
                break
            time.sleep(1)
        assert "recording" in st.stdout, st.stdout + st.stderr
        assert "metrics for Prometheus: http://127.0.0.1:" in started.stdout
        # The service's metrics reach Ray's Prometheus endpoint (exported every few seconds).
        endpoint = json.loads(cli("status", "--format", "json").stdout)["endpoints"]["metrics"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = urllib.request.urlopen(endpoint, timeout=10).read().decode()
            if 'ray_s2d_segments_recorded_total{' in text or "ray_s2d_segments_recorded{" in text:
                break
            time.sleep(2)
        assert 'channel="cli"' in text and "ray_s2d_bytes_recorded" in text, text[-2000:]
    finally:
        stopped = cli("down")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped the local Ray" in stopped.stdout
    assert read_segments(Storage(tmp_path / "data")).num_rows >= 1


@pytest.mark.slow  # ~9 s on the 2-core machine
def test_cli_record_in_the_foreground(tmp_path, hls, footage):
    url = hls.add_stream("fg", footage)
    cfg_path = write_config(tmp_path, [{"source": url, "name": "fg"}])
    run = lambda *a: subprocess.run([sys.executable, "-m", "stream2dataset", *a, "-c", str(cfg_path)],  # noqa: E731
                                    capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    bad = run("record", "fg", "--duration", "ten minutes")
    assert bad.returncode == 2 and "--duration 'ten minutes': use a number with s, m or h" in bad.stderr
    assert run("record", "nope", "--duration", "1s").stderr.startswith("error: no channel named 'nope'")
    done = run("record", "fg", "--duration", "7s")
    assert done.returncode == 0, done.stderr
    rows = read_segments(Storage(tmp_path / "data")).to_pylist()
    assert len(rows) >= 2 and "recorded segments" in done.stdout


@pytest.mark.slow  # ~5 s on the 2-core machine
def test_up_processes_new_segments_and_applies_retention(tmp_path, hls, footage, ray_local, running):
    url = hls.add_stream("proc", footage)
    cfg_path = write_config(tmp_path, [{"source": url, "name": "proc"}],
                            processing={"auto": True, "interval_s": 1, "outputs": ["facecam"], "sample_fps": 2,
                                        "min_crop_px": 32})
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["retention"] = {"raw_keep_hours": 0}  # raw files go as soon as they are processed
    cfg_path.write_text(yaml.safe_dump(cfg))
    service.up(cfg_path)
    storage = Storage(tmp_path / "data")
    wait_for(lambda: "cross-segment duplicates" in service.status()["processing"]["last"], 120, interval=0.5,
             what="a processing run while up, then the dedup pass")
    backlog = service.status()["processing"]["backlog"]  # what is waiting, counted at each round
    # The commit rounds run in the Supervisor for as long as the service: on malloc, not mimalloc.
    pool = ray.get(service.supervisor._supervisor().__ray_call__.remote(
        lambda self: __import__("pyarrow").default_memory_pool().backend_name))
    service.down()
    assert pool == "system"
    assert isinstance(backlog, int) and backlog >= 0
    assert storage.dups_links and (storage.root / "dataset" / "_dedup" / "index.json").exists()
    rows = read_segments(storage).to_pylist()
    done = [r for r in rows if storage.done_marker(r["segment_id"]).exists()]
    assert done, "no segment was processed"
    assert not any((storage.root / r["path"]).exists() for r in done)  # retention removed processed raw
    assert list((storage.root / "dataset" / "frames").rglob("*.parquet"))
