"""The training loop each Ray Train worker runs (DDP; NCCL on GPUs, gloo on CPU).

One loop for both model families (tasks.py). It restores from Ray Train's newest checkpoint when
there is one (a `--resume`, or Ray restarting the workers after one died), so a run always
continues from the last saved step with its weights, EMA, optimizer state and RNG.
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..cluster import node_id
from ..config import TrainingConfig
from ..dataset.preview import tile
from ..layout import RUNS, Storage
from .runs import MetricsLog
from .tasks import TASKS


def lr_at(step: int, cfg: TrainingConfig) -> float:
    """Linear warm-up to `lr`, then constant or cosine decay to zero at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    done = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))


def ema_decay_at(step: int, cfg: TrainingConfig) -> float:
    """The configured decay, warmed up as (1 + step) / (10 + step): early on the EMA follows the
    weights closely instead of averaging in the random initialisation for thousands of steps."""
    return min(cfg.ema_decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    # One fused kernel list, not a launch per tensor: the UNet has ~400 of them.
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def mixed(batches: Iterator[dict], size: int, pool_batches: int = 4) -> Iterator[dict]:
    """Batches of `size` drawn at random from a pool of `pool_batches` batches, on the batches' device.

    The shuffle of Ray Data's local shuffle buffer, without its cost: that buffer re-slices Arrow
    tensor columns row by row on the iterating thread (measured: 95 ms per 256 images of 64², a
    ceiling of ~2,700 images/s that starves a GPU); here a shuffle is one index on the device.
    """
    pool: dict | None = None
    for batch in batches:
        pool = batch if pool is None else {k: torch.cat([pool[k], v]) for k, v in batch.items()}
        n = len(next(iter(pool.values())))
        if n >= size * pool_batches:
            order = torch.randperm(n, device=next(iter(pool.values())).device)
            yield {k: v[order[:size]] for k, v in pool.items()}
            pool = {k: v[order[size:]] for k, v in pool.items()}
    if pool:  # the epoch's end: what is left, in whole batches
        n = len(next(iter(pool.values())))
        order = torch.randperm(n, device=next(iter(pool.values())).device)
        for start in range(0, n - size + 1, size):
            yield {k: v[order[start:start + size]] for k, v in pool.items()}


@dataclass
class _Worker:
    """One Ray Train worker's state between steps: its model, EMA copy, optimizer and logs."""

    run: dict
    cfg: TrainingConfig
    task: Any
    model: torch.nn.Module
    ema: torch.nn.Module
    opt: torch.optim.Optimizer
    rank: int
    world: int
    device: torch.device
    fmt: torch.memory_format
    log: MetricsLog | None = None
    step: int = 0
    epoch: int = 0
    window_images: int = 0
    window_wait: float = 0.0
    window_start: float = field(default_factory=time.perf_counter)


def train_loop(run: dict) -> None:
    """Ray Train's `train_loop_per_worker`; `run` holds only plain data (it is pickled to workers)."""
    import ray.train  # deferred on purpose: Ray Train runs this on its workers, not at import
    import ray.train.torch

    cfg = TrainingConfig.model_validate(run["training"])
    ctx = ray.train.get_context()
    device = ray.train.torch.get_device()
    on_gpu = device.type == "cuda"
    task = TASKS[run["kind"]](cfg, run["snapshot"]["channels"])
    fmt = torch.channels_last if on_gpu and cfg.channels_last else torch.contiguous_format
    model = task.model.to(device, memory_format=fmt)
    w = _Worker(run, cfg, task, model, copy.deepcopy(model).eval().requires_grad_(False),
                torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay),
                ctx.get_world_rank(), ctx.get_world_size(), device, fmt)
    restored = _restore(w)
    ddp = ray.train.torch.prepare_model(model, move_to_device=False)
    net = torch.compile(ddp) if cfg.compile and on_gpu else ddp
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu and cfg.precision == "bf16" else nullcontext())
    nodes = _nodes(w.world)  # a collective: every rank takes part
    if w.rank == 0:
        w.log = _open_log(w, restored, nodes)
    shard = ray.train.get_dataset_shard("train")
    batch_size = run["batch_size"]
    while w.step < cfg.steps:
        w.epoch += 1
        seen = 0
        waited = time.perf_counter()
        batches = shard.iter_torch_batches(batch_size=batch_size, drop_last=True, prefetch_batches=cfg.prefetch_batches,
                                           device=device)
        for batch in mixed(batches, batch_size):
            w.window_wait += time.perf_counter() - waited
            seen += 1
            loss, parts = _step(w, net, autocast, batch)
            _log_sample_checkpoint(w, loss, parts, batch)
            if w.step >= cfg.steps:
                break
            waited = time.perf_counter()
        if not seen:
            raise RuntimeError(f"epoch {w.epoch} gave this worker no batch of {batch_size}: the snapshot is too small "
                               f"for {w.world} workers (use fewer workers or a smaller batch_size)")
    if w.log:
        w.log.close()


def _restore(w: _Worker) -> bool:
    """Load Ray Train's checkpoint into the model, EMA and optimizer, if it gave one, and seed the
    worker's random numbers; True when the run was restored."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / "state.pt", map_location=w.device, weights_only=False)
        w.model.load_state_dict(state["model"])
        w.ema.load_state_dict(state["ema"])
        w.opt.load_state_dict(state["optimizer"])
        w.step = state["step"]
    # Seeded by step too: a resumed worker draws fresh noise, not the start's again.
    torch.manual_seed((w.cfg.seed * 1_000_003 + w.rank) * 1_000_003 + w.step)
    return bool(checkpoint)


def _nodes(world: int) -> list[str]:
    """Which Ray node each rank runs on: shows a run spread over the cluster (and where a failure was)."""
    nodes = [node_id()]
    if world > 1:
        nodes = [None] * world
        torch.distributed.all_gather_object(nodes, node_id())
    return nodes


def _open_log(w: _Worker, restored: bool, nodes: list[str]) -> MetricsLog:
    """Rank 0's metrics log, opened with its first event (started or restored, and the nodes)."""
    folder = Path(w.run["run_dir"])
    if w.run["storage"]["uri"]:  # an object-store root: what rank 0 writes goes up (remote.py)
        Storage(**w.run["storage"]).pull(f"{RUNS}/{folder.name}/metrics.csv")
    log = MetricsLog(folder, w.step, w.task.loss_parts)
    (folder / "samples").mkdir(exist_ok=True)
    log.event("restored" if restored else "started", step=w.step, workers=w.world, device=str(w.device), nodes=nodes)
    return log


def _step(w: _Worker, net, autocast, batch: dict) -> tuple[torch.Tensor, dict]:
    """One optimizer step on `batch` (learning rate, loss, clipping, EMA); returns the loss."""
    cfg = w.cfg
    for group in w.opt.param_groups:
        group["lr"] = lr_at(w.step, cfg)
    with autocast:
        loss, parts = w.task.loss(net, batch, w.fmt)
    w.opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(w.model.parameters(), cfg.grad_clip)
    w.opt.step()
    update_ema(w.ema, w.model, ema_decay_at(w.step, cfg))
    w.step += 1
    w.window_images += w.task.images_in(batch) * w.world
    return loss, parts


def _log_sample_checkpoint(w: _Worker, loss: torch.Tensor, parts: dict, batch: dict) -> None:
    """After a step: the metrics line every log_every, a sample grid every sample_every (rank 0), a
    checkpoint every checkpoint_every (all ranks), and all three at the last step."""
    cfg, step, last = w.cfg, w.step, w.step == w.cfg.steps
    if step % cfg.log_every == 0 or last:
        loss_value = loss.detach().float()
        if w.world > 1:  # the mean over workers, not rank 0's alone
            torch.distributed.all_reduce(loss_value)
        if w.log:
            elapsed = time.perf_counter() - w.window_start
            on_gpu = w.device.type == "cuda"
            w.log.write({"step": step, "epoch": w.epoch, "loss": loss_value.item() / w.world, "lr": lr_at(step - 1, cfg),
                         "images_per_s": w.window_images / elapsed, "data_wait": w.window_wait / elapsed,
                         "gpu_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else 0.0,
                         **{k: parts[k] for k in w.task.loss_parts if k in parts}})
        w.window_images, w.window_wait, w.window_start = 0, 0.0, time.perf_counter()
    if w.log and (step % cfg.sample_every == 0 or last):
        images, columns = w.task.preview(w.ema, {k: v.detach() for k, v in batch.items()})
        tile(images, Path(w.run["run_dir"]) / "samples" / f"step-{step:07d}.png", columns=columns, width=128, pad=2)
    if step % cfg.checkpoint_every == 0 or last:
        _checkpoint(w.run, cfg, step, w.model, w.ema, w.opt, w.rank)


def _checkpoint(run: dict, cfg: TrainingConfig, step: int, model, ema, opt, rank: int) -> None:
    """Every worker reports (Ray Train's report is a barrier); rank 0 attaches the state."""
    import ray.train

    with tempfile.TemporaryDirectory() as d:
        if rank == 0:
            torch.save({"step": step, "model": model.state_dict(), "ema": ema.state_dict(),
                            "optimizer": opt.state_dict(), "kind": run["kind"],
                            "config": cfg.model_dump(mode="json"), "snapshot": run["snapshot"]}, Path(d) / "state.pt")
        ray.train.report({"step": step}, checkpoint=ray.train.Checkpoint.from_directory(d) if rank == 0 else None,
                         checkpoint_dir_name=f"checkpoint-{step:07d}")
