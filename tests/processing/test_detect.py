"""Faces and person masks on real footage: carphone, and carphone as a facecam in a 720p layout."""

import subprocess

import av
import numpy as np
import pytest

from stream2dataset.demo.footage import DEFAULT_LAYOUT, build_demo_hls, carphone_path
from stream2dataset.processing.detect import FaceDetector, align_face, eye_targets
from stream2dataset.processing.models import fetch_models
from stream2dataset.processing.person import PersonSegmenter, person_box


def _decode(path, limit=None) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if limit and len(frames) == limit:
                break
    return frames


@pytest.fixture(scope="module", autouse=True)
def _models():
    fetch_models()  # a no-op once the files are in the model folder


@pytest.fixture(scope="module")
def carphone() -> list[np.ndarray]:
    return _decode(carphone_path())


@pytest.fixture(scope="module")
def streamer(tmp_path_factory) -> list[np.ndarray]:
    """4 s of the 1280x720 streamer layout: testsrc2 + the carphone facecam at a known box."""
    out = build_demo_hls(tmp_path_factory.mktemp("demo") / "hls", DEFAULT_LAYOUT, seconds=4,
                         segment_seconds=2)  # fmt: skip
    return [f for seg in sorted(out.glob("*.ts")) for f in _decode(seg)]


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> list[np.ndarray]:
    """20 frames of testsrc2 at 1280x720: no faces, no people."""
    path = tmp_path_factory.mktemp("plain") / "testsrc2.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=5",
                    "-t", "4", "-pix_fmt", "yuv420p", str(path)], check=True)  # fmt: skip
    return _decode(path)


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


@pytest.fixture(scope="module")
def carphone_faces(detector, carphone):
    return [detector.detect(f) for f in carphone]


def _centre(box):
    x, y, w, h = box
    return np.array([x + w / 2, y + h / 2])


def test_carphone_face_in_nearly_every_frame_and_stable(carphone, carphone_faces):
    assert len(carphone) == 120
    found = [faces for faces in carphone_faces if faces]
    assert len(found) / len(carphone) >= 0.98
    assert all(len(faces) == 1 for faces in found)
    centres = np.array([_centre(faces[0].box) for faces in found])
    moves = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    assert np.median(moves) < 2.0  # px per frame; the face is ~50 px wide
    face = found[0][0]
    assert all(isinstance(v, int) for v in face.box) and 0.5 <= face.score <= 1.0
    right_eye, left_eye = face.keypoints[0], face.keypoints[1]
    assert right_eye[0] < left_eye[0]  # the subject's right eye is on the image's left


def test_streamer_layout_face_inside_the_facecam(detector, streamer):
    cam = DEFAULT_LAYOUT.facecam
    assert streamer[0].shape == (720, 1280, 3)
    found = [detector.detect(f) for f in streamer]
    assert sum(map(bool, found)) / len(streamer) >= 0.98
    for faces in found:
        for face in faces:
            x, y, w, h = face.box
            assert cam.x <= x and cam.y <= y and x + w <= cam.x + cam.w and y + h <= cam.y + cam.h


def test_no_faces_on_synthetic_background(detector, plain):
    assert len(plain) == 20
    assert [detector.detect(f) for f in plain] == [[]] * 20


def test_batch_call_gives_plain_arrays(detector, carphone, plain):
    batch = {"image": np.array([carphone[0], plain[0]], dtype=object)}
    out = detector(batch)
    assert out["face_boxes"][0].shape == (1, 4) and out["face_boxes"][1].shape == (0, 4)
    assert out["face_scores"][0].dtype == np.float32 and len(out["face_scores"][1]) == 0
    assert out["face_keypoints"][0].shape == (1, 6, 2)


def test_haar_fallback_finds_carphone(carphone):
    haar = FaceDetector(method="haar")
    frames = carphone[::2]  # ~90 ms a frame: half the clip tells the rate
    rate = sum(bool(haar.detect(f)) for f in frames) / len(frames)
    assert rate >= 0.7, rate  # measured 0.775: the frontal cascade misses the turned head


def test_align_face_puts_the_eyes_in_place(detector, carphone, carphone_faces):
    size = 256
    targets = np.array(eye_targets(size))
    errors = []
    for frame, faces in list(zip(carphone, carphone_faces))[::4]:
        crop = align_face(frame, faces[0], size)
        assert crop.shape == (size, size, 3)
        again = detector.detect(crop)
        assert len(again) == 1
        errors.append(np.array(again[0].keypoints[:2]) - targets)
    errors = np.array(errors)
    # The detector's eyes jitter ~1 px at carphone's scale, ~3.6 px once scaled to the crop.
    assert np.median(np.abs(errors).max(axis=(1, 2))) < 8
    assert np.all(np.abs(errors.mean(axis=0)) < 5)  # no systematic offset


@pytest.fixture(scope="module")
def segmenter() -> PersonSegmenter:
    return PersonSegmenter()


def test_person_mask_covers_the_person(segmenter, carphone, carphone_faces):
    for frame, faces in list(zip(carphone, carphone_faces))[::6]:
        mask = segmenter.mask(frame)
        assert mask.shape == frame.shape[:2] and mask.dtype == np.float32
        assert 0.0 <= mask.min() and mask.max() <= 1.0
        x, y, w, h = faces[0].box
        assert mask[y + h // 2, x + w // 2] > 0.5
        px, py, pw, ph = person_box(mask)
        assert px <= x and py <= y and x + w <= px + pw and y + h <= py + ph


def test_no_person_on_synthetic_background(segmenter, plain):
    assert person_box(segmenter.mask(plain[0])) is None
