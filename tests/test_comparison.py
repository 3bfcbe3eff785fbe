"""Figure 3 as data: the smoke run end to end, the cache, and the claims on known tables."""
from __future__ import annotations

import math
import uuid

import matplotlib
import pandas as pd
import pytest
import torch

from nninvert_lib import comparison as f3
from nninvert_lib.errors import InversionError

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def smoke():
    return f3.figure3("smoke", progress=False, cache=False)   # always computed here


@pytest.mark.slow
def test_smoke_run_has_one_row_per_model_method_class_sample(smoke):
    s = f3.figure3_settings("smoke")
    t = smoke.table
    assert len(smoke.images) == len(t) and smoke.images.shape[1:] == (1, 28, 28)
    assert t["image"].tolist() == list(range(len(t)))
    assert not smoke.meta["failures"]
    for model, methods in s.methods.items():
        for method in methods:
            g = smoke.rows(model, method)
            per_class = s.n_samples[model] if method in f3.STOCHASTIC else 1
            assert len(g) == per_class * len(s.classes), (model, method)
            assert sorted(g["class"].unique()) == list(s.classes)
            assert (g.groupby("class")["sample"].apply(list)
                    == pd.Series({c: list(range(per_class)) for c in s.classes})).all()
    # training digits and the max-class image are training images: distance exactly 0
    assert (smoke.rows(None, "training")["nearest_distance"] == 0).all()
    assert (smoke.rows("fcnn1", "prior_max_class")["nearest_distance"] == 0).all()
    # BackPassInv verifies on the one-layer net; its images are not training images
    bpi = smoke.rows("fcnn1", "back_pass_inv")
    assert bpi["verified"].all() and (bpi["nearest_distance"] > 0).all()
    assert (bpi["max_error"] <= 1e-3).all() and (bpi["predicted"] == bpi["class"]).all()
    assert t["distance_percentile"].between(0, 100).all()
    assert t["out_of_range"].between(0, 1).all() and t["agreement"].dropna().between(0, 1).all()


@pytest.mark.slow
def test_smoke_run_is_cached_and_read_back(monkeypatch):
    # a key of its own: another process (a notebook kernel with other thread counts) may
    # have cached this run already, with float results that differ in the last bits
    key, tag = f3._cache_key, uuid.uuid4().hex[:8]
    monkeypatch.setattr(f3, "_cache_key", lambda *args: f"test-{tag}-" + key(*args))
    first = f3.figure3("smoke", progress=False)
    again = f3.figure3("smoke", progress=False)
    assert not first.meta["from_cache"] and again.meta["from_cache"]
    assert torch.equal(again.images, first.images)
    pd.testing.assert_frame_equal(again.table, first.table, check_dtype=False)


@pytest.mark.slow
def test_summary_claims_and_plot_of_the_smoke_run(smoke):
    summary = smoke.summary()
    assert len(summary) == smoke.table.groupby(["model", "method"]).ngroups
    claims = smoke.claims()
    assert len(claims) == 3 and list(claims.columns) == ["claim", "measured", "holds", "verdict",
                                                         "note"]
    assert [f3.VERDICTS[h] for h in claims["holds"]] == claims["verdict"].tolist()
    fig = f3.plot_figure3(smoke)
    assert len(fig.axes) == len(f3.PAPER_ROWS) * 3
    assert fig.axes[0].get_ylabel() == "train-data"


def _figure(images_by_row, random_likeness, verified=None):
    """A hand-made Figure3: rows of (model, method, class) with given images and scores."""
    rows, imgs = [], []
    for i, ((model, method, cls), img) in enumerate(images_by_row):
        rows.append({"model": model, "method": method, "class": cls, "sample": 0, "image": i,
                     "verified": True if verified is None else verified[i],
                     "nearest_distance": float(img.norm()), "random_likeness": random_likeness[i]})
        imgs.append(img.reshape(1, 28, 28))
    table = pd.DataFrame(rows)
    table["sample"] = table.groupby(["model", "method", "class"]).cumcount()
    for col in ("distance_percentile", "random_likeness_corr", "out_of_range", "agreement",
                "max_error", "p_class", "predicted"):
        table[col] = 0.0
    return f3.Figure3(table, torch.stack(imgs), {})


def test_summary_diversity_matches_a_direct_computation():
    a, b, c = torch.zeros(784), torch.zeros(784), torch.zeros(784)
    b[0], c[1] = 3.0, 4.0   # |a-b| = 3, |a-c| = 4, |b-c| = 5: mean 4
    fig = _figure([(("fcnn1", "back_pass_inv", 0), a), (("fcnn1", "back_pass_inv", 0), b),
                   (("fcnn1", "back_pass_inv", 0), c)], [0.1, 0.2, 0.3])
    row = fig.summary().iloc[0]
    assert row["pairwise distance"] == pytest.approx(4.0)
    assert row["random-likeness"] == pytest.approx(0.2) and row["n"] == 3


def test_claims_judge_known_tables():
    img = lambda v: torch.full((784,), v)   # noqa: E731  nearest distance = 28·v
    entries = [(("fcnn1", "prior_gradient", 0), img(0.1)), (("fcnn1", "back_pass_inv", 0), img(0.5)),
               (("fcnn2", "back_pass_inv", 0), img(0.5)), (("fcnn6", "back_pass_inv", 0), img(0.5)),
               (("vit_tiny", "forward_pass_inv", 0), img(0.5)),
               (("dinov3_base", "forward_pass_inv", 0), img(0.5))]
    holds = f3.Figure3.claims(_figure(entries, [0.0, 0.2, 0.5, 0.9, 0.6, 0.4]))["holds"].tolist()
    assert holds == [True, True, False]
    c = _figure(entries, [0.0, 0.5, 0.2, 0.9, 0.3, 0.4]).claims()   # depth order broken
    assert c["holds"].tolist() == [True, False, True]
    assert math.isclose(float(c["measured"].iloc[1].split("FCNN-2 ")[1].split(",")[0]), 0.2)
    # an unverified new image does not count: FCNN-1 has none, so neither claim can be told
    c = _figure(entries, [0.0, 0.2, 0.5, 0.9, 0.6, 0.4],
                verified=[True, False, True, True, True, True]).claims()
    assert c["holds"].iloc[0] is None and c["holds"].iloc[1] is None
    # in words, and still readable row by row (iterrows turns None into NaN)
    assert [row["verdict"] for _, row in c.iterrows()] == ["cannot be told", "cannot be told",
                                                          "does not hold"]


@pytest.mark.parametrize("changes,match", [
    ({"methods": {"vit_tiny": ("back_pass_inv",)}}, "transformer"),
    ({"methods": {"fcnn1": ("simonyan",)}}, "unknown method"),
    ({"methods": {"resnet": ("forward_pass_inv",)}}, "unknown model"),
    ({"classes": (3, 11)}, "digits"),
    ({"p": 1.5}, "p must"),
    ({"n_samples": {"fcnn1": 0}}, "n_samples"),
])
def test_invalid_settings_raise(changes, match):
    with pytest.raises(InversionError, match=match):
        f3.figure3_settings("smoke", **changes)


def test_unknown_profile_raises():
    with pytest.raises(InversionError, match="profile"):
        f3.figure3_settings("huge")


def test_cache_key_follows_the_methods_source_and_defaults(monkeypatch):
    """Cached Figure 3 images are reused only by the code that computed them."""
    settings = f3.Figure3Settings(profile="smoke")
    key = f3._cache_key(settings, ["fcnn1"], "mnist")
    assert key == f3._cache_key(settings, ["fcnn1"], "mnist")
    monkeypatch.setattr(f3, "_methods_source", lambda: "another version")
    assert f3._cache_key(settings, ["fcnn1"], "mnist") != key
    monkeypatch.undo()
    monkeypatch.setattr(f3, "DEFAULT_CHORD", f3.DEFAULT_CHORD + 1)
    assert f3._cache_key(settings, ["fcnn1"], "mnist") != key


def test_methods_source_hash_ignores_docstrings_but_not_code(monkeypatch):
    from nninvert_lib import softmax

    real = f3.inspect.getsource
    key = f3._methods_source()

    def edited(text):
        return lambda obj: text if obj is softmax else real(obj)

    doc = real(softmax).replace('"""', '"""Reworded. ', 1)
    monkeypatch.setattr(f3.inspect, "getsource", edited(doc))
    assert f3._methods_source() == key
    code = real(softmax) + "\nEXTRA_CONSTANT = 1\n"
    monkeypatch.setattr(f3.inspect, "getsource", edited(code))
    assert f3._methods_source() != key


def test_a_model_that_cannot_be_trained_is_left_out_and_not_cached(monkeypatch):
    """Figure 3 on a machine that cannot train DINOv3-Base: its rows are absent, the
    reason is in meta["skipped"], and the partial run is not written to the cache."""
    from nninvert_lib.errors import InsufficientMemoryError

    real = f3.load_model

    def load(name, *args, **kw):
        if name == "dinov3_base":
            raise InsufficientMemoryError("training dinov3_base needs at least 2.7 GiB")
        return real(name, *args, **kw)

    key, tag = f3._cache_key, uuid.uuid4().hex[:8]
    monkeypatch.setattr(f3, "_cache_key", lambda *args: f"test-{tag}-" + key(*args))
    monkeypatch.setattr(f3, "load_model", load)
    monkeypatch.setattr(f3, "_save", lambda *a: pytest.fail("a partial run was cached"))
    settings = f3.figure3_settings("smoke", classes=(0,),
                                   methods={"fcnn1": ("back_pass_inv",),
                                            "dinov3_base": ("forward_pass_inv",)})
    fig = f3.figure3("smoke", settings, progress=False)
    assert fig.meta["skipped"] == {"dinov3_base": "training dinov3_base needs at least 2.7 GiB"}
    assert not fig.meta["failures"]
    assert len(fig.rows("fcnn1", "back_pass_inv")) == 2 and fig.rows("dinov3_base",
                                                                     "forward_pass_inv").empty
    assert fig.table["agreement"].dropna().between(0, 1).all()
    claims = fig.claims()
    assert claims["holds"].iloc[2] is None  # DINOv3 against ViT-tiny: cannot be told
