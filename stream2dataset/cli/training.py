"""`stream2dataset train`, `sample` and `runs`: parse, call training/, print."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .. import cluster
from ..errors import UserError
from .options import DEFAULT_CONFIG_NAME, AddressOpt, ConfigOpt, FormatOpt, OutputFormat, app, console, load_config, print_json
from .tables import show

# Command bodies import the library when they run (deferred on purpose: pydantic, pyarrow, Ray and
# DuckDB are what `--help` and `sql` would otherwise pay for at start-up; see test_cli_operator).


class Kind(str, Enum):
    diffusion = "diffusion"
    temporal = "temporal"


def _parse_set(items: list[str]) -> dict:
    import yaml

    from ..config import load_yaml

    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UserError(f"--set {item!r}: use KEY=VALUE, e.g. --set diffusion.resolution=128")
        try:
            out[key.strip()] = load_yaml(value)
        except yaml.YAMLError:
            raise UserError(f"--set {item!r}: the value is not valid YAML; quote text, e.g. --set key='a: b'") from None
    return out


@app.command()
def train(kind: Annotated[Kind, typer.Argument(help="diffusion (images) or temporal (video)")],
          snapshot: Annotated[Optional[str], typer.Option(help="the snapshot to train on (`snapshots` lists them)")] = None,
          run: Annotated[Optional[str], typer.Option(help="run name (default: KIND-SNAPSHOT-TIME)")] = None,
          resume: Annotated[bool, typer.Option(help="continue --run from its newest checkpoint")] = False,
          workers: Annotated[Optional[int], typer.Option(help="Ray Train workers")] = None,
          gpus_per_worker: Annotated[Optional[float], typer.Option(help="0: CPU workers (gloo)")] = None,
          steps: Annotated[Optional[int], typer.Option(help="optimizer steps")] = None,
          batch_size: Annotated[Optional[int], typer.Option(help="per worker")] = None,
          lr: Annotated[Optional[float], typer.Option(help="peak learning rate")] = None,
          set_: Annotated[list[str], typer.Option("--set", help="any training setting, e.g. diffusion.resolution=128")] = [],
          config: ConfigOpt = Path(DEFAULT_CONFIG_NAME), address: AddressOpt = None) -> None:
    """Train the diffusion or the temporal model on a snapshot with Ray Train (DDP over --workers)."""
    from ..layout import Storage
    from ..training.trainer import train as run_training

    cfg = load_config(config)
    overrides = {"workers": workers, "gpus_per_worker": gpus_per_worker, "steps": steps, "batch_size": batch_size,
                 "lr": lr, **_parse_set(set_)}
    cluster.connect_for_job(address or cfg.ray.address, cfg.ray.namespace)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console) as progress:
        folder = run_training(Storage.of(cfg), kind.value, snapshot, cfg.training, run=run, resume=resume,
                              overrides=overrides, progress=progress,
                              notify=lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True))
    console.print(f"run {folder.name}: checkpoints, metrics.csv, tb/ and samples/ under {folder}")


sample_app = typer.Typer(no_args_is_help=True, help="Sample from a trained run: image grids, interpolations, video.")
app.add_typer(sample_app, name="sample")


@sample_app.command("diffusion")
def sample_diffusion(run: Annotated[str, typer.Option(help="the training run")],
                     n: Annotated[int, typer.Option(help="images in the grid")] = 64,
                     out: Annotated[Optional[Path], typer.Option(help="PNG (default: runs/RUN/sample-*.png)")] = None,
                     seed: int = 0,
                     steps: Annotated[Optional[int], typer.Option(help="DDIM steps (default: the config's)")] = None,
                     interpolate: Annotated[bool, typer.Option(help="also an MP4 walking between noise latents")] = False,
                     memorisation: Annotated[bool, typer.Option(help="compare each sample with its nearest training frames")] = True,
                     face_quality: Annotated[bool, typer.Option(help="Fréchet distance of the samples' identity embeddings "
                                                                     "to real face crops (logged in the run)")] = True,
                     morph: Annotated[Optional[tuple[str, str]], typer.Option(
                         help="A B: frame ids or image files; an MP4 morphing real face A into B (DDIM inversion, "
                              "slerp), led in and out by the real photos")] = None,
                     frames: Annotated[int, typer.Option(min=2, max=2000, help="--morph: frames of the walk")] = 48,
                     config: ConfigOpt = Path(DEFAULT_CONFIG_NAME)) -> None:
    """A PNG grid of n samples (EMA weights, DDIM), the memorisation check and the face-quality figure,
    optionally an interpolation MP4; or, with --morph A B, a morph between two real faces."""
    from ..layout import Storage
    from ..training.sample import sample_diffusion as run_sample

    cfg = load_config(config)
    if morph:
        from ..training.morph import morph_video

        cluster.drop_native_logs()  # mediapipe's LiteRT logs (a photo's face detector), in this process
        if out is not None and out.suffix.lower() != ".mp4":
            raise UserError(f"--out {out}: a morph is written as an MP4 (name it .mp4)")
        with console.status("inverting both faces and morphing..."):
            result = morph_video(Storage.of(cfg), cfg, run, *morph, frames=frames, steps=steps, out=out)
        console.print(f"morph {result['faces'][0]} -> {result['faces'][1]} ({result['kind']} crops, step "
                      f"{result['step']}): {result['video_frames']} frames, {result['morph_frames']} of them the walk: "
                      f"{result['video']}")
        console.print("DDIM inversion reconstruction RMSE (grey levels, 0-255): "
                      f"A {result['inversion_rmse'][0]:.1f}, B {result['inversion_rmse'][1]:.1f}")
        return
    with console.status("sampling..."):
        result = run_sample(Storage.of(cfg), run, n=n, out=out, seed=seed, steps=steps,
                            interpolate=interpolate, memorisation=memorisation, face_quality=face_quality)
    console.print(f"{n} samples at step {result['step']}: {result['grid']}")
    fq = result.get("face_quality")
    if fq:
        console.print(f"face quality: Fréchet distance {fq['frechet']:.4f} between identity embeddings of "
                      f"{fq['generated']} samples and {fq['real']} real {fq['kind']} crops (lower is closer; "
                      "logged in face_quality.jsonl)")
    elif face_quality:
        console.print("face quality: not measured (the snapshot has no aligned_face or face crops)")
    if result.get("video"):
        console.print(f"interpolation ({result['video_frames']} frames): {result['video']}")
    if result.get("memorisation"):
        table = Table(title="nearest training frames", box=box.SIMPLE_HEAD)
        for col in ("sample", "nearest frame", "pHash distance", "pixel RMSE", "copy?"):
            table.add_column(col)
        for r in result["memorisation"]:
            table.add_row(str(r["index"]), r["train_id"], str(r["phash_distance"]), f"{r['pixel_rmse']:.1f}",
                          "[red]COPY[/red]" if r["copy"] else "no")
        console.print(table)
        copies = sum(r["copy"] for r in result["memorisation"])
        console.print(f"memorisation: {copies} of {len(result['memorisation'])} samples copy a training frame; "
                      f"side by side: {result['memorisation_sheet']}")


@sample_app.command("temporal")
def sample_temporal(run: Annotated[str, typer.Option(help="the training run")],
                    seconds: Annotated[float, typer.Option(help="video length")] = 10.0,
                    fps: Annotated[float, typer.Option(help="frames per second")] = 8.0,
                    seed_clip: Annotated[Optional[str], typer.Option(help="clip id to continue (default: a snapshot clip)")] = None,
                    out: Annotated[Optional[Path], typer.Option(help="MP4 (default: runs/RUN/video-*.mp4); -1..-N with --n")] = None,
                    n: Annotated[int, typer.Option(help="continuations of the seed clip, one MP4 each")] = 1,
                    temperature: Annotated[Optional[float], typer.Option(help="spread of the sampled steps (default: fitted to the real clips' speed, or the run's temporal.temperature with match_speed off; 0: the mean step)")] = None,
                    seed: int = 0, config: ConfigOpt = Path(DEFAULT_CONFIG_NAME)) -> None:
    """MP4s that continue a seed clip, their fluency against real clips and their diversity."""
    from ..layout import Storage
    from ..training.fluency import format_report
    from ..training.sample import sample_temporal as run_sample

    cfg = load_config(config)
    with console.status("generating video..."):
        result = run_sample(Storage.of(cfg), run, seconds=seconds, fps=fps, seed_clip=seed_clip, out=out, seed=seed,
                            n=n, temperature=temperature)
    console.print(f"{n} x {result['frames']} frames at {fps:g} fps continuing clip {result['seed_clip']} "
                  f"(step {result['step']}, temperature {result['temperature']:g}"
                  f"{' fitted to the real speed' if result['temperature_fitted'] else ''}): "
                  + ", ".join(str(p) for p in result["videos"]))
    console.print(format_report(result["fluency"]))


@app.command()
def runs(config: ConfigOpt = Path(DEFAULT_CONFIG_NAME), fmt: FormatOpt = OutputFormat.table) -> None:
    """List the training runs: kind, snapshot, newest checkpoint, last loss."""
    from rich.markup import escape

    from ..layout import Storage
    from ..training.runs import checkpoint_steps, pull_run, read_metrics, read_run_info, run_names

    storage = Storage.of(load_config(config))
    names = run_names(storage)
    rows = []
    for name in names:
        folder = pull_run(storage, name)
        info, steps, metrics = read_run_info(folder), checkpoint_steps(storage, name), read_metrics(folder)
        rows.append({"run": name, "kind": info["kind"], "snapshot": info["snapshot"]["name"],
                     "created": info["created"][:19], "checkpoint_step": steps[-1] if steps else None,
                     "last_loss": metrics[-1]["loss"] if metrics else None})
    if fmt is OutputFormat.json:
        print_json(rows)
        return
    table = Table(box=box.SIMPLE_HEAD)
    for col in ("run", "kind", "snapshot", "created (UTC)", "checkpoint step", "last loss"):
        table.add_column(col, no_wrap=col in ("run", "snapshot"))
    for r in rows:
        table.add_row(escape(r["run"]), r["kind"], escape(r["snapshot"]), r["created"],
                      "-" if r["checkpoint_step"] is None else str(r["checkpoint_step"]),
                      "-" if r["last_loss"] is None else f"{r['last_loss']:.4f}")
    show(table)
