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
from pathlib import Path

import torch

from ..config import TrainingConfig
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


def train_loop(run: dict) -> None:
    """Ray Train's `train_loop_per_worker`; `run` holds only plain data (it is pickled to workers)."""
    import ray
    import ray.train
    import ray.train.torch

    cfg = TrainingConfig.model_validate(run["training"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    folder = Path(run["run_dir"])
    device = ray.train.torch.get_device()
    on_gpu = device.type == "cuda"
    fmt = torch.channels_last if on_gpu and cfg.channels_last else torch.contiguous_format

    task = TASKS[run["kind"]](cfg, run["snapshot"]["channels"])
    model = task.model.to(device, memory_format=fmt)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / "state.pt", map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        step = state["step"]
    # Seeded by step too: a resumed worker draws fresh noise, not the start's again.
    torch.manual_seed((cfg.seed * 1_000_003 + rank) * 1_000_003 + step)
    ddp = ray.train.torch.prepare_model(model, move_to_device=False)
    net = torch.compile(ddp) if cfg.compile and on_gpu else ddp
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu and cfg.precision == "bf16" else nullcontext())

    # Which Ray node each rank runs on: shows a run spread over the cluster (and where a failure was).
    nodes = [ray.get_runtime_context().get_node_id()]
    if world > 1:
        nodes = [None] * world
        torch.distributed.all_gather_object(nodes, ray.get_runtime_context().get_node_id())
    log = None
    if rank == 0:
        from ..layout import Storage
        from .runs import MetricsLog

        if run["storage"]["uri"]:  # an object-store root: what rank 0 writes goes up (remote.py)
            Storage(**run["storage"]).pull(f"runs/{folder.name}/metrics.csv")
        log = MetricsLog(folder, step, task.loss_parts)
        (folder / "samples").mkdir(exist_ok=True)
        log.event("restored" if checkpoint else "started", step=step, workers=world, device=str(device), nodes=nodes)
    shard = ray.train.get_dataset_shard("train")
    batch_size = run["batch_size"]
    epoch, window_images, window_wait, window_start = 0, 0, 0.0, time.perf_counter()
    while step < cfg.steps:
        epoch += 1
        seen = 0
        waited = time.perf_counter()
        batches = shard.iter_torch_batches(batch_size=batch_size, drop_last=True, prefetch_batches=cfg.prefetch_batches,
                                           device=device)
        for batch in mixed(batches, batch_size):
            window_wait += time.perf_counter() - waited
            seen += 1
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg)
            with autocast:
                loss, parts = task.loss(net, batch, fmt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            update_ema(ema, model, ema_decay_at(step, cfg))
            step += 1
            window_images += task.images_in(batch) * world

            if step % cfg.log_every == 0 or step == cfg.steps:
                loss_value = loss.detach().float()
                if world > 1:  # the mean over workers, not rank 0's alone
                    torch.distributed.all_reduce(loss_value)
                if log:
                    elapsed = time.perf_counter() - window_start
                    log.write({"step": step, "epoch": epoch, "loss": loss_value.item() / world, "lr": lr_at(step - 1, cfg),
                               "images_per_s": window_images / elapsed, "data_wait": window_wait / elapsed,
                               "gpu_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else 0.0,
                               **{k: parts[k] for k in task.loss_parts if k in parts}})
                window_images, window_wait, window_start = 0, 0.0, time.perf_counter()
            if log and (step % cfg.sample_every == 0 or step == cfg.steps):
                from ..dataset.preview import tile

                images, columns = task.preview(ema, {k: v.detach() for k, v in batch.items()})
                tile(images, folder / "samples" / f"step-{step:07d}.png", columns=columns, width=128, pad=2)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                _checkpoint(run, cfg, step, model, ema, opt, rank)
            if step >= cfg.steps:
                break
            waited = time.perf_counter()
        if not seen:
            raise RuntimeError(f"epoch {epoch} gave this worker no batch of {batch_size}: the snapshot is too small "
                               f"for {world} workers (use fewer workers or a smaller batch_size)")
    if log:
        log.close()


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
