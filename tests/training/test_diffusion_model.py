"""The diffusion model's PyTorch part on real footage (carphone frames at 32x32), and the
memorisation check."""

import av
import cv2
import numpy as np
import pytest
import torch

from stream2dataset.config import DiffusionSettings
from stream2dataset.demo.footage import carphone_path
from stream2dataset.training.diffusion import (build_scheduler, build_unet, ddim_sample, diffusion_loss,
                                               interpolation_latents, slerp)
from stream2dataset.training.memorisation import (COPY_RMSE, memorisation_table, nearest_training_frames,
                                                  write_memorisation_sheet)
from stream2dataset.training.tensors import to_uint8

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = DiffusionSettings(resolution=32, base_channels=16, channel_mults=[1, 2], attention_levels=[1],
                         layers_per_block=1, dropout=0.0, sample_steps=4)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """All 120 carphone frames, area-resized to 32x32 RGB uint8 (NHWC)."""
    with av.open(str(carphone_path())) as container:
        full = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return np.stack([cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA) for f in full])


def as_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def tiny_unet(num_classes: int = 0, seed: int = 0):
    torch.manual_seed(seed)
    return build_unet(TINY, num_classes)


def test_default_unet_is_the_ddpm_cifar_unet():
    unet = build_unet(DiffusionSettings())
    params = sum(p.numel() for p in unet.parameters())
    assert 30e6 < params < 40e6, params
    assert unet.config.down_block_types == ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D")
    assert unet.config.up_block_types == ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D")
    assert unet.config.block_out_channels == (128, 256, 256, 256)


def test_loss_goes_down_on_carphone(frames):
    unet, sched = tiny_unet(), build_scheduler(TINY)
    data = as_tensor(frames[::2])  # 60 frames
    opt = torch.optim.Adam(unet.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        batch = data[torch.randint(0, len(data), (8,), generator=gen)]
        loss = diffusion_loss(unet, sched, batch, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert loss.dtype == torch.float32 and np.isfinite(losses).all()
    assert last < 0.5 * first and last < 0.4, (first, last)  # seen: 0.66 -> 0.13


def test_loss_is_fp32_under_autocast(frames):
    unet = tiny_unet()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = diffusion_loss(unet, build_scheduler(TINY), as_tensor(frames[:4]),
                              generator=torch.Generator().manual_seed(0))
    assert loss.dtype == torch.float32


def test_ddim_sample_shape_range_and_determinism():
    unet = tiny_unet()
    unet.train()
    a = ddim_sample(unet, TINY, 3, generator=torch.Generator().manual_seed(1), batch_size=2)
    assert unet.training  # train mode restored
    assert a.shape == (3, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    b = ddim_sample(unet, TINY, 3, generator=torch.Generator().manual_seed(1))
    # batch size does not change the images (beyond float32 rounding: CPU kernels differ per batch
    # size, measured up to 2e-4 after the sampling steps on this machine kind)
    assert torch.allclose(a, b, atol=1e-3)
    latents = torch.randn((3, 3, 32, 32), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(a, ddim_sample(unet, TINY, 3, generator=None, latents=latents, batch_size=2))
    c = ddim_sample(unet, TINY, 3, generator=torch.Generator().manual_seed(2), steps=2)
    assert not torch.allclose(a, c)
    unet.eval()
    ddim_sample(unet, TINY, 1, generator=torch.Generator().manual_seed(1), steps=1)
    assert not unet.training


def test_channel_conditioning(frames):
    unet, sched = tiny_unet(num_classes=3), build_scheduler(TINY)
    labels = torch.tensor([0, 1, 2, 1])
    loss = diffusion_loss(unet, sched, as_tensor(frames[:4]), labels, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert unet.class_embedding.weight.grad.abs().sum() > 0
    out = [ddim_sample(unet, TINY, 2, generator=torch.Generator().manual_seed(3), labels=y) for y in (0, 2)]
    assert out[0].shape == (2, 3, 32, 32)
    assert not torch.allclose(*out)  # the label changes the images
    per_image = ddim_sample(unet, TINY, 2, generator=torch.Generator().manual_seed(3), labels=[0, 2])
    assert torch.allclose(per_image[0], out[0][0], atol=1e-5) and torch.allclose(per_image[1], out[1][1], atol=1e-5)


def test_slerp():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn((2, 3, 32, 32), generator=gen)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-5) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    norm = (a.norm() + b.norm()) / 2
    for t in (0.25, 0.5, 0.75):
        assert abs(slerp(a, b, t).norm() / norm - 1) < 0.05
    assert abs(torch.lerp(a, b, 0.5).norm() / norm - 1) > 0.2  # what slerp avoids
    near = slerp(a, a * (1 + 1e-7), 0.5)  # parallel: no division by sin(0)
    assert torch.isfinite(near).all() and torch.allclose(near, a, atol=1e-5)


def test_interpolation_latents_walk_smoothly():
    n = 17
    lat = interpolation_latents(TINY, n, torch.Generator().manual_seed(5), keyframes=3)
    keys = torch.randn((3, 3, 32, 32), generator=torch.Generator().manual_seed(5))
    assert lat.shape == (n, 3, 32, 32)
    for frame, key in ((0, 0), (8, 1), (16, 2)):  # frames land on the keyframes
        assert torch.allclose(lat[frame], keys[key], atol=1e-5)
    steps = (lat[1:] - lat[:-1]).flatten(1).norm(dim=1)
    assert steps.max() < 0.25 * (keys[1] - keys[0]).norm()
    assert steps.max() < 1.5 * steps.min()  # even pace


def test_to_uint8():
    x = torch.tensor([-1.0, 0.0, 1.0, 3.0]).view(1, 1, 2, 2).expand(2, 3, 2, 2)
    out = to_uint8(x)
    assert out.dtype == np.uint8 and out.shape == (2, 2, 2, 3)
    assert out[0, :, :, 0].ravel().tolist() == [0, 128, 255, 255]


def test_memorisation_check(frames, tmp_path):
    train, ids = frames[:40], [f"carphone-{i:03d}" for i in range(40)]
    rng = np.random.default_rng(0)
    noisy = np.clip(train[25].astype(int) + rng.integers(-2, 3, train[25].shape), 0, 255).astype(np.uint8)
    noise = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    generated = np.stack([train[10], noisy, frames[119], noise])
    results = nearest_training_frames(generated, train, ids)

    exact, near, far, rand = results
    assert exact["copy"] and exact["train_id"] == "carphone-010"
    assert exact["phash_distance"] == 0 and exact["pixel_rmse"] == 0
    assert near["copy"] and near["train_id"] == "carphone-025"
    assert near["phash_distance"] <= 2 and near["pixel_rmse"] < 2
    assert not far["copy"] and far["pixel_rmse"] > 2 * COPY_RMSE  # same scene, 3 s later
    assert not rand["copy"] and rand["phash_distance"] > 10
    # larger training frames are compared at the generated size
    big = np.stack([cv2.resize(f, (64, 64), interpolation=cv2.INTER_CUBIC) for f in train])
    assert nearest_training_frames(generated[:1], big, ids)[0]["train_id"] == "carphone-010"

    sheet_path = write_memorisation_sheet(generated, train, results, tmp_path / "memo.png", tile=96, label=20)
    sheet = cv2.imread(str(sheet_path))[..., ::-1]  # RGB
    assert sheet.shape == (4 * (96 + 20), 2 * 96, 3)
    reddish = (sheet[..., 0] > 200) & (sheet[..., 1] < 100) & (sheet[..., 2] < 100)
    rows = [reddish[r * 116:(r + 1) * 116].sum() for r in range(4)]
    assert rows[0] > 100 and rows[1] > 100 and rows[2] == 0  # copies framed in red
    table = memorisation_table(results)
    assert "carphone-010" in table and "2 of 4 samples copy" in table
