"""Every mistake on the command line is one line on stderr and exit status 2, never a traceback
(issue 13, items 4-6)."""

import os
import shutil
import subprocess
import sys

import pytest

from stream2dataset.demo.footage import carphone_path

from .conftest import write_config


@pytest.mark.parametrize("args, expected", [
    (["bogus"], "error: No such command 'bogus'; see `stream2dataset --help`"),
    (["sql", "select 1", "--bogus"], "error: No such option: --bogus; see `stream2dataset sql --help`"),
    (["sql"], "error: Missing argument 'query'; see `stream2dataset sql --help`"),
    (["sql", "select 1", "--limit", "-1"], "error: Invalid value for '--limit'"),
    (["sql", "select 1", "--format", "xml"], "error: Invalid value for '--format'"),
    (["preview", "--n", "0"], "error: Invalid value for '--n'"),
    (["dedup", "--radius", "100"], "error: Invalid value for '--radius'"),
    (["-c", "x.yaml", "sql", "select 1"], "options go after the command, e.g. `stream2dataset sql -c ...`"),
    (["-c", "x.yaml", "status"], "options go after the command, e.g. `stream2dataset status -c ...`"),
    (["--verbos", "status"], "(Possible options: --verbose, --version); see `stream2dataset --help`"),
    (["snapshot", "exprt", "faces"], "no sub-command 'exprt': did you mean 'export'?"),
    (["train", "cartoon"], "error: Invalid value for 'kind': 'cartoon' is not one of 'diffusion', 'temporal'"),
    (["record", "x", "--duration"], "error: Option '--duration' requires an argument"),
])
def test_usage_errors_are_one_line_exit_2(argv, args, expected):
    done = argv(*args)
    code, out, err = done.returncode, done.stdout, done.stderr
    assert code == 2
    assert expected in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err + out


def test_help_still_works(argv):
    done = argv("sql", "--help")
    assert done.returncode == 0 and "read-only" in done.stdout


def test_the_installed_command_prints_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "stream2dataset", "-c", "x", "stats"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: No such option: -c")
    assert len(done.stderr.splitlines()) == 1


# render refuses to replace its input or to write into the storage root (item 4) ----------------

@pytest.fixture
def video(tmp_path):
    src = tmp_path / "in.mp4"
    shutil.copy(carphone_path(), src)
    return src


def test_render_refuses_its_own_input(argv, tmp_path, video):
    before = video.read_bytes()
    os.link(video, tmp_path / "hard.mp4")
    (tmp_path / "soft.mp4").symlink_to(video)
    for dst in (video, tmp_path / "." / "in.mp4", tmp_path / "hard.mp4", tmp_path / "soft.mp4"):
        done = argv("render", str(video), str(dst), "--inline", "--transforms", "grayscale")
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert "that is the input video itself" in done.stderr
    done = argv("render", str(video), str(tmp_path), "--inline", "--transforms", "grayscale")
    assert done.returncode == 2 and "is a folder" in done.stderr
    assert video.read_bytes() == before


def test_render_refuses_the_storage_roots_own_folders(argv, tmp_path, video, monkeypatch):
    config = write_config(tmp_path, [])
    for folder in ("raw", "dataset"):
        out = tmp_path / "data" / folder / "x.mp4"
        done = argv("render", str(video), str(out), "--inline", "--transforms", "grayscale", "-c", str(config))
        assert done.returncode == 2 and f"inside the storage root's {folder}/ folder" in done.stderr, done.stderr
        assert not out.exists()
    monkeypatch.chdir(tmp_path)  # the default config is found without -c
    done = argv("render", str(video), "data/raw/y.mp4", "--inline", "--transforms", "grayscale")
    assert done.returncode == 2 and "inside the storage root's raw/ folder" in done.stderr


# process DIR skips what is not a readable video file and goes on (item 6) ------------------------

def test_file_segments_skip_and_report_what_is_not_a_video_file(tmp_path):
    from stream2dataset.processing.pipeline import file_segments

    videos = tmp_path / "clips"
    (videos / "sub").mkdir(parents=True)
    shutil.copy(carphone_path(), videos / "good.mp4")
    shutil.copy(carphone_path(), videos / "sub" / "copy.mp4")  # same content: one segment
    (videos / "dangling.mp4").symlink_to(tmp_path / "gone.mp4")
    (videos / "loop.mp4").symlink_to(videos / "loop.mp4")
    (videos / "folder.mp4").mkdir()
    shutil.copy(carphone_path(), videos / "folder.mp4" / "inside.mkv")  # a folder named .mp4 is walked
    (videos / "linked").symlink_to(tmp_path, target_is_directory=True)  # folder links are not followed
    (videos / "notes.txt").write_text("not a video")
    locked = videos / "locked.mp4"
    shutil.copy(carphone_path(), locked)
    locked.chmod(0)
    skipped = []
    segments = file_segments([videos], skipped)
    assert len(segments) == 1 and segments[0]["source_id"] in ("good.mp4", "copy.mp4", "inside.mkv")
    reasons = {os.path.basename(p): why for p, why in skipped}
    assert "dangling symlink" in reasons["dangling.mp4"]
    assert "symbolic links" in reasons["loop.mp4"]
    if os.geteuid() != 0:  # root reads any file
        assert "permission denied" in reasons["locked.mp4"]
    assert "folder.mp4" not in reasons and "notes.txt" not in reasons


@pytest.mark.slow  # ~11 s on the 2-core machine
def test_process_command_goes_on_past_bad_entries(tmp_path):
    write_config(tmp_path, [], processing={"outputs": ["face"], "sample_fps": 1, "min_crop_px": 32})
    videos = tmp_path / "clips"
    videos.mkdir()
    shutil.copy(carphone_path(), videos / "carphone.mp4")
    (videos / "dangling.mp4").symlink_to(tmp_path / "gone.mp4")
    (videos / "loop.mp4").symlink_to(videos / "loop.mp4")
    (videos / "x.mp4").mkdir()
    done = subprocess.run([sys.executable, "-m", "stream2dataset", "process", str(videos)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200", "S2D_STATE_DIR": str(tmp_path / "state")})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "skipped" in done.stdout and "dangling.mp4" in done.stdout and "loop.mp4" in done.stdout
    assert "Traceback" not in done.stderr
    assert list((tmp_path / "data" / "dataset" / "frames" / "channel=clips").rglob("*.parquet"))
