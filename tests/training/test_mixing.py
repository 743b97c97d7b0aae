"""The loop's cross-batch shuffle (`mixed`) and the fused EMA update."""

import torch

from stream2dataset.training.loop import mixed, update_ema


def test_mixed_batches_are_a_shuffle_of_the_epoch():
    torch.manual_seed(0)
    rows = torch.arange(1000)
    batches = ({"id": rows[i:i + 32], "x": rows[i:i + 32] * 2} for i in range(0, 992, 32))  # drop_last: 31 batches
    out = list(mixed(batches, 32, pool_batches=4))
    assert len(out) == 31 and all(len(b["id"]) == 32 for b in out)
    ids = torch.cat([b["id"] for b in out])
    assert sorted(ids.tolist()) == list(range(992))  # every row once
    assert all(torch.equal(b["x"], b["id"] * 2) for b in out)  # columns stay paired
    first = out[0]["id"]
    assert not torch.equal(first, torch.arange(32)) and first.max() >= 32  # mixed across batches


def test_mixed_gives_nothing_for_an_epoch_smaller_than_a_batch():
    assert list(mixed(iter([]), 8)) == []


def test_update_ema_moves_each_weight_towards_the_model():
    model, ema = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in ema.parameters()]
    update_ema(ema, model, 0.9)
    for e, b, p in zip(ema.parameters(), before, model.parameters()):
        assert torch.allclose(e, 0.9 * b + 0.1 * p.detach())
