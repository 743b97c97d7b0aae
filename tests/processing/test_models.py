"""The model files: fetched once from the mediapipe 0.10.21 wheel with pip, verified by sha256."""

import hashlib
import subprocess

import pytest

from stream2dataset.errors import UserError
from stream2dataset.processing import models
from stream2dataset.processing.models import MODELS, fetch_models, model_path


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def fetched(tmp_path_factory):
    """One real download (pip, ~35 MB) into a fresh S2D_MODELS folder, shared by this module."""
    dest = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("S2D_MODELS", str(dest))
        assert fetch_models() == dest
    return dest


def test_fetch_gives_the_pinned_files(fetched, monkeypatch):
    assert sorted(p.name for p in fetched.iterdir()) == sorted(MODELS)
    for name, (_, sha) in MODELS.items():
        assert _sha(fetched / name) == sha
    monkeypatch.setenv("S2D_MODELS", str(fetched))
    assert model_path("selfie_segmentation.tflite") == fetched / "selfie_segmentation.tflite"


def test_second_fetch_does_not_download(fetched, monkeypatch):
    mtimes = {p.name: p.stat().st_mtime_ns for p in fetched.iterdir()}

    def no_pip(*args, **kwargs):
        raise AssertionError(f"pip ran again: {args}")

    monkeypatch.setattr(subprocess, "run", no_pip)
    assert fetch_models(fetched) == fetched
    assert {p.name: p.stat().st_mtime_ns for p in fetched.iterdir()} == mtimes


def test_corrupt_file_is_detected_and_fetched_again(fetched, monkeypatch):
    monkeypatch.setenv("S2D_MODELS", str(fetched))
    damaged = fetched / "face_detection_short_range.tflite"
    damaged.write_bytes(b"not a model")
    with pytest.raises(UserError, match="sha256"):
        model_path("face_detection_short_range.tflite")
    fetch_models()
    assert _sha(damaged) == MODELS[damaged.name][1]
    assert not [p for p in fetched.iterdir() if p.name.startswith(".")]  # no temp files left


def test_hash_mismatch_from_the_wheel_leaves_nothing(tmp_path, monkeypatch):
    bad = {**MODELS, "selfie_segmentation.tflite": (MODELS["selfie_segmentation.tflite"][0], "0" * 64)}
    monkeypatch.setattr(models, "MODELS", bad)
    with pytest.raises(UserError, match="sha256"):
        fetch_models(tmp_path / "m")
    assert not (tmp_path / "m").exists() or not list((tmp_path / "m").iterdir())


def test_missing_model_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("S2D_MODELS", str(tmp_path))
    with pytest.raises(UserError) as info:
        model_path("face_detection_full_range_sparse.tflite")
    assert "python -m stream2dataset.processing.models" in str(info.value)
    assert "./run setup" in str(info.value)
