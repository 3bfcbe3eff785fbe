"""Profiles encode the paper's recipes (Table I and §IV-B)."""
from __future__ import annotations

import pytest

import nninvert_lib as nni


@pytest.mark.parametrize("name", ["fcnn1", "fcnn2", "fcnn6"])
def test_paper_fcnn_recipe(name):
    c = nni.train_config(name, "paper")
    assert (c.optimizer, c.lr, c.momentum, c.epochs) == ("sgd", 0.001, 0.9, 20)
    assert c.max_train_samples is None and c.max_steps is None


@pytest.mark.parametrize("name", ["vit_tiny", "dinov3_base"])
def test_paper_vit_recipe_matches_table_one(name):
    c = nni.train_config(name, "paper")
    assert (c.optimizer, c.batch_size, c.epochs, c.ema, c.ema_warmup) == ("adamw", 32, 32, True, 500)
    assert c.patch_size == 4 and c.pretrained


def test_quick_fcnns_are_the_paper_recipe():
    for name in ("fcnn1", "fcnn2", "fcnn6"):
        assert nni.train_config(name, "quick") == nni.train_config(name, "paper")


def test_unknown_profile_or_model_is_named():
    with pytest.raises(ValueError, match="profile must be one of"):
        nni.train_config("fcnn1", "fast")
    with pytest.raises(ValueError, match="model must be one of"):
        nni.train_config("lenet", "quick")


def test_warmup_then_cosine_learning_rate(monkeypatch):
    """The ViT schedule rises linearly over the warm-up, then decays to zero."""
    import torch

    from nninvert_lib import training

    seen = []
    real = torch.optim.lr_scheduler.LambdaLR

    def spy(opt, fn):
        seen.append(fn)
        return real(opt, fn)

    monkeypatch.setattr(torch.optim.lr_scheduler, "LambdaLR", spy)
    cfg = nni.train_config("fcnn1", "smoke").replace(schedule="cosine", warmup=0.25, max_steps=8, batch_size=8)
    data = nni.MnistData(torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,)), "train", "t", "t")
    training.train_model(nni.make_fcnn([784, 10]), cfg, data, data, progress=False)
    f = seen[0]
    assert [round(f(s), 3) for s in range(3)] == [0.5, 1.0, 1.0]  # warm = 2 steps
    assert f(8) == 0.0 and 0 < f(5) < 1
