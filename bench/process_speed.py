"""Benchmark: processing speed at 1 frame/s against ffmpeg's decode-only time, and memory over a long input.

Target (issue): processing a video at 1 sampled frame/s costs at most 1.5× `ffmpeg -i X -vf fps=1
-f null -` on the same file, measured in the same run; memory stays flat however long the input.

Inputs are streamer-layout demo clips (testsrc2 + the real carphone facecam, H.264 veryfast, one
keyframe every 2 s) at 720p and 1080p, concatenated from their HLS segments with `-c copy`. One
`WindowProcessor` runs in this process (default config: facecam output, resize 256 pad, PNG), one
window per clip. Two ratios: wall time over the issue's baseline (`ffmpeg -i X -vf fps=1 -f null -`,
default threads), and CPU time over ffmpeg on one thread (a processing actor holds one core, and
CPU seconds are steadier than wall seconds on a shared machine). The memory run loops the 720p clip with `-stream_loop -c copy` and
processes it in 60 s windows in a fresh process, sampling RSS after every window.

    .venv/bin/python bench/process_speed.py --seconds 60 --long-minutes 30
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from stream2dataset.config import ProcessingConfig, StorageConfig
from stream2dataset.demo.footage import Layout, build_demo_hls
from stream2dataset.processing.decode import video_info
from stream2dataset.processing.pipeline import file_segments, plan_windows

CACHE = Path.home() / ".cache" / "stream2dataset" / "bench-speed"
STAGES = ("decode", "detect", "facecam", "person", "crop", "transform", "hash", "encode", "write")
SIZES = {"720p": Layout.streamer(1280, 720, 30, cam_width=240, margin=24),
         "1080p": Layout.streamer(1920, 1080, 30, cam_width=360, margin=36)}


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y", *args], check=True)


def make_clip(name: str, seconds: int) -> Path:
    """One .ts file of `seconds` of the demo layout, joined from its HLS segments without re-encoding."""
    hls = build_demo_hls(CACHE / f"{name}-{seconds}s-hls", SIZES[name], seconds=seconds, segment_seconds=2)
    out = CACHE / f"{name}-{seconds}s.ts"
    if not out.exists():
        segs = sorted(hls.glob("seg*.ts"))
        ffmpeg("-i", "concat:" + "|".join(map(str, segs)), "-c", "copy", str(out.with_suffix(".tmp.ts")))
        out.with_suffix(".tmp.ts").rename(out)
    return out


def make_long(clip: Path, minutes: float, seconds: int) -> Path:
    out = CACHE / f"{clip.stem}-x{minutes:g}min.ts"
    if not out.exists():
        loops = math.ceil(minutes * 60 / seconds) - 1
        ffmpeg("-stream_loop", str(loops), "-i", str(clip), "-c", "copy", str(out.with_suffix(".tmp.ts")))
        out.with_suffix(".tmp.ts").rename(out)
    return out


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed_ffmpeg(path: Path, threads: int | None, keyframes: bool = False) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    ffmpeg(*(["-threads", str(threads)] if threads else []), *(["-skip_frame", "nokey"] if keyframes else []),
           "-i", str(path), "-vf", "fps=1", "-f", "null", "-")
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall": wall, "cpu": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)}


def run_processor(path: Path, cfg: ProcessingConfig, window_s: float, each=None) -> tuple[dict, list[dict]]:
    """Process `path` in windows of `window_s` with one WindowProcessor; totals and per-window summaries."""
    from stream2dataset.processing.window import WindowProcessor

    with tempfile.TemporaryDirectory() as root:
        proc = WindowProcessor(cfg, StorageConfig(root=Path(root)), "bench")  # the window writes through a Storage
        windows, failed = plan_windows(file_segments([path]), window_s)
        assert not failed, failed
        cpu0, t0, out = cpu_self(), time.perf_counter(), []
        for w in windows:
            out.append(proc.process(w))
            if each:
                each(out[-1])
        wall, cpu = time.perf_counter() - t0, cpu_self() - cpu0
    stages = {k: sum(json.loads(s["seconds"]).get(k, 0.0) for s in out) for k in STAGES}
    return {"wall": wall, "cpu": cpu, "frames": sum(s["frames"] for s in out), "kept": sum(s["kept"] for s in out),
            "facecam": ",".join(sorted({s["facecam"] for s in out})), "stages": stages}, out


def status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak so far) of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def long_run(path: Path) -> None:
    """Child process: window by window over a long file; prints one JSON line."""
    rss: list[float] = []
    hwm: list[float] = []

    def sample(_summary: dict) -> None:
        rss.append(status_mb("VmRSS"))
        hwm.append(status_mb("VmHWM"))

    totals, summaries = run_processor(path, ProcessingConfig(window_s=60), 60, each=sample)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    errors = [f"window {i}: {s['error']}" for i, s in enumerate(summaries) if s["error"]]
    print(json.dumps({**totals, "rss": rss, "hwm": hwm, "maxrss": maxrss, "errors": errors,
                      "per_window": [s["frames"] for s in summaries], "duration": video_info(path)["duration_s"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=60, help="length of the 720p and 1080p clips")
    ap.add_argument("--long-minutes", type=float, default=30, help="length of the memory run (0: skip)")
    ap.add_argument("--long-file", type=Path, help=argparse.SUPPRESS)  # internal: the memory run's child
    args = ap.parse_args()
    if args.long_file:
        return long_run(args.long_file)
    console = Console(width=max(Console().width, 140))
    load0 = os.getloadavg()[0]
    table = Table(title=f"processing at 1 frame/s, {args.seconds} s clips, H.264 30 fps "
                        f"({cpu_model()}, {os.cpu_count()} cores, load {load0:.1f} at start)")
    for col in ("input / run", "wall s", "CPU s", "CPU ÷ ffmpeg 1-thread CPU", "wall ÷ ffmpeg -vf fps=1 wall",
                "frames", "frames/s per core"):
        table.add_column(col)
    stage_table = Table(title="WindowProcessor time per stage (wall s, from the window summary)")
    for col in ("run", *STAGES):
        stage_table.add_column(col)
    clip720 = None
    for name in SIZES:
        console.print(f"{name}: making the clip, timing ffmpeg and WindowProcessor...")
        clip = make_clip(name, args.seconds)
        clip720 = clip720 or clip
        window_s = math.ceil(video_info(clip)["duration_s"])
        base1 = timed_ffmpeg(clip, 1)
        baseN = timed_ffmpeg(clip, None)
        baseK = timed_ffmpeg(clip, 1, keyframes=True)
        table.add_row(f"{name}: ffmpeg -threads 1 -vf fps=1", f"{base1['wall']:.2f}", f"{base1['cpu']:.2f}",
                      "1.00×", f"{base1['wall'] / baseN['wall']:.2f}×", "", "")
        table.add_row(f"{name}: ffmpeg -vf fps=1 (the issue's baseline)", f"{baseN['wall']:.2f}", f"{baseN['cpu']:.2f}",
                      f"{baseN['cpu'] / base1['cpu']:.2f}×", "1.00×", "", "")
        table.add_row(f"{name}: ffmpeg -threads 1 -skip_frame nokey", f"{baseK['wall']:.2f}", f"{baseK['cpu']:.2f}",
                      f"{baseK['cpu'] / base1['cpu']:.2f}×", f"{baseK['wall'] / baseN['wall']:.2f}×", "", "")
        for label, cfg in (("WindowProcessor", ProcessingConfig()),
                           ("WindowProcessor decode_threads=0", ProcessingConfig(decode_threads=0)),
                           ("WindowProcessor keyframes_only", ProcessingConfig(keyframes_only=True))):
            r, _ = run_processor(clip, cfg, window_s)
            table.add_row(f"{name}: {label} [{r['facecam']}, {r['kept']} kept]", f"{r['wall']:.2f}", f"{r['cpu']:.2f}",
                          f"{r['cpu'] / base1['cpu']:.2f}×", f"{r['wall'] / baseN['wall']:.2f}×",
                          str(r["frames"]), f"{r['frames'] / r['cpu']:.1f}")
            stage_table.add_row(f"{name}: {label}", *(f"{r['stages'][k]:.2f}" for k in STAGES))
    table.caption = (f"load average {os.getloadavg()[0]:.1f} at the end; target: WindowProcessor ≤ 1.5× "
                     "`ffmpeg -i X -vf fps=1 -f null -`")
    console.print(table)
    console.print(stage_table)
    if args.long_minutes > 0:
        long_file = make_long(clip720, args.long_minutes, args.seconds)
        console.print(f"memory: {args.long_minutes:g} min of 720p in 60 s windows, in a fresh process...")
        out = subprocess.run([sys.executable, __file__, "--long-file", str(long_file)], check=True,
                             capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        rss = r["rss"]
        settled = max(rss[: min(3, len(rss))])
        mem = Table(title=f"memory over {args.long_minutes:g} min of 720p30 ({len(rss)} windows of 60 s, one WindowProcessor)")
        for col in ("what", "value", "target"):
            mem.add_column(col)
        mem.add_row("VmRSS after window 1", f"{rss[0]:.0f} MB", "")
        mem.add_row("VmRSS max of windows 1-3", f"{settled:.0f} MB", "")
        mem.add_row("VmRSS peak over windows (at window)", f"{max(rss):.0f} MB ({rss.index(max(rss)) + 1})",
                    "≤ 1.1× windows 1-3")
        mem.add_row("VmRSS after the last window", f"{rss[-1]:.0f} MB", "")
        hwm = r["hwm"]
        mem.add_row("VmHWM (peak inside windows) after window 1 / 3 / last",
                    f"{hwm[0]:.0f} / {hwm[min(2, len(hwm) - 1)]:.0f} / {hwm[-1]:.0f} MB", "")
        mem.add_row("ru_maxrss (process peak)", f"{r['maxrss']:.0f} MB", "")
        flat = max(rss) <= 1.1 * settled and hwm[-1] <= 1.1 * hwm[min(2, len(hwm) - 1)]
        mem.add_row("flat (VmRSS and VmHWM)", "yes" if flat else "NO", "yes")
        mem.add_row("frames sampled / media s / wall s / CPU s",
                    f"{r['frames']} / {r['duration']:.1f} / {r['wall']:.0f} / {r['cpu']:.0f}", "frames ≈ media s")
        mem.add_row("frames per window", " ".join(map(str, r["per_window"])), "")
        mem.add_row("windows with an error", "\n".join(r["errors"]) or "none", "none")
        mem.add_row("frames/s per core", f"{r['frames'] / r['cpu']:.1f}", "")
        mem.add_row("VmRSS per window (MB)", " ".join(f"{v:.0f}" for v in rss), "")
        console.print(mem)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
