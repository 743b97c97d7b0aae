"""`sql`, `stats`, `preview`, `dedup`, `compact`, `snapshot`, `snapshots`: reading, compacting and freezing the dataset."""

from __future__ import annotations

import difflib
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich import box
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from .. import cluster
from ..humanize import human_bytes
from .options import DEFAULT_CONFIG_NAME, AddressOpt, ConfigOpt, OutputFormat, app, console, load_config
from .tables import show, stats_tables

# Command bodies import the library when they run (deferred on purpose: pydantic, pyarrow, Ray and
# DuckDB are what `--help` and `sql` would otherwise pay for at start-up; see test_cli_operator).


def _dataset_root(cfg) -> Path:
    """The local root to read the dataset from: an object-store root's working copy, brought up to date."""
    from ..layout import Storage

    return Storage.of(cfg).pull_dataset()



# The dataset: SQL, stats, preview ------------------------------------------------------------------

class OutFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


@app.command()
def sql(query: Annotated[str, typer.Argument(help="one read-only statement, e.g. "
                                                  "\"SELECT channel, count(*) FROM frames GROUP BY 1\"")],
        config: ConfigOpt = Path(DEFAULT_CONFIG_NAME),
        fmt: Annotated[OutFormat, typer.Option("--format", "-f", help="table, csv or json")] = OutFormat.table,
        limit: Annotated[int, typer.Option(min=0, help="at most N rows; 0: all")] = 1000) -> None:
    """Query the dataset in SQL, read-only (DuckDB).

    Views: frames (kept frames), frames_all (with near-duplicates; dup_of names the kept frame),
    clips, segments, drops, dups, embeddings, channels. Only one query statement runs (SELECT, WITH, FROM,
    DESCRIBE, SHOW, SUMMARIZE, EXPLAIN); only files under the storage root can be read. Binary
    columns (image, mask) print as <N bytes> in the table, and as base64 text in CSV and JSON.
    """
    import pyarrow.types as pa_types
    from rich.text import Text

    from ..dataset.catalog import query as run_sql
    from ..dataset.stats import cell_text, rows, rows_csv, rows_json

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



@app.command()
def stats(config: ConfigOpt = Path(DEFAULT_CONFIG_NAME),
          fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="table or json")] = OutputFormat.table,
          plot: Annotated[Optional[Path], typer.Option(help="also write a PNG chart of frames kept and hours "
                                                            "recorded per channel per day")] = None) -> None:
    """Per channel and day: hours recorded, segments, frames kept, duplicates, drops by reason, bytes."""
    from ..dataset.stats import dataset_stats, plot_stats

    cfg = load_config(config)
    st = dataset_stats(_dataset_root(cfg), timeout_s=cfg.dataset.sql_timeout_s)
    if fmt is OutputFormat.json:
        print(json.dumps(st, indent=1))
    else:
        for table in stats_tables(st):
            show(table)
    if plot:
        plot_stats(st, plot)
        print(f"wrote {plot}", file=sys.stderr if fmt is OutputFormat.json else sys.stdout)


@app.command()
def preview(config: ConfigOpt = Path(DEFAULT_CONFIG_NAME),
            where: Annotated[Optional[str], typer.Option(help="SQL condition on frames, e.g. "
                                                              "\"channel = 'x' AND kind = 'facecam'\"")] = None,
            n: Annotated[int, typer.Option("--n", min=1, max=1024, help="how many frames (the first by time)")] = 64,
            out: Annotated[Path, typer.Option(help="the PNG to write")] = Path("preview.png"),
            include_all: Annotated[bool, typer.Option("--all", help="include near-duplicates (frames_all)")] = False,
            ) -> None:
    """Write a contact sheet (PNG) of the frames that match --where, in time order."""
    from ..dataset.stats import preview_sheet

    cfg = load_config(config)
    path, count = preview_sheet(_dataset_root(cfg), where, out, n=n, include_dups=include_all,
                                timeout_s=cfg.dataset.sql_timeout_s)
    console.print(f"wrote {path}: {count} frames")


@app.command()
def dedup(config: ConfigOpt = Path(DEFAULT_CONFIG_NAME),
          radius: Annotated[Optional[int], typer.Option(min=0, max=16, help="pHash bits; default dataset.dedup_radius")] = None,
          use_ray: Annotated[bool, typer.Option("--ray", help="spread a full pass over the Ray cluster")] = False,
          rebuild: Annotated[bool, typer.Option("--rebuild", help="a full pass over every frame, which rebuilds "
                                                                  "the dedup index")] = False,
          address: AddressOpt = None) -> None:
    """Link near-duplicate frames across segments and channels (the earliest is kept; nothing is deleted).

    Links the frames no earlier round has seen, against the dedup index (dataset/_dedup); the first
    run, --rebuild and another --radius make a full pass over every frame instead."""
    from ..dataset.compaction import recover_if_idle
    from ..dataset.dedup_pass import dedup_dataset
    from ..layout import Storage

    cfg = load_config(config)
    recover_if_idle(Storage.of(cfg))  # a killed compaction's files are settled before the shards are read
    if use_ray:
        cluster.connect_for_job(address or cfg.ray.address, cfg.ray.namespace)
    r = radius if radius is not None else cfg.dataset.dedup_radius
    with console.status(f"deduplicating frames within {r} bits of pHash..."):
        report = dedup_dataset(Storage.of(cfg), r, use_ray=use_ray, rebuild=rebuild)
    what = "full pass" if report["mode"] == "rebuild" else f"round {report['round']}, new"
    console.print(f"{report['frames']:,} frames ({what}), {report['linked']:,} linked as near-duplicates of an "
                  f"earlier frame (radius {r}) in {report['seconds']:.1f} s; links: {report['path']}")





@app.command()
def compact(config: ConfigOpt = Path(DEFAULT_CONFIG_NAME),
            dry_run: Annotated[bool, typer.Option("--dry-run", help="print what would be merged; change nothing")]
            = False) -> None:
    """Merge small files: the manifest's closed hours, days and months into one file per channel and
    period, and small shards into ones of dataset.shard_target_mb (the service does this after each
    commit). Files a snapshot pins move to dataset/_retired/ until `snapshot rm` frees them."""
    from ..dataset.compaction import compact as run_compact
    from ..layout import Storage

    cfg = load_config(config)
    storage = Storage.of(cfg)
    with console.status("compacting..." if not dry_run else "planning..."):
        groups = run_compact(storage, cfg.dataset.shard_target_mb, cfg.dataset.row_group_rows, dry_run=dry_run,
                             wait=False)
    if not groups:
        console.print("nothing to compact")
        return
    table = Table(box=box.SIMPLE_HEAD, title="would merge" if dry_run else "merged")
    for col in ("table", "where", "files", "bytes", "into"):
        table.add_column(col, justify="right" if col in ("files", "bytes") else "left", overflow="fold")
    for g in groups:
        where = f"{g['channel']} {g['period']}" if g["table"] == "segments" else g["folder"].split("/", 2)[2]
        into = ", ".join(p.rsplit("/", 1)[1] for p in g.get("new", [])) or g["prefix"].rsplit("/", 1)[1] + "*"
        table.add_row(g["table"], escape(where), f"{len(g['old']):,}", human_bytes(g["bytes"]), escape(into))
    console.print(table)
    files = sum(len(g["old"]) for g in groups)
    console.print(f"{'would merge' if dry_run else 'merged'} {files:,} files in {len(groups)} groups"
                  + (" (dry run: nothing changed)" if dry_run else ""))


class SnapshotGroup(TyperGroup):
    """`snapshot create|export|rm ...`; a first word that names no sub-command (nor --help) means
    `create`, so `snapshot NAME [--where ...]` works as it always did."""

    default_command = "create"

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            near = difflib.get_close_matches(args[0], list(self.commands), n=1, cutoff=0.75)
            if near:  # `snapshot exprt NAME` is a typo, not a snapshot named "exprt"
                raise click.UsageError(f"no sub-command {args[0]!r}: did you mean {near[0]!r}? (a snapshot "
                                       f"of that name: `snapshot create {args[0]}`)", ctx)
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


snapshot_app = typer.Typer(cls=SnapshotGroup, no_args_is_help=True,
                           help="Freeze the dataset for training (`snapshot NAME` is `snapshot create NAME`), "
                                "export a snapshot, or remove one.")
app.add_typer(snapshot_app, name="snapshot")


class ExportFormat(str, Enum):
    webdataset = "webdataset"
    parquet = "parquet"
    hf = "hf"


class ExportTable(str, Enum):
    frames = "frames"
    clips = "clips"


@snapshot_app.command("create")
def snapshot(name: Annotated[str, typer.Argument(help="letters, digits, '.', '_', '-'")],
             config: ConfigOpt = Path(DEFAULT_CONFIG_NAME),
             where: Annotated[Optional[str], typer.Option(help="one condition on a frame's own columns (no subqueries), "
                                                              "e.g. \"channel = 'x' AND kind = 'face'\"")] = None,
             ) -> None:
    """Freeze the dataset as it is now (exact shard files, sha256, the filter) for training to pin."""
    from ..dataset.snapshots import create_snapshot
    from ..layout import Storage

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

    from ..dataset.export import export_snapshot
    from ..layout import Storage

    cfg = load_config(config)
    with Progress(TextColumn("exporting {task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(f"{name} ({table.value})", total=None)
        report = export_snapshot(Storage.of(cfg), name, fmt.value, out, shard_size=shard_size, table=table.value,
                                 progress=lambda done, total: bar.update(task, completed=done, total=total))
    rate = report["rows"] / report["seconds"] if report["seconds"] else 0
    console.print(f"snapshot {name}: {report['rows']:,} {table.value} as {fmt.value} in {len(report['shards'])} "
                  f"file(s), {human_bytes(report['bytes'])}, {report['seconds']:.1f} s ({rate:,.0f} rows/s) "
                  f"-> {escape(report['out'])}")


@snapshot_app.command("rm")
def snapshot_rm(name: Annotated[str, typer.Argument(help="the snapshot to delete")],
                config: ConfigOpt = Path(DEFAULT_CONFIG_NAME)) -> None:
    """Delete a snapshot, and the compacted-away files (dataset/_retired/) no other snapshot pins."""
    from ..dataset.snapshots import remove_snapshot
    from ..layout import Storage

    cfg = load_config(config)
    freed = remove_snapshot(Storage.of(cfg), name)
    console.print(f"snapshot {name} removed; {len(freed)} retired file(s) freed")


@app.command()
def snapshots(config: ConfigOpt = Path(DEFAULT_CONFIG_NAME),
              fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="table or json")
                             ] = OutputFormat.table,
              ) -> None:
    """List the snapshots: name, when, frames, filter, files."""
    from ..dataset.snapshots import list_snapshots
    from ..layout import Storage

    cfg = load_config(config)
    listed = list_snapshots(Storage.of(cfg))
    if fmt is OutputFormat.json:  # one object per snapshot, the table's keys; a broken one has `error`
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

