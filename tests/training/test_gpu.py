"""On a CUDA GPU (the device machine; skipped elsewhere): one GPU worker, NCCL, bf16 autocast and
channels-last, the same loop and checkpoints as on CPU."""

import pytest

from stream2dataset.training.runs import load_state, read_metrics
from stream2dataset.training.trainer import train

from .conftest import tiny

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("kind", ["diffusion", "temporal"])
def test_a_gpu_worker_trains_in_bf16(snapshot_root, kind):
    folder = train(snapshot_root, kind, "train-v1", tiny(workers=1, gpus_per_worker=1, cpus_per_worker=1, steps=20,
                                                         checkpoint_every=20, sample_every=20), run=f"gpu-{kind}")
    rows = read_metrics(folder)
    assert rows[-1]["step"] == 20 and rows[-1]["gpu_mem_gb"] > 0
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert load_state(folder)["step"] == 20
    assert (folder / "samples" / "step-0000020.png").exists()
