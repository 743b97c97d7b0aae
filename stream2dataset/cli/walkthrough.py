"""What `stream2dataset demo` runs: the whole pipeline built so far, on the embedded demo channel.

Renders the demo footage once (real face video as a facecam on a game-like background), serves it
as a live HLS stream on loopback, runs the service on a local Ray for `seconds` (recording, and
processing new segments as they come), stops it cleanly, processes what is left, and shows what
was recorded and what the dataset holds (tables, a sheet of segments and a sheet of crops); then
dedups across segments, prints `stats`, takes a snapshot and writes a preview sheet; last, trains
tiny diffusion and temporal models on the snapshot with Ray Train and samples an image grid, an
interpolation and a video from them.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import ray
import yaml
from rich.console import Console
from rich.live import Live
from rich.progress import Progress

from .. import service
from ..cluster import quiet_ray_data, ray_env_defaults
from ..config import load_config
from ..dataset import read_clips
from ..dataset.dedup_pass import dedup_dataset
from ..dataset.manifest import read_segments
from ..dataset.preview import contact_sheet, crops_sheet
from ..dataset.snapshots import create_snapshot
from ..dataset.stats import dataset_stats, plot_stats, preview_sheet
from ..demo import DEFAULT_LAYOUT, LiveHLSServer, build_demo_hls
from ..ingest.segments import probe
from ..dataset.manifest import pending_segments
from ..processing.pipeline import process
from ..layout import Storage
from ..training.fluency import format_report
from ..training.sample import sample_diffusion, sample_temporal
from ..training.trainer import train
from .tables import segments_table, stats_tables, status_table

SEGMENT_SECONDS = 10


def demo_config(url: str) -> dict:
    return {
        "storage": {"root": "data"},
        "recording": {"segment_seconds": SEGMENT_SECONDS, "poll_interval_s": 5, "backoff_initial_s": 1,
                      "backoff_max_s": 10, "stream_timeout_s": 15, "min_free_gb": 0.5},
        # 4 frames/s: the footage loops every 20 s, so dedup keeps only what one loop holds.
        "processing": {"interval_s": 10, "outputs": ["facecam", "face", "aligned_face"], "sample_fps": 4,
                       "clips": {"enabled": True, "fps": 8, "length": 16}},
        "channels": [{"source": url, "name": "demo", "tags": ["demo", "facecam"]}],
        # Tiny models on 2 CPU workers: the whole training path in a few minutes, not a good model.
        "training": {"steps": 300, "batch_size": 4, "lr": 1e-3, "lr_schedule": "constant", "warmup_steps": 10, "checkpoint_every": 100,
                     "sample_every": 150, "log_every": 5, "workers": 2, "cpus_per_worker": 0.5, "loader_cpus": 0.5,
                     "diffusion": {"resolution": 32, "base_channels": 32, "channel_mults": [1, 2, 2],
                                   "attention_levels": [2], "layers_per_block": 1, "sample_steps": 20},
                     "temporal": {"resolution": 32, "latent_dim": 32, "ae_channels": 16, "hidden": 64,
                                  "layers": 1, "context": 8}},
    }


def run_demo(workdir: Path, seconds: float, console: Console) -> None:
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    cache = Path(os.environ.get("S2D_CACHE", Path.home() / ".cache" / "stream2dataset"))
    with console.status("rendering the demo channel's footage (first run only)..."):
        footage = build_demo_hls(cache / "demo-footage", DEFAULT_LAYOUT, seconds=20, segment_seconds=2)
    box = DEFAULT_LAYOUT.facecam
    console.print(f"demo channel: {DEFAULT_LAYOUT.width}x{DEFAULT_LAYOUT.height} stream, real face footage "
                  f"(carphone) as a facecam at x={box.x} y={box.y} {box.w}x{box.h}")

    with LiveHLSServer() as server:
        url = server.add_stream("demo", footage)
        config_path = workdir / "stream2dataset.yaml"
        config_path.write_text(yaml.safe_dump(demo_config(url), sort_keys=False))
        console.print(f"serving it live at {url}; config: {config_path}")

        ray_env_defaults()
        quiet_ray_data()  # as every job's Ray: Ray Data's INFO blocks only with -v
        with console.status("starting a local Ray..."):
            ray.init(namespace="stream2dataset-demo", include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
        try:
            status = service.up(config_path)
            deadline = time.monotonic() + seconds
            with Live(status_table(status), console=console, refresh_per_second=2) as live:
                while (left := deadline - time.monotonic()) > 0:
                    time.sleep(min(1.0, left))
                    status = service.status()
                    status["config"] = f"{config_path} — {left:.0f} s left"
                    live.update(status_table(status))
            with console.status("stopping: each recorder finishes its open segment..."):
                final = service.down()
            console.print(status_table({"channels": final, "config": "stopped"}))

            cfg = load_config(config_path)
            storage = Storage.of(cfg)
            root = storage.root
            rows = read_segments(storage).to_pylist()
            for row in rows:  # the promise of the manifest: every listed segment decodes
                probe(root / row["path"])
            console.print(segments_table(cfg))
            console.print(f"{len(rows)} segments recorded, each verified to decode; files under {root / 'raw'}")
            if rows:
                sheet = contact_sheet([root / r["path"] for r in rows], workdir / "recorded-segments.png")
                console.print(f"first frame of every segment: {sheet}")
            # Processing ran while recording; the segments committed at the end are done here.
            pending = pending_segments(storage)
            with console.status(f"processing the last {len(pending)} segment(s)..."):
                process(load_config(config_path), pending)
            _show_dataset(storage, workdir, console)
            _dataset_steps(load_config(config_path), workdir, console)
        finally:
            ray.shutdown()


def _show_dataset(storage, workdir: Path, console: Console) -> None:
    rows = [r for p in sorted(storage.table_dir("frames").rglob("*.parquet")) for r in pq.ParquetFile(p).read().to_pylist()]
    kinds = {k: sum(r["kind"] == k and r["dup_of"] is None for r in rows) for k in sorted({r["kind"] for r in rows})}
    dups = sum(r["dup_of"] is not None for r in rows)
    clips = read_clips(storage).num_rows
    console.print(f"dataset: {', '.join(f'{n} {k}' for k, n in kinds.items())} crops kept, {dups} near-duplicates "
                  f"marked, {clips} clips of 16 frames; facecam box "
                  f"{next((r['crop_box'] for r in rows if r['kind'] == 'facecam'), '-')}")
    if rows:
        console.print(f"crops, one line per kind: {crops_sheet(rows, workdir / 'crops.png')}")


def _dataset_steps(cfg, workdir: Path, console: Console) -> None:
    """What an operator does next: dedup across segments, stats, a snapshot, a preview sheet."""
    storage = Storage.of(cfg)
    links = dedup_dataset(storage, cfg.dataset.dedup_radius)
    console.print(f"dedup across segments: {links['linked']} of {links['frames']} frames linked as near-duplicates "
                  f"(radius {links['radius']})  [stream2dataset dedup]")
    st = dataset_stats(storage.root)
    for table in stats_tables(st):
        console.print(table)
    console.print(f"chart of frames and hours per day: {plot_stats(st, workdir / 'stats.png')}  [stream2dataset stats]")
    name = "demo-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    snap = create_snapshot(storage, name, "kind = 'face'")
    console.print(f"snapshot {name}: {snap['frames']} face frames, "
                  f"{sum(len(v) for v in snap['files'].values())} files pinned with sha256  [stream2dataset snapshot]")
    path, count = preview_sheet(storage.root, "kind = 'face'", workdir / "preview.png", n=64)
    console.print(f"preview of {count} face frames: {path}  [stream2dataset preview]")
    _training_steps(cfg, storage, name, workdir, console)


def _training_steps(cfg, storage, snapshot: str, workdir: Path, console: Console) -> None:
    """Train both tiny models on the snapshot with Ray Train, then sample images and video."""
    # A DDPM needs more steps than the sequence model before its samples look like anything; the
    # temporal model's autoencoder needs ~900 before small face motions show (at 300 its own
    # reconstruction of the real clips moved at 0.15x the real speed, so no sampler could be fluent).
    for kind, steps in (("diffusion", 2 * cfg.training.steps), ("temporal", 3 * cfg.training.steps)):
        with Progress(console=console, transient=True) as progress:
            folder = train(storage, kind, snapshot, cfg.training, run=f"{kind}-{snapshot}", progress=progress,
                           overrides={"steps": steps})
        loss = (folder / "metrics.csv").read_text().splitlines()[-1].split(",")[2]
        console.print(f"trained {kind} on {cfg.training.workers} CPU workers, {steps} steps, "
                      f"last loss {float(loss):.4f}: {folder}  [stream2dataset train {kind}]")
    got = sample_diffusion(storage, f"diffusion-{snapshot}", n=16, out=workdir / "samples.png", interpolate=True)
    copies = sum(r["copy"] for r in got["memorisation"])
    console.print(f"16 diffusion samples: {got['grid']}; interpolation: {got['video']}; memorisation check: "
                  f"{copies} of 16 copy a training frame ({got['memorisation_sheet']})  [stream2dataset sample diffusion]")
    video = sample_temporal(storage, f"temporal-{snapshot}", seconds=10, fps=8, out=workdir / "video.mp4")
    console.print(f"10 s of video continuing clip {video['seed_clip']}: {video['video']}  [stream2dataset sample temporal]")
    console.print(format_report(video["fluency"]))
