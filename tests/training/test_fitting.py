"""Training settings fitted to the hardware and the snapshot, and impossible ones refused: a laptop
with no GPU trains the defaults in minutes, a snapshot smaller than a batch still trains (without
Ray Data's prefetcher failing on repeated blocks), and a warm-up longer than the run is an error."""

from pathlib import Path

import pytest
import yaml

from stream2dataset.config import TrainingConfig, parse_config
from stream2dataset.errors import UserError
from stream2dataset.training.runs import read_metrics, run_dir
from stream2dataset.training.trainer import CPU_SIZED, MIN_BATCHES_PER_EPOCH, apply_overrides, fit_to_hardware, train

from .conftest import tiny


def _logs_now() -> dict[Path, int]:
    """Every file of this Ray session's logs, with its size (workers write their stderr there)."""
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    return {p: p.stat().st_size for p in logs.rglob("*") if p.is_file()}


def _logged_since(before: dict[Path, int]) -> str:
    text = []
    for path in _logs_now():
        with path.open("rb") as f:
            f.seek(before.get(path, 0))
            text.append(f.read().decode(errors="replace"))
    return "".join(text)


@pytest.mark.slow  # ~24 s on the 2-core machine
def test_a_snapshot_smaller_than_an_epoch_trains_without_prefetcher_errors(snapshot_root, cli):
    """The reported case: one CPU worker, batch 64, a snapshot of fewer rows. The rows are repeated
    to fill an epoch; repeating them as one block ref several times made every batch's prefetch
    fail (`ValueError: Wait requires a list of unique ray_waitables`)."""
    (snapshot_root.root.parent / "stream2dataset.yaml").write_text(f"storage:\n  root: {snapshot_root.root}\n")
    rows = len(read_frames(snapshot_root))
    assert rows < MIN_BATCHES_PER_EPOCH * 64  # the snapshot is repeated to fill an epoch
    before = _logs_now()
    res = cli(snapshot_root.root, "train", "diffusion", "--snapshot", "train-v1", "--run", "small", "--workers", "1",
              "--batch-size", "64", "--steps", "8", "--set", "log_every=2", "--set", "loader_cpus=0.5",
              "--set", "cpus_per_worker=0.5")
    assert res.returncode == 0, res.stdout + res.stderr
    logged = _logged_since(before) + res.stdout + res.stderr
    assert "Error in prefetcher thread" not in logged and "unique ray_waitables" not in logged
    folder = run_dir(snapshot_root, "small")
    assert [int(r["step"]) for r in read_metrics(folder)] == [2, 4, 6, 8]
    # Said once, on one line each: the batch lowered to the snapshot, the CPU-sized model, the warm-up.
    lines = res.stdout.splitlines()
    assert f"batch_size 64 is more than the {rows} frames each of 1 worker(s) gets from snapshot 'train-v1': " \
           f"training with batch_size {rows}" in lines
    cpu_line = next(line for line in lines if line.startswith("no GPU per worker"))
    assert "diffusion.base_channels=32" in cpu_line and "set them to override" in cpu_line
    assert "batch_size=16" not in cpu_line  # --batch-size was given: it wins
    assert "warmup_steps=0: a tenth of the 8 steps (set warmup_steps to override)" in lines
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    assert saved["batch_size"] == rows and saved["warmup_steps"] == 0
    assert saved["diffusion"] | CPU_SIZED["diffusion"] == saved["diffusion"]


def read_frames(storage):
    from stream2dataset.dataset.snapshots import open_snapshot

    con = open_snapshot(storage, "train-v1")
    try:
        return con.execute("SELECT frame_id FROM frames").fetchall()
    finally:
        con.close()


def test_unset_sizes_fit_cpu_workers_and_the_ones_given_win():
    given = parse_config({"training": {"diffusion": {"base_channels": 64}}}).training
    cfg, notes = fit_to_hardware(apply_overrides(given, {"steps": 20, "workers": None}), "diffusion", 0)
    assert cfg.batch_size == 16 and cfg.warmup_steps == 2
    assert (cfg.diffusion.base_channels, cfg.diffusion.resolution, cfg.diffusion.channel_mults) == (64, 32, [1, 2, 2])
    assert cfg.temporal == TrainingConfig().temporal  # only the model being trained is fitted
    assert len(notes) == 2 and "diffusion.base_channels" not in notes[0] and "diffusion.resolution=32" in notes[0]
    # --set wins as the config file does; a CPU size that does not fit a given setting keeps its default.
    cfg, notes = fit_to_hardware(apply_overrides(TrainingConfig(), {"diffusion.channel_mults": [1, 2],
                                                                     "batch_size": 8}), "diffusion", 0)
    assert cfg.batch_size == 8 and cfg.diffusion.channel_mults == [1, 2] and cfg.diffusion.attention_levels == [1]
    assert cfg.diffusion.base_channels == 32 and cfg.warmup_steps == 100
    # The temporal model too.
    cfg, _ = fit_to_hardware(TrainingConfig(), "temporal", 0)
    assert cfg.temporal.model_dump() | CPU_SIZED["temporal"] == cfg.temporal.model_dump()
    # GPU workers: the full model, said so; a cluster without the GPUs asked for is named.
    cfg, notes = fit_to_hardware(apply_overrides(TrainingConfig(), {"gpus_per_worker": 1, "workers": 2}), "diffusion", 1)
    assert cfg.diffusion == TrainingConfig().diffusion and cfg.batch_size == 64
    assert notes[0].startswith("1 GPU per worker: the full diffusion model (resolution=64, base_channels=128,")
    assert "the cluster has 1 GPUs now, 2 workers x 1 need 2" in notes[1]
    # CPU workers on a cluster with GPUs: the hint to use them.
    _, notes = fit_to_hardware(TrainingConfig(), "diffusion", 4)
    assert any("the cluster has 4 GPUs: --gpus-per-worker 1" in n for n in notes)
    # A resumed run's saved config sets every field: nothing changes.
    saved = TrainingConfig.model_validate(TrainingConfig().model_dump(mode="json"))
    assert fit_to_hardware(saved, "diffusion", 0) == (saved, [])


def test_a_warmup_not_shorter_than_the_run_is_a_one_line_error(snapshot_root, cli, tmp_path):
    config = snapshot_root.root.parent / "stream2dataset.yaml"
    config.write_text(f"storage:\n  root: {snapshot_root.root}\ntraining:\n  steps: 20\n  warmup_steps: 100\n")
    res = cli(snapshot_root.root, "train", "diffusion", "--snapshot", "train-v1", "--run", "warm")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"error: {config}: training.warmup_steps: 100 warm-up steps in a run of 20 steps: the learning rate would never "
        "reach lr; set warmup_steps below steps (e.g. --set warmup_steps=2) or train longer (got 100)"]
    config.write_text(f"storage:\n  root: {snapshot_root.root}\n")
    res = cli(snapshot_root.root, "train", "diffusion", "--snapshot", "train-v1", "--run", "warm", "--steps", "20",
              "--set", "warmup_steps=20")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "training: warmup_steps: 20 warm-up steps in a run of 20 steps" in res.stderr
    assert not run_dir(snapshot_root, "warm").exists()
    # In the library too; and a warm-up left unset is fitted to a short run instead.
    with pytest.raises(UserError, match="warmup_steps: 12 warm-up steps in a run of 12 steps"):
        train(snapshot_root, "diffusion", "train-v1", tiny(), run="warm", overrides={"warmup_steps": 12})
