"""Training runs on a real local Ray: 2 CPU workers (DDP over gloo) reading a real-footage snapshot
through Ray Data; checkpoints, resume, a killed worker recovered, and the sample commands."""

import json
import os
import signal
import threading

import av
import numpy as np
import pytest
import torch
import yaml

from stream2dataset.errors import UserError
from stream2dataset.training.runs import checkpoints, load_state, read_metrics, run_dir
from stream2dataset.training.trainer import train
from tests.conftest import wait_for

from .conftest import tiny


def events(folder):
    return [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def diffusion_run(snapshot_root):
    folder = train(snapshot_root, "diffusion", "train-v1", tiny(steps=30, checkpoint_every=15, sample_every=15),
                   run="diff")
    return folder


@pytest.mark.slow  # ~21 s on the 2-core machine
def test_diffusion_loss_goes_down_on_two_workers(diffusion_run):
    rows = read_metrics(diffusion_run)
    assert [int(r["step"]) for r in rows] == list(range(2, 31, 2))
    first, last = np.mean([r["loss"] for r in rows[:3]]), np.mean([r["loss"] for r in rows[-3:]])
    assert last < 0.7 * first, (first, last)
    assert all(r["images_per_s"] > 0 and 0 <= r["data_wait"] <= 1 for r in rows)
    assert [e["event"] for e in events(diffusion_run)] == ["started"]
    assert events(diffusion_run)[0]["workers"] == 2
    # warm-up (2 steps) then cosine decay to ~0 at the last step
    assert rows[0]["lr"] == pytest.approx(1e-3, rel=0.05) and rows[-1]["lr"] < 1e-5


@pytest.mark.slow  # shares diffusion_run: ~22 s of Ray Train on the 2-core machine
def test_run_folder_holds_checkpoints_config_tensorboard_and_samples(diffusion_run, snapshot_root):
    assert [s for s, _ in checkpoints(diffusion_run)] == [15, 30]
    state = load_state(diffusion_run)
    assert state["step"] == 30 and state["kind"] == "diffusion"
    assert set(state) >= {"model", "ema", "optimizer", "config", "snapshot"}
    assert state["snapshot"]["name"] == "train-v1" and state["snapshot"]["rows"] >= 24
    info = json.loads((diffusion_run / "run.json").read_text())
    assert info["snapshot"]["name"] == "train-v1" and info["kind"] == "diffusion"
    config = yaml.safe_load((diffusion_run / "config.yaml").read_text())
    assert config["steps"] == 30 and config["diffusion"]["resolution"] == 32
    assert list((diffusion_run / "tb").glob("events.out.tfevents.*"))
    grids = sorted((diffusion_run / "samples").glob("step-*.png"))
    assert [g.name for g in grids] == ["step-0000015.png", "step-0000030.png"]
    # The EMA differs from the raw weights (it lags them) and both are finite.
    key = next(k for k in state["model"] if k.endswith("weight"))
    assert torch.isfinite(state["model"][key]).all() and not torch.equal(state["model"][key], state["ema"][key])


@pytest.mark.slow  # shares diffusion_run: ~22 s of Ray Train on the 2-core machine
def test_an_existing_run_needs_resume_and_flags_are_validated(diffusion_run, snapshot_root):
    with pytest.raises(UserError, match="exists.*--resume"):
        train(snapshot_root, "diffusion", "train-v1", tiny(), run="diff")
    with pytest.raises(UserError, match="temporal.*not diffusion|diffusion model, not temporal"):
        train(snapshot_root, "temporal", None, tiny(), run="diff", resume=True)
    with pytest.raises(UserError, match="--set diffusion.nope: no such training setting"):
        train(snapshot_root, "diffusion", "train-v1", tiny(), run="x", overrides={"diffusion.nope": 1})
    with pytest.raises(UserError, match="training: steps: .*greater than or equal to 1"):
        train(snapshot_root, "diffusion", "train-v1", tiny(), run="x", overrides={"steps": 0})
    with pytest.raises(UserError, match="no snapshot named 'nope'"):
        train(snapshot_root, "diffusion", "nope", tiny(), run="y")
    assert not run_dir(snapshot_root, "x").exists() and not run_dir(snapshot_root, "y").exists()


@pytest.mark.slow  # 35-40 s: kill-and-resume runs keep the quick tier under 5 min
def test_resume_continues_from_the_checkpoint(snapshot_root):
    folder = train(snapshot_root, "diffusion", "train-v1", tiny(steps=6, checkpoint_every=6), run="resumed")
    before = load_state(folder)
    train(snapshot_root, "diffusion", None, tiny(), run="resumed", resume=True, overrides={"steps": 12})
    after = load_state(folder)
    assert [s for s, _ in checkpoints(folder)] == [6, 12]
    assert [e["event"] for e in events(folder)] == ["started", "restored"]
    assert events(folder)[1]["step"] == 6
    # The optimizer went on from step 6's state: Adam's per-parameter step count is 12, not 6.
    assert {int(p["step"]) for p in after["optimizer"]["state"].values()} == {12}
    assert {int(p["step"]) for p in before["optimizer"]["state"].values()} == {6}
    assert [int(r["step"]) for r in read_metrics(folder)] == [2, 4, 6, 8, 10, 12]
    assert yaml.safe_load((folder / "config.yaml").read_text())["steps"] == 12


@pytest.mark.slow  # 35-40 s: kill-and-resume runs keep the quick tier under 5 min
def test_a_killed_worker_is_restarted_from_the_last_checkpoint(snapshot_root, ray_local):
    import psutil

    cfg = tiny(steps=40, checkpoint_every=8, sample_every=100, log_every=1)
    done: dict = {}
    thread = threading.Thread(target=lambda: done.update(folder=train(snapshot_root, "diffusion", "train-v1", cfg,
                                                                      run="killed")))
    thread.start()
    folder = run_dir(snapshot_root, "killed")
    def registered() -> bool:  # Ray Train's controller has taken a checkpoint in (it polls the workers)
        snapshot = folder / "checkpoint_manager_snapshot.json"
        return snapshot.exists() and bool(json.loads(snapshot.read_text()).get("latest_checkpoint_result"))

    wait_for(registered, timeout=240, what="a registered checkpoint")
    # Ray titles each actor's process `ray::<class>...`; only this test's Ray (its raylet is our
    # child) counts, not another run's on the same machine
    workers = [p.pid for p in psutil.Process().children(recursive=True)
               if "ray::RayTrainWorker" in " ".join(p.cmdline() or [])]
    assert len(workers) == 2
    os.kill(max(workers), signal.SIGKILL)
    thread.join(timeout=280)
    assert not thread.is_alive() and done.get("folder") == folder
    log = events(folder)
    assert [e["event"] for e in log] == ["started", "restored"] and log[1]["step"] in (8, 16, 24, 32)
    assert log[1]["workers"] == 2
    steps = [int(r["step"]) for r in read_metrics(folder)]
    assert steps == list(range(1, 41))  # the dead attempt's rows after the checkpoint were replaced, not repeated
    assert load_state(folder)["step"] == 40


@pytest.mark.slow  # shares diffusion_run: ~22 s of Ray Train on the 2-core machine
def test_sample_diffusion_writes_a_grid_an_interpolation_and_the_memorisation_check(diffusion_run, snapshot_root, cli):
    (snapshot_root.root.parent / "stream2dataset.yaml").write_text(f"storage:\n  root: {snapshot_root.root}\n")
    out = snapshot_root.root.parent / "grid.png"
    res = cli(snapshot_root.root, "sample", "diffusion", "--run", "diff", "--n", "9", "--out", str(out), "--interpolate")
    assert res.returncode == 0, res.stderr
    with av.open(str(out)) as c:
        frame = next(c.decode(video=0))
    assert (frame.width, frame.height) == (3 * 64 + 4 * 2, 3 * 64 + 4 * 2)  # 3x3 tiles of 64 px, 2 px gaps
    with av.open(str(out.with_suffix(".mp4"))) as c:
        assert sum(1 for _ in c.decode(video=0)) == 48  # 6 s at 8 fps
    assert "9 samples at step 30" in res.stdout and "memorisation:" in res.stdout
    assert (snapshot_root.root.parent / "grid-memorisation.png").exists()


@pytest.mark.slow  # ~18 s on the 2-core machine
def test_temporal_trains_and_samples_a_video_with_its_fluency(snapshot_root, cli):
    folder = train(snapshot_root, "temporal", "train-v1", tiny(steps=30, checkpoint_every=30, sample_every=30),
                   run="temp")
    rows = read_metrics(folder)
    assert rows[-1]["loss"] < rows[0]["loss"] and rows[-1]["recon"] is not None
    assert (folder / "samples" / "step-0000030.png").exists()
    (snapshot_root.root.parent / "stream2dataset.yaml").write_text(f"storage:\n  root: {snapshot_root.root}\n")
    out = snapshot_root.root.parent / "video.mp4"
    res = cli(snapshot_root.root, "sample", "temporal", "--run", "temp", "--seconds", "3", "--fps", "8", "--out", str(out))
    assert res.returncode == 0, res.stderr
    with av.open(str(out)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 24 and (frames[0].width, frames[0].height) == (32, 32)
    assert "fluen" in res.stdout.lower() and "speed" in res.stdout
    assert "fitted to the real speed" in res.stdout and (folder / "temperature.json").exists()
    res = cli(snapshot_root.root, "sample", "temporal", "--run", "temp", "--seconds", "2", "--n", "2",
              "--temperature", "0.5", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert (out.parent / "video-1.mp4").exists() and (out.parent / "video-2.mp4").exists()
    assert "temperature 0.5" in res.stdout and "between 2 continuations" in res.stdout
