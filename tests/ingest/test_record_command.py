"""`stream2dataset record` in the foreground against a misbehaving origin (issue 13 item 10)."""

from __future__ import annotations

import re
import socket
import threading

import pytest

from stream2dataset.dataset.manifest import read_segments
from stream2dataset.layout import Storage

from ..conftest import write_config
from .test_recorder_faults import FAST, assert_nothing_lost_or_twice


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/cam/live.m3u8"  # nothing listens there any more


def bar_count(stdout: str) -> int:
    """The segment count on the progress bar's last line."""
    return int(re.findall(r"· (\d+) segments", stdout)[-1])


@pytest.mark.parametrize("channel", ["unreachable", "offline"])
def test_record_of_a_channel_with_nothing_to_record_exits_2(tmp_path, cli, origin, channel):
    url = closed_port_url() if channel == "unreachable" else origin.url
    origin.set_mode("offline")
    write_config(tmp_path, [{"source": url, "name": "cam"}], **FAST)
    r = cli(tmp_path / "data", "record", "cam", "--duration", "2s")
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: nothing recorded from channel cam in 2s: ")
    assert ("Unable to open URL" in lines[0]) if channel == "unreachable" else lines[0].endswith(": offline")


@pytest.mark.slow
def test_record_counts_this_run_and_loses_only_a_corrupt_period(tmp_path, cli, origin):
    write_config(tmp_path, [{"source": origin.url, "name": "cam"}], **FAST)
    storage = Storage(tmp_path / "data")
    first = cli(tmp_path / "data", "record", "cam", "--duration", "4s")
    assert first.returncode == 0, first.stderr
    before = read_segments(storage).num_rows
    assert bar_count(first.stdout) == before >= 1
    # A corrupt period in the middle of the second run.
    timers = [threading.Timer(2, origin.set_mode, ["corrupt"]), threading.Timer(4, origin.set_mode, ["normal"])]
    for t in timers:
        t.start()
    second = cli(tmp_path / "data", "record", "cam", "--duration", "10s")
    for t in timers:
        t.join()
    assert second.returncode == 0, second.stderr
    assert bar_count(second.stdout) == read_segments(storage).num_rows - before >= 2  # this run's, not the total
    assert any(e.kind == "corrupt" for e in origin.served)
    assert_nothing_lost_or_twice(origin, storage)
