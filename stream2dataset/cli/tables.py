"""The CLI's tables: what `status`, `segments`, `process`, `stats` (and the demo) print."""

from __future__ import annotations

from rich import box
from rich.markup import escape
from rich.table import Table

from ..humanize import human_bytes, since
from .options import console

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
                      f"{ch['state']}\n[dim]{detail}[/dim]" if detail else ch["state"], since(ch.get("since")),
                      str(ch.get("segments", "")), human_bytes(ch.get("bytes")), ch.get("last_error", ""),
                      *([(ch.get("node") or "")[:8]] if len(nodes) > 1 else []))
    notes = []
    if proc := st.get("processing"):
        notes.append(f"processing: {proc['state']}"
                     + (f" · {proc['actors']} actors" if proc.get("actors") else "")
                     + (f" · backlog {proc['backlog']} segments" if proc.get("backlog") is not None else "")
                     + (f" · commit→queryable p95 {proc['latency_p95_s']:g} s" if proc.get("latency_p95_s") else "")
                     + (f" · last run {proc['last']}" if proc.get("last") else "")
                     + (f" in {sum(proc['round_s'].values()):.2f} s" if proc.get("round_s") else "")
                     + (f" · [red]{proc['error']}[/red]" if proc.get("error") else ""))
    if st.get("config_error"):
        notes.append(f"[red]{st['config_error']}[/red]")
    table.caption = "\n".join(notes) or None
    return table


def segment_summary(cfg, channel: str | None = None) -> tuple[str, list[dict]]:
    """Where the manifest is, and one summary per channel (the keys of `segments --format json`)."""
    from ..dataset.manifest import read_segments  # pyarrow: deferred, as in every command body
    from ..layout import Storage

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
        table.add_row(escape(r["channel"]), str(r["segments"]), f"{r['duration_s']:.1f} s", human_bytes(r["bytes"]),
                      ", ".join(r["resolutions"]), ", ".join(r["codecs"]), str(r["salvaged"]),
                      r["first"][11:19], r["last"][11:19])
    return table



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



def stats_tables(st: dict) -> list[Table]:
    def pct(r: dict) -> str:
        return f"{r['duplicates']:,} ({100 * r['duplicate_rate']:.1f}%)"

    by_channel = Table(title=f"dataset in {st['root']}", box=box.SIMPLE_HEAD)
    for col in ("channel", "hours", "segments", "raw", "frames kept", "duplicates", "dropped", "clips", "dataset"):
        by_channel.add_column(col, justify="left" if col == "channel" else "right", no_wrap=True)
    by_channel.add_column("drops by reason", overflow="fold", ratio=1, min_width=12)
    for i, r in enumerate([*st["channels"], {**st["total"], "channel": None}]):
        by_channel.add_row(escape(r["channel"]) if r["channel"] else "[b]total[/b]", f"{r['hours_recorded']:.2f}", f"{r['segments']:,}",
                           human_bytes(r["raw_bytes"]), f"{r['frames_kept']:,}", pct(r), f"{r['dropped']:,}",
                           f"{r['clips']:,}", human_bytes(r["dataset_bytes"]),
                           escape(", ".join(f"{k} {v:,}" for k, v in r["drops"].items())),
                           end_section=i == len(st["channels"]) - 1)
    by_day = Table(title="by day (UTC)", box=box.SIMPLE_HEAD)
    for col in ("channel", "day", "hours", "segments", "frames kept", "duplicates", "dropped", "clips", "dataset"):
        by_day.add_column(col, justify="left" if col in ("channel", "day") else "right", no_wrap=True)
    for r in st["days"]:
        by_day.add_row(escape(r["channel"]), r["date"], f"{r['hours_recorded']:.2f}", f"{r['segments']:,}",
                       f"{r['frames_kept']:,}", pct(r), f"{r['dropped']:,}", f"{r['clips']:,}",
                       human_bytes(r["dataset_bytes"]))
    return [by_channel, by_day]

