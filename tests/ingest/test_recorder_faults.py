"""The recorder driven through a misbehaving live origin and back (issue 13): it never dies, loses
no segment the origin served whole, records none twice, and shows each fault as a state."""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

import pytest

from stream2dataset.dataset.manifest import read_segments
from stream2dataset.ingest.segments import keyframe_marks

from ..conftest import wait_for
from .faulty_hls import FaultyOrigin
from .test_recorder import assert_manifest_sound, recorder_for

# A silent stream counts as dropped after 3 s (streamlink's retries of a failed segment take ~2 s).
FAST = {"stream_timeout_s": 3, "backoff_max_s": 2}


class States:
    """Every state a recorder passes through, sampled in the background."""

    def __init__(self, rec):
        self.rec, self.seen, self.details = rec, [], {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self):
        while not self._stop.wait(0.05):
            st = self.rec.status()
            self.details[st["state"]] = st["detail"]
            if not self.seen or self.seen[-1] != st["state"]:
                self.seen.append(st["state"])

    def wait(self, state, timeout):
        wait_for(lambda: state in self.seen, timeout, what=f"state {state} (seen {self.seen})")

    def stop(self):
        self._stop.set()
        self._thread.join()


@lru_cache(maxsize=None)
def source_key(path: Path) -> str:
    (mark,) = keyframe_marks(path)  # footage: one GOP per 1-s segment
    return mark.key


def committed_keys(storage) -> list[str]:
    return [m.key for r in read_segments(storage).to_pylist() for m in keyframe_marks(storage.root / r["path"])]


def assert_nothing_lost_or_twice(origin: FaultyOrigin, storage) -> list[dict]:
    """No keyframe or file committed twice; every segment the origin served whole, up to the
    last one committed, is in the manifest."""
    rows = assert_manifest_sound(storage)
    keys = committed_keys(storage)
    assert len(keys) == len(set(keys)), "media committed twice"
    assert len({r["sha256"] for r in rows}) == len(rows), "a file committed twice"
    committed = set(keys)
    for epoch in {e.epoch for e in origin.produced()}:
        on_air = [e for e in origin.produced(epoch) if e.kind == "normal"]
        got = [e.seq for e in on_air if source_key(e.source) in committed]
        served = {e.seq for e in origin.served if e.epoch == epoch and e.kind == "normal"}
        lost = sorted(s for s in served if got and s <= max(got) and s not in got)
        assert not lost, f"epoch {epoch}: served segments {lost} were not committed (committed {got})"
    empty = [p for p in (storage.root / "quarantine").rglob("*") if p.is_file() and p.stat().st_size == 0]
    assert not empty, f"empty files quarantined: {empty}"
    return rows


def new_segments(rec, n):
    start = rec.status()["recorded"]
    return lambda: rec.status()["recorded"] >= start + n


@pytest.mark.slow
def test_offline_and_server_errors_then_back(tmp_path, origin):
    rec, storage = recorder_for(tmp_path, origin.url, **FAST)
    states = States(rec)
    wait_for(lambda: rec.status()["recorded"] >= 1, 30, what="a first segment")
    origin.set_mode("offline")
    states.wait("offline", 15)
    origin.set_mode("error")
    wait_for(lambda: "500" in rec.status()["last_error"], 15, what="the 500 shown")
    origin.set_mode("normal")
    wait_for(new_segments(rec, 2), 30, what="recording again")
    rec.stop()
    states.stop()
    assert "failed" not in states.seen and "backoff" in states.seen
    assert_nothing_lost_or_twice(origin, storage)


@pytest.mark.slow
def test_frozen_playlist_is_stalled_not_recorded_again(tmp_path, origin):
    """Issue 13 item 3: a playlist that stopped advancing was recorded again at each reconnect."""
    rec, storage = recorder_for(tmp_path, origin.url, **FAST)
    states = States(rec)
    wait_for(lambda: rec.status()["recorded"] >= 1, 30, what="a first segment")
    origin.set_mode("stall")
    states.wait("stalled", 20)
    during = rec.status()["recorded"]
    wait_for(lambda: states.seen.count("stalled") >= 2 or rec.status()["replayed"] >= 6, 15, what="more replays")
    assert rec.status()["recorded"] <= during + 1  # at most the segment open when it froze
    assert "no new media" in states.details["stalled"]
    origin.set_mode("normal")
    wait_for(new_segments(rec, 2), 30, what="recording after the stall")
    rec.stop()
    states.stop()
    assert "failed" not in states.seen and rec.status()["replayed"] > 0
    assert_nothing_lost_or_twice(origin, storage)


@pytest.mark.slow  # ~9 s on the 2-core machine
def test_corrupt_segments_then_an_encoder_restart_on_other_pids(tmp_path, origin, other_encoder):
    """Issue 13 item 2: corrupt segments, then a media sequence restarting from 0 with another
    encoder's PIDs and track count, killed the recorder for good (IndexError, state failed)."""
    rec, storage = recorder_for(tmp_path, origin.url, **FAST)
    states = States(rec)
    wait_for(lambda: rec.status()["recorded"] >= 1, 30, what="a first segment")
    origin.set_mode("corrupt")
    wait_for(lambda: sum(e.kind == "corrupt" for e in origin.served) >= 2, 15, what="corrupt segments served")
    origin.set_mode("normal")
    origin.restart_encoder(other_encoder)
    other = {source_key(p) for p in other_encoder.glob("seg*.ts")}

    def from_other_encoder():
        return len(other & set(committed_keys(storage))) >= 3

    wait_for(from_other_encoder, 40, interval=0.5, what="3 s from the new encoder")
    rec.stop()
    states.stop()
    assert "failed" not in states.seen
    rows = assert_nothing_lost_or_twice(origin, storage)
    assert {r["audio_codec"] for r in rows} == {"aac", None}  # both programs: two tracks, then one
    # The restart was followed at once: the new encoder's media from its very first segment.
    assert source_key(origin.produced(1)[0].source) in committed_keys(storage)


@pytest.mark.slow
def test_truncated_segments_and_a_switch_to_other_pids(tmp_path, origin, other_encoder):
    rec, storage = recorder_for(tmp_path, origin.url, **FAST)
    states = States(rec)
    wait_for(lambda: rec.status()["recorded"] >= 1, 30, what="a first segment")
    origin.set_mode("truncated")
    wait_for(lambda: sum(e.kind == "truncated" for e in origin.served) >= 2, 15, what="truncated segments served")
    origin.set_mode("normal")
    wait_for(new_segments(rec, 1), 30, what="recording after the truncated segments")
    origin.switch_footage(other_encoder)  # same playlist, another program from the next segment
    wait_for(lambda: any(r["audio_codec"] is None for r in read_segments(storage).to_pylist()), 30,
             interval=0.5, what="a segment of the other program")
    rec.stop()
    states.stop()
    assert "failed" not in states.seen
    assert_nothing_lost_or_twice(origin, storage)


@pytest.mark.slow  # ~7 s on the 2-core machine
def test_a_restarted_recorder_does_not_record_again(tmp_path, origin):
    rec, storage = recorder_for(tmp_path, origin.url, **FAST)
    wait_for(lambda: rec.status()["recorded"] >= 2, 30, what="two segments")
    rec.stop()
    again, _ = recorder_for(tmp_path, origin.url, **FAST)  # resumes at the last media sequence
    wait_for(new_segments(again, 1), 30, what="a segment after the restart")
    st = again.stop()
    assert st["replayed"] >= 1  # it started on the last committed segment, and skipped it
    assert_nothing_lost_or_twice(origin, storage)


def test_an_ended_broadcast_is_ended_not_stalled_and_not_recorded_again(tmp_path, hls, footage):
    url = hls.add_stream("cam", footage)
    rec, storage = recorder_for(tmp_path, url, **FAST)
    states = States(rec)
    wait_for(lambda: rec.status()["recorded"] >= 1, 30, what="a first segment")
    hls.set_state("cam", "ended")  # ENDLIST: each reconnect reads the closed playlist again
    wait_for(lambda: rec.status()["replayed"] >= 4, 30, what="a closed playlist read again")
    rec.stop()
    states.stop()
    assert "stalled" not in states.seen and "stream ended" in states.details["backoff"]
    keys = committed_keys(storage)
    assert len(keys) == len(set(keys))
