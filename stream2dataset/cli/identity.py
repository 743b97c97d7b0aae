"""`embed` and `lookalike`: face identity embeddings of the dataset, and the faces nearest a photo."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from .. import cluster
from .options import DEFAULT_CONFIG_NAME, ConfigOpt, app, console, load_config
from .tables import show

# Command bodies import the library when they run (deferred on purpose: dlib, faiss and DuckDB).


@app.command()
def embed(config: ConfigOpt = Path(DEFAULT_CONFIG_NAME)) -> None:
    """Identity embeddings (dlib ResNet, 128-d) of every stored aligned_face and face crop that has none.

    New data gets them while it is processed with `processing.embeddings: true`; this backfills the
    rest (a re-run skips what is done). They are the `embeddings` view in SQL and what `lookalike` searches."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..layout import Storage
    from ..processing.lookalike import embed_dataset

    cfg = load_config(config)
    with Progress(TextColumn("embedding faces"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("embed", total=None)
        report = embed_dataset(Storage.of(cfg), cfg.processing,
                               progress=lambda done, total: bar.update(task, completed=done, total=total))
    rate = report["embedded"] / report["seconds"] if report["seconds"] else 0
    console.print(f"{report['embedded']:,} face crops embedded ({report['model']}) in {report['seconds']:.1f} s "
                  f"({rate:.1f}/s); {report['already']:,} had one already"
                  + (f"; {report['undecodable']} did not decode" if report["undecodable"] else "")
                  + f"; {len(report['files'])} shard(s) written")


class LookFormat(str, Enum):
    table = "table"
    json = "json"


class IndexMode(str, Enum):
    auto = "auto"
    on = "on"
    off = "off"


@app.command()
def lookalike(image: Annotated[Path, typer.Argument(help="a photo with a face (PNG, JPEG, ...)")],
              n: Annotated[int, typer.Option("--n", min=1, max=1000, help="how many dataset frames")] = 8,
              where: Annotated[Optional[str], typer.Option(help="SQL condition on the frames, e.g. \"channel = 'x'\"")] = None,
              fmt: Annotated[LookFormat, typer.Option("--format", "-f", help="table, or json for scripts")] = LookFormat.table,
              out: Annotated[Optional[Path], typer.Option(help="also write a contact sheet PNG: the query, then its matches")] = None,
              index: Annotated[IndexMode, typer.Option(help="auto: the faiss index past 50,000 embeddings; on/off: force")
                               ] = IndexMode.auto,
              config: ConfigOpt = Path(DEFAULT_CONFIG_NAME)) -> None:
    """The dataset frames whose faces look most like the face in IMAGE (identity embeddings, Euclidean distance).

    Same person: distance below ~0.6 (dlib's threshold). Needs embeddings: `processing.embeddings` or `embed`."""
    import sys

    from ..layout import Storage
    from ..processing.lookalike import lookalike as find

    cfg = load_config(config)
    cluster.drop_native_logs()  # mediapipe's LiteRT logs (the face detector), in this process
    use = {"auto": None, "on": True, "off": False}[index.value]
    result = find(Storage.of(cfg), image, cfg.processing, n=n, where=where, out=out,
                  timeout_s=cfg.dataset.sql_timeout_s, use_index=use,
                  notify=lambda line: print(line, file=sys.stderr))
    rows = [{**r, "timestamp": r["timestamp"].isoformat() if r["timestamp"] else None,
             "distance": round(float(r["distance"]), 4)} for r in result["matches"]]
    if fmt is LookFormat.json:
        print(json.dumps(rows, indent=1))
        if out:
            print(f"wrote {result['sheet']}", file=sys.stderr)
        return
    table = Table(box=box.SIMPLE_HEAD, caption=f"{len(rows)} nearest of {result['embeddings']:,} embeddings "
                                               f"({result['method']}, {result['seconds'] * 1000:.0f} ms)")
    for col in ("distance", "frame_id", "channel", "source_id", "segment_id", "timestamp (UTC)", "kind"):
        table.add_column(col, justify="right" if col == "distance" else "left", no_wrap=col == "frame_id")
    for r in rows:
        table.add_row(f"{r['distance']:.3f}", r["frame_id"], escape(str(r["channel"])), escape(r["source_id"] or ""),
                      escape(r["segment_id"]), (r["timestamp"] or "")[:23], r["kind"])
    show(table)
    if out:
        console.print(f"wrote {result['sheet']}")
