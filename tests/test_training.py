"""Training helpers: evaluation without autograd, the training-memory bound, the limit."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import nninvert_lib as nni
from nninvert_lib import training
from nninvert_lib.data import MnistData


def _data(n: int = 40) -> MnistData:
    gen = torch.Generator().manual_seed(0)
    return MnistData(torch.rand(n, 1, 28, 28, generator=gen),
                     torch.randint(0, 10, (n,), generator=gen), "val", "synthetic", "test")


def test_evaluate_keeps_no_graph_and_restores_the_mode():
    model = nni.make_fcnn([784, 32, 10]).train()
    seen = []
    model.register_forward_hook(lambda m, i, out: seen.append(out.requires_grad))
    acc = training.evaluate(model, _data(), batch_size=16)
    assert 0.0 <= acc <= 1.0 and seen == [False, False, False]
    assert model.training


def test_memory_needed_counts_gradients_states_and_ema(monkeypatch):
    monkeypatch.setattr(training, "_resident_bytes", lambda: 1000)
    model = nn.Linear(100, 10)                       # 1,010 float32 parameters
    model.bias.requires_grad_(False)                 # 1,000 trainable
    adamw = nni.train_config("vit_tiny", "smoke").replace(optimizer="adamw", ema=True)
    assert training.memory_needed(model, adamw) == 1000 + 4 * 1000 * 3 + 4 * 1010
    sgd = adamw.replace(optimizer="sgd", momentum=0.9, ema=False)
    assert training.memory_needed(model, sgd) == 1000 + 4 * 1000 * 2
    plain = sgd.replace(momentum=0.0)
    assert training.memory_needed(model, plain) == 1000 + 4 * 1000


def test_memory_limit_and_resident_memory_are_plausible():
    limit = training.memory_limit()
    assert limit is None or 2 ** 27 < limit < 2 ** 60
    rss = training._resident_bytes()
    assert rss == 0 or 2 ** 20 < rss < (limit or 2 ** 60)


@pytest.mark.parametrize("text, size", [("2G", 2 ** 31), ("1500M", 1500 * 2 ** 20),
                                        ("2GiB", 2 ** 31), ("2 GB", 2 ** 31), ("1.5g", 3 * 2 ** 29),
                                        ("4096", 4096), ("64K", 2 ** 16)])
def test_parse_bytes(text, size):
    assert training.parse_bytes(text) == size


@pytest.mark.parametrize("text", ["", "abc", "-1G", "0", "2X", "G"])
def test_parse_bytes_refuses_what_is_not_a_size(text):
    with pytest.raises(ValueError, match="must look like '2G'"):
        training.parse_bytes(text)


def test_memory_limit_follows_the_environment(monkeypatch):
    monkeypatch.setenv("NNINVERT_MEMORY_LIMIT", "1.5G")
    assert training.memory_limit() == 3 * 2 ** 29
    monkeypatch.setenv("NNINVERT_MEMORY_LIMIT", "lots")
    with pytest.raises(ValueError, match=r"\$NNINVERT_MEMORY_LIMIT: .*'lots'"):
        training.memory_limit()


def test_progress_bar_redraws_at_most_every_mininterval_not_every_step(capsys):
    """The loss shown beside the bar must not redraw it on every step: piped into
    a log (``make book``), each redraw is a line of output."""
    cfg = nni.train_config("fcnn1", "smoke").replace(max_steps=300, batch_size=4, epochs=100)
    training.train_model(nni.make_fcnn([784, 10]), cfg, _data(), _data(), progress=True)
    err = capsys.readouterr().err
    assert 0 < err.count("step") < 30, f"{err.count('step')} redraws for 300 steps"
