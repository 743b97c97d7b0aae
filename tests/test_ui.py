"""The web dashboard (`stream2dataset ui`): a real storage root served by the real uvicorn server,
driven by headless Chromium (no webdriver: its own command line), plus Starlette's test client for
quick checks. Screenshots of each page go to a folder the test names, and to $S2D_ARTIFACTS/ui
when that is set (kept out of git).
"""

import csv
import io
import os
import shutil
import socket
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np
import pytest
import yaml

from stream2dataset.config import TrainingConfig, load_config
from stream2dataset.dataset.catalog import query
from stream2dataset.dataset.preview import tile
from stream2dataset.dataset.stats import dataset_stats
from stream2dataset.errors import UserError
from stream2dataset.training.runs import MetricsLog, write_run_info
from stream2dataset.training.video import write_mp4
from tests.dataset.test_catalog import COLORS, make_root

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
RUN = "diffusion-train-v1-20261101-100000"


def _png_rgb(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A storage root with two channels' shards (real PNG crops, manifest, drops, clips, dedup
    links) and a diffusion run folder as training leaves it: run.json, metrics.csv, a sample grid
    under samples/, a sample MP4; plus a config naming the channels."""
    base = tmp_path_factory.mktemp("ui")
    root = make_root(base / "data")
    config = base / "stream2dataset.yaml"
    config.write_text(yaml.safe_dump({"storage": {"root": "data"}, "dataset": {"sql_timeout_s": 20},
                                      "channels": [{"name": "a", "source": "http://127.0.0.1:9/a/live.m3u8"},
                                                   {"name": "b", "source": "http://127.0.0.1:9/b/live.m3u8"}]}))
    folder = root / "runs" / RUN
    write_run_info(folder, "diffusion", {"name": "train-v1", "rows": 16, "channels": ["a", "b"]}, TrainingConfig())
    with (folder / "metrics.csv").open("w", newline="") as f:  # MetricsLog's columns, 12 logged steps
        w = csv.DictWriter(f, MetricsLog.FIELDS)
        w.writeheader()
        for step in range(2, 26, 2):
            w.writerow({"step": step, "epoch": 0, "loss": f"{1.0 / step:.6g}", "lr": "0.001", "elapsed_s": step})
    rng = np.random.default_rng(0)
    for step, rgb in ((24, (0, 200, 0)), (12, (0, 0, 0))):
        grid = [np.full((32, 32, 3), rgb, np.uint8)] * 4
        tile(grid, folder / "samples" / f"step-{step:07d}.png", columns=2, width=64)
    os.utime(folder / "samples" / "step-0000012.png", (1, 1))  # older
    write_mp4(folder / "video-20261101-100000.mp4", rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8), 8)
    (root / "runs" / "broken-run").mkdir()  # no run.json: not listed
    outside = base / "secret.txt"
    outside.write_text("TOKEN=do-not-serve")
    return {"base": base, "root": root, "config": config, "cfg": load_config(config)}


@pytest.fixture(scope="module")
def client(site):
    from starlette.testclient import TestClient

    from stream2dataset.ui.app import build_app

    with TestClient(build_app(site["cfg"]), base_url="http://127.0.0.1") as c:
        yield c


# Quick checks through the test client ----------------------------------------------------------------

def test_channels_show_the_manifest_numbers_when_no_service_runs(client):
    r = client.get("/channels")
    assert r.status_code == 200
    assert "not running" in r.text and "manifest only" in r.text
    table = client.get("/channels/table").text
    assert 'data-channel="a"' in table and 'data-channel="b"' in table
    assert "2.5 MB" in table and "2.0 MB" in table  # bytes per channel, formatted as `status` does
    assert client.get("/", follow_redirects=False).headers["location"] == "/channels"


def test_channels_show_the_service_status_and_backlog(site):
    from starlette.testclient import TestClient

    from stream2dataset.ui.app import build_app

    st = {"config": str(site["config"]), "config_error": "", "processing": {"state": "idle", "backlog": 0},
          "channels": [{"channel": "a", "platform": "twitch", "mode": "live", "state": "recording",
                        "since": "2026-11-01T10:00:00+00:00", "segments": 3, "bytes": 2_500_000,
                        "last_error": "HTTP 503 <b>x</b>"}]}

    def stopped():
        raise UserError("the service is not running in this Ray namespace; start it with `stream2dataset up`")

    with TestClient(build_app(site["cfg"], lambda: st)) as c:
        text = c.get("/channels/table").text
        assert "recording" in text and "10:00:00" in text and "processing: idle · backlog 0 segments" in text
        assert "HTTP 503 &lt;b&gt;x&lt;/b&gt;" in text  # escaped, never markup
    with TestClient(build_app(site["cfg"], stopped)) as c:
        assert "start it with `stream2dataset up`" in c.get("/channels/table").text


def test_frame_route_serves_the_stored_image_bytes(client, site):
    stored, _ = query(site["root"], "SELECT frame_id, image FROM frames WHERE channel = 'b' LIMIT 1")
    frame_id, image = stored["frame_id"][0].as_py(), stored["image"][0].as_py()
    r = client.get(f"/frames/{frame_id}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content == image
    assert tuple(_png_rgb(r.content)[0, 0]) == COLORS["b"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert client.get("/frames/nope").status_code == 404
    assert client.get("/frames/x'%20OR%20'1'='1").status_code == 404  # not an id: never reaches SQL


def test_sql_answers_a_select_and_refuses_writes_with_the_cli_line(client, site, cli):
    r = client.post("/sql", data={"q": "SELECT channel, count(*) AS n FROM frames GROUP BY 1 ORDER BY 1"})
    assert r.status_code == 200
    assert "<td>a</td><td>11</td>" in r.text.replace("\n", "") and "2 rows" in r.text
    for bad in ("DELETE FROM frames", "COPY frames TO '/tmp/x.csv'", "INSTALL httpfs"):
        page = client.get("/sql", params={"q": bad})
        shown = cli(site["root"], "sql", bad)
        assert page.status_code == 400 and shown.returncode == 2
        line = shown.stderr.strip()
        assert line.startswith("error: ") and "\n" not in line
        assert f'<p class="error" id="error">{_html(line)}</p>' in page.text, (bad, line)
    many = client.get("/sql", params={"q": "SELECT * FROM range(1000)"})
    assert many.text.count("<tr>") == 1 + 200 and "first 200 rows" in many.text


def _html(text: str) -> str:
    from markupsafe import escape  # as the templates escape

    return str(escape(text))


def test_stats_page_and_chart_give_the_stats_numbers(client, site):
    st = dataset_stats(site["root"])
    text = client.get("/stats").text
    for ch in st["channels"]:
        assert f"<td>{ch['channel']}</td>" in text
    assert f'<td class="num">{st["total"]["frames_kept"]:,}</td>' in text
    png = client.get("/stats.png")
    assert png.headers["content-type"] == "image/png" and _png_rgb(png.content).shape[:2] == (650, 1000)


def test_runs_and_run_page(client):
    text = client.get("/runs").text
    assert f'href="/runs/{RUN}"' in text and "train-v1" in text and "0.0417" in text  # last loss 1/24
    assert "broken-run" not in text
    page = client.get(f"/runs/{RUN}").text
    assert '<svg id="loss"' in page and "step 24, loss 0.0417" in page
    assert f"/runs/{RUN}/files/samples/step-0000024.png" in page  # the newest grid
    assert f"/runs/{RUN}/files/video-20261101-100000.mp4" in page
    grid = client.get(f"/runs/{RUN}/files/samples/step-0000024.png")
    assert grid.headers["content-type"] == "image/png" and tuple(_png_rgb(grid.content)[10, 10]) == (0, 200, 0)
    video = client.get(f"/runs/{RUN}/files/video-20261101-100000.mp4")
    assert video.headers["content-type"] == "video/mp4" and video.content[4:8] == b"ftyp"


@pytest.fixture
def leak(site):
    """A link under the root to a file beside it, for one test (SQL refuses such a root meanwhile)."""
    link = site["root"] / "runs" / RUN / "samples" / "leak.png"
    link.symlink_to(site["base"] / "secret.txt")
    yield f"/runs/{RUN}/files/samples/leak.png"
    link.unlink()


def test_a_link_out_of_the_root_is_never_served(client, leak, site, cli):
    r = client.get(leak)
    assert r.status_code == 404 and "do-not-serve" not in r.text
    page = client.get("/sql", params={"q": "SELECT 1"})  # and SQL says why, as the CLI does
    line = cli(site["root"], "sql", "SELECT 1").stderr.strip()
    assert page.status_code == 400 and "symbolic link" in line and _html(line) in page.text


@pytest.mark.parametrize("path", [
    f"/runs/{RUN}/files/run.json",                  # not a sample
    f"/runs/{RUN}/files/..%2f..%2fcatalog.duckdb",  # climbing out
    f"/runs/{RUN}/files/samples/..%2f..%2f..%2f..%2fsecret.txt",
    "/runs/..%2f..%2fsecret.txt/files/x.png",
    "/runs/.hidden", "/runs/nope", f"/runs/{RUN}/files/samples",  # no listing
    "/crops/a'%20OR%201=1%20--",
])
def test_paths_outside_the_root_and_bad_names_are_refused(client, path):
    r = client.get(path)
    assert r.status_code == 404, (path, r.text[:200])
    assert "do-not-serve" not in r.text


def test_no_secrets_or_environment_on_any_page(client, monkeypatch):
    for path in ("/channels", "/crops", "/stats", "/sql", "/runs", f"/runs/{RUN}"):
        text = client.get(path).text
        assert "TWITCH_OAUTH_TOKEN" not in text and "AWS_SECRET_ACCESS_KEY" not in text and "testing" not in text


def test_a_foreign_host_header_is_refused(site):
    from starlette.testclient import TestClient

    from stream2dataset.ui.app import LOOPBACK_HOSTS, build_app

    with TestClient(build_app(site["cfg"], allowed_hosts=LOOPBACK_HOSTS), base_url="http://evil.example") as c:
        assert c.get("/sql?q=SELECT%201").status_code == 400  # DNS rebinding onto the local dashboard


# The real server and a real browser -------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chromium(url: str, profile: Path, screenshot: Path | None = None) -> str:
    """The DOM after scripts ran (fetches included: virtual time waits for them), and a screenshot."""
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}", "--virtual-time-budget=5000"]
    if screenshot:  # one start does both (Chromium 156)
        args += [f"--screenshot={screenshot}", "--window-size=1280,900"]
    out = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "<html" in out.stdout, out.stderr[-2000:]
    assert screenshot is None or screenshot.exists(), out.stderr[-2000:]
    return out.stdout


@pytest.fixture(scope="module")
def server(site):
    from stream2dataset.ui.app import LOOPBACK_HOSTS, build_app
    from stream2dataset.ui.server import start

    port = _free_port()
    app, seen = build_app(site["cfg"], allowed_hosts=LOOPBACK_HOSTS), []

    async def recorded(scope, receive, send):  # which paths the browser asked for
        if scope["type"] == "http":
            seen.append(scope["path"])
        await app(scope, receive, send)
    srv, thread = start(recorded, "127.0.0.1", port)
    site["seen"] = seen
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture
def shots(tmp_path, request):
    """Screenshots folder: tmp_path/screenshots, copied to $S2D_ARTIFACTS/ui/<test> afterwards."""
    folder = tmp_path / "screenshots"
    folder.mkdir()
    yield folder
    if os.environ.get("S2D_ARTIFACTS"):
        dest = Path(os.environ["S2D_ARTIFACTS"]) / "ui" / request.node.name
        shutil.copytree(folder, dest, dirs_exist_ok=True)


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (./run test installs it)")
@pytest.mark.slow  # ~6 s on the 2-core machine
def test_every_page_in_headless_chromium(server, site, shots):
    import httpx

    profile = Path(tempfile.mkdtemp(prefix="s2d-chromium-"))
    try:
        dom = _chromium(f"{server}/", profile, shots / "channels.png")  # redirected to /channels
        assert 'data-channel="a"' in dom and 'data-channel="b"' in dom and "not running" in dom
        assert "refreshed every 3 s" in dom and "/channels/table" in site["seen"]  # the live refresh fetched

        dom = _chromium(f"{server}/crops", profile, shots / "crops.png")
        kept, _ = query(site["root"], "SELECT frame_id FROM frames WHERE channel = 'a' ORDER BY timestamp DESC, "
                                      "frame_id LIMIT 8")
        for frame_id in kept["frame_id"].to_pylist():
            assert f'src="/frames/{frame_id}"' in dom
        shot = _png_rgb((shots / "crops.png").read_bytes())
        for rgb in COLORS.values():  # the crops themselves were drawn: each channel's colour is on screen
            assert (shot == rgb).all(axis=2).sum() > 500, rgb

        dom = _chromium(f"{server}/stats", profile, shots / "stats.png")
        st = dataset_stats(site["root"])
        assert f'<td class="num">{st["total"]["frames_kept"]:,}</td>' in dom and 'id="stats-chart"' in dom
        chart = httpx.get(f"{server}/stats.png")
        assert chart.status_code == 200 and chart.content[:8] == b"\x89PNG\r\n\x1a\n"

        dom = _chromium(f"{server}/sql?q=SELECT%20channel%2C%20count(*)%20AS%20n%20FROM%20frames%20GROUP%20BY%201"
                        "%20ORDER%20BY%201", profile, shots / "sql.png")
        assert "<td>a</td><td>11</td>" in dom.replace("\n", "") and "<td>b</td><td>5</td>" in dom.replace("\n", "")
        dom = _chromium(f"{server}/sql?q=DELETE%20FROM%20frames", profile, shots / "sql-refused.png")
        assert 'id="error">error: SQL: ' in dom
        refused = httpx.post(f"{server}/sql", data={"q": "DELETE FROM frames"})
        assert refused.status_code == 400
        answered = httpx.post(f"{server}/sql", data={"q": "SELECT count(*) AS n FROM frames_all"})
        assert answered.status_code == 200 and "<td>20</td>" in answered.text

        dom = _chromium(f"{server}/runs", profile, shots / "runs.png")
        assert RUN in dom and "0.0417" in dom
        dom = _chromium(f"{server}/runs/{RUN}", profile, shots / "run.png")
        assert '<svg id="loss"' in dom and "samples/step-0000024.png" in dom and "<video" in dom
        shot = _png_rgb((shots / "run.png").read_bytes())
        assert (shot == (0, 200, 0)).all(axis=2).sum() > 500  # the sample grid was drawn

        frame = httpx.get(f"{server}/frames/{kept['frame_id'][0].as_py()}")
        assert frame.headers["content-type"] == "image/png" and tuple(_png_rgb(frame.content)[0, 0]) == COLORS["a"]
        link = site["root"] / "runs" / RUN / "samples" / "leak.png"
        link.symlink_to(site["base"] / "secret.txt")
        try:
            for bad in (f"/runs/{RUN}/files/samples/leak.png", f"/runs/{RUN}/files/..%2f..%2f..%2fsecret.txt"):
                r = httpx.get(server + bad)
                assert r.status_code == 404 and "do-not-serve" not in r.text
        finally:
            link.unlink()
        assert httpx.get(f"{server}/sql?q=SELECT%201", headers={"Host": "evil.example"}).status_code == 400
        assert sorted(p.name for p in shots.iterdir()) == sorted(
            ["channels.png", "crops.png", "stats.png", "sql.png", "sql-refused.png", "runs.png", "run.png"])
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_the_ui_command_serves_until_ctrl_c(site, tmp_path):
    """`stream2dataset ui` as a user runs it: no service running (no local Ray), so the manifest."""
    import httpx

    from tests.conftest import wait_for

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"S2D_STATE_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "stream2dataset", "ui", "-c", str(site["config"]), "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        def page():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/channels/table", timeout=5)
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()
        r = wait_for(page, 60, 0.2, "the dashboard")
        assert r.status_code == 200 and 'data-channel="b"' in r.text and "manifest only" in r.text
        assert httpx.get(f"http://localhost:{port}/runs").status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.strip().endswith("interrupted"), (out, err)
    assert f"dashboard (read-only) on http://127.0.0.1:{port}/" in out
