"""pHash packing, Hamming distances and the in-segment near-duplicate pass, on real clips."""

import time

import cv2
import numpy as np
import pytest

from stream2dataset.processing.hashing import hamming, mark_near_duplicates, phash64

from ..conftest import decode

@pytest.fixture(scope="module")
def carphone() -> np.ndarray:
    return decode("carphone_pristine.mp4", 16)  # a face in a car, 176x144 at ~30 fps


@pytest.fixture(scope="module")
def bikes() -> np.ndarray:
    return decode("bikes.mp4", 16)  # street scene, 640x272 at 25 fps


def test_phash64_packs_opencvs_bytes_big_endian(carphone):
    hashes = phash64(carphone)
    assert hashes.shape == (len(carphone),) and hashes.dtype == np.uint64
    # Same as OpenCV's own pHash (which reads BGR) on the same picture, byte 0 most significant.
    raw = cv2.img_hash.pHash(cv2.cvtColor(carphone[3], cv2.COLOR_RGB2BGR))[0]
    assert f"{int(hashes[3]):016x}" == bytes(raw).hex()
    assert phash64(carphone[3:4])[0] == hashes[3]  # batch size does not matter
    rgba = np.concatenate([carphone, np.zeros((*carphone.shape[:3], 1), np.uint8)], axis=-1)
    assert (phash64(rgba) == hashes).all()  # alpha is ignored
    assert phash64(carphone[:0]).shape == (0,)


def test_identical_frames_are_at_distance_zero(carphone):
    a = phash64(carphone[:4])
    assert (hamming(a, phash64(carphone[:4].copy())) == 0).all()


def test_consecutive_frames_are_near_and_other_clips_far(carphone, bikes):
    a, b = phash64(carphone), phash64(bikes)
    consecutive = hamming(a[1:], a[:-1])
    cross = hamming(a[:, None], b[None, :])  # every carphone frame against every bikes frame
    print(f"consecutive carphone: max {consecutive.max()}; carphone vs bikes: min {cross.min()}, "
          f"median {np.median(cross)}")
    assert consecutive.max() <= 10
    assert cross.min() > 20


def test_hamming_broadcasts_over_uint64():
    assert int(hamming(0, np.uint64(2**64 - 1))) == 64
    assert hamming(np.uint64(0b1011), np.array([0, 1, 0b1011], np.uint64)).tolist() == [3, 2, 0]


def test_mark_near_duplicates_on_real_frames(carphone, bikes):
    seq = np.stack([carphone[0], carphone[1], carphone[2], bikes[0][:144, :176], bikes[1][:144, :176]])
    assert mark_near_duplicates(phash64(seq), max_distance=10) == [None, 0, 0, None, 3]
    assert mark_near_duplicates(phash64(seq), max_distance=-1) == [None] * 5  # nothing is a duplicate
    assert mark_near_duplicates(np.empty(0, np.uint64), 10) == []


def test_mark_near_duplicates_compares_with_the_kept_frame_not_the_previous():
    drift = np.array([0b0, 0b1, 0b11, 0b111, 0b1111], np.uint64)  # each 1 bit from the previous
    assert mark_near_duplicates(drift, max_distance=2) == [None, 0, 0, None, 3]


def test_missing_img_hash_names_the_package(monkeypatch, carphone):
    monkeypatch.delattr(cv2, "img_hash")
    with pytest.raises(ImportError, match="opencv-contrib-python"):
        phash64(carphone)


def test_phash64_speed(carphone):
    batch = np.stack([cv2.resize(f, (256, 256)) for f in carphone] * 8)  # 128 frames of 256x256
    phash64(batch)
    start = time.perf_counter()
    phash64(batch)
    print(f"phash64: {(time.perf_counter() - start) / len(batch) * 1e3:.3f} ms per 256x256 frame")
