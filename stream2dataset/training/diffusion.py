"""The image diffusion model: a diffusers UNet, its DDPM noise schedule, the training loss, DDIM
sampling and noise-space interpolation. Pure PyTorch: the Ray Train loop lives in trainer.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

from ..config import DiffusionSettings


def build_unet(s: DiffusionSettings, num_classes: int = 0) -> UNet2DModel:
    """The UNet of `s`; with `num_classes` > 0 it learns one embedding per class (channel), added
    to the timestep embedding, so `class_labels` must then be given to every forward."""
    channels = tuple(s.base_channels * m for m in s.channel_mults)
    attn = set(s.attention_levels)
    return UNet2DModel(
        sample_size=s.resolution,
        in_channels=3,
        out_channels=3,
        block_out_channels=channels,
        layers_per_block=s.layers_per_block,
        dropout=s.dropout,
        down_block_types=tuple("AttnDownBlock2D" if i in attn else "DownBlock2D" for i in range(len(channels))),
        # up blocks run from the lowest resolution back to level 0
        up_block_types=tuple("AttnUpBlock2D" if i in attn else "UpBlock2D" for i in reversed(range(len(channels)))),
        # diffusers' default of 32 groups does not divide small widths (GroupNorm would fail)
        norm_num_groups=math.gcd(32, *channels),
        num_class_embeds=num_classes or None,
    )


def build_scheduler(s: DiffusionSettings) -> DDPMScheduler:
    """The DDPM training schedule: epsilon prediction, x0 clipped to the image range."""
    return DDPMScheduler(num_train_timesteps=s.timesteps, beta_schedule=s.beta_schedule,
                         prediction_type="epsilon", clip_sample=True)


def _draw_device(generator: torch.Generator | None, fallback) -> torch.device | str:
    # Draw where the generator lives (a CPU generator cannot drive CUDA draws), then move: the
    # same seed then gives the same noise on any device.
    return generator.device if generator is not None else fallback


def diffusion_loss(unet: UNet2DModel, scheduler: DDPMScheduler, images: torch.Tensor,
                   labels: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean squared error of the predicted noise at uniformly drawn timesteps; `images` are
    float [B, 3, H, W] in [-1, 1]."""
    device, where = images.device, _draw_device(generator, images.device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, images.shape[:1], generator=generator, device=where)
    noise = torch.randn(images.shape, generator=generator, device=where)
    t, noise = t.to(device), noise.to(device)
    noisy = scheduler.add_noise(images.float(), noise, t)
    pred = unet(noisy.to(images.dtype), t, class_labels=labels).sample
    # fp32 loss: under bf16 autocast a low-precision reduction loses the small late-training losses
    return F.mse_loss(pred.float(), noise)


def _labels(labels, n: int, device) -> torch.Tensor | None:
    if labels is None:
        return None
    labels = torch.as_tensor(labels, dtype=torch.long, device=device)
    return labels.expand(n) if labels.ndim == 0 else labels


@torch.no_grad()
def ddim_sample(unet: UNet2DModel, s: DiffusionSettings, n: int, *, generator: torch.Generator | None,
                labels: torch.Tensor | Sequence[int] | int | None = None, steps: int | None = None,
                latents: torch.Tensor | None = None, batch_size: int = 64, clip: bool = True) -> torch.Tensor:
    """`n` images [n, 3, H, W] in [-1, 1] by deterministic DDIM (eta 0) on the unet's device.

    Same generator seed (or same `latents`) gives the same images. `labels`: one int for all, or
    one per image, for a class-conditioned unet. `clip`: clamp each step's predicted x0 to the image
    range (off to decode latents from DDIM inversion, which does not clamp: it must mirror it).
    Returns a CPU float tensor.
    """
    # "trailing" starts at the last training timestep: the latents are pure noise, and DDIM's
    # default "leading" spacing would first denoise them as if partly clean (t=980 of 1000).
    sched = DDIMScheduler.from_config(build_scheduler(s).config, timestep_spacing="trailing", clip_sample=clip)
    sched.set_timesteps(steps or s.sample_steps)
    if latents is None:
        latents = torch.randn((n, 3, s.resolution, s.resolution), generator=generator,
                              device=_draw_device(generator, "cpu"))
    if len(latents) != n:
        raise ValueError(f"{len(latents)} latents for {n} images")
    device, dtype = unet.device, unet.dtype
    labels = _labels(labels, n, device)
    was_training = unet.training
    unet.eval()
    out = []
    try:
        for i in range(0, n, batch_size):
            x = latents[i:i + batch_size].to(device, torch.float32)
            y = labels[i:i + batch_size] if labels is not None else None
            for t in sched.timesteps:
                eps = unet(x.to(dtype), t.to(device), class_labels=y).sample.float()
                x = sched.step(eps, t, x, eta=0.0).prev_sample
            out.append(x.clamp(-1, 1).cpu())
    finally:
        unet.train(was_training)
    return torch.cat(out)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation from `a` (t=0) to `b` (t=1). Gaussian noise lives near a sphere:
    a straight line between two noises passes through low-norm points the model never saw."""
    fa, fb = a.flatten().double(), b.flatten().double()
    cos = float(fa @ fb / (fa.norm() * fb.norm()).clamp_min(1e-12))
    if abs(cos) > 0.9995:  # (anti)parallel: the angle is ill-conditioned, and a line is as good
        return torch.lerp(a.double(), b.double(), t).to(a.dtype)
    theta = math.acos(cos)
    wa, wb = math.sin((1 - t) * theta) / math.sin(theta), math.sin(t * theta) / math.sin(theta)
    return (wa * a.double() + wb * b.double()).to(a.dtype)


def interpolation_latents(s: DiffusionSettings, n_frames: int, generator: torch.Generator | None,
                          keyframes: int = 2) -> torch.Tensor:
    """[n_frames, 3, H, W] noise latents walking by slerp through `keyframes` random noises,
    first frame on the first keyframe and last frame on the last (frames spread evenly)."""
    if keyframes < 2 or n_frames < 2:
        raise ValueError("an interpolation needs at least 2 keyframes and 2 frames")
    keys = torch.randn((keyframes, 3, s.resolution, s.resolution), generator=generator,
                       device=_draw_device(generator, "cpu"))
    frames = []
    for u in np.linspace(0, keyframes - 1, n_frames):
        k = min(int(u), keyframes - 2)  # the last frame sits at t=1 of the last stretch
        frames.append(slerp(keys[k], keys[k + 1], float(u - k)))
    return torch.stack(frames)

