"""Benchmark: a foreground `stream2dataset process` of short files, whole process tree against ffmpeg.

Target (issue 16): `process` on 12 × 10 s 720p files costs at most 1.5× the CPU of
`ffmpeg -threads 1 -i X -vf fps=1 -f null -` decoding the same files, counting every process the
command starts (the CLI, and the local Ray it starts: GCS, raylet, agents, workers). A short job
on a laptop should pay seconds, not tens of seconds, before any work.

The CLI runs as a subprocess in a session of its own; the CPU time of every process in that
session is sampled every 50 ms (a process is counted at its last sample: one that lives under
50 ms is missed, which can only flatter the figure slightly). The table breaks the CPU down by
process, so where Ray's fixed cost goes is visible.

    .venv/bin/python bench/foreground.py                 # 12 × 10 s 720p, in this process and on Ray
    .venv/bin/python bench/foreground.py --files 2 --seconds 4 --height 360   # smallest (the slow test)
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import ray  # noqa: F401 - puts Ray's vendored psutil on the path
import yaml
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from process_speed import timed_ffmpeg  # noqa: E402

from stream2dataset.demo.footage import Layout, build_demo_hls  # noqa: E402

import psutil  # noqa: E402 - not a dependency of ours: Ray's vendored copy, importable once ray is

CACHE = Path.home() / ".cache" / "stream2dataset" / "bench-foreground"


def footage(files: int, seconds: int, height: int) -> list[Path]:
    """`files` separate .ts files of `seconds` each: the demo streamer layout's HLS segments."""
    width = height * 16 // 9
    layout = Layout.streamer(width, height, 30, cam_width=height // 3, margin=height // 30)
    hls = build_demo_hls(CACHE / f"{height}p-{seconds}s-x{files}", layout, seconds=files * seconds,
                         segment_seconds=seconds)
    return sorted(hls.glob("seg*.ts"))[:files]


def name_of(proc: psutil.Process) -> str:
    """A short label: raylet, gcs_server, a Ray worker's role, the CLI."""
    try:
        cmd = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"
    text = " ".join(cmd)
    if "default_worker" in text or text.startswith("ray::"):  # a worker's title changes once it runs a task
        return "Ray workers"
    for key in ("gcs_server", "dashboard_agent", "runtime_env", "log_monitor", "monitor.py", "dashboard.py",
                "raylet"):
        if key in text:
            return {"monitor.py": "autoscaler monitor"}.get(key, key)
    if "stream2dataset" in text:
        return "CLI (driver)"
    return Path(cmd[0]).name if cmd else "?"


def run_tree(cmd: list[str], env: dict) -> dict:
    """Run `cmd`; CPU seconds of every process in its session, by label, and the wall time."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    seen: dict[int, tuple[str, float]] = {}
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for p in procs:
            try:
                t = p.cpu_times()
                label = seen[p.pid][0] if p.pid in seen else "CLI (driver)" if p is root else name_of(p)
                seen[p.pid] = (label, t.user + t.system)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    out = proc.stdout.read().decode(errors="replace")
    if proc.returncode:
        raise SystemExit(f"`{' '.join(cmd)}` failed ({proc.returncode}):\n{out[-2000:]}")
    by = Counter()
    for label, cpu in seen.values():
        by[label] += cpu
    return {"wall": wall, "cpu": sum(by.values()), "by": by, "processes": len(seen), "output": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=12)
    ap.add_argument("--seconds", type=int, default=10, help="length of each file")
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--paths", default="inline,ray", help="inline (this process: the default for a small job), "
                                                            "ray (a lean local Ray)")
    args = ap.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 120)
    with console.status("building the footage (first run only)..."):
        files = footage(args.files, args.seconds, args.height)
    base = [timed_ffmpeg(f, threads=1) for f in files]
    ff_cpu, ff_wall = sum(b["cpu"] for b in base), sum(b["wall"] for b in base)
    runs = {}
    for how in args.paths.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            folder = work / "videos"
            folder.mkdir()
            for f in files:
                os.symlink(f, folder / f.name)
            cfg = work / "stream2dataset.yaml"
            cfg.write_text(yaml.safe_dump({"storage": {"root": str(work / "data")}}))
            env = {**os.environ, "S2D_STATE_DIR": str(work / "state")}  # never join a service running here
            cli = [str(Path(sys.executable).parent / "stream2dataset"), "process", str(folder), "-c", str(cfg),
                   f"--{how}"]
            with console.status(f"stream2dataset process --{how}: {len(files)} files..."):
                runs[how] = run_tree(cli, env)
    table = Table(title=f"foreground `process`: {len(files)} × {args.seconds} s {args.height}p files "
                        f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                        f"load {os.getloadavg()[0]:.1f})")
    for col in ("what", "CPU s", "wall s", "vs ffmpeg CPU"):
        table.add_column(col, justify="right" if col != "what" else "left")
    table.add_row("ffmpeg -threads 1 -vf fps=1 -f null (baseline)", f"{ff_cpu:.2f}", f"{ff_wall:.2f}", "1.00×")
    for how, run in runs.items():
        table.add_row(f"stream2dataset process --{how}, whole tree ({run['processes']} processes)",
                      f"{run['cpu']:.2f}", f"{run['wall']:.2f}", f"{run['cpu'] / ff_cpu:.2f}× (target ≤ 1.5×)")
        for label, cpu in run["by"].most_common() if len(run["by"]) > 1 else ():
            table.add_row(f"  {label}", f"{cpu:.2f}", "", f"{cpu / ff_cpu:.2f}×")
    console.print(table)


if __name__ == "__main__":
    main()
