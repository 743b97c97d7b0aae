"""The `stream2dataset` command: parse, call the library, print. No logic lives here."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from datetime import datetime, timezone
from enum import Enum
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import Interrupted, Terminated, UserError, raise_terminated

DEFAULT_CONFIG_NAME = "stream2dataset.yaml"  # config.DEFAULT_CONFIG_NAME, without importing pydantic to say it


def load_config(path):
    """config.load_config, imported when a command runs: `--help` and `--version` need no pydantic."""
    from .config import load_config as load

    return load(path)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Record Twitch/YouTube/HLS channels with Ray and turn them into datasets.")
console = Console()

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", envvar="S2D_CONFIG", help="config file")]
AddressOpt = Annotated[Optional[str], typer.Option("--address", envvar="RAY_ADDRESS",
                                                   help="Ray cluster address (default: the config's, else a local Ray)")]


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"stream2dataset {version('stream2dataset')}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                help="print the version and exit")] = False,
          verbose: Annotated[bool, typer.Option("--verbose", "-v", help=(
              "show the libraries' logs too (Ray, Ray Data INFO); without it they stay in Ray's log files"))] = False,
          ) -> None:
    if verbose:
        from . import cluster

        cluster.set_verbose(True)
        logging.getLogger().setLevel(logging.INFO)


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="table, or json for scripts")]


def print_json(data) -> None:
    """Machine-readable output: plain JSON on stdout, no rich markup or wrapping."""
    print(json.dumps(data, indent=1, default=str))


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not m:
        raise UserError(f"--duration {text!r}: use a number with s, m or h, e.g. 90s, 10m, 1h")
    return float(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[m[2]]


def _human_bytes(n: int | None) -> str:
    n = float(n or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _since(iso: str | None) -> str:
    """`11:20:37 (3m ago)`: when the state began, and how long it has lasted."""
    if not iso:
        return ""
    t = datetime.fromisoformat(iso)
    secs = int((datetime.now(timezone.utc) - t).total_seconds())
    ago = f"{secs}s" if secs < 120 else f"{secs // 60}m" if secs < 7200 else f"{secs // 3600}h"
    return f"{t.astimezone(timezone.utc):%H:%M:%S} ({ago} ago)"


class Fit:
    """A table whose words are never cut: as it is when its narrowest layout fits the terminal (rich then
    wraps values between words only), else one block of `header  value` lines per row. Channel, run,
    snapshot names and segment ids are single words, so they always show whole."""

    def __init__(self, table: Table):
        self.table = table

    def __rich_console__(self, console, options):
        # The table's own measure, unclamped (Measurement.get clamps the minimum to the width available).
        if self.table.__rich_measure__(console, options.update_width(1 << 20)).minimum <= options.max_width:
            yield self.table
            return
        yield from _vertical(self.table, console, options)


def _vertical(table: Table, console, options):
    """One block per row: `header  value` lines; a value too wide to sit beside its header goes on
    the lines below it, indented, so a long name or id still shows whole if the terminal allows."""
    from rich.measure import Measurement
    from rich.padding import Padding
    from rich.text import Text

    def grid() -> Table:
        block = Table.grid(padding=(0, 2))
        block.add_column(style="bold", no_wrap=True, width=key_width)
        block.add_column(overflow="fold")
        return block

    key_width = max((len(str(col.header)) for col in table.columns), default=0)
    room = options.max_width - key_width - 2
    if table.title:
        yield Text.from_markup(table.title, style="bold") if isinstance(table.title, str) else table.title
    for i in range(table.row_count):
        yield ""
        block = grid()
        for col in table.columns:
            cell = col._cells[i] if i < len(col._cells) else ""
            renderable = console.render_str(cell) if isinstance(cell, str) else cell
            if Measurement.get(console, options.update_width(1 << 20), renderable).minimum <= room:
                block.add_row(col.header, cell)
                continue
            if block.row_count:
                yield block
            yield Text(str(col.header), style="bold")
            yield Padding(renderable, (0, 0, 0, 2))
            block = grid()
        if block.row_count:
            yield block
    if table.caption:
        yield ""
        yield Text.from_markup(table.caption) if isinstance(table.caption, str) else table.caption


def show(table: Table) -> None:
    console.print(Fit(table))


def status_table(st: dict) -> Table:
    table = Table(title=f"stream2dataset — {st.get('config', '')}", box=box.SIMPLE_HEAD)
    table.add_column("channel", no_wrap=True)
    table.add_column("state", min_width=9)
    table.add_column("since", min_width=8)  # wraps before "(3m ago)" on narrow terminals
    table.add_column("segments", no_wrap=True, justify="right")
    table.add_column("bytes", no_wrap=True, justify="right")
    table.add_column("last error", overflow="fold", ratio=1, min_width=12)
    nodes = {ch["node"] for ch in st["channels"] if ch.get("node")}
    if len(nodes) > 1:  # on a cluster: which node records what (the start of Ray's node id)
        table.add_column("node", no_wrap=True)
    for ch in st["channels"]:
        kind = " · ".join(x for x in (ch.get("platform"), ch.get("mode")) if x)
        detail = ch.get("detail", "")
        table.add_row(f"{escape(ch['channel'])}\n[dim]{kind}[/dim]" if kind else escape(ch["channel"]),
                      f"{ch['state']}\n[dim]{detail}[/dim]" if detail else ch["state"], _since(ch.get("since")),
                      str(ch.get("segments", "")), _human_bytes(ch.get("bytes")), ch.get("last_error", ""),
                      *([(ch.get("node") or "")[:8]] if len(nodes) > 1 else []))
    notes = []
    if proc := st.get("processing"):
        notes.append(f"processing: {proc['state']}"
                     + (f" · backlog {proc['backlog']} segments" if proc.get("backlog") is not None else "")
                     + (f" · last run {proc['last']}" if proc.get("last") else "")
                     + (f" · [red]{proc['error']}[/red]" if proc.get("error") else ""))
    if st.get("config_error"):
        notes.append(f"[red]{st['config_error']}[/red]")
    table.caption = "\n".join(notes) or None
    return table


def segment_summary(cfg, channel: str | None = None) -> tuple[str, list[dict]]:
    """Where the manifest is, and one summary per channel (the keys of `segments --format json`)."""
    from .ingest import read_segments
    from .storage import Storage

    storage = Storage.of(cfg)
    by_channel: dict[str, list[dict]] = {}
    for row in read_segments(storage, channel).to_pylist():
        by_channel.setdefault(row["channel"], []).append(row)
    return storage.where, [
        {"channel": name, "segments": len(rows), "duration_s": round(sum(r["duration_s"] for r in rows), 3),
         "bytes": sum(r["bytes"] for r in rows), "resolutions": sorted({f"{r['width']}x{r['height']}" for r in rows}),
         "codecs": sorted({r["video_codec"] or "?" for r in rows}), "salvaged": sum(r["status"] == "salvaged" for r in rows),
         "first": rows[0]["start"].isoformat(), "last": rows[-1]["end"].isoformat()}
        for name, rows in sorted(by_channel.items())]


def segments_table(cfg, channel: str | None = None) -> Table:
    where, summary = segment_summary(cfg, channel)
    table = Table(title=f"recorded segments in {escape(str(where))}", box=box.SIMPLE_HEAD)
    for col in ("channel", "segments", "duration", "bytes", "resolution", "codec", "salvaged", "first", "last"):
        table.add_column(col, no_wrap=col == "channel", overflow="fold")
    for r in summary:
        table.add_row(escape(r["channel"]), str(r["segments"]), f"{r['duration_s']:.1f} s", _human_bytes(r["bytes"]),
                      ", ".join(r["resolutions"]), ", ".join(r["codecs"]), str(r["salvaged"]),
                      r["first"][11:19], r["last"][11:19])
    return table


@app.command()
def init(path: Annotated[Path, typer.Argument()] = Path(DEFAULT_CONFIG_NAME),
         force: Annotated[bool, typer.Option(help="overwrite an existing file")] = False) -> None:
    """Write a commented starter config."""
    if path.exists() and not force:
        raise UserError(f"{path} already exists; pass --force to overwrite it")
    path.write_text(files("stream2dataset").joinpath("starter.yaml").read_text())
    console.print(f"wrote {path}: add channels, then run `stream2dataset up -c {path}`")


@app.command()
def check(config: ConfigOpt = Path(DEFAULT_CONFIG_NAME)) -> None:
    """Validate the config and show the channels it resolves to."""
    cfg = load_config(config)
    table = Table(title=f"{config} (hash {cfg.hash}) — storage root {cfg.storage.uri or cfg.storage.root}")
    for col in ("name", "platform", "mode", "source", "tags", "segment s", "enabled"):
        table.add_column(col)
    for ch in cfg.channels:
        s = ch.settings(cfg.recording)
        table.add_row(ch.name, ch.platform, ch.mode, ch.source, ",".join(ch.tags), f"{s.segment_seconds:g}",
                      str(ch.enabled))
    show(table)


@app.command()
def up(config: ConfigOpt = Path(DEFAULT_CONFIG_NAME), address: AddressOpt = None,
       ui: Annotated[bool, typer.Option("--ui", help="then serve the web dashboard on 127.0.0.1:8765 until Ctrl-C "
                                                  "(the service keeps recording)")] = False) -> None:
    """Start the recorders as detached Ray actors (or apply config edits to a running service)."""
    from . import cluster
    from .ingest import service

    cfg = load_config(config)
    cluster.connect(address or cfg.ray.address, cfg.ray.namespace)
    show(status_table(service.up(config)))
    console.print("recording; `stream2dataset status` to watch, `stream2dataset down` to stop. "
                  "Edits to the config file apply by themselves.")
    if ui:
        from .ui.command import serve_dashboard

        serve_dashboard(cfg, "127.0.0.1", 8765, service.status)


@app.command()
def status(config: ConfigOpt = Path(DEFAULT_CONFIG_NAME), address: AddressOpt = None,
           watch: Annotated[float, typer.Option(help="refresh every N seconds until Ctrl-C")] = 0.0,
           fmt: FormatOpt = OutputFormat.table) -> None:
    """Show each channel's state, segments, bytes and last error."""
    from rich.live import Live

    from . import cluster
    from .ingest import service

    ray_address, namespace, config_error = _service_settings(config)
    if config_error:  # the service keeps its last good config: show it, and why the file was not taken
        print(config_error, file=sys.stderr)
    cluster.connect(address or ray_address, namespace, start_local=False)
    if fmt is OutputFormat.json:
        while True:  # with --watch: one JSON document per line, every N seconds
            print(json.dumps(service.status(), default=str, indent=None if watch else 1), flush=True)
            if not watch:
                return
            time.sleep(watch)
    if not watch:
        show(status_table(service.status()))
        return
    with Live(Fit(status_table(service.status())), console=console) as live:
        while True:
            time.sleep(watch)
            live.update(Fit(status_table(service.status())))


def _service_settings(config: Path) -> tuple[str | None, str, str]:
    """The Ray address and namespace to find the service in, and a config error line, if any.

    A config file that no longer validates (an edit in progress, a typo) does not hide the running
    service, which keeps recording with its last good config: the `ray` section is read from the raw
    YAML when that part is valid, else the defaults are used, and the error is returned as one line."""
    from .errors import ConfigError

    try:
        cfg = load_config(config)
        return cfg.ray.address, cfg.ray.namespace, ""
    except ConfigError as err:
        if not Path(config).is_file():
            raise
        why = " ".join(str(err).split())
    from .config import RayConfig, load_yaml

    try:
        raw = load_yaml(Path(config).read_text(encoding="utf-8"))
        ray_cfg = RayConfig.model_validate((raw or {}).get("ray") or {})
        return ray_cfg.address, ray_cfg.namespace, f"config not reloaded: {why}"
    except Exception:  # noqa: BLE001 - not YAML, not a mapping, an invalid ray section: the defaults, said so
        ray_cfg = RayConfig()
        return None, ray_cfg.namespace, (f"config not reloaded: {why} (its ray section is unreadable too: "
                                         f"looking for the service in Ray namespace {ray_cfg.namespace!r})")


@app.command()
def down(config: ConfigOpt = Path(DEFAULT_CONFIG_NAME), address: AddressOpt = None,
         keep_ray: Annotated[bool, typer.Option(help="leave the local Ray running")] = False) -> None:
    """Stop the recorders cleanly (each finishes its open segment)."""
    from . import cluster
    from .ingest import service

    cfg = load_config(config)
    cluster.connect(address or cfg.ray.address, cfg.ray.namespace, start_local=False)
    final = service.down()
    show(status_table({"channels": final, "config": str(config)}))
    if not (address or cfg.ray.address or keep_ray) and cluster.stop_local():
        console.print("stopped the local Ray")


@app.command()
def record(channel: str, config: ConfigOpt = Path(DEFAULT_CONFIG_NAME),
           duration: Annotated[str, typer.Option(help="how long, e.g. 90s, 10m, 1h")] = "10m") -> None:
    """Record one channel in the foreground, with a progress bar (no Ray needed)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .ingest import ChannelRecorder

    seconds = parse_duration(duration)
    cfg = load_config(config)
    name = cfg.channel(channel).name
    rec = ChannelRecorder(cfg, name)
    before = rec.status()["bytes"]  # the bar counts this run only, not what the channel had
    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(channel, total=seconds, info="")
        start = time.monotonic()
        try:
            while (elapsed := time.monotonic() - start) < seconds and not rec.wait(0.5):
                st = rec.status()
                progress.update(task, completed=elapsed, info=f"{st['state']} · {st['recorded']} segments · "
                                                              f"{_human_bytes(st['bytes'] - before)}")
        finally:
            last = rec.status()  # before stopping: why nothing came, if nothing did
            st = rec.stop()
            progress.update(task, completed=seconds, info=f"{st['state']} · {st['recorded']} segments")
    if not st["recorded"] and (rec.channel.mode == "live" or last["last_error"]):
        raise UserError(f"nothing recorded from channel {name} in {duration}: {last['last_error'] or last['state']}")
    show(segments_table(cfg, name))


@app.command()
def segments(config: ConfigOpt = Path(DEFAULT_CONFIG_NAME),
             channel: Annotated[Optional[str], typer.Option(help="only this channel")] = None,
             fmt: FormatOpt = OutputFormat.table) -> None:
    """Summarise the recorded segments in the manifest."""
    cfg = load_config(config)
    if fmt is OutputFormat.json:
        print_json(segment_summary(cfg, channel)[1])
        return
    show(segments_table(cfg, channel))


def _dataset_root(cfg) -> Path:
    """The local root to read the dataset from: an object-store root's working copy, brought up to date."""
    from .storage import Storage

    return Storage.of(cfg).pull_dataset()


def report_table(report: dict, title: str) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    for key in ("segments", "windows", "frames", "kept", "duplicates"):
        table.add_row(key if key != "frames" else "frames sampled", str(report[key]))
    table.add_row("facecams", ", ".join(f"{k}: {v}" for k, v in sorted(report["facecams"].items())) or "-")
    table.add_row("dropped", ", ".join(f"{k}: {v}" for k, v in sorted(report["drops"].items())) or "-")
    table.add_row("seconds per stage", ", ".join(f"{k} {v:.1f}" for k, v in report["seconds"].items()) or "-")
    if len(report.get("nodes", {})) > 1:
        table.add_row("windows per Ray node", ", ".join(f"{k[:8]}: {v}" for k, v in report["nodes"].most_common()))
    for q in report["quarantined"]:
        table.add_row("[red]quarantined[/red]", f"{q['segment_id']}: {q['reason']}")
    return table


@app.command()
def process(paths: Annotated[Optional[list[Path]], typer.Argument(help="videos or folders; none: pending segments")] = None,
            config: ConfigOpt = Path(DEFAULT_CONFIG_NAME), address: AddressOpt = None) -> None:
    """Turn videos into dataset rows: recorded segments not yet processed, or local files/folders."""
    from . import cluster
    from .processing.pipeline import file_segments, pending_segments
    from .processing.pipeline import process as run_pipeline
    from .storage import Storage

    cfg = load_config(config)
    skipped: list[tuple[str, str]] = []
    segments = file_segments(paths, skipped) if paths else pending_segments(Storage.of(cfg))
    for path, why in skipped:
        console.print(f"[yellow]skipped[/yellow] {escape(path)}: {escape(why)}")
    cluster.connect_for_job(address or cfg.ray.address, cfg.ray.namespace)
    table = report_table(run_pipeline(cfg, segments), f"processed into {Storage.of(cfg).where}/dataset")
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
    from .processing.render import FrameChain, check_output
    from .processing.render import render as render_video

    if not src.is_file():
        raise UserError(f"{src}: no such video file")
    config = config or (Path(DEFAULT_CONFIG_NAME) if Path(DEFAULT_CONFIG_NAME).exists() else None)
    root = load_config(config).storage.root if config else None
    check_output(src, dst, [root / "raw", root / "dataset"] if root else [])
    try:
        chain = FrameChain(transforms)
    except ValueError as err:
        raise UserError(f"--transforms: {err}") from None
    if not inline:
        from . import cluster

        cluster.connect_for_job(address, "stream2dataset")
    with console.status(f"rendering {src.name}..."):
        result = render_video(src, dst, chain, parallel=not inline)
    console.print(f"wrote {dst}: {result['frames']} frames in {result['seconds']:.1f} s, audio {result['audio']}")


@app.command()
def demo(workdir: Annotated[Path, typer.Option(help="where the demo's config and data go")] = Path("demo-data"),
         seconds: Annotated[float, typer.Option(help="how long to record")] = 60.0) -> None:
    """The embedded default: a demo channel served as live HLS on loopback, recorded end to end."""
    from .demo.run import run_demo

    run_demo(workdir, seconds, console)


# The dataset: SQL, stats, preview ------------------------------------------------------------------

class OutFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


class StatsFormat(str, Enum):
    table = "table"
    json = "json"


@app.command()
def sql(query: Annotated[str, typer.Argument(help="one read-only statement, e.g. "
                                                  "\"SELECT channel, count(*) FROM frames GROUP BY 1\"")],
        config: ConfigOpt = Path(DEFAULT_CONFIG_NAME),
        fmt: Annotated[OutFormat, typer.Option("--format", "-f", help="table, csv or json")] = OutFormat.table,
        limit: Annotated[int, typer.Option(min=0, help="at most N rows; 0: all")] = 1000) -> None:
    """Query the dataset in SQL, read-only (DuckDB).

    Views: frames (kept frames), frames_all (with near-duplicates; dup_of names the kept frame),
    clips, segments, drops, dups, channels. Only one query statement runs (SELECT, WITH, FROM,
    DESCRIBE, SHOW, SUMMARIZE, EXPLAIN); only files under the storage root can be read. Binary
    columns (image, mask) print as <N bytes> in the table, and as base64 text in CSV and JSON.
    """
    import pyarrow.types as pa_types
    from rich.text import Text

    from .dataset.catalog import query as run_sql
    from .dataset.stats import cell_text, rows, rows_csv, rows_json

    cfg = load_config(config)
    result, more = run_sql(_dataset_root(cfg), query, limit or None, timeout_s=cfg.dataset.sql_timeout_s)
    note = f"first {result.num_rows} rows; --limit 0 for all" if more else f"{result.num_rows} rows"
    if fmt is not OutFormat.table:
        sys.stdout.write(rows_csv(result) if fmt is OutFormat.csv else rows_json(result) + "\n")
        if more:
            print(note, file=sys.stderr)
        return
    table = Table(box=box.SIMPLE_HEAD, caption=note)
    for field in result.schema:
        numeric = pa_types.is_integer(field.type) or pa_types.is_floating(field.type)
        table.add_column(field.name, justify="right" if numeric else "left", overflow="fold",
                         min_width=min(len(field.name), 16))  # fold long values, not short headers
    for row in rows(result):
        table.add_row(*(Text(cell_text(v)) for v in row))  # Text: data is never read as rich markup
    show(table)  # too many columns for the terminal: one block per row


def _stats_tables(st: dict) -> list[Table]:
    def pct(r: dict) -> str:
        return f"{r['duplicates']:,} ({100 * r['duplicate_rate']:.1f}%)"

    by_channel = Table(title=f"dataset in {st['root']}", box=box.SIMPLE_HEAD)
    for col in ("channel", "hours", "segments", "raw", "frames kept", "duplicates", "dropped", "clips", "dataset"):
        by_channel.add_column(col, justify="left" if col == "channel" else "right", no_wrap=True)
    by_channel.add_column("drops by reason", overflow="fold", ratio=1, min_width=12)
    for i, r in enumerate([*st["channels"], {**st["total"], "channel": None}]):
        by_channel.add_row(escape(r["channel"]) if r["channel"] else "[b]total[/b]", f"{r['hours_recorded']:.2f}", f"{r['segments']:,}",
                           _human_bytes(r["raw_bytes"]), f"{r['frames_kept']:,}", pct(r), f"{r['dropped']:,}",
                           f"{r['clips']:,}", _human_bytes(r["dataset_bytes"]),
                           escape(", ".join(f"{k} {v:,}" for k, v in r["drops"].items())),
                           end_section=i == len(st["channels"]) - 1)
    by_day = Table(title="by day (UTC)", box=box.SIMPLE_HEAD)
    for col in ("channel", "day", "hours", "segments", "frames kept", "duplicates", "dropped", "clips", "dataset"):
        by_day.add_column(col, justify="left" if col in ("channel", "day") else "right", no_wrap=True)
    for r in st["days"]:
        by_day.add_row(escape(r["channel"]), r["date"], f"{r['hours_recorded']:.2f}", f"{r['segments']:,}",
                       f"{r['frames_kept']:,}", pct(r), f"{r['dropped']:,}", f"{r['clips']:,}",
                       _human_bytes(r["dataset_bytes"]))
    return [by_channel, by_day]


@app.command()
def stats(config: ConfigOpt = Path(DEFAULT_CONFIG_NAME),
          fmt: Annotated[StatsFormat, typer.Option("--format", "-f", help="table or json")] = StatsFormat.table,
          plot: Annotated[Optional[Path], typer.Option(help="also write a PNG chart of frames kept and hours "
                                                            "recorded per channel per day")] = None) -> None:
    """Per channel and day: hours recorded, segments, frames kept, duplicates, drops by reason, bytes."""
    from .dataset.stats import dataset_stats, plot_stats

    cfg = load_config(config)
    st = dataset_stats(_dataset_root(cfg), timeout_s=cfg.dataset.sql_timeout_s)
    if fmt is StatsFormat.json:
        print(json.dumps(st, indent=1))
    else:
        for table in _stats_tables(st):
            show(table)
    if plot:
        plot_stats(st, plot)
        print(f"wrote {plot}", file=sys.stderr if fmt is StatsFormat.json else sys.stdout)


@app.command()
def preview(config: ConfigOpt = Path(DEFAULT_CONFIG_NAME),
            where: Annotated[Optional[str], typer.Option(help="SQL condition on frames, e.g. "
                                                              "\"channel = 'x' AND kind = 'facecam'\"")] = None,
            n: Annotated[int, typer.Option("--n", min=1, max=1024, help="how many frames (the first by time)")] = 64,
            out: Annotated[Path, typer.Option(help="the PNG to write")] = Path("preview.png"),
            include_all: Annotated[bool, typer.Option("--all", help="include near-duplicates (frames_all)")] = False,
            ) -> None:
    """Write a contact sheet (PNG) of the frames that match --where, in time order."""
    from .dataset.stats import preview_sheet

    cfg = load_config(config)
    path, count = preview_sheet(_dataset_root(cfg), where, out, n=n, include_dups=include_all,
                                timeout_s=cfg.dataset.sql_timeout_s)
    console.print(f"wrote {path}: {count} frames")


@app.command()
def dedup(config: ConfigOpt = Path(DEFAULT_CONFIG_NAME),
          radius: Annotated[Optional[int], typer.Option(min=0, max=16, help="pHash bits; default dataset.dedup_radius")] = None,
          use_ray: Annotated[bool, typer.Option("--ray", help="spread the index over the Ray cluster")] = False,
          address: AddressOpt = None) -> None:
    """Link near-duplicate frames across segments and channels (the earliest is kept; nothing is deleted)."""
    from .dataset.dedup_pass import dedup_dataset
    from .storage import Storage

    cfg = load_config(config)
    if use_ray:
        from . import cluster

        cluster.connect_for_job(address or cfg.ray.address, cfg.ray.namespace)
    r = radius if radius is not None else cfg.dataset.dedup_radius
    with console.status(f"deduplicating frames within {r} bits of pHash..."):
        report = dedup_dataset(Storage.of(cfg), r, use_ray=use_ray)
    console.print(f"{report['frames']:,} frames, {report['linked']:,} linked as near-duplicates of an earlier "
                  f"frame (radius {r}) in {report['seconds']:.1f} s; links: {report['path']}")


from typer.core import TyperGroup  # noqa: E402


class SnapshotGroup(TyperGroup):
    """`snapshot create|export ...`; a first word that names no sub-command (nor --help) means
    `create`, so `snapshot NAME [--where ...]` works as it always did."""

    default_command = "create"

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


snapshot_app = typer.Typer(cls=SnapshotGroup, no_args_is_help=True,
                           help="Freeze the dataset for training (`snapshot NAME` is `snapshot create NAME`), "
                                "or export a snapshot.")
app.add_typer(snapshot_app, name="snapshot")


class ExportFormat(str, Enum):
    webdataset = "webdataset"
    parquet = "parquet"
    hf = "hf"


class ExportTable(str, Enum):
    frames = "frames"
    clips = "clips"


class SnapshotsFormat(str, Enum):
    table = "table"
    json = "json"


@snapshot_app.command("create")
def snapshot(name: Annotated[str, typer.Argument(help="letters, digits, '.', '_', '-'")],
             config: ConfigOpt = Path(DEFAULT_CONFIG_NAME),
             where: Annotated[Optional[str], typer.Option(help="one condition on a frame's own columns (no subqueries), "
                                                              "e.g. \"channel = 'x' AND kind = 'face'\"")] = None,
             ) -> None:
    """Freeze the dataset as it is now (exact shard files, sha256, the filter) for training to pin."""
    from .dataset.snapshots import create_snapshot
    from .storage import Storage

    cfg = load_config(config)
    with console.status("hashing the shards..."):
        m = create_snapshot(Storage.of(cfg), name, where, timeout_s=cfg.dataset.sql_timeout_s)
    files = sum(len(v) for v in m["files"].values())
    console.print(f"snapshot {name}: {m['frames']:,} frames{' where ' + m['where'] if m['where'] else ''}, "
                  f"{files} files pinned -> {Storage.of(cfg).where}/snapshots/{name}.json")


@snapshot_app.command("export")
def snapshot_export(
        name: Annotated[str, typer.Argument(help="the snapshot")],
        out: Annotated[Path, typer.Argument(help="a new or empty folder, outside the storage root's data folders")],
        fmt: Annotated[ExportFormat, typer.Option("--format", "-f", help="webdataset: OUT/00000.tar, ... (KEY.png + "
                                                  "KEY.json); parquet: OUT/00000.parquet, ...; hf: a folder that "
                                                  "datasets.load_dataset(OUT) reads, images as datasets.Image")],
        config: ConfigOpt = Path(DEFAULT_CONFIG_NAME),
        shard_size: Annotated[int, typer.Option(min=1, help="rows per output file")] = 10_000,
        table: Annotated[ExportTable, typer.Option(help="frames, or clips (a clip's frames in order)")
                         ] = ExportTable.frames,
) -> None:
    """Write the rows a snapshot selects (its files, its filter, no near-duplicates) for other tools.

    OUT/_stats.json, written last, lists the files and their rows. Read --format hf with
    `datasets.load_dataset("OUT")` (split train; OUT/data/*.parquet also loads with "parquet")."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .dataset.export import export_snapshot
    from .storage import Storage

    cfg = load_config(config)
    with Progress(TextColumn("exporting {task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(f"{name} ({table.value})", total=None)
        report = export_snapshot(Storage.of(cfg), name, fmt.value, out, shard_size=shard_size, table=table.value,
                                 progress=lambda done, total: bar.update(task, completed=done, total=total))
    rate = report["rows"] / report["seconds"] if report["seconds"] else 0
    console.print(f"snapshot {name}: {report['rows']:,} {table.value} as {fmt.value} in {len(report['shards'])} "
                  f"file(s), {_human_bytes(report['bytes'])}, {report['seconds']:.1f} s ({rate:,.0f} rows/s) "
                  f"-> {escape(report['out'])}")


@app.command()
def snapshots(config: ConfigOpt = Path(DEFAULT_CONFIG_NAME),
              fmt: Annotated[SnapshotsFormat, typer.Option("--format", "-f", help="table or json")
                             ] = SnapshotsFormat.table,
              ) -> None:
    """List the snapshots: name, when, frames, filter, files."""
    from .dataset.snapshots import list_snapshots
    from .storage import Storage

    cfg = load_config(config)
    listed = list_snapshots(Storage.of(cfg))
    if fmt is SnapshotsFormat.json:  # one object per snapshot, the table's keys; a broken one has `error`
        print(json.dumps([{"name": m["name"], "path": m["path"], "error": m["error"]} if "error" in m else
                          {"name": m["name"], "created": m["created"], "frames": m["frames"],
                           "files": sum(len(v) for v in m["files"].values()), "where": m["where"]}
                          for m in listed], indent=1))
        return
    table = Table(box=box.SIMPLE_HEAD)
    for col in ("name", "created (UTC)", "frames", "files", "where"):
        table.add_column(col, justify="right" if col in ("frames", "files") else "left")
    for m in listed:
        if "error" in m:  # a broken file is named, and the others still listed
            table.add_row(escape(m["name"]), "[red]broken[/red]", "", "", escape(m["error"]))
            continue
        table.add_row(escape(m["name"]), m["created"][:19], f"{m['frames']:,}",
                      str(sum(len(v) for v in m["files"].values())), escape(m["where"] or ""))
    console.print(table)


# Training: `train`, `sample`, `runs` live beside the code they drive.
from .training import commands as _training_commands  # noqa: E402,F401  (registers the commands)
from .ui import command as _ui_command  # noqa: E402,F401  (registers `ui`)


# typer raises the exceptions of its own copy of click (typer._click), not the click package's.
try:
    from typer._click import exceptions as _typer_click
except ImportError:  # an older typer that uses click itself
    _typer_click = click.exceptions
_CLICK_ERRORS = (click.ClickException, _typer_click.ClickException)
_ABORTS = (click.exceptions.Abort, typer.Abort, KeyboardInterrupt)


def usage_error_line(err: Exception) -> str:
    """A click usage error as one line: what is wrong, then where the right usage is shown."""
    ctx = getattr(err, "ctx", None)
    command = ctx.command_path if ctx else "stream2dataset"
    msg = " ".join(err.format_message().replace("Value error, ", "").split()).rstrip(".")
    option = getattr(err, "option_name", None)
    if ctx is not None and ctx.parent is None and option:  # `stream2dataset -c x sql ...`
        return f"{msg}: options go after the command, e.g. `stream2dataset sql {option} ...`"
    return f"{msg}{' ' if msg.endswith('?') else '; '}see `{command} --help`"  # after "Did you mean ...?"


def _end_ray() -> None:
    """Disconnect from Ray before exiting on a signal, so its atexit hook has nothing left to report."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        try:
            ray.shutdown()
        except BaseException:  # noqa: BLE001 - ending anyway; a second signal here must not print a trace
            pass


def main() -> None:
    import signal

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, raise_terminated)  # cluster.reclaim_sigterm puts it back after ray.init
    try:
        code = app(prog_name="stream2dataset", standalone_mode=False)
        if code == 130:  # typer turns KeyboardInterrupt (Ctrl-C) into Exit(130), returned here
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    except Terminated:
        print("terminated", file=sys.stderr)
        _end_ray()
        sys.exit(143)
    except UserError as err:
        for line in str(err).splitlines():
            print(f"error: {line}", file=sys.stderr)
        sys.exit(130 if isinstance(err, Interrupted) else 2)
    except _CLICK_ERRORS as err:
        if isinstance(err, (click.exceptions.NoArgsIsHelpError, _typer_click.NoArgsIsHelpError)):
            print(err.ctx.get_help(), file=sys.stderr)
        else:
            print(f"error: {usage_error_line(err)}", file=sys.stderr)
        sys.exit(2)
    except _ABORTS:
        print("interrupted", file=sys.stderr)
        _end_ray()
        sys.exit(130)
