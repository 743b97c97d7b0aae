"""The SQL sandbox against an attacker: links out of the root, DuckDB's temp folder, runaway
queries and Ctrl-C (issue 13, item 1). Real DuckDB, real files, real symbolic links."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from stream2dataset.dataset.catalog import open_catalog, query
from stream2dataset.dataset.sandbox import UnsafeLink, check_links
from stream2dataset.dataset.stats import dataset_stats, preview_sheet
from stream2dataset.errors import UserError
from tests.dataset.test_catalog import make_root

SECRET = "TWITCH_TOKEN=oauth:s3cret"
CROSS_JOIN = ("SELECT count(*) FROM frames_all a, frames_all b, frames_all c, frames_all d, frames_all e, "
              "frames_all f, range(1000000000) g")  # six-way, and then some: runs for hours


@pytest.fixture
def root(tmp_path):
    return make_root(tmp_path / "root")


@pytest.fixture
def outside(tmp_path):
    """A folder beside the root holding a secret, as /etc or /proc/self hold theirs."""
    folder = tmp_path / "private"
    folder.mkdir()
    (folder / "environ").write_text(SECRET)
    return folder


def refused(root, sql: str) -> str:
    """The one-line error `sql` gets; fails if the query runs."""
    with pytest.raises(UserError) as err:
        query(root, sql)
    message = str(err.value)
    assert "\n" not in message and SECRET not in message
    return message


def test_a_link_out_of_the_root_is_refused_before_any_query(root, outside, tmp_path, monkeypatch):
    (root / "etc_link").symlink_to(outside)  # as `ln -s /etc <root>/etc_link`
    monkeypatch.chdir(tmp_path)
    # DuckDB checks `<root>/private/environ`; the kernel reads `<root>/etc_link/..` = the target's parent.
    for sql in [f"SELECT content FROM read_text('{root}/etc_link/../private/environ')",
                f"SELECT content FROM read_text('{root}/etc_link/environ')",
                "SELECT content FROM read_text('root/etc_link/../private/environ')",  # relative to the cwd
                f"SELECT content FROM read_text(concat('{root}/etc_link/.', './private/environ'))",  # built at run time
                f"SELECT file FROM glob('{root}/*/*')",
                "SELECT 1"]:  # nothing runs while the link is there
        message = refused(root, sql)
        assert f"{root}/etc_link" in message and "outside the storage root" in message
    with pytest.raises(UnsafeLink):
        open_catalog(root)
    (root / "etc_link").unlink()  # the fix the message names
    assert query(root, "SELECT 1 AS x")[0].to_pylist() == [{"x": 1}]


def test_a_link_deep_in_the_root_that_climbs_out_through_dotdot_is_refused(root, outside):
    # The target is inside the root but higher than the link: `up/../..` lands above the root,
    # while DuckDB sees a path that stays inside.
    deep = root / "dataset" / "frames" / "channel=a"
    (deep / "up").symlink_to(root / "dataset")
    sql = f"SELECT content FROM read_text('{deep}/up/../../{outside.name}/environ')"
    assert "higher in the storage root" in refused(root, sql)


def test_links_that_stay_inside_the_root_are_allowed(root):
    (root / "dataset" / "frames_link").symlink_to(root / "dataset" / "frames")  # as deep as itself
    (root / "manifests" / "latest.parquet").symlink_to(root / "dataset/dups/pass-1.parquet")  # a file
    (root / "dangling").symlink_to(root / "not-yet")
    check_links(root)
    table, _ = query(root, f"SELECT count(*) AS n FROM read_parquet('{root}/dataset/frames_link/*/*/*.parquet')")
    assert table.to_pylist() == [{"n": 20}]


def test_links_to_files_outside_are_refused_too(root, outside):
    (root / "dataset" / "frames" / "channel=a" / "x.parquet").symlink_to(outside / "environ")
    assert "outside the storage root" in refused(root, "SELECT 1")


def test_the_link_check_costs_little_on_a_large_root(tmp_path):
    root = tmp_path / "big"
    for d in range(50):  # 5,000 files in 50 folders (~1 us a file: 100,000 take ~0.1 s)
        folder = root / "manifests" / "segments" / f"c{d}"
        folder.mkdir(parents=True)
        for i in range(100):
            (folder / f"{i}.parquet").touch()
    t = time.perf_counter()
    check_links(root)
    assert time.perf_counter() - t < 0.5


def test_the_link_check_ignores_folders_removed_while_it_walks(tmp_path):
    """Commits move staging to a trash folder that a background thread deletes, meanwhile."""
    root, stop = tmp_path / "root", threading.Event()

    def churn():
        while not stop.is_set():
            trash = root / "dataset" / "_staging" / ".trash"
            for i in range(20):
                (trash / f"b{i}" / "seg" / "frames").mkdir(parents=True, exist_ok=True)
            shutil.rmtree(trash, ignore_errors=True)

    (root / "dataset").mkdir(parents=True)
    thread = threading.Thread(target=churn)
    thread.start()
    try:
        for _ in range(200):
            check_links(root)
    finally:
        stop.set()
        thread.join()


def test_duckdbs_temp_folder_is_private_and_not_readable(root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".tmp").mkdir()
    (tmp_path / ".tmp" / "secret.txt").write_text(SECRET)  # DuckDB's default temp folder: `<cwd>/.tmp`
    refused(root, "SELECT content FROM read_text('.tmp/secret.txt')")
    refused(root, f"SELECT content FROM read_text('{tmp_path}/.tmp/secret.txt')")
    with open_catalog(root) as con:
        temp = con.execute("SELECT current_setting('temp_directory')").fetchone()[0]
        allowed = con.execute("SELECT current_setting('allowed_directories')").fetchone()[0]
        con.execute("SELECT count(*) FROM range(10)").fetchall()
    assert os.path.isabs(temp) and not temp.startswith(str(tmp_path))
    assert not any(a.startswith(str(tmp_path / ".tmp")) for a in allowed)
    assert (os.stat(temp).st_mode & 0o077) == 0  # nobody else can read or plant spill files


def test_a_query_over_the_time_limit_stops_with_one_line(root):
    t = time.monotonic()
    with pytest.raises(UserError, match=r"longer than dataset\.sql_timeout_s = 0\.5 s") as err:
        query(root, CROSS_JOIN, timeout_s=0.5)
    assert time.monotonic() - t < 10 and "\n" not in str(err.value)
    assert query(root, "SELECT count(*) AS n FROM frames", timeout_s=0.5)[0].to_pylist() == [{"n": 16}]


CLI = """
import sys
import threading
from stream2dataset.cli import main
sys.argv = ["stream2dataset", "sql", sys.argv[1]]
print("started", flush=True)
main()
"""


def test_ctrl_c_stops_a_query_with_one_line_and_no_traceback(root):
    (root.parent / "stream2dataset.yaml").write_text(f"storage:\n  root: {root}\n")
    proc = subprocess.Popen([sys.executable, "-c", CLI, CROSS_JOIN], cwd=root.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "started\n"
        time.sleep(3)  # imports, config and catalog done: the query runs
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    assert "interrupted" in err and proc.returncode == 130  # as for Ctrl-C anywhere else


def test_a_preview_filter_over_the_time_limit_stops_with_one_line(root, tmp_path):
    slow = "(SELECT count(*) FROM " + ", ".join(f"frames_all t{i}" for i in range(8)) + ") > 0"  # 20^8 rows
    with pytest.raises(UserError, match=r"longer than dataset\.sql_timeout_s = 0\.5 s"):
        preview_sheet(root, slow, tmp_path / "p.png", timeout_s=0.5)
    assert dataset_stats(root, timeout_s=5)["total"]["frames_kept"] == 16
