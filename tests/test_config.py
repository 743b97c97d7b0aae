"""The config file: every kind of mistake gives one clear line naming the field, the value and the fix."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stream2dataset.config import (DiffusionSettings, ProcessingConfig, RecordingSettings, TemporalSettings, TrainingConfig,
                                   channel_fingerprint, load_config, parse_config)
from stream2dataset.errors import ConfigError


def error_of(data) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config(data, "s2d.yaml")
    return str(exc.value)


@pytest.mark.parametrize("data, expected", [
    ({"recording": {"segment_secnds": 10}}, "s2d.yaml: recording.segment_secnds: unknown field"),
    ({"recording": {"segment_seconds": "abc"}}, "recording.segment_seconds: Input should be a valid number"),
    ({"recording": {"segment_seconds": -5}}, "recording.segment_seconds: Input should be greater than 0 (got -5)"),
    ({"channels": [{"source": "x", "platform": "vimeo"}]}, "channels[0].platform: Input should be 'twitch', 'youtube', 'hls' or 'file' (got 'vimeo')"),
    ({"channels": [{"source": "shroud", "name": "../etc"}]}, "channels[0].name: must match"),
    ({"channels": [{"source": "shroud; rm -rf /"}]}, "channels[0].source: contains characters not allowed"),
    ({"channels": [{"source": "https://www.youtube.com/@somebody", "platform": "twitch"}]},
     "is not a twitch channel or URL"),
    ({"channels": [{"source": "ftp://example.com/x"}]}, "no platform matches source 'ftp://example.com/x'"),
    ({"channels": [{"source": "http://127.0.0.1/a.m3u8", "mode": "thumbnails"}]},
     "mode 'thumbnails' is not supported by hls; allowed: live"),
    ({"channels": [{"source": "shroud"}, {"source": "https://twitch.tv/shroud"}]}, "two channels are named 'shroud'"),
    ({"channels": [{"source": "../../etc/passwd", "platform": "file"}]}, "path traversal"),
    ({"channels": [{"platform": "twitch"}]}, "channels[0].source: Field required"),
    ({"recording": {"backoff_initial_s": 10, "backoff_max_s": 1}}, "backoff_max_s must be >= backoff_initial_s"),
    ({"recording": {"token_env": "lower case"}}, "recording.token_env: String should match pattern"),
    ({"processing": {"transforms": ["sharpen"]}}, "processing.transforms: step 0: unknown transform 'sharpen'"),
    ({"processing": {"transforms": [{"resize": {"size": 256, "mode": "fit"}}]}},
     "processing.transforms: step 0 (resize): mode: Input should be 'pad', 'crop' or 'stretch' (got 'fit')"),
    ({"processing": {"outputs": ["facecams"]}}, "processing.outputs[0]: Input should be 'facecam'"),
    (["not", "a", "mapping"], "the top level must be a mapping"),
])
def test_each_mistake_names_field_value_and_fix(data, expected):
    msg = error_of(data)
    assert expected in msg
    assert "\n" not in msg  # one problem, one line


def test_several_mistakes_give_one_line_each():
    msg = error_of({"recording": {"segment_seconds": 0, "quality": 5}, "bogus": 1})
    assert len(msg.splitlines()) == 3


def test_defaults_and_derived_channel_fields(tmp_path):
    cfg = parse_config({"channels": [{"source": "https://www.twitch.tv/Some_Streamer", "tags": ["facecam"],
                                      "recording": {"segment_seconds": 30}}]}, base_dir=tmp_path)
    ch = cfg.channels[0]
    assert (ch.platform, ch.name, ch.mode) == ("twitch", "some_streamer", "live")
    assert ch.settings(cfg.recording).segment_seconds == 30
    assert ch.settings(cfg.recording).poll_interval_s == RecordingSettings().poll_interval_s
    assert cfg.storage.root == tmp_path / "s2d-data"  # relative to the config file


def test_a_relative_root_keeps_the_other_storage_settings(tmp_path):
    cfg = parse_config({"storage": {"root": "data", "shared": True}}, base_dir=tmp_path)
    assert cfg.storage.root == tmp_path / "data" and cfg.storage.shared


def test_hash_is_stable_and_tracks_changes(tmp_path):
    a = parse_config({"channels": [{"source": "shroud"}]})
    b = parse_config({"channels": [{"source": "https://www.twitch.tv/shroud"}]})
    assert a.hash == b.hash  # same resolved config, same hash
    c = parse_config({"channels": [{"source": "shroud"}, {"source": "other_one"}]})
    assert c.hash != a.hash
    # Adding a channel leaves the other channel's recorder untouched on reload.
    assert channel_fingerprint(a, a.channels[0]) == channel_fingerprint(c, c.channels[0])


def test_starter_config_is_valid_and_documents_every_default(tmp_path):
    from importlib.resources import files

    text = files("stream2dataset").joinpath("starter.yaml").read_text()
    cfg = parse_config(yaml.safe_load(text))
    assert cfg.recording == RecordingSettings()
    for field in RecordingSettings.model_fields:
        assert f"  {field}:" in text, f"starter.yaml does not document recording.{field}"
    assert cfg.processing == ProcessingConfig()
    for field in ProcessingConfig.model_fields:
        assert f"  {field}:" in text, f"starter.yaml does not document processing.{field}"
    assert cfg.training == TrainingConfig()
    for section in (TrainingConfig, DiffusionSettings, TemporalSettings):
        for field in section.model_fields:
            # Settings fitted to the hardware while unset are documented commented out (`# batch_size: 64`).
            assert f"  {field}:" in text or f"  # {field}:" in text, \
                f"starter.yaml does not document training: {section.__name__}.{field}"


def test_load_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found; create one with `stream2dataset init"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("channels: [\n  - source: x\n  oops")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+: not valid YAML"):
        load_config(bad)


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "stream2dataset", *args], cwd=cwd, capture_output=True, text=True)


def test_cli_init_check_and_one_line_error(tmp_path):
    assert cli("init", cwd=tmp_path).returncode == 0
    assert cli("init", cwd=tmp_path).returncode == 2  # never overwrites silently
    ok = cli("check", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    Path(tmp_path, "stream2dataset.yaml").write_text("recording:\n  segment_seconds: -1\n")
    bad = cli("check", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("error: stream2dataset.yaml: recording.segment_seconds: "
                                  "Input should be greater than 0 (got -1)")
    assert "Traceback" not in bad.stderr


# Malformed files: one line each, naming the file and the fix; never a traceback (issue 13, item 7).
@pytest.mark.parametrize("content, expected", [
    (bytes(range(256)) * 4, "not UTF-8 text"),
    ("recording:\n  segment_seconds: 10\n".encode("utf-16"), "UTF-16 text; save it as UTF-8"),
    (b"recording:\n  quality: best\x00\n", "line 2: a NUL byte"),
    (b'storage:\n  root: "data\\0/x"\n', "storage.root: a NUL character"),
    (b"channels: " + b"[" * 100_000, "nested deeper than"),
    (b"channels: " + b"[" * 40 + b"]" * 40, "nested deeper than 32 levels"),
    (b"recording:\n  segment_seconds: 10\n  segment_seconds: 20\n", "line 3: key 'segment_seconds' is given twice"),
    (b"a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     b"e: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n", "more than 100,000 values"),
    (b"recording:\n  segment_seconds: true\n", "recording.segment_seconds: Input should be a valid number (got True)"),
    (b"recording:\n  min_free_gb: .inf\n", "recording.min_free_gb: Input should be a finite number"),
    (b"processing:\n  sample_fps: .nan\n", "processing.sample_fps: Input should be a finite number"),
    (b"processing:\n  auto: 1\n", "processing.auto: Input should be a valid boolean"),
    (b'storage:\n  root: ""\n', "storage.root: give a folder path"),
    (b"recording:\n  segment_seconds: " + b"9" * 100_000 + b"\n", "a value YAML cannot read (Exceeds the limit"),
    (b"channels:\n  - source: x\n    platform: " + b"y" * 100_000 + b"\n", "platform: Input should be 'twitch'"),
])
def test_malformed_config_files_give_one_line(tmp_path, content, expected):
    path = tmp_path / "s2d.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    msg = str(exc.value)
    assert expected in msg and str(path) in msg
    assert "\n" not in msg and len(msg) < 300  # long values are cut, not echoed whole


def test_merge_keys_may_override_and_a_huge_file_is_refused(tmp_path):
    path = tmp_path / "s2d.yaml"
    path.write_text("x: &d {segment_seconds: 5, quality: best}\n"
                    "recording:\n  <<: *d\n  segment_seconds: 7\n".replace("x: &d", "channels: []\n_d: &d"))
    with pytest.raises(ConfigError, match="_d: unknown field"):  # the anchor's holder is still a field
        load_config(path)
    path.write_text("defaults: &d {segment_seconds: 5}\n".replace("defaults", "recording") +
                    "processing: {auto: false}\n")
    assert load_config(path).recording.segment_seconds == 5
    path.write_bytes(b"# " + b"x" * (2 << 20))
    with pytest.raises(ConfigError, match="larger than 1 MB"):
        load_config(path)


def test_cli_malformed_config_is_one_line_exit_2(tmp_path):
    Path(tmp_path, "stream2dataset.yaml").write_bytes(b"channels: " + b"[" * 100_000)
    bad = cli("check", cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.splitlines()) == 1 and "nested deeper" in bad.stderr
