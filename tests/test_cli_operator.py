"""The operator's experience (issue 17): --version, quiet Ray unless -v, clean ends on signals, tables
that keep names whole at 80 columns, --format json, `status` past a broken config, a light start-up.

The commands run as real subprocesses where the terminal is the point (signals, library logs,
start-up); tables and JSON run in this process (see conftest's `argv`)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stream2dataset import cli
from stream2dataset.cli import options, tables
from stream2dataset.dataset.manifest import SEGMENT_SCHEMA
from tests.dataset.test_catalog import DAY1, frame, segment, write_frames, write_shard

from .conftest import wait_for, write_config

LONG = "a-streamer-with-a-very-long-channel-name-that-fills-the-table-001"  # 64: the longest allowed
LONG2 = "another-streamer-whose-channel-name-is-just-as-long-as-allowed-2"
RUN = "diffusion-the-snapshot-with-a-long-name-20261204T101500"
SNAP = "the-snapshot-with-a-long-name"


def s2d(*args, env=None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stream2dataset", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}, **kw)


def run(*args, env=None, timeout=300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream2dataset", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, **kw)


# 1. --version ----------------------------------------------------------------------------------

def test_version_prints_the_package_version():
    from importlib.metadata import version

    done = run("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"stream2dataset {version('stream2dataset')}\n"


# 8. start-up -------------------------------------------------------------------------------------

def test_importing_the_cli_loads_no_heavy_library():
    code = ("import sys, stream2dataset.cli; "
            "print(sorted(m for m in ('torch', 'ray', 'pyarrow', 'duckdb', 'cv2', 'pandas', 'numpy') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_sql_loads_neither_opencv_nor_pandas(tmp_path):
    (tmp_path / "stream2dataset.yaml").write_text("storage:\n  root: data\n")
    (tmp_path / "data").mkdir()
    code = ("import sys; sys.argv = ['stream2dataset', 'sql', 'select 42']\n"
            "from stream2dataset import cli\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'ray', 'cv2', 'pandas') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert "42" in done.stdout and done.stdout.strip().endswith("[]"), done.stdout + done.stderr


# 2. Ray quiet unless -v ----------------------------------------------------------------------------

RAY_NOISE = ("logging_progress.py", "streaming_executor.py", "RayDeprecationWarning", "core_worker.cc",
             "Started a local Ray instance", "ray_remote_args")


@pytest.mark.slow  # ~35 s on the 2-core machine
def test_process_is_quiet_without_verbose_and_shows_ray_logs_with_it(tmp_path):
    from stream2dataset.demo.footage import carphone_path

    (tmp_path / "clips").mkdir()
    os.symlink(carphone_path(), tmp_path / "clips" / "carphone.mp4")
    env = {"COLUMNS": "200", "S2D_STATE_DIR": str(tmp_path / "state")}

    def process(*args: str) -> subprocess.CompletedProcess:
        root = tmp_path / "_".join(args or ("auto",))  # a fresh root: a re-run would skip the processed file
        root.mkdir()
        write_config(root, [], processing={"outputs": ["face"], "sample_fps": 1, "min_crop_px": 32})
        verbose = ["-v"] if "-v" in args else []
        result = run(*verbose, "process", str(tmp_path / "clips"), *[a for a in args if a != "-v"], cwd=root, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "processed into" in result.stdout
        return result

    for quiet in (process(), process("--ray")):  # mediapipe in this process (LiteRT's logs), then on Ray
        noise = [line for line in (quiet.stderr + quiet.stdout).splitlines() if any(n in line for n in RAY_NOISE)]
        assert not noise, "\n".join(noise)
        assert quiet.stderr.strip() == "", quiet.stderr[-3000:]
    loud = process("-v", "--ray")
    assert "Started a local Ray instance" in loud.stderr and "streaming_executor.py" in loud.stderr, loud.stderr[-3000:]


# 3. signals -------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig, code, line", [(signal.SIGTERM, 143, "terminated"),
                                             (signal.SIGINT, 130, "interrupted")])
def test_a_signal_ends_record_on_one_line(tmp_path, hls, footage, sig, code, line):
    url = hls.add_stream("sig", footage)
    cfg = write_config(tmp_path, [{"source": url, "name": "sig"}])
    proc = s2d("record", "sig", "--duration", "5m", "-c", str(cfg), env={"COLUMNS": "200"})
    wait_for(lambda: list((tmp_path / "data" / "raw").rglob("*.ts*")) if (tmp_path / "data" / "raw").exists()
             else None, 60, what="recording to start")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == line and "Traceback" not in err and "Stack trace" not in err, err
    assert "stopped" in out  # the recorder finished its segment on the way out


@pytest.fixture
def service(tmp_path, ray_local):
    """The recording service on the test Ray (no channels), and a config pointing at it."""
    from stream2dataset import service as svc

    cfg = write_config(tmp_path, [])
    data = yaml.safe_load(cfg.read_text())
    cfg.write_text(yaml.safe_dump({**data, "ray": {"namespace": "s2d-tests"}}))
    svc.up(cfg)
    address = ray_local.get_runtime_context().gcs_address
    env = {"COLUMNS": "200", "S2D_STATE_DIR": str(tmp_path / "state")}
    yield cfg, address, env
    svc.down()


@pytest.mark.parametrize("sig, code, line", [(signal.SIGTERM, 143, "terminated"),
                                             (signal.SIGINT, 130, "interrupted")])
@pytest.mark.slow  # ~13 s on the 2-core machine
def test_a_signal_ends_status_watch_without_a_stack_trace(service, sig, code, line):
    cfg, address, env = service
    proc = s2d("status", "--watch", "0.5", "-c", str(cfg), "--address", address, env=env)
    time.sleep(12)  # connected and refreshing (the first table is on the terminal)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert err.strip().splitlines() == [line], err
    assert "stream2dataset" in out


# 7. status past a broken config ----------------------------------------------------------------------

def test_status_shows_the_service_when_the_config_no_longer_validates(service):
    cfg, address, env = service
    data = yaml.safe_load(cfg.read_text())
    cfg.write_text(yaml.safe_dump({**data, "recording": {**data["recording"], "segment_seconds": "two"}}))
    done = run("status", "-c", str(cfg), "--address", address, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("config not reloaded: ") and len(done.stderr.strip().splitlines()) == 1
    assert "segment_seconds" in done.stderr and "Traceback" not in done.stderr
    assert "stream2dataset —" in done.stdout  # the service's table
    as_json = json.loads(run("status", "-f", "json", "-c", str(cfg), "--address", address, env=env).stdout)
    assert set(as_json) >= {"config", "config_error", "channels", "processing"}


def test_status_with_a_config_that_is_not_even_yaml_still_looks_for_the_service(tmp_path, argv, monkeypatch):
    cfg = tmp_path / "stream2dataset.yaml"
    cfg.write_text("storage: [unclosed\n")
    connected = {}
    monkeypatch.setattr("stream2dataset.cluster.connect",
                        lambda address, namespace, start_local=True: connected.update(ns=namespace))
    monkeypatch.setattr("stream2dataset.service.status", lambda: {"channels": [], "config": str(cfg)})
    done = argv("status", "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("config not reloaded: ") and "namespace 'stream2dataset'" in done.stderr
    assert connected == {"ns": "stream2dataset"}


# 4 and 5. tables at 80 and 200 columns, --format json ---------------------------------------------------

@pytest.fixture(scope="module")
def long_root(tmp_path_factory):
    base = tmp_path_factory.mktemp("long")
    (base / "stream2dataset.yaml").write_text("storage:\n  root: data\n")
    root = base / "data"
    for ch in (LONG, LONG2, "shortname"):
        sid = f"hls.{ch}.20261101T100000.000Z"  # as Storage.segment_id: longer than 80 for the longest names
        row = {**segment("a", sid, DAY1, 600, 1_000_000), "channel": ch, "width": 1280, "height": 720,
               "video_codec": "h264"}
        write_shard(root / f"manifests/segments/{ch}/{sid}.parquet", [row], SEGMENT_SCHEMA, version=None)
        write_frames(root, ch, DAY1, [{**frame("a", sid, i, DAY1), "channel": ch} for i in range(3)], f"part-{ch[:5]}")
    folder = root / "runs" / RUN
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"kind": "diffusion", "snapshot": {"name": SNAP},
                                                 "created": "2026-12-04T10:15:00+00:00"}))
    (folder / "metrics.csv").write_text("step,loss\n1,0.5\n2,0.25\n")
    return root


@pytest.fixture(params=[80, 200])
def width_argv(request, monkeypatch):
    monkeypatch.setattr(options.console, "_width", request.param)  # what Console(width=...) sets

    def go(*args):
        monkeypatch.setattr(sys, "argv", ["stream2dataset", *args])
        try:
            cli.main()
            code = 0
        except SystemExit as exit:
            code = exit.code
        return code
    return go, request.param


def test_status_table_keeps_channel_names_whole(width_argv, capsys):
    _, width = width_argv
    st = {"config": "x.yaml", "channels": [
        {"channel": name, "platform": "hls", "mode": "live", "state": "backoff", "detail": "retry in 4s",
         "since": "2026-12-04T10:00:00+00:00", "segments": 12, "bytes": 123456789,
         "last_error": "the origin answered 503 Service Unavailable for the playlist"} for name in (LONG, LONG2)]}
    tables.show(tables.status_table(st))
    out = capsys.readouterr().out
    assert LONG in out and LONG2 in out
    assert max(len(line) for line in out.splitlines()) <= width


@pytest.mark.parametrize("args, ids", [
    (["segments"], [LONG, LONG2]),
    (["stats"], [LONG, LONG2]),
    (["runs"], [RUN, SNAP]),
    (["sql", "SELECT * FROM frames"], [LONG, LONG2, "hls.shortname.20261101T100000.000Z"]),
])
def test_tables_keep_ids_whole(long_root, width_argv, capsys, args, ids):
    go, width = width_argv
    code = go(*args, "-c", str(long_root.parent / "stream2dataset.yaml"))
    out = capsys.readouterr()
    assert code in (0, None), out.err
    for name in ids:
        assert name in out.out, out.out
    assert max(len(line) for line in out.out.splitlines()) <= width


def test_sql_shows_binary_columns_as_sizes_at_160_columns(long_root, width_argv, capsys):
    go, _ = width_argv
    go("sql", "SELECT * FROM frames LIMIT 1", "-c", str(long_root.parent / "stream2dataset.yaml"))
    out = capsys.readouterr().out
    assert "bytes>" in out and "\\x89PNG" not in out and "PNG" not in out


def test_json_formats_parse(long_root, argv):
    cfg = str(long_root.parent / "stream2dataset.yaml")
    seg = json.loads(argv("segments", "--format", "json", "-c", cfg).stdout)
    assert [r["channel"] for r in seg] == sorted([LONG, LONG2, "shortname"])
    assert set(seg[0]) == {"channel", "segments", "duration_s", "bytes", "resolutions", "codecs", "salvaged",
                           "first", "last"}
    assert seg[0]["segments"] == 1 and seg[0]["resolutions"] == ["1280x720"]
    runs = json.loads(argv("runs", "--format", "json", "-c", cfg).stdout)
    assert runs == [{"run": RUN, "kind": "diffusion", "snapshot": SNAP, "created": "2026-12-04T10:15:00",
                     "checkpoint_step": None, "last_loss": 0.25}]
    stats = json.loads(argv("stats", "--format", "json", "-c", cfg).stdout)
    assert {r["channel"] for r in stats["channels"]} == {LONG, LONG2, "shortname"}
    assert argv("runs", "--format", "xml", "-c", cfg).returncode == 2


def test_the_cli_names_the_same_default_config_as_the_config_module():
    from stream2dataset.config import DEFAULT_CONFIG_NAME

    assert options.DEFAULT_CONFIG_NAME == DEFAULT_CONFIG_NAME
