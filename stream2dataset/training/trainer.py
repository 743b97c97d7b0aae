"""`stream2dataset train`: a Ray Train TorchTrainer over a pinned snapshot.

The driver resolves the config (file, then flags), reads the snapshot as a Ray Data dataset,
writes the run folder's run.json and config.yaml, and hands the loop (loop.py) to Ray Train with
its failure handling: a worker that dies is restarted from the newest checkpoint, up to
`max_failures` times. `--resume` starts the same run name again, which Ray Train continues from
its newest checkpoint.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ..config import TrainingConfig, format_validation_error
from ..errors import UserError
from ..layout import RUNS, Storage
from .data import snapshot_dataset
from .runs import new_run_name, pull_run, read_metrics, read_run_config, read_run_info, run_dir, write_run_info

# A snapshot whose decoded items fit in this many bytes is decoded once and kept in Ray's object
# store; a larger one streams through the decode actors every epoch.
MATERIALIZE_MAX_BYTES = 2 * 2**30
# A small snapshot is repeated so an epoch holds at least this many batches per worker: each
# epoch restarts the streaming split, which costs about a second.
MIN_BATCHES_PER_EPOCH = 20
# What CPU workers train when these are unset: the model of `stream2dataset demo`, which trains at
# ~5 steps/s (diffusion) and ~8 steps/s (temporal) on one core; the defaults (GPU-sized: 35.7M and
# 21.6M parameters) take 30 s and 7.6 s per step of 16 there (bench: README "Training on a CPU").
CPU_SIZED = {
    "batch_size": 16,
    "diffusion": {"resolution": 32, "base_channels": 32, "channel_mults": [1, 2, 2], "attention_levels": [2],
                  "layers_per_block": 1},
    "temporal": {"resolution": 32, "latent_dim": 64, "ae_channels": 16, "hidden": 128, "layers": 1},
}


def resolve_run(storage: Storage, kind: str, snapshot: str | None, run: str | None, resume: bool,
                training: TrainingConfig, overrides: dict) -> tuple[Path, str, TrainingConfig]:
    """(run folder, snapshot name, training config) for a new run or a resumed one."""
    if resume:
        if not run:
            raise UserError("--resume needs --run NAME (the run to continue; `stream2dataset runs` lists them)")
        folder = pull_run(storage, run)
        info = read_run_info(folder)
        if info["kind"] != kind:
            raise UserError(f"run {run!r} trains the {info['kind']} model, not {kind}")
        if snapshot and snapshot != info["snapshot"]["name"]:
            raise UserError(f"run {run!r} trains on snapshot {info['snapshot']['name']!r}; drop --snapshot to resume it")
        base = read_run_config(folder)
        return folder, info["snapshot"]["name"], apply_overrides(base, overrides)
    if not snapshot:
        raise UserError("--snapshot NAME is required (`stream2dataset snapshots` lists them)")
    folder = run_dir(storage, run or new_run_name(kind, snapshot))
    if folder.exists() or storage.exists(folder / "run.json"):
        raise UserError(f"run {folder.name!r} exists ({folder}); continue it with --resume or pick another --run")
    return folder, snapshot, apply_overrides(training, overrides)


def apply_overrides(training: TrainingConfig, overrides: dict) -> TrainingConfig:
    """Flags over the config: `steps=...` or dotted `diffusion.resolution=...`; validated again.

    The result knows which settings were given (the config file's and these): pydantic's
    `model_fields_set`, which `fit_to_hardware` leaves alone."""
    from pydantic import ValidationError


    full = training.model_dump(mode="json")
    data = training.model_dump(mode="json", exclude_unset=True)
    for key, value in overrides.items():
        if value is None:
            continue
        node, known, *path = data, full, *key.split(".")
        for part in path[:-1]:
            if not isinstance(known.get(part), dict):
                raise UserError(f"--set {key}: no such training setting")
            known = known[part]
            node = node.setdefault(part, {})
        if path[-1] not in known:
            raise UserError(f"--set {key}: no such training setting (see the `training` section of `stream2dataset init`)")
        node[path[-1]] = value
    try:
        return TrainingConfig.model_validate(data)
    except ValidationError as err:
        raise UserError(format_validation_error(err, "training").replace("\n", "; ")) from None


def fit_to_hardware(cfg: TrainingConfig, kind: str, cluster_gpus: float) -> tuple[TrainingConfig, list[str]]:
    """The settings left unset, fitted to the workers' hardware; returns (config, lines to print).

    CPU workers (gpus_per_worker 0) get a small model and batch (CPU_SIZED) that train in minutes;
    GPU workers the full model (the defaults). An unset warm-up is at most a tenth of the run.
    What the user set (config file, flags, --set) is never changed."""
    notes = []
    given = cfg.model_fields_set
    update: dict = {}
    if "warmup_steps" not in given and cfg.warmup_steps > cfg.steps // 10:
        update["warmup_steps"] = cfg.steps // 10
    section = getattr(cfg, kind)
    if cfg.gpus_per_worker == 0:
        fitted = {"batch_size": CPU_SIZED["batch_size"]} if "batch_size" not in given else {}
        data = section.model_dump(mode="json", exclude_unset=True)
        for key, value in CPU_SIZED[kind].items():
            if key in section.model_fields_set:
                continue
            try:  # each CPU size that fits with the settings given (else that setting keeps its default)
                update[kind] = section.model_validate({**data, key: value})
            except ValueError:
                continue
            data[key] = value
            fitted[f"{kind}.{key}"] = value
        if fitted:
            shown = ", ".join(f"{k}={v}".replace(" ", "") for k, v in fitted.items())
            notes.append(f"no GPU per worker (gpus_per_worker 0): using CPU-sized defaults ({shown}), which train "
                         "in minutes on a laptop; set them to override")
        if cluster_gpus >= 1:
            notes.append(f"the cluster has {cluster_gpus:g} GPUs: --gpus-per-worker 1 trains on them with the full model")
        update |= {k: v for k, v in fitted.items() if "." not in k}
    else:
        full = ", ".join(f"{k}={v}".replace(" ", "") for k, v in section.model_dump(mode="json").items()
                         if k in CPU_SIZED[kind])
        notes.append(f"{cfg.gpus_per_worker:g} GPU per worker: the full {kind} model ({full}), batch_size={cfg.batch_size}")
        needed = cfg.gpus_per_worker * cfg.workers
        if cluster_gpus < needed:
            notes.append(f"the cluster has {cluster_gpus:g} GPUs now, {cfg.workers} workers x {cfg.gpus_per_worker:g} need "
                         f"{needed:g}: the run waits until they join (--gpus-per-worker 0 trains on CPUs)")
    if "warmup_steps" in update:
        notes.append(f"warmup_steps={update['warmup_steps']}: a tenth of the {cfg.steps} steps (set warmup_steps to override)")
    if not update:
        return cfg, notes
    # model_copy keeps the set fields as they were: a resumed run's saved config is all "given".
    return cfg.model_copy(update=update), notes


def train(storage: Storage, kind: str, snapshot: str | None, training: TrainingConfig, *, run: str | None = None,
          resume: bool = False, overrides: dict | None = None, progress=None, notify=None) -> Path:
    """Run (or resume) a training run to its last step on the connected Ray; returns the run folder.
    `notify(line)` is told which settings were fitted to the hardware or the snapshot, and why."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer


    notify = notify or (lambda line: None)
    folder, snapshot, cfg = resolve_run(storage, kind, snapshot, run, resume, training, overrides or {})
    cfg, notes = fit_to_hardware(cfg, kind, ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0)
    for line in notes:
        notify(line)
    settings = cfg.diffusion if kind == "diffusion" else cfg.temporal
    dataset, info = snapshot_dataset(storage, snapshot, kind, settings, cfg)
    what = "frames" if kind == "diffusion" else f"windows of {settings.context} frames"
    per_worker = info.items // cfg.workers
    if per_worker < 1:
        raise UserError(f"snapshot {snapshot!r} has {info.items} {what}: fewer than --workers {cfg.workers}")
    if cfg.batch_size > per_worker:  # a small snapshot still gives every worker whole batches
        notify(f"batch_size {cfg.batch_size} is more than the {per_worker} {what} each of {cfg.workers} worker(s) "
               f"gets from snapshot {snapshot!r}: training with batch_size {per_worker}")
        cfg = cfg.model_copy(update={"batch_size": per_worker})
    batch_size = cfg.batch_size
    if info.items * info.item_bytes <= MATERIALIZE_MAX_BYTES:
        repeat = -(-MIN_BATCHES_PER_EPOCH * batch_size // per_worker)
        if repeat > 1:
            # Copies of the rows in new blocks: a union of the dataset with itself would hand the
            # workers' iterators the same block refs several times, and Ray Data's prefetcher
            # then fails on every batch (`ray.wait` refuses duplicate refs).
            dataset = dataset.map_batches(_repeat_rows, fn_kwargs={"times": repeat}, batch_size=None,
                                          batch_format="numpy", zero_copy_batch=True)
        dataset = dataset.materialize()
    dataset = dataset.randomize_block_order()  # a new order every epoch; workers shuffle within blocks
    snap = {"name": info.name, "created": info.created, "rows": info.rows, "channels": info.channels}
    write_run_info(folder, kind, snap, cfg)
    run_spec = {"kind": kind, "training": cfg.model_dump(mode="json"), "run_dir": str(folder), "snapshot": snap,
                "batch_size": batch_size, "storage": {"root": str(storage.root), "uri": storage.uri}}
    gpus = cfg.gpus_per_worker
    trainer = TorchTrainer(
        _train_loop, train_loop_config=run_spec, datasets={"train": dataset},
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=gpus > 0,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker, **({"GPU": gpus} if gpus else {})}),
        torch_config=TorchConfig(backend="nccl" if gpus else "gloo"),
        run_config=RunConfig(name=folder.name, **_run_storage(storage),
                             failure_config=FailureConfig(max_failures=cfg.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=3)))
    stop = threading.Event()
    watcher = threading.Thread(target=_follow, args=(storage, folder, cfg.steps, progress, stop), daemon=True)
    if progress is not None:
        watcher.start()
    try:
        result = trainer.fit()
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join()
    if result.error:
        raise result.error
    pull_run(storage, folder.name)
    return folder


def _run_storage(storage: Storage) -> dict:
    """Where Ray Train keeps the checkpoints: the runs folder, in the object store if the root is one
    (workers on other nodes write there; the local runs folder is then a copy, `pull`ed to read)."""
    if storage.remote:
        return {"storage_path": storage.remote.key(RUNS), "storage_filesystem": storage.remote.fs}
    return {"storage_path": str(storage.runs_dir)}


def _repeat_rows(batch: dict, times: int) -> dict:
    """A block's rows `times` over, each copy in its own order (seeded: the same every run)."""
    import numpy as np

    n = len(next(iter(batch.values())))
    rng = np.random.default_rng(n)
    order = np.concatenate([np.arange(n)] + [rng.permutation(n) for _ in range(times - 1)])
    return {k: v[order] for k, v in batch.items()}


def _train_loop(run: dict) -> None:
    from .loop import train_loop  # imported on the worker

    train_loop(run)


def _follow(storage: Storage, folder: Path, steps: int, progress, stop: threading.Event) -> None:
    """Move the driver's progress bar as rank 0 appends to metrics.csv."""
    task = progress.add_task(f"training {folder.name}", total=steps)
    while not stop.wait(1.0):
        storage.pull(f"runs/{folder.name}/metrics.csv")
        rows = read_metrics(folder)
        if rows:
            last = rows[-1]
            progress.update(task, completed=int(last["step"]),
                            description=f"training {folder.name}: loss {last['loss']:.4f}, {last['images_per_s']:.0f} img/s")
    rows = read_metrics(folder)
    progress.update(task, completed=int(rows[-1]["step"]) if rows else 0)
