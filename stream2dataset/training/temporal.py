"""The temporal (fluent video) model: a frame autoencoder plus a sequence model over frame latents.

Frames are encoded one by one to latent vectors; a GRU or a small causal transformer predicts the
next latent from the previous ones, and the decoder turns latents back into frames. Generating a
video is rolling the sequence model forward from the latents of a few real seed frames.
"""

from __future__ import annotations

import math

import numpy as np
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
        return h, state  # features; TemporalModel applies `out` (the mean step) and its log-variance head


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
        return self.norm(h), None


LOGVAR_MIN, LOGVAR_MAX = -12.0, 2.0  # per-dimension log-variance of a step; latents have unit scale


def _layer_norm(z: torch.Tensor) -> torch.Tensor:
    """Back onto the encoder's latent scale (its LayerNorm): sampled steps cannot drift off it."""
    return F.layer_norm(z, z.shape[-1:])


class TemporalModel(nn.Module):
    """Frame autoencoder + a stochastic next-latent predictor, built from `TemporalSettings`.

    The sequence model predicts a Gaussian over the next step z_{t+1} - z_t (a mean and a
    per-dimension log-variance) and is trained by its likelihood. A deterministic predictor learns
    the conditional mean, which averages the possible motions into a slower one, so rollouts slow
    down and freeze; sampling the step keeps the real amount of motion. Part of each training
    window (`rollout`) is fed the model's own sampled latents, so it learns to continue from what
    it generates, not only from real frames. Sampling spreads the step by `temperature` (1: as
    fitted). How fast the decoded video moves also depends on how sharp the autoencoder is: the
    demo's model moves at ~1.1x the real speed at 1.0 after 900 steps; models trained shorter
    move slower and want ~1.25 (bench/RESULTS.md, "Temporal fluency")."""

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
        # The step's log-variance, from the same features; a separate head (not a wider `out`), so
        # checkpoints from before it still load (see load_state_dict).
        self.logvar = nn.Linear(settings.hidden, settings.latent_dim)
        nn.init.zeros_(self.logvar.weight)
        nn.init.constant_(self.logvar.bias, -4.0)
        self.deterministic = False

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        """Checkpoints from before the log-variance head load as a deterministic model (they
        sample the mean step at any temperature)."""
        self.deterministic = "logvar.weight" not in state and any(k.startswith("sequence.") for k in state)
        if self.deterministic:
            state = {**state, "logvar.weight": self.logvar.weight.detach().clone(),
                     "logvar.bias": self.logvar.bias.detach().clone()}
        return super().load_state_dict(state, strict=strict, assign=assign)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """[B,T,3,H,W] in [-1,1] -> latents [B,T,D]."""
        b, t = frames.shape[:2]
        return self.encoder(frames.flatten(0, 1)).unflatten(0, (b, t))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents [B,T,D] -> frames [B,T,3,H,W] in [-1,1]."""
        b, t = z.shape[:2]
        return self.decoder(z.flatten(0, 1)).unflatten(0, (b, t))

    def step(self, z: torch.Tensor, state=None) -> tuple[torch.Tensor, torch.Tensor, object]:
        """Latents [B,T,D] -> (mean step, log-variance of the step, sequence state), each [B,T,D]:
        entry t is the distribution of z_{t+1} - z_t."""
        h, state = self.sequence(z, state)
        return self.sequence.out(h), self.logvar(h).clamp(LOGVAR_MIN, LOGVAR_MAX), state

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        """Latents [B,T,D] -> the mean predicted next latents [B,T,D] (entry t predicts z_{t+1})."""
        return z + self.step(z)[0]

    def sample_next(self, z_last: torch.Tensor, delta: torch.Tensor, logvar: torch.Tensor, temperature: float,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """One drawn next latent: z + mean step + temperature x sigma x N(0, 1), back on the latent scale."""
        step = delta
        if temperature and not self.deterministic:
            noise = torch.randn(delta.shape, generator=generator, device=delta.device, dtype=delta.dtype)
            step = delta + temperature * (0.5 * logvar).exp() * noise
        return _layer_norm(z_last + step)

    def forward(self, clips: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss; a forward call, so DistributedDataParallel syncs the gradients."""
        return self.loss(clips)

    def loss(self, clips: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Reconstruction of every frame + predict_weight x the Gaussian negative log-likelihood of
        every real next latent, from real inputs and, for the window's last `rollout` part, from
        the model's own sampled latents. `predict_frames` (the decoded mean predictions against
        the real frames) is reported only: as a loss it taught the decoder to blur, and the tiny
        demo model then moved at half the real speed.

        The sequence model reads detached latents: only reconstruction shapes the encoder, else
        prediction pulls consecutive latents together (a still video is the easiest to predict)
        and the autoencoder settles on one average frame. The rollout's samples are detached too:
        each rolled step learns to lead back to the real next latent from where the model got."""
        z = self.encode(clips)
        recon = F.mse_loss(self.decode(z), clips)
        fixed = z.detach()
        delta, logvar, _ = self.step(fixed[:, :-1])
        z_next = fixed[:, :-1] + delta
        nll = _nll(fixed[:, 1:] - fixed[:, :-1], delta, logvar)
        with torch.no_grad():
            latent, frames = F.mse_loss(z_next, fixed[:, 1:]), F.mse_loss(self.decode(z_next), clips[:, 1:])
        parts = {"predict_nll": nll.item()}
        roll = self._rollout_nll(fixed)
        if roll is not None:
            parts["rollout_nll"] = roll.item()
            nll = 0.5 * (nll + roll)
        predict = nll
        total = recon + self.settings.predict_weight * predict
        return total, {"loss": total.item(), "recon": recon.item(), "predict": predict.item(),
                       "predict_latent": latent.item(), "predict_frames": frames.item(), **parts}

    def _rollout_nll(self, fixed: torch.Tensor) -> torch.Tensor | None:
        """The likelihood of the real z_{t+1} for the window's last steps, each predicted from
        the model's own sampled latents (temperature 1, detached) after a real prefix: it trains
        the mean step to lead back onto the data from where the model's own samples got."""
        t = fixed.shape[1]
        n = min(t - 2, round(self.settings.rollout * (t - 1)))
        if n <= 0:
            return None
        begin = t - 1 - n  # real latents 0..begin-1, then latents the model drew itself
        stateful = self.sequence.stateful
        delta, logvar, state = self.step(fixed[:, :begin])
        latents = [fixed[:, i:i + 1] for i in range(begin)]
        losses = []
        for i in range(begin, t - 1):
            with torch.no_grad():
                latents.append(self.sample_next(latents[-1], delta[:, -1:], logvar[:, -1:], 1.0))
            feed = latents[-1] if stateful else torch.cat(latents, dim=1)
            delta, logvar, state = self.step(feed, state if stateful else None)
            # the variance is learnt from real inputs only: fitted here, it would also cover the
            # way back from the model's own drift, and sampling with it ran at 3x the real speed
            losses.append(_nll(fixed[:, i + 1:i + 2] - latents[-1], delta[:, -1:], logvar[:, -1:].detach()))
        return torch.stack(losses).mean()


def _nll(target: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Gaussian negative log-likelihood per dimension (without the constant)."""
    return 0.5 * (logvar + (target - mean).square() * (-logvar).exp()).mean()


@torch.no_grad()
def generate(model: TemporalModel, seed_frames: torch.Tensor, n_frames: int,
             generator: torch.Generator | None = None, temperature: float | None = None) -> torch.Tensor:
    """Continue a video: seed [T0,3,H,W] in [-1,1] -> [n_frames,3,H,W] in [-1,1].

    The output starts with the autoencoder's reconstruction of the T0 seed frames (not the seed
    pixels: real frames next to decoded ones would show a cut), followed by n_frames - T0 predicted
    frames. Each step is drawn from the predicted Gaussian with its spread scaled by `temperature`
    (default: the settings' `temperature`; 1: as fitted; 0: the mean step, deterministic), with
    noise from `generator` (on the model's device; None: torch's global generator).
    """
    temperature = model.settings.temperature if temperature is None else temperature
    was_training = model.training
    model.eval()
    try:
        z = model.encode(seed_frames[None])  # [1,T0,D]
        steps = [z[:, i:i + 1] for i in range(z.shape[1])]
        stateful, context = model.sequence.stateful, model.settings.context
        feed, state = (z if stateful else z[:, -context:]), None
        while len(steps) < n_frames:
            delta, logvar, state = model.step(feed, state)
            steps.append(model.sample_next(steps[-1], delta[:, -1:], logvar[:, -1:], temperature, generator))
            feed = steps[-1] if stateful else torch.cat(steps[-context:], dim=1)
        return model.decode(torch.cat(steps[:n_frames], dim=1))[0]
    finally:
        model.train(was_training)


def fit_temperature(model: TemporalModel, seeds: list[torch.Tensor], real: list, n_frames: int, skip: int,
                    low: float = 0.1, high: float = 4.0, rounds: int = 7) -> tuple[float, float]:
    """The temperature at which continuations of `seeds` move as fast as the `real` clips (uint8
    [T,H,W,3] each): the mean frame-to-frame change after the seed frames, generated over real.
    How far each run's autoencoder resolves small motion sets how fast its samples move at the
    fitted spread (0.76-1.43x over five demo seeds), so the spread is scaled to the data's speed.
    Bisection on log T (the speed grows with T), with the same noise at every T; returns (T, speed)."""
    from .fluency import frame_changes
    from .tensors import to_uint8

    device = next(model.parameters()).device
    target = float(np.mean(np.concatenate([frame_changes(c) for c in real])))

    def speed(t: float) -> float:
        changes = [frame_changes(to_uint8(generate(model, seed, n_frames, torch.Generator(device=device)
                                                   .manual_seed(k), temperature=t))[skip:])
                   for k, seed in enumerate(seeds)]
        return float(np.mean(np.concatenate(changes))) / max(target, 1e-6)

    lo, hi = math.log(low), math.log(high)
    if speed(high) <= 1.0:
        return high, speed(high)
    if speed(low) >= 1.0:
        return low, speed(low)
    for _ in range(rounds):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if speed(math.exp(mid)) < 1.0 else (lo, mid)
    t = round(math.exp((lo + hi) / 2), 3)
    return t, speed(t)
