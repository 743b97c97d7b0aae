"""The temporal (fluent video) model: a frame autoencoder plus a sequence model over frame latents.

Frames are encoded one by one to latent vectors; a GRU or a small causal transformer predicts the
next latent from the previous ones, and the decoder turns latents back into frames. Generating a
video is rolling the sequence model forward from the latents of a few real seed frames.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TemporalSettings


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)  # any ae_channels >= 8 divides cleanly


def _widths(settings: TemporalSettings) -> tuple[list[int], int]:
    """Channels at each scale and the final spatial size: halve while even and above 7 px, so
    powers of two end at 4x4 and other sizes (48 -> 6x6) still mirror exactly in the decoder."""
    size, widths = settings.resolution, [settings.ae_channels]
    while size % 2 == 0 and size > 7:
        size //= 2
        widths.append(settings.ae_channels * min(2 ** len(widths), 8))  # cap: 256 px stays small
    return widths, size


class _Encoder(nn.Sequential):
    def __init__(self, s: TemporalSettings):
        widths, size = _widths(s)
        layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, padding=1)]
        for a, b in zip(widths, widths[1:]):
            layers += [_norm(a), nn.SiLU(), nn.Conv2d(a, b, 4, stride=2, padding=1)]
        layers += [_norm(widths[-1]), nn.SiLU(), nn.Flatten(),
                   nn.Linear(widths[-1] * size * size, s.latent_dim),
                   # a fixed latent scale: latents cannot drift large or small, so the latent
                   # prediction loss means the same thing all through training
                   nn.LayerNorm(s.latent_dim, elementwise_affine=False)]
        super().__init__(*layers)


class _Decoder(nn.Sequential):
    def __init__(self, s: TemporalSettings):
        widths, size = _widths(s)
        layers: list[nn.Module] = [nn.Linear(s.latent_dim, widths[-1] * size * size),
                                   nn.Unflatten(1, (widths[-1], size, size))]
        for a, b in zip(widths[::-1], widths[-2::-1]):
            layers += [_norm(a), nn.SiLU(), nn.ConvTranspose2d(a, b, 4, stride=2, padding=1)]
        layers += [_norm(widths[0]), nn.SiLU(), nn.Conv2d(widths[0], 3, 3, padding=1), nn.Tanh()]
        super().__init__(*layers)


class _GRU(nn.Module):
    """Carries its hidden state, so generation feeds one new latent per step."""

    stateful = True

    def __init__(self, s: TemporalSettings):
        super().__init__()
        self.inp = nn.Linear(s.latent_dim, s.hidden)
        self.rnn = nn.GRU(s.hidden, s.hidden, s.layers, batch_first=True)
        self.out = nn.Linear(s.hidden, s.latent_dim)

    def forward(self, z: torch.Tensor, state: torch.Tensor | None = None):
        h, state = self.rnn(self.inp(z), state)
        return self.out(h), state


class _Causal(nn.Module):
    """Stateless: generation re-reads the last `context` latents each step (positions 0..context-1)."""

    stateful = False

    def __init__(self, s: TemporalSettings):
        super().__init__()
        self.inp = nn.Linear(s.latent_dim, s.hidden)
        self.pos = nn.Parameter(torch.zeros(s.context, s.hidden))
        nn.init.normal_(self.pos, std=0.02)
        heads = math.gcd(s.hidden, max(1, s.hidden // 64))  # ~64-wide heads that divide the width
        layer = nn.TransformerEncoderLayer(s.hidden, heads, 4 * s.hidden, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, s.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(s.hidden)
        self.out = nn.Linear(s.hidden, s.latent_dim)

    def forward(self, z: torch.Tensor, state: None = None):
        t = z.shape[1]
        if t > len(self.pos):
            raise ValueError(f"{t} frames exceed the transformer's context of {len(self.pos)}: "
                             "cut clips into windows of `context` frames")
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=z.device, dtype=z.dtype)
        h = self.blocks(self.inp(z) + self.pos[:t], mask=mask, is_causal=True)
        return self.out(self.norm(h)), None


class TemporalModel(nn.Module):
    """Frame autoencoder + next-latent predictor, built from `TemporalSettings`."""

    def __init__(self, settings: TemporalSettings):
        super().__init__()
        self.settings = settings
        self.encoder = _Encoder(settings)
        self.decoder = _Decoder(settings)
        self.sequence = _GRU(settings) if settings.sequence_model == "gru" else _Causal(settings)
        # The predictor outputs a residual z_{t+1} - z_t; starting it at zero means "hold still"
        # instead of random jumps, and training only has to learn the (small) motion.
        nn.init.zeros_(self.sequence.out.weight)
        nn.init.zeros_(self.sequence.out.bias)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """[B,T,3,H,W] in [-1,1] -> latents [B,T,D]."""
        b, t = frames.shape[:2]
        return self.encoder(frames.flatten(0, 1)).unflatten(0, (b, t))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents [B,T,D] -> frames [B,T,3,H,W] in [-1,1]."""
        b, t = z.shape[:2]
        return self.decoder(z.flatten(0, 1)).unflatten(0, (b, t))

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        """Latents [B,T,D] -> predicted next latents [B,T,D] (entry t predicts z_{t+1})."""
        delta, _ = self.sequence(z)
        return z + delta

    def forward(self, clips: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss; a forward call, so DistributedDataParallel syncs the gradients."""
        return self.loss(clips)

    def loss(self, clips: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Reconstruction of every frame + predict_weight x (next-latent MSE + reconstruction of the
        decoded predictions). The sequence model reads detached latents: only reconstruction shapes
        the encoder, else prediction pulls consecutive latents together (a still video is the
        easiest to predict) and the autoencoder settles on one average frame."""
        z = self.encode(clips)
        recon = F.mse_loss(self.decode(z), clips)
        fixed = z.detach()
        z_next = self.predict(fixed[:, :-1])
        latent, frames = F.mse_loss(z_next, fixed[:, 1:]), F.mse_loss(self.decode(z_next), clips[:, 1:])
        predict = latent + frames
        total = recon + self.settings.predict_weight * predict
        return total, {"loss": total.item(), "recon": recon.item(), "predict": predict.item(),
                       "predict_latent": latent.item(), "predict_frames": frames.item()}


@torch.no_grad()
def generate(model: TemporalModel, seed_frames: torch.Tensor, n_frames: int,
             generator: torch.Generator | None = None, noise: float = 0.0) -> torch.Tensor:
    """Continue a video: seed [T0,3,H,W] in [-1,1] -> [n_frames,3,H,W] in [-1,1].

    The output starts with the autoencoder's reconstruction of the T0 seed frames (not the seed
    pixels: real frames next to decoded ones would show a cut), followed by n_frames - T0 predicted
    frames. `noise` (default 0: deterministic) adds noise x N(0, 1) x the seed's mean latent step
    to each predicted step, drawn from `generator` (on the model's device), for varied
    continuations; a one-frame seed has no step size, so it gets none.
    """
    was_training = model.training
    model.eval()
    try:
        z = model.encode(seed_frames[None])  # [1,T0,D]
        steps = [z[:, i:i + 1] for i in range(z.shape[1])]
        scale = noise * z.diff(dim=1).abs().mean() if z.shape[1] > 1 else 0.0
        seq, context = model.sequence, model.settings.context
        feed, state = (z if seq.stateful else z[:, -context:]), None
        while len(steps) < n_frames:
            delta, state = seq(feed, state)
            step = delta[:, -1:]
            if noise:
                step = step + scale * torch.randn(step.shape, generator=generator, device=step.device)
            steps.append(steps[-1] + step)
            feed = steps[-1] if seq.stateful else torch.cat(steps[-context:], dim=1)
        return model.decode(torch.cat(steps[:n_frames], dim=1))[0]
    finally:
        model.train(was_training)
