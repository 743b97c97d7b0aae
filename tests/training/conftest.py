"""A small real-footage snapshot for training tests: facecam crops and clips of the test stream."""

import os
from pathlib import Path

import pytest
import torch

from stream2dataset.config import TrainingConfig, parse_config
from stream2dataset.dataset.snapshots import create_snapshot
from stream2dataset.layout import Storage

# A storage root made ahead by `make_training_root` (bench/gpu/prepare.py): a GPU node that has the
# training stack but not the processing one (mediapipe, PyAV) runs the training tests on it.
PREBUILT = os.environ.get("S2D_TEST_TRAINING_ROOT")


@pytest.fixture(scope="session")
def snapshot_root(tmp_path_factory, request, ray_local):
    """Storage root holding snapshot `train-v1`: the 8 s test stream's facecam at 4 frames/s and
    clips of 8 frames at 8 fps, as 64-px crops (real carphone footage)."""
    if PREBUILT:
        return Storage(Path(PREBUILT))
    return make_training_root(tmp_path_factory.mktemp("training"), request.getfixturevalue("footage"))


def make_training_root(tmp: Path, footage: Path) -> Storage:
    """Process the test stream into `tmp/data` and freeze snapshot `train-v1` (see `snapshot_root`)."""
    from stream2dataset.processing.pipeline import file_segments, process

    video = tmp / "streamer.ts"
    video.write_bytes(b"".join(p.read_bytes() for p in sorted(footage.glob("seg*.ts"))))
    cfg = parse_config({"storage": {"root": str(tmp / "data")},
                        "processing": {"sample_fps": 4, "min_crop_px": 32, "dedup_distance": 0,
                                       "transforms": [{"resize": {"size": 64, "mode": "pad"}}],
                                       "clips": {"enabled": True, "fps": 8, "length": 8, "min_motion": 0}}})
    report = process(cfg, file_segments([video]))
    assert report["kept"] >= 24, report
    storage = Storage(cfg.storage.root)
    create_snapshot(storage, "train-v1")
    return storage


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for in-process training: on a busy 2-core machine two OpenMP threads wait
    on each other (measured: 0.15-0.45 s per tiny step on one thread, 2.3-3.0 s on two)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(**changes) -> TrainingConfig:
    """Tiny models and a few steps: the whole path on CPU in seconds."""
    base = {"steps": 12, "batch_size": 4, "lr": 1e-3, "warmup_steps": 2, "checkpoint_every": 6, "sample_every": 6,
            "log_every": 2, "workers": 2, "loader_cpus": 0.5, "cpus_per_worker": 0.5, "max_failures": 2,
            "diffusion": {"resolution": 32, "base_channels": 16, "channel_mults": [1, 2], "attention_levels": [1],
                          "layers_per_block": 1, "timesteps": 100, "sample_steps": 5},
            "temporal": {"resolution": 32, "latent_dim": 32, "ae_channels": 16, "hidden": 64, "layers": 1, "context": 6}}
    for key, value in changes.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) else value
    return TrainingConfig.model_validate(base)
