"""The segmenter fed misbehaving MPEG-TS offline: other encoders, bad bytes, replays, its own bugs."""

from __future__ import annotations

import io
import random
import threading

import pytest

from stream2dataset.errors import CorruptMedia
from stream2dataset.ingest import segments
from stream2dataset.ingest.memory import CommitMemory
from stream2dataset.ingest.segments import keyframe_marks

from .conftest import segment_files
from .faulty_hls import garble
from .test_segments import Recorder, assert_committed, video_payloads


def concat(*parts: list) -> bytes:
    return b"".join(p.read_bytes() for files in parts for p in files)


def payloads(files) -> list[bytes]:
    return [p for f in files for p in video_payloads(f)]


class Chunked:
    """A live-ish stream over bytes: reads of at most `chunk` bytes; `fail` raises at `fail_at`."""

    def __init__(self, data: bytes, chunk: int = 6000, fail_at: int | None = None, fail=RuntimeError):
        self.f, self.chunk, self.fail_at, self.fail = io.BytesIO(data), chunk, fail_at, fail

    def read(self, n: int) -> bytes:
        if self.fail_at is not None and self.f.tell() >= self.fail_at:
            raise self.fail("injected")
        return self.f.read(min(n, self.chunk))


@pytest.mark.parametrize("order", ["two tracks, then one", "one track, then two"])
def test_another_encoder_with_other_pids_and_tracks_starts_a_new_segment(footage, other_encoder, tmp_path, order):
    """Issue 13 item 2: PyAV's demux raised IndexError here and the open segment was deleted."""
    first, second = segment_files(footage)[:4], segment_files(other_encoder)[:3]
    if order == "one track, then two":
        first, second = second, first
    rec = Recorder(tmp_path, 100)  # longer than the input: only the change of program cuts
    assert rec.seg.run(Chunked(concat(first, second)), threading.Event()) == "ended"
    assert_committed(rec)
    assert [round(s.info.duration_s) for s in rec.cut] == [len(first), len(second)]
    assert [s.info.audio_codec is None for s in rec.cut] == [f[0].parent == other_encoder for f in (first, second)]
    # Every video packet of both encoders, once, in order: nothing of either program is lost.
    assert [p for s in rec.cut for p in video_payloads(s.path)] == payloads(first) + payloads(second)
    assert rec.seg.faults == 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bad_bytes_lose_only_themselves(footage, tmp_path, seed):
    segs = segment_files(footage)
    bad = garble(segs[2].read_bytes(), seed) + random.Random(seed).randbytes(50_000)
    data = concat(segs[:2]) + bad + concat(segs[3:6])
    rec = Recorder(tmp_path, 2)
    assert rec.seg.run(Chunked(data), threading.Event()) == "ended"
    assert_committed(rec)
    got = [p for s in rec.cut for p in video_payloads(s.path)]
    before, after = payloads(segs[:2]), payloads(segs[3:6])
    lost = [i for i, p in enumerate(before + after) if p not in got]
    # A TS frame ends where the next begins: the damage may stick to the last frame before it.
    assert lost in ([], [len(before) - 1])
    assert [p for p in got if p in before + after] == [p for i, p in enumerate(before + after) if i not in lost]
    assert all(p.info.packets for p in rec.cut)
    assert all(path.stat().st_size for path, _ in rec.corrupt)  # no empty file handed on as corrupt


def test_a_replay_of_committed_media_is_skipped(footage, tmp_path):
    """Issue 13 item 3: the same media again (reconnect, frozen playlist) is not recorded twice."""
    memory = CommitMemory()
    segs = segment_files(footage)
    rec = Recorder(tmp_path, 2, memory=memory)
    rec.seg.on_segment = lambda cut: (rec.cut.append(cut), memory.add(cut.marks, cut.sha256, cut.media_sequence))
    assert rec.seg.run(Chunked(concat(segs[:4])), threading.Event()) == "ended"
    assert len(rec.cut) == 2 and rec.seg.replayed == 0
    # A reconnect starts a few segments back: the replayed part is skipped, the new part recorded.
    assert rec.seg.run(Chunked(concat(segs[1:6])), threading.Event()) == "ended"
    assert_committed(rec)
    assert rec.seg.replayed == 3
    assert [p for s in rec.cut for p in video_payloads(s.path)] == payloads(segs[:6])
    assert rec.seg.run(Chunked(concat(segs[2:6])), threading.Event()) == "ended"  # a frozen playlist
    assert len(rec.cut) == 3 and rec.seg.replayed == 7
    saved = {m.key for s in rec.cut for m in s.marks}
    assert saved == {m.key for f in segs[:6] for m in keyframe_marks(f)}


def test_a_bug_mid_segment_keeps_the_open_segment(footage, tmp_path):
    segs = segment_files(footage)
    data = concat(segs[:3])
    rec = Recorder(tmp_path, 100)
    with pytest.raises(RuntimeError, match="injected"):
        rec.seg.run(Chunked(data, fail_at=len(data) // 2), threading.Event())
    assert_committed(rec)  # committed (or salvaged), not deleted
    assert len(rec.cut) == 1 and rec.cut[0].info.packets >= 30


def test_a_segment_that_fails_its_probe_keeps_its_whole_packets(footage, tmp_path, monkeypatch):
    real_probe = segments.probe

    def probe_refusing_parts(path):
        if path.name.endswith(".part"):
            raise CorruptMedia("no decodable video frame")
        return real_probe(path)

    monkeypatch.setattr(segments, "probe", probe_refusing_parts)
    segs = segment_files(footage)
    rec = Recorder(tmp_path, 2)
    assert rec.seg.run(Chunked(concat(segs[:4])), threading.Event()) == "ended"
    assert_committed(rec)
    assert [s.status for s in rec.cut] == ["salvaged", "salvaged"] and rec.corrupt == []
    assert [len(s.marks) for s in rec.cut] == [2, 2]  # the keyframes they kept are remembered
    for cut, source in zip(rec.cut, (segs[:2], segs[2:4])):  # all but each stream's last packet
        assert video_payloads(cut.path) == payloads(source)[:-1]


class Sequenced(Chunked):
    """A stream that tells the HLS media sequence of its bytes, like the streamlink reader."""

    def __init__(self, parts: list[tuple[int, bytes]]):
        super().__init__(b"".join(data for _, data in parts))
        self.starts, start = [], 0
        for seq, data in parts:
            self.starts.append((start, seq))
            start += len(data)

    def sequence_at(self, offset: int) -> int:
        return [seq for start, seq in self.starts if start <= offset][-1]


def test_a_media_sequence_that_goes_back_starts_a_new_segment(footage, tmp_path):
    segs = segment_files(footage)  # timestamps run on: only the numbers say the encoder restarted
    parts = [(seq, f.read_bytes()) for seq, f in zip([10, 11, 0, 1], segs)]
    rec = Recorder(tmp_path, 100)
    assert rec.seg.run(Sequenced(parts), threading.Event()) == "ended"
    assert_committed(rec)
    assert [[m.sequence for m in s.marks] for s in rec.cut] == [[10, 11], [0, 1]]
    assert [s.media_sequence for s in rec.cut] == [11, 1]
    assert [p for s in rec.cut for p in video_payloads(s.path)] == payloads(segs[:4])
