"""Load test (issue 6): N concurrent loopback live streams recorded and processed by the service for T seconds.

The real service (supervisor + one recorder actor per stream + the processing pool, which takes
segments as they are committed and commits their rows every `--interval` seconds) runs on a local Ray against `LiveHLSServer` streams of the demo streamer layout at a lower
resolution (640×360, 15 fps, the 160-px carphone facecam), since 20 streams are recorded *and*
processed on one machine. Every 5 s it samples committed, processed and pending segments (the
backlog), the processing state from `service.status()`, and the CPU and memory of this process and
every process under it (the local Ray). Then it stops the service, drains the backlog with one
`process` job, and checks: HLS media segments lost (served sequence numbers vs the recorded span,
gaps between consecutive committed segments), rows written, backlog over time (max, trend),
memory (peak, trend, and by kind of process). Ratios against baselines measured in the same run: recorder CPU per stream
over `ffmpeg -c copy -f segment` recording the same streams (bench/record_streams.py), processing
CPU per media second over `ffmpeg -threads 1 -vf fps=1` decoding recorded segments
(bench/process_speed.py). A plot of backlog and memory over time, and the samples, go to `--out`.

The config is what an operator would write for this load: 10-s segments, rows committed every 10 s
(facecam and face crops at 1 frame/s), every other setting its default (`ray.recorder_cpus` 0.05:
20 recorders reserve one Ray CPU and leave the other to a processing actor).

    .venv/bin/python bench/load.py --streams 20 --seconds 600
    .venv/bin/python bench/load.py --streams 20 --seconds 600 --keyframes-only   # cheaper processing
    .venv/bin/python bench/load.py --streams 30 --seconds 600 --recorder-cpus 0.03 --processor-cpus 0.5
                                   # past 20 streams on 2 cores: two half-CPU actors fit beside the recorders
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import ray
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from stream2dataset.cluster import ray_env_defaults, service_env
from stream2dataset.config import load_config
from stream2dataset.config import RayConfig
from stream2dataset.demo import LiveHLSServer, build_demo_hls
from stream2dataset.demo.footage import Layout
from stream2dataset import service
from stream2dataset.dataset.manifest import manifest_files, pending_segments, read_segments
from stream2dataset.ingest.segments import probe
from stream2dataset.processing.pipeline import process
from stream2dataset.layout import Storage

import psutil  # noqa: E402 - not a dependency of ours: Ray's vendored copy, importable once ray is

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other benches' helpers, not copies of them
from process_speed import timed_ffmpeg  # noqa: E402
from record_streams import HLS_SEGMENT_S, lost_hls_segments, record_with_ffmpeg  # noqa: E402

CACHE = Path.home() / ".cache" / "stream2dataset"
# SMALL_LAYOUT (the tests' 640×360 with a 160-px facecam) at 15 fps: a quarter of the demo's
# pixels and half its frames, since decoding 20 streams shares 2 cores with recording them.
LAYOUT = Layout.streamer(640, 360, 15, cam_width=160, margin=12)
SAMPLE_S = 5.0


def service_config(urls: list[str], root: Path, args: argparse.Namespace) -> dict:
    return {
        "storage": {"root": str(root)},
        # Ray's reservations, not the CPU used, decide how many processing actors fit beside the
        # recorders (a recorder uses ~1-2% of a core): past 20 streams at the defaults, lower both.
        "ray": {"namespace": "s2d-load", "recorder_cpus": args.recorder_cpus,
                "processor_cpus": args.processor_cpus},
        "recording": {"segment_seconds": args.segment_seconds, "min_free_gb": 0.5, "poll_interval_s": 2,
                      "backoff_initial_s": 1, "backoff_max_s": 10, "stream_timeout_s": 15},
        "processing": {"auto": True, "interval_s": args.interval, "outputs": args.outputs.split(","),
                       "sample_fps": args.sample_fps, "keyframes_only": args.keyframes_only},
        "channels": [{"source": u, "name": f"s{i}"} for i, u in enumerate(urls)],
    }


def committed_rows(storage: Storage) -> int:
    """Segments in the manifest: rows, not files (compaction merges the files as the run goes)."""
    for _ in range(5):
        try:
            return sum(pq.read_metadata(f).num_rows for f in manifest_files(storage.root))
        except FileNotFoundError:  # a file went into a period file while listed: list again
            continue
    return 0


def role_of(proc: psutil.Process) -> str:
    """A Ray worker by its title (`ray::Recorder`, `ray::IDLE`...), a daemon or tool by its name."""
    cmd = proc.cmdline()
    if cmd and cmd[0].startswith("ray::"):
        return cmd[0].split(".")[0].split()[0]
    text = " ".join(cmd)
    for key in ("gcs_server", "raylet", "dashboard_agent", "runtime_env", "log_monitor", "monitor.py", "dashboard.py",
                "default_worker", "streamlink", "ffmpeg"):
        if key in text:
            return key
    return "this script" if proc.pid == os.getpid() else (Path(cmd[0]).name if cmd else "?")


class Sampler:
    """CPU and memory of this process and all under it (the local Ray), and the service's progress."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.me = psutil.Process()
        self.rows: list[dict] = []
        self.phase = "recording"
        self.t0 = time.monotonic()

    def tree(self) -> list:
        return [self.me, *self.me.children(recursive=True)]

    def cpu_and_memory(self) -> dict:
        cpu = rss = pss = 0.0
        by_role: dict[str, float] = {}  # PSS per kind of process: where a growth comes from
        procs = self.tree()
        for p in procs:
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    # A dead worker's CPU lives on in its parent's children_* once reaped (raylet's).
                    cpu += t.user + t.system + t.children_user + t.children_system
                    mem = p.memory_full_info()
                    rss, pss = rss + mem.rss, pss + mem.pss
                    role = role_of(p)
                    by_role[role] = by_role.get(role, 0.0) + mem.pss / 2**20
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return {"cpu_s": cpu, "rss_mb": rss / 2**20, "pss_mb": pss / 2**20, "procs": len(procs),
                "pss_by_role": by_role}

    def sample(self) -> dict:
        committed = committed_rows(self.storage)
        done = self.storage.root / "dataset" / "_done"
        processed = sum(not p.name.startswith(".") for p in done.iterdir()) if done.exists() else 0  # not temp files
        proc = {"state": self.phase}
        if self.phase == "recording":
            try:
                proc = service.status()["processing"]
            except Exception as err:  # noqa: BLE001 - a slow status must not end the run; shown as such
                proc = {"state": f"status failed: {type(err).__name__}"}
        row = {"t": time.monotonic() - self.t0, "phase": self.phase, "committed": committed,
               "processed": processed, "backlog": len(pending_segments(self.storage)),
               "processing": proc.get("state", ""), "actors": proc.get("actors", 0),
               "error": proc.get("error", ""), "round_s": sum((proc.get("round_s") or {}).values()) or None,
               **self.cpu_and_memory()}
        self.rows.append(row)
        return row

    def run(self, stop: threading.Event, on_sample) -> None:
        while not stop.is_set():
            on_sample(self.sample())
            stop.wait(SAMPLE_S - (time.monotonic() - self.t0) % SAMPLE_S)


def quiet_ray_data() -> None:
    """Ray Data logs every job's progress to the driver; the sampler's lines say enough."""
    import ray.data  # noqa: F401 - configures its loggers on import; ours override them after

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="stream2dataset")


def wait_recording(deadline_s: float) -> float:
    """Seconds until every channel is recording with bytes written (recording is steady from then)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline_s:
        if all(ch["state"] == "recording" and ch["bytes"] > 0 for ch in service.status()["channels"]):
            break
        time.sleep(0.5)
    return time.monotonic() - t0


def slope_per_min(rows: list[dict], key: str) -> float:
    """Least-squares slope of `key` over the second half of the run, per minute: the trend."""
    half = [r for r in rows if r["t"] >= rows[-1]["t"] / 2]
    if len(half) < 3:
        return 0.0
    return statistics.linear_regression([r["t"] for r in half], [r[key] for r in half]).slope * 60


def gaps(rows: list[dict], names: list[str]) -> int:
    """Holes between consecutive committed segments of a stream longer than an HLS segment."""
    count = 0
    for name in names:
        mine = sorted((r for r in rows if r["channel"] == name), key=lambda r: r["start"])
        count += sum((b["start"] - a["end"]).total_seconds() > 1.5 * HLS_SEGMENT_S for a, b in zip(mine, mine[1:]))
    return count


def unrecorded_media(rows: list[dict], server: LiveHLSServer, names: list[str]) -> list[float]:
    """Per stream: media seconds the server handed out that no committed segment holds."""
    return [len(server.stats(n).served) * HLS_SEGMENT_S - sum(r["duration_s"] for r in rows if r["channel"] == n)
            for n in names]


def markers(storage: Storage) -> list[dict]:
    done = storage.root / "dataset" / "_done"
    return [json.loads(p.read_text()) for p in sorted(done.iterdir()) if not p.name.startswith(".")] \
        if done.exists() else []


def frame_rows(storage: Storage) -> int:
    base = storage.table_dir("frames")
    return sum(pq.ParquetFile(p).metadata.num_rows for p in base.rglob("*.parquet")) if base.exists() else 0


def processing_baseline(rows: list[dict], root: Path, count: int = 5) -> float:
    """ffmpeg's CPU seconds per media second decoding recorded segments at 1 frame/s on one thread."""
    picks = rows[:: max(1, len(rows) // count)][:count]
    cpu = sum(timed_ffmpeg(root / r["path"], threads=1)["cpu"] for r in picks)
    return cpu / sum(r["duration_s"] for r in picks)


def plot(samples: list[dict], stop_t: float, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t"] for r in samples]
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    axes[0].plot(t, [r["committed"] for r in samples], label="committed")
    axes[0].plot(t, [r["processed"] for r in samples], label="processed")
    axes[0].set_ylabel("segments")
    axes[1].plot(t, [r["backlog"] for r in samples], color="tab:red")
    # Each sample stands for the interval after it.
    busy = [(a["t"], b["t"]) for a, b in zip(samples, samples[1:]) if a["processing"] in ("running", "dedup")]
    for k, (lo, hi) in enumerate(busy):
        axes[1].axvspan(lo, hi, color="tab:orange", alpha=0.15, linewidth=0,
                        label=None if k else "the pool processing (status)")
    if busy:
        axes[1].legend()
    axes[1].set_ylabel("backlog (pending segments)")
    axes[2].plot(t, [r["rss_mb"] for r in samples], label="RSS (sum)")
    axes[2].plot(t, [r["pss_mb"] for r in samples], label="PSS (sum)")
    axes[2].set_ylabel("memory of Ray + driver, MB")
    axes[2].set_xlabel("seconds since `up`")
    for ax in axes:
        ax.axvline(stop_t, color="grey", linestyle="--", linewidth=1)  # `down`, then the drain
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[2].legend()
    axes[0].set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_service(args: argparse.Namespace, server: LiveHLSServer, names: list[str], work: Path,
                console: Console) -> dict:
    urls = [server.add_stream(n, args.footage) for n in names]
    cfg_path = work / "stream2dataset.yaml"
    cfg_path.write_text(yaml.safe_dump(service_config(urls, work / "data", args)))
    storage = Storage(work / "data")
    ray_env_defaults()
    os.environ.update(service_env())  # the Ray settings `up` gives the service's head (the GCS's task-event cap)
    # "local": a Ray of our own even when another one runs on this machine (ray.init() would join it).
    ray.init(address="local", namespace="s2d-load", include_dashboard=False, log_to_driver=False,
             logging_level="WARNING")
    try:
        load0 = os.getloadavg()[0]
        service.up(cfg_path)
        sampler = Sampler(storage)
        stop = threading.Event()
        columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("starting", total=args.seconds)
            last_line = [0.0]

            def on_sample(r: dict) -> None:
                line = (f"t={r['t']:4.0f}s {r['phase']}: committed {r['committed']}, processed {r['processed']}, "
                        f"backlog {r['backlog']}, processing {r['processing']}, RSS {r['rss_mb']:.0f} MB "
                        f"(PSS {r['pss_mb']:.0f}) in {r['procs']} processes")
                progress.update(task, completed=min(r["t"], args.seconds), description=line)
                if r["t"] - last_line[0] >= 30 or r["error"]:  # a log line too: the bar is lost off a terminal
                    progress.console.print(line + (f" [red]error: {r['error']}" if r["error"] else ""))
                    last_line[0] = r["t"]

            thread = threading.Thread(target=sampler.run, args=(stop, on_sample), daemon=True)
            thread.start()
            warmup = wait_recording(60)
            actors = [ray.get_actor(f"recorder-{n}") for n in names]
            # CPU from when all record (steady state) to `down`; markers written meanwhile count as its work.
            cpu0, tree0, w0 = ray.get([a.cpu_seconds.remote() for a in actors]), sampler.cpu_and_memory()["cpu_s"], \
                datetime.now(timezone.utc)
            time.sleep(max(0.0, args.seconds - (time.monotonic() - sampler.t0)))
            cpu1, tree1, w1 = ray.get([a.cpu_seconds.remote() for a in actors]), sampler.cpu_and_memory()["cpu_s"], \
                datetime.now(timezone.utc)
            stop_t, load1 = time.monotonic() - sampler.t0, os.getloadavg()[0]
            at_stop = sampler.sample()
            sampler.phase = "down"
            t = time.monotonic()
            service.down()
            down_s = time.monotonic() - t
            sampler.phase = "drain"
            left = pending_segments(storage)
            t = time.monotonic()
            with console.status(f"draining: processing the {len(left)} pending segments..."):
                quiet_ray_data()
                drained = process(load_config(cfg_path), left) if left else {"segments": 0}
            drain_s = time.monotonic() - t
            stop.set()
            thread.join()
            sampler.sample()
    finally:
        ray.shutdown()
    wall = (w1 - w0).total_seconds()
    return {"samples": sampler.rows, "stop_t": stop_t, "at_stop": at_stop, "warmup": warmup, "w0": w0, "w1": w1,
            "wall": wall, "recorder_cpu": [(b - a) / wall for a, b in zip(cpu0, cpu1)], "tree_cpu": tree1 - tree0,
            "load": (load0, load1), "down_s": down_s, "left": len(left), "drained": drained["segments"], "drain_s": drain_s,
            "storage": storage}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=600, help="from `up` to `down`")
    ap.add_argument("--interval", type=float, default=10, help="processing.interval_s (commits at least this often)")
    ap.add_argument("--outputs", default="facecam,face", help="processing.outputs")
    ap.add_argument("--sample-fps", type=float, default=1.0, help="processing.sample_fps")
    ap.add_argument("--keyframes-only", action="store_true", help="processing.keyframes_only")
    ap.add_argument("--segment-seconds", type=float, default=10, help="recording.segment_seconds")
    ap.add_argument("--recorder-cpus", type=float, default=RayConfig().recorder_cpus, help="ray.recorder_cpus")
    ap.add_argument("--processor-cpus", type=float, default=RayConfig().processor_cpus, help="ray.processor_cpus")
    ap.add_argument("--baseline-seconds", type=float, default=30, help="ffmpeg recording baseline; 0 skips it")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    args = ap.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 140)  # rich's 80 columns off a terminal
    res = f"{LAYOUT.width}×{LAYOUT.height}@{LAYOUT.fps}"
    with console.status(f"building the {res} demo footage (first run only)..."):
        args.footage = build_demo_hls(CACHE / f"load-footage-{LAYOUT.width}x{LAYOUT.height}p{LAYOUT.fps}", LAYOUT,
                                      seconds=20, segment_seconds=HLS_SEGMENT_S)
    names = [f"s{i}" for i in range(args.streams)]
    console.print(f"{args.streams} × {res} live streams, recorded in {args.segment_seconds:g}-s segments and processed "
                  f"by the service for {args.seconds:g} s (every {args.interval:g} s: {args.outputs} at "
                  f"{'keyframes' if args.keyframes_only else f'{args.sample_fps:g} frame/s'}); load average "
                  f"{os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp, LiveHLSServer() as server:
        work = Path(tmp)
        run = run_service(args, server, names, work, console)
        storage: Storage = run.pop("storage")
        rows = read_segments(storage).to_pylist()
        lost = lost_hls_segments(server, names)
        unrecorded = unrecorded_media(rows, server, names)
        with console.status(f"verifying {len(rows)} segments decode, ffmpeg decode baseline..."):
            for r in rows:
                probe(storage.root / r["path"])
            decode_base = processing_baseline(rows, storage.root)
        marks = markers(storage)
        frames = frame_rows(storage)
    base_cpu = None
    if args.baseline_seconds > 0:
        with tempfile.TemporaryDirectory() as tmp, LiveHLSServer() as server:
            urls = [server.add_stream(n, args.footage) for n in names]
            with console.status(f"baseline: ffmpeg -c copy -f segment recording the same streams "
                                f"for {args.baseline_seconds:g} s..."):
                base_cpu = record_with_ffmpeg(urls, args.baseline_seconds, Path(tmp))["cpu_per_stream"]
    report(console, args, run, rows, lost, unrecorded, marks, frames, decode_base, base_cpu, res)


def report(console: Console, args, run: dict, rows: list[dict], lost: int, unrecorded: list[float], marks: list[dict],
           frames: int, decode_base: float, base_cpu: float | None, res: str) -> None:
    samples, stop_t, at_stop = run["samples"], run["stop_t"], run["at_stop"]
    during = [r for r in samples if r["t"] <= stop_t]
    by_id = {r["segment_id"]: r for r in rows}
    done_at = {m["segment_id"]: datetime.fromisoformat(m["at"]) for m in marks if m["segment_id"] in by_id}
    in_run = [s for s, at in done_at.items() if at <= run["w1"]]  # processed while the service ran
    latency = sorted((done_at[s] - by_id[s]["recorded_at"]).total_seconds() for s in in_run)
    steady = [s for s in in_run if done_at[s] >= run["w0"]]
    rec_cpu = run["recorder_cpu"]
    rec_mean = sum(rec_cpu) / len(rec_cpu)
    # Everything but the recorders (processing actors, supervisor, Ray's daemons, this sampler)
    # over the media seconds processed in the same steady-state window.
    other_cpu = run["tree_cpu"] - sum(rec_cpu) * run["wall"]
    media = sum(by_id[s]["duration_s"] for s in steady)
    proc_cpu = other_cpu / media if media else 0.0
    ingest = args.streams * 60 / args.segment_seconds
    back_slope, mem_slope = slope_per_min(during, "backlog"), slope_per_min(during, "pss_mb")
    errors = sorted({r["error"] for r in samples if r["error"]})
    busy = sum(r["processing"] in ("running", "dedup") for r in during) / len(during)

    table = Table(title=f"load: {args.streams} concurrent {res} loopback HLS streams recorded + processed, "
                        f"{args.seconds:g} s ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)")
    for col in ("what", "value", "target"):
        table.add_column(col)
    add = table.add_row
    add("load average (1 min) at `up` / at `down` (other jobs included)", "{:.1f} / {:.1f}".format(*run["load"]), "")
    add("segments committed (all decode)", f"{len(rows)} ({len(rows) / args.streams:.1f} per stream)", "")
    add("HLS segments lost", str(lost), "0")
    add("gaps between committed segments", str(gaps(rows, [f"s{i}" for i in range(args.streams)])), "0")
    add("media served but not committed, per stream (max)", f"{max(unrecorded):.1f} s",
        f"≈ {HLS_SEGMENT_S} s: the HLS segment being read at `down`")
    add("all streams recording after `up`", f"{run['warmup']:.1f} s", "")
    add("processed while running (markers)", f"{len(in_run)} segments in {len({done_at[s] for s in in_run})} commits", "")
    add("processed ÷ committed while running", f"{len(in_run) / max(1, at_stop['committed']):.2f}", "")
    p95 = latency[int(0.95 * (len(latency) - 1))] if latency else None
    rounds = [(r["t"], r["round_s"]) for r in during if r.get("round_s")]  # the last commit round's seconds
    halves = [[s for t, s in rounds if (t > stop_t / 2) == late] for late in (False, True)]
    add("commit round (commit+dedup+retention+compact), median 1st / 2nd half",
        " / ".join(f"{statistics.median(h):.2f} s" if h else "-" for h in halves), "flat: the same on day 300")
    add("commit → rows queryable (median / p95 / max)",
        f"{statistics.median(latency):.0f} s / {p95:.0f} s / {max(latency):.0f} s" if latency else "-",
        f"p95 ≤ {2 * args.segment_seconds:g} s (2 segments)")
    add("backlog (max / at stop)", f"{max(r['backlog'] for r in during)} / {at_stop['backlog']} segments", "")
    add("backlog trend, 2nd half", f"{back_slope:+.1f} segments/min (ingest {ingest:.0f}/min)", "≈ 0: keeps up")
    add("processing busy (share of samples)", f"{busy:.0%}", "")
    add("processing errors seen in status", "; ".join(errors) or "none", "none")
    add("`down` (all recorders stopped at once)", f"{run['down_s']:.1f} s", "")
    drained_media = sum(by_id[s]["duration_s"] for s, at in done_at.items() if at > run["w1"])
    add("drain after `down` (all CPUs, no recording)", f"{run['drained']} of {run['left']} pending in {run['drain_s']:.0f} s: "
        f"{drained_media / max(run['drain_s'], 1e-9):.1f}× real time", f"{args.streams}× to keep up")
    add("segments processed in all", f"{len(marks)} of {len(rows)}"
        + (f", {sum(bool(m['error']) for m in marks)} with errors" if any(m["error"] for m in marks) else ""), "all")
    add("frame rows written", f"{frames} ({frames / max(1, len(marks)):.1f} per segment)", "")
    add("memory, sum of PSS (peak / at stop)",
        f"{max(r['pss_mb'] for r in samples):.0f} / {at_stop['pss_mb']:.0f} MB", "bounded")
    add("memory, sum of RSS (peak / at stop)",
        f"{max(r['rss_mb'] for r in samples):.0f} / {at_stop['rss_mb']:.0f} MB", "")
    add("memory trend (PSS), 2nd half", f"{mem_slope:+.1f} MB/min", "≈ 0")
    # The bench's own process keeps every sample: the service is everything else.
    service_slope = slope_per_min([{"t": r["t"], "v": r["pss_mb"] - r["pss_by_role"].get("this script", 0.0)}
                                   for r in during], "v")
    add("memory trend (PSS) of the service (all but this script), 2nd half", f"{service_slope:+.1f} MB/min", "≈ 0")
    roles = [(slope_per_min([{"t": r["t"], "v": r["pss_by_role"].get(k, 0.0)} for r in during], "v"), k)
             for k in {k for r in during for k in r["pss_by_role"]}]
    add("PSS trend by process, 2nd half (largest 3)",
        ", ".join(f"{k} {v:+.1f}" for v, k in sorted(roles, reverse=True)[:3]) + " MB/min", "")
    add("CPU used, Ray + driver (steady state)", f"{run['tree_cpu'] / run['wall']:.2f} cores of {os.cpu_count()}", "")
    add("recorder CPU per stream (mean / max)", f"{rec_mean:.2%} / {max(rec_cpu):.2%} of a core", "< 5%")
    if base_cpu:
        add("ffmpeg -c copy CPU per stream (baseline)", f"{base_cpu:.2%} of a core", "")
        add("recorder / ffmpeg CPU", f"{rec_mean / base_cpu:.2f}×", "")
    add("ffmpeg -threads 1 -vf fps=1 decode CPU per media s (baseline)", f"{decode_base:.3f} s", "")
    if media:
        add("non-recorder CPU per processed media s", f"{proc_cpu:.3f} s", "")
        add("processing / ffmpeg decode CPU", f"{proc_cpu / decode_base:.2f}×", "")
        # What the cost above asks of the machine, and what Ray lets processing have: ray.processor_cpus each.
        add(f"cores processing needs for {args.streams} streams at that cost (Ray's upkeep included)",
            f"{args.streams * proc_cpu:.1f}", "")
    else:
        add("non-recorder CPU per processed media s", "- (nothing processed while recording)", "")
    free = (os.cpu_count() or 1) - args.streams * args.recorder_cpus
    add("processing actors Ray can place beside the recorders", f"{max(0, int(free / args.processor_cpus))} "
        f"({args.processor_cpus:g} CPU each; "
        f"{free:.2f} of {os.cpu_count()} CPUs left by {args.streams} × {args.recorder_cpus:g})", "")
    console.print(table)
    title = f"{args.streams} × {res} streams, processing every {args.interval:g} s; dashed: `down`"
    path = plot(samples, stop_t, args.out / f"load-{args.streams}x{args.seconds:g}s.png", title)
    path.with_suffix(".json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                     "samples": samples}, indent=1))
    console.print(f"plot: {path}; samples: {path.with_suffix('.json')}")


if __name__ == "__main__":
    main()
