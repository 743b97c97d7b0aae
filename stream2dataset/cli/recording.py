"""`init`, `check`, `up`, `status`, `down`, `record`, `segments`: the config and the recording service."""

from __future__ import annotations

import json
import sys
import time
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .. import cluster
from ..errors import ConfigError, UserError
from ..humanize import human_bytes
from .options import (DEFAULT_CONFIG_NAME, AddressOpt, ConfigOpt, FormatOpt, OutputFormat, app, console, load_config,
                      parse_duration, print_json)
from .tables import Fit, segment_summary, segments_table, show, status_table
from .ui import serve_dashboard

# Command bodies import the library when they run (deferred on purpose: pydantic, pyarrow, Ray and
# DuckDB are what `--help` and `sql` would otherwise pay for at start-up; see test_cli_operator).


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
                                                  "(the service keeps recording)")] = False,
       dashboard: Annotated[bool, typer.Option("--dashboard", help="start the local Ray with Ray's own dashboard "
                                                                "(127.0.0.1:8265)")] = False) -> None:
    """Start the recorders as detached Ray actors (or apply config edits to a running service)."""
    from .. import service

    cfg = load_config(config)
    cluster.connect(address or cfg.ray.address, cfg.ray.namespace, dashboard=dashboard)
    show(status_table(service.up(config)))
    console.print("recording; `stream2dataset status` to watch, `stream2dataset down` to stop. "
                  "Edits to the config file apply by themselves.")
    ends = {} if address or cfg.ray.address else cluster.local_endpoints()
    if ends.get("metrics"):
        console.print(f"metrics for Prometheus: {ends['metrics']} (s2d_* series)")
    if dashboard and ends and not ends.get("dashboard"):
        console.print("[yellow]the local Ray was started without its dashboard: `stream2dataset down`, then "
                      "`stream2dataset up --dashboard`[/yellow]")
    elif ends.get("dashboard"):
        console.print(f"Ray dashboard: {ends['dashboard']}")
    if ui:
        serve_dashboard(cfg, "127.0.0.1", 8765, service.status)


@app.command()
def status(config: ConfigOpt = Path(DEFAULT_CONFIG_NAME), address: AddressOpt = None,
           watch: Annotated[float, typer.Option(help="refresh every N seconds until Ctrl-C")] = 0.0,
           fmt: FormatOpt = OutputFormat.table) -> None:
    """Show each channel's state, segments, bytes and last error."""
    from rich.live import Live

    from .. import service

    ray_address, namespace, config_error = _service_settings(config)
    if config_error:  # the service keeps its last good config: show it, and why the file was not taken
        print(config_error, file=sys.stderr)
    cluster.connect(address or ray_address, namespace, start_local=False)
    if fmt is OutputFormat.json:
        while True:  # with --watch: one JSON document per line, every N seconds
            st = {**service.status(), "endpoints": {} if address or ray_address else cluster.local_endpoints()}
            print(json.dumps(st, default=str, indent=None if watch else 1), flush=True)
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
    try:
        cfg = load_config(config)
        return cfg.ray.address, cfg.ray.namespace, ""
    except ConfigError as err:
        if not Path(config).is_file():
            raise
        why = " ".join(str(err).split())
    from ..config import RayConfig, load_yaml

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
    from .. import service

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

    from ..ingest import ChannelRecorder

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
                                                              f"{human_bytes(st['bytes'] - before)}")
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

