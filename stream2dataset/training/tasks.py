"""The two model families, as the training loop sees them.

A task builds its network, turns a loader batch into the loss, and draws preview images from the
EMA weights. The loop (loop.py) knows nothing else about either model, so a third family is one
more class here.
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import TrainingConfig
from .temporal import TemporalModel, generate
from .tensors import random_flip, to_uint8, to_unit


class DiffusionTask:
    kind = "diffusion"
    loss_parts: list[str] = []

    def __init__(self, cfg: TrainingConfig, channels: list[str]):
        # diffusion.py imports diffusers (~1 s): deferred on purpose, the temporal task never needs it
        from .diffusion import build_scheduler, build_unet

        self.s, self.flip = cfg.diffusion, cfg.flip
        self.num_classes = len(channels) if self.s.condition_on_channel else 0
        self.model = build_unet(self.s, self.num_classes)
        self.scheduler = build_scheduler(self.s)

    def images_in(self, batch: dict) -> int:
        return batch["image"].shape[0]

    def loss(self, model, batch: dict, memory_format) -> tuple[torch.Tensor, dict]:
        from .diffusion import diffusion_loss

        images = to_unit(batch["image"])
        images = (random_flip(images) if self.flip else images).contiguous(memory_format=memory_format)
        labels = batch["label"] if self.num_classes else None
        return diffusion_loss(model, self.scheduler, images, labels), {}

    def preview(self, ema, batch: dict, n: int = 16, seed: int = 0) -> tuple[list[np.ndarray], int]:
        """n samples from fixed noise (the same every time, so grids show progress); 4 per row."""
        from .diffusion import ddim_sample

        device = next(ema.parameters()).device
        gen = torch.Generator(device=device).manual_seed(seed)
        labels = (torch.arange(n, device=device) % self.num_classes) if self.num_classes else None
        images = ddim_sample(ema, self.s, n, generator=gen, labels=labels, steps=min(self.s.sample_steps, 25))
        return list(to_uint8(images)), 4


class TemporalTask:
    kind = "temporal"
    loss_parts = ["recon", "predict"]

    def __init__(self, cfg: TrainingConfig, channels: list[str]):
        self.s, self.flip = cfg.temporal, cfg.flip
        self.model = TemporalModel(self.s)

    def images_in(self, batch: dict) -> int:
        return batch["clip"].shape[0] * batch["clip"].shape[1]

    def loss(self, model, batch: dict, memory_format) -> tuple[torch.Tensor, dict]:
        clips = to_unit(batch["clip"])
        clips = random_flip(clips) if self.flip else clips
        return model(clips)  # TemporalModel.forward is its loss

    def preview(self, ema, batch: dict, n: int = 4, seed: int = 0) -> tuple[list[np.ndarray], int]:
        """Rows of (real window | the model's continuation of its first half) for up to n clips."""
        clips = to_unit(batch["clip"][:n]).to(next(ema.parameters()).device)
        t = clips.shape[1]
        gen = torch.Generator(device=clips.device).manual_seed(seed)
        rows = []
        for clip in clips:
            made = generate(ema, clip[: t // 2], t, generator=gen)
            rows += [clip, made]
        return list(to_uint8(torch.cat(rows))), t


TASKS = {"diffusion": DiffusionTask, "temporal": TemporalTask}
