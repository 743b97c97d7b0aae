"""Connecting to Ray: an existing cluster (`--address`), or a local one that outlives this process.

Recorders are detached actors, so `up` needs a Ray that keeps running after the command returns:
without an address we start `ray start --head --block` on this machine (once), in a process group
of its own, and remember its address and group, so `down` stops exactly that Ray (`ray stop`
would kill every Ray on the machine, an operator's other apps included).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

from .errors import UserError, raise_terminated

log = logging.getLogger(__name__)

DASHBOARD_PORT = 8265  # Ray's usual one
LOCAL_STATE = Path(os.environ.get("S2D_STATE_DIR", Path.home() / ".cache" / "stream2dataset")) / "local-ray.json"


# `stream2dataset -v`: Ray's and Ray Data's own logs (INFO) on the terminal, and the workers' output.
# Without it the terminal shows this program's output and real errors only; Ray's logs stay in its
# session folder (/tmp/ray/session_*/logs), Ray Data's in ray-data.log there.
VERBOSE = False


def node_id() -> str:
    """The Ray node this process runs on ("" outside Ray)."""
    import ray  # deferred on purpose: the CLI imports this module at start-up

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def set_verbose(on: bool) -> None:
    global VERBOSE
    VERBOSE = on


def _init(**kwargs) -> None:
    """ray.init, quiet unless VERBOSE; then SIGTERM is this program's again (see `reclaim_sigterm`)."""
    import ray

    if not VERBOSE:
        drop_native_logs()
        warnings.filterwarnings("ignore", module=r"ray(\.|$)")
    ray.init(**kwargs, log_to_driver=VERBOSE, logging_level=logging.INFO if VERBOSE else logging.WARNING)
    reclaim_sigterm()


# Lines of the native libraries' own logging, dropped from the terminal without -v:
_NATIVE_LOG_LINE = re.compile(
    rb"^\[\d{4}-\d\d-\d\d [\d:,.]+ [DIWEF] \d+ \d+\] \S+:\d+: "  # Ray's C++ (core_worker.cc ...)
    rb"|^[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\] "                          # absl/glog INFO and WARNING (mediapipe)
    rb"|^(INFO|WARNING): (\[\S+:\d+\] |Created TensorFlow Lite|Logging before InitGoogle)")  # LiteRT
_native_filter: list[int] = []


def drop_native_logs() -> None:
    """Native libraries write their own notes to file descriptor 2: Ray's C++ core worker besides
    its log file (python-core-driver-*.log in the session's logs), e.g. an E line "Actor ... has
    constructor arguments in the object store and max_restarts > 0" for every Ray Data actor, and
    mediapipe's LiteRT some 60 INFO/WARNING lines per model when it runs in this process. Without -v
    those lines are dropped: fd 2 becomes a pipe that passes every other line on, and Python's own
    sys.stderr (errors, warnings, tracebacks) writes to the terminal directly, as before."""
    if VERBOSE or _native_filter:
        return
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stderr = os.fdopen(real, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace",
                           closefd=False)
    for handler in logging.getLogger().handlers:  # logging.basicConfig's handler held the old sys.stderr
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.__stderr__:
            handler.setStream(sys.stderr)
    _native_filter.append(real)

    def pump() -> None:
        with os.fdopen(read_end, "rb") as src:
            for line in src:
                if not _NATIVE_LOG_LINE.match(line):
                    os.write(real, line)

    threading.Thread(target=pump, name="native-stderr", daemon=True).start()


def reclaim_sigterm() -> None:
    """After ray.init: its core worker installs absl's failure signal handler, which prints a C++ stack
    trace on SIGTERM; the CLI's handler (raise Terminated: one line, exit 143) takes SIGTERM back."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, raise_terminated)


def quiet_ray_data() -> None:
    """Ray Data logs INFO (execution plans, progress blocks when stdout is no terminal) to the console;
    without -v only its warnings reach the terminal. Its log file keeps everything."""
    import ray.data  # noqa: F401  (configures the "ray.data" logger's handlers)

    for handler in logging.getLogger("ray.data").handlers:
        if type(handler).__name__ != "SessionFileHandler":
            handler.setLevel(logging.INFO if VERBOSE else logging.WARNING)


def ray_env_defaults() -> None:
    # Checked on this stack (DESIGN.md): local Ray needs these to start offline without prompts.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TMPDIR", "/tmp/ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _ray_cli() -> str:
    exe = Path(sys.executable).parent / "ray"
    return str(exe) if exe.exists() else (shutil.which("ray") or "ray")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SERVICE_TASK_EVENTS = 2_000  # task events the GCS keeps (Ray's default: 100,000)


def service_env() -> dict:
    """The service's head: the GCS keeps the events of the last SERVICE_TASK_EVENTS tasks (the
    dashboard's task list: the last ~5 minutes at 20 streams), not Ray's default 100,000. The pool
    runs a task per window and `status` one per recorder: hundreds a minute, each event ~3 KB of
    the GCS's memory, which grew ~1 MB a minute for 27 minutes at 10,000 (bench/load.py) and would
    grow for hours before Ray's own cap."""
    env = dict(os.environ)
    env.setdefault("RAY_task_events_max_num_task_in_gcs", str(SERVICE_TASK_EVENTS))
    return env


def _start_local_head(dashboard: bool = False) -> dict:
    """`ray start --head --block` in a process group of its own, so `down` stops it and only it.
    Its metrics (the service's `s2d_*` ones included) are served for Prometheus on a port of their
    own; the dashboard (and its modules: ~0.5 s more start-up, a few processes) only when asked."""
    port, metrics_port = _free_port(), _free_port()
    LOCAL_STATE.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(LOCAL_STATE.with_suffix(".log"), "w")
    dash = ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={DASHBOARD_PORT}"] \
        if dashboard else ["--include-dashboard=false"]
    proc = subprocess.Popen(
        [_ray_cli(), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--disable-usage-stats", *dash, f"--metrics-export-port={metrics_port}",
         f"--temp-dir={os.environ['RAY_TMPDIR']}"],
        stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True, env=service_env())
    state = {"pgid": proc.pid, "address": f"127.0.0.1:{port}",
             "metrics": f"http://127.0.0.1:{metrics_port}/metrics",
             "dashboard": f"http://127.0.0.1:{DASHBOARD_PORT}" if dashboard else ""}
    LOCAL_STATE.write_text(json.dumps(state))
    return state


def local_endpoints() -> dict:
    """The local Ray's Prometheus metrics URL and dashboard URL ("" when it has none), if it runs."""
    if not LOCAL_STATE.exists():
        return {}
    state = json.loads(LOCAL_STATE.read_text())
    return {"metrics": state.get("metrics", ""), "dashboard": state.get("dashboard", "")}


def connect(address: str | None, namespace: str, start_local: bool = True, dashboard: bool = False) -> None:
    """ray.init against `address`, or the local cluster (started if needed and allowed, with the
    Ray dashboard if `dashboard`)."""
    import ray

    ray_env_defaults()
    if ray.is_initialized():
        return
    if address:
        try:
            _init(address=address, namespace=namespace)
        except (ConnectionError, RuntimeError) as err:
            raise UserError(f"cannot reach Ray at {address!r} ({err}); check --address / ray.address") from None
        return
    if LOCAL_STATE.exists():
        state = json.loads(LOCAL_STATE.read_text())
    elif start_local:
        log.info("starting a local Ray head node")
        state = _start_local_head(dashboard)
    else:
        raise UserError("no local stream2dataset Ray is running; start the service with `stream2dataset up`")
    deadline = time.monotonic() + 60
    while True:  # the head takes a few seconds to come up
        try:
            _init(address=state["address"], namespace=namespace)
            return
        except (ConnectionError, RuntimeError):
            if time.monotonic() > deadline or not _alive(state["pgid"]):
                LOCAL_STATE.unlink(missing_ok=True)  # stale or failed: the next `up` starts afresh
                raise UserError(f"the local Ray is not answering (see {LOCAL_STATE.with_suffix('.log')}); "
                                "run `stream2dataset up` again") from None
            time.sleep(1)


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def stop_local() -> bool:
    """Stop the local Ray that `up` started (its process group only), if any."""
    import ray

    if not LOCAL_STATE.exists():
        return False
    ray.shutdown()  # disconnect first, or Ray reports its own head processes dying to this driver
    pgid = json.loads(LOCAL_STATE.read_text())["pgid"]
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        if not _alive(pgid):
            break
        os.killpg(pgid, sig)
        deadline = time.monotonic() + wait
        while _alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
    LOCAL_STATE.unlink(missing_ok=True)
    return True


def connect_for_job(address: str | None, namespace: str) -> None:
    """A foreground job uses the running service's Ray (or `address`), else a Ray of its own."""
    import ray

    ray_env_defaults()
    if ray.is_initialized():
        return
    quiet_ray_data()
    if address or LOCAL_STATE.exists():
        connect(address, namespace, start_local=False)
    else:  # lean: no dashboard and its modules, which cost seconds of start-up and CPU for a short job
        _init(namespace=namespace, include_dashboard=False)
