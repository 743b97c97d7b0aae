"""What a recorder remembers of its committed media: replays skipped, reruns recorded, restarts kept."""

from __future__ import annotations

import threading

from stream2dataset.ingest import memory as memory_module
from stream2dataset.ingest.memory import CommitMemory, Mark, memory_path
from stream2dataset.ingest.segments import keyframe_marks
from stream2dataset.layout import Storage

from .conftest import segment_files
from .test_segment_faults import Sequenced, payloads
from .test_segments import Recorder, assert_committed, video_payloads


def test_it_survives_a_restart_and_is_written_atomically(tmp_path):
    storage = Storage(tmp_path / "root")
    memory = CommitMemory.load(storage, "cam")
    assert not memory.seen(Mark("90000:ab", 7)) and memory.media_sequence is None
    memory.add([Mark("90000:ab", 7), Mark("180000:cd", 8)], "f" * 64, media_sequence=8)
    again = CommitMemory.load(storage, "cam")
    assert again.seen(Mark("90000:ab", 7)) and again.has_hash("f" * 64, 8)
    assert (again.media_sequence, again.pts) == (8, 180000)
    assert [p.name for p in memory_path(storage, "cam").parent.iterdir()] == ["cam.json"]  # no temp left
    memory_path(storage, "cam").write_text("{not json")
    assert CommitMemory.load(storage, "cam").marks == {}  # unreadable: start empty, never crash


def test_a_replay_is_seen_a_rerun_is_not():
    memory = CommitMemory()
    memory.add([Mark("90000:ab", 7)], "f" * 64, 7)
    assert memory.seen(Mark("90000:ab", 7))  # the same segment again: a replay
    assert not memory.seen(Mark("90000:ab", 15))  # the same footage under a new number: a rerun
    assert not memory.has_hash("f" * 64, 15) and memory.has_hash("f" * 64, None)
    memory.add([Mark("270000:ef", None)], None)  # salvaged after a crash: its number is unknown
    assert memory.seen(Mark("270000:ef", 9))  # the restarted recorder's replay of it...
    assert not memory.seen(Mark("270000:ef", 17))  # ...gave it that number: a later loop is new


def test_it_keeps_the_newest_marks(monkeypatch):
    monkeypatch.setattr(memory_module, "MAX_MARKS", 3)
    memory = CommitMemory()
    for i in range(5):
        memory.add([Mark(f"{i}:x", i)], None, i)
    assert list(memory.marks) == ["2:x", "3:x", "4:x"] and memory.media_sequence == 4


def test_the_segmenter_records_a_rerun_and_skips_a_replay(footage, tmp_path):
    memory = CommitMemory()
    segs = segment_files(footage)[:2]
    rec = Recorder(tmp_path, 100, memory=memory)
    rec.seg.on_segment = lambda cut: (rec.cut.append(cut), memory.add(cut.marks, cut.sha256, cut.media_sequence))
    for numbers in ([0, 1], [8, 9], [8, 9]):  # the footage, a loop of it, a replay of the loop
        assert rec.seg.run(Sequenced(list(zip(numbers, (f.read_bytes() for f in segs)))), threading.Event()) == "ended"
    assert_committed(rec)
    assert [s.media_sequence for s in rec.cut] == [1, 9] and rec.seg.replayed == 2
    assert [video_payloads(s.path) for s in rec.cut] == [payloads(segs)] * 2


def test_a_salvaged_keyframe_the_restart_did_not_replay_is_forgotten_at_the_next_commit():
    memory = CommitMemory()
    memory.add([Mark("270000:ef", None)], "e" * 64)  # salvaged; the restart resumed past it
    memory.add([Mark("360000:aa", 12)], "a" * 64, 12)  # the restarted recorder's first new media
    assert not memory.seen(Mark("270000:ef", 17))  # the same footage looped later: new media
    assert not memory.has_hash("e" * 64, 17)
    assert memory.seen(Mark("360000:aa", 12))


def test_a_loop_of_salvaged_footage_after_new_media_on_one_connection_is_recorded(footage, tmp_path):
    # The restarted recorder resumed past the salvaged segment (never replayed, so its keyframes
    # stay unnumbered) and, before its first commit, the live clip loops back to those very bytes.
    memory = CommitMemory()
    segs = segment_files(footage)[:4]
    memory.add([m for f in segs[:1] for m in keyframe_marks(f)], None)  # what recovery remembers
    rec = Recorder(tmp_path, 100, memory=memory)
    parts = [(seq, f.read_bytes()) for seq, f in zip([10, 11, 16], [segs[2], segs[3], segs[0]])]
    assert rec.seg.run(Sequenced(parts), threading.Event()) == "ended"
    assert_committed(rec)
    assert rec.seg.replayed == 0
    assert [p for s in rec.cut for p in video_payloads(s.path)] == payloads([segs[2], segs[3], segs[0]])
