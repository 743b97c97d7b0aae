"""`process` and `render`: videos into dataset rows, and a video re-rendered through transforms."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from .. import cluster
from ..errors import UserError
from .options import DEFAULT_CONFIG_NAME, AddressOpt, ConfigOpt, app, console, load_config
from .tables import report_table, show

# Command bodies import the library when they run (deferred on purpose: pydantic, pyarrow, Ray and
# DuckDB are what `--help` and `sql` would otherwise pay for at start-up; see test_cli_operator).


@app.command()
def process(paths: Annotated[Optional[list[Path]], typer.Argument(help="videos or folders; none: pending segments")] = None,
            config: ConfigOpt = Path(DEFAULT_CONFIG_NAME), address: AddressOpt = None,
            inline: Annotated[Optional[bool], typer.Option(
                "--inline/--ray", help="run in this process, or on Ray; unset: in this process for a job of "
                                       "up to 16 windows when no Ray is running (Ray's start-up would cost more)")] = None
            ) -> None:
    """Turn videos into dataset rows: recorded segments not yet processed, or local files/folders."""
    from ..dataset.manifest import pending_segments
    from ..processing.pipeline import INLINE_MAX_WINDOWS, file_segments, plan_windows, process_inline
    from ..processing.pipeline import process as run_pipeline
    from ..layout import Storage

    cfg = load_config(config)
    skipped: list[tuple[str, str]] = []
    segments = file_segments(paths, skipped) if paths else pending_segments(Storage.of(cfg))
    for path, why in skipped:
        console.print(f"[yellow]skipped[/yellow] {escape(path)}: {escape(why)}")
    if inline is None:
        no_ray = not (address or cfg.ray.address or cluster.local_endpoints())
        inline = no_ray and len(plan_windows(segments, cfg.processing.window_s)[0]) <= INLINE_MAX_WINDOWS
    if inline:
        cluster.drop_native_logs()  # mediapipe's LiteRT logs, in this process
        report = process_inline(cfg, segments)
    else:
        cluster.connect_for_job(address or cfg.ray.address, cfg.ray.namespace)
        report = run_pipeline(cfg, segments)
    table = report_table(report, f"processed into {Storage.of(cfg).where}/dataset"
                         + (" (in this process)" if inline else ""))
    if skipped:
        table.add_row("[yellow]skipped[/yellow]", f"{len(skipped)} paths that are not readable video files (above)")
    show(table)


@app.command()
def render(src: Path, dst: Path,
           transforms: Annotated[str, typer.Option(help="e.g. 'silhouette, one_color(color=white), contrast(gain=1.8)'")],
           inline: Annotated[bool, typer.Option(help="run on this process instead of Ray")] = False,
           address: AddressOpt = None,
           config: Annotated[Optional[Path], typer.Option("--config", "-c", envvar="S2D_CONFIG", help=(
               "config file (optional: its storage root's raw/ and dataset/ are refused as outputs)"))] = None) -> None:
    """Re-render a video frame by frame through a transform chain, keeping its audio."""
    from ..layout import DATASET, RAW
    from ..processing.render import FrameChain, check_output
    from ..processing.render import render as render_video

    if not src.is_file():
        raise UserError(f"{src}: no such video file")
    config = config or (Path(DEFAULT_CONFIG_NAME) if Path(DEFAULT_CONFIG_NAME).exists() else None)
    root = load_config(config).storage.root if config else None
    check_output(src, dst, [root / RAW, root / DATASET] if root else [])
    try:
        chain = FrameChain(transforms)
    except ValueError as err:
        raise UserError(f"--transforms: {err}") from None
    if not inline:
        cluster.connect_for_job(address, "stream2dataset")
    else:
        cluster.drop_native_logs()  # mediapipe's LiteRT logs, in this process
    with console.status(f"rendering {src.name}..."):
        result = render_video(src, dst, chain, parallel=not inline)
    console.print(f"wrote {dst}: {result['frames']} frames in {result['seconds']:.1f} s, audio {result['audio']}")

