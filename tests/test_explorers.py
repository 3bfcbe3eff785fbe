"""The book's ipywidgets explorers, driven from Python on tiny random models.

Each test sets a control's ``value`` as a reader's click would and checks what
the callback changed: ``.result``, ``.figure`` and the status line.
"""
from __future__ import annotations

import copy
import gc
import weakref

import matplotlib

matplotlib.use("Agg")

import ipywidgets as widgets  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import nninvert_lib as nni  # noqa: E402
from nninvert_lib import explorers  # noqa: E402
from nninvert_lib.errors import InversionError  # noqa: E402
from nninvert_lib.explorers import lm_explorer, null_space_explorer  # noqa: E402
from nninvert_lib.measures import mean_pairwise_distance  # noqa: E402
from nninvert_lib.result import target_distribution, verify  # noqa: E402


def _seeded(fn, seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn()


def _small_fcnn(seed: int = 0) -> nn.Sequential:
    return _seeded(lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.SELU(),
                                         nn.Linear(32, 10)), seed)


@pytest.fixture
def fcnn():
    return _small_fcnn(0)


@pytest.fixture
def explorer(fcnn):
    return null_space_explorer({"fcnn2": fcnn}, n_samples=6)


# --------------------------------------------------------------------------- null space


def test_null_space_explorer_starts_with_verified_samples_and_a_figure(explorer):
    res = explorer.result
    assert res.inputs.shape == (6, 1, 28, 28) and res.converged.all()
    assert torch.allclose(res.target[0], target_distribution(0, 0.9))
    assert "6 / 6" in explorer.status.value and explorer.error is None
    assert isinstance(explorer.widget, widgets.VBox)
    images = [ax for ax in explorer.figure.axes if ax.images]
    assert len(images) == 6


def test_changing_the_class_reinverts_for_that_class(explorer, fcnn):
    before = explorer.result
    explorer.cls.value = 7
    res = explorer.result
    assert res is not before
    assert (res.target.argmax(dim=1) == 7).all() and torch.allclose(res.target[0, 7],
                                                                     torch.tensor(0.9).double())
    assert res.converged.all() and "6 / 6" in explorer.status.value
    probs, ok = verify(fcnn, res.inputs, res.target)
    assert ok.all() and (probs.argmax(dim=1) == 7).all()


def test_probability_bars_show_the_samples_mean_output(explorer):
    explorer.cls.value = 4
    bars = [ax for ax in explorer.figure.axes if ax.patches][0]
    heights = torch.tensor([p.get_height() for p in bars.patches], dtype=torch.float64)
    assert torch.allclose(heights, explorer.result.probs.mean(dim=0), atol=1e-12)
    assert heights.argmax() == 4


def test_changing_p_changes_the_target(explorer):
    explorer.p.value = 0.5
    res = explorer.result
    assert torch.allclose(res.target[:, 0], torch.full((6,), 0.5, dtype=torch.float64))
    assert res.converged.all()
    assert (res.probs[:, 0] - 0.5).abs().max() <= 1e-3


def test_larger_std_spreads_the_samples_further(explorer):
    explorer.std.value = 0.01
    near = mean_pairwise_distance(explorer.result.inputs)
    assert explorer.result.info["std"] == pytest.approx(0.01)
    explorer.std.value = 1.0
    far = mean_pairwise_distance(explorer.result.inputs)
    assert explorer.result.converged.all()
    assert far > 3 * near


def test_max_cond_reaches_the_inversion(explorer):
    explorer.max_cond.value = 10.0
    assert explorer.result.info["max_cond"] == pytest.approx(10.0)


def test_model_dropdown_switches_models_and_shows_display_names(fcnn):
    other = _small_fcnn(1)
    ex = null_space_explorer({"fcnn2": fcnn, "other": other}, n_samples=4)
    assert [label for label, _ in ex.model.options] == ["FCNN-2", "other"]
    first = ex.result
    ex.model.value = "other"
    assert ex.result is not first and ex.result.converged.all()
    assert verify(other, ex.result.inputs, ex.result.target)[1].all()
    assert not verify(fcnn, ex.result.inputs, ex.result.target)[1].any()


def test_an_inversion_error_goes_to_the_status_line_and_does_not_raise(fcnn):
    relu = _seeded(lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(),
                                         nn.Linear(16, 10)))
    ex = null_space_explorer({"fcnn2": fcnn, "relu": relu}, n_samples=4)
    ex.model.value = "relu"  # BackPassInv cannot invert a ReLU
    assert ex.result is None and ex.figure is None
    assert "ReLU" in ex.error and "Cannot invert" in ex.status.value
    assert "ReLU" in ex.status.value
    ex.model.value = "fcnn2"
    assert ex.error is None and ex.result.converged.all() and ex.figure is not None


def test_an_unknown_class_goes_to_the_status_line(fcnn):
    ex = null_space_explorer({"fcnn2": fcnn}, classes=[0, 12], n_samples=2)
    ex.cls.value = 12
    assert ex.result is None and "0..9" in ex.error and "0..9" in ex.status.value


def test_an_unreachable_target_is_reported_as_unverified_samples():
    # tanh after the last layer bounds the logits to (-1, 1): p = 0.99 is out of reach
    tanh = _seeded(lambda: nni.make_fcnn([784, 16, 10], activation="tanh"))
    ex = null_space_explorer({"tanh": tanh}, n_samples=2, p=0.5, strategy="paper")
    ex.p.value = 0.99
    assert ex.error is None and not ex.result.converged.any()
    assert "0 / 2" in ex.status.value and "range" in ex.status.value


def test_replaced_figures_are_released(explorer):
    open_before = plt.get_fignums()
    old = weakref.ref(explorer.figure)
    explorer.cls.value = 1
    explorer.std.value = 0.2
    gc.collect()
    assert old() is None
    assert plt.get_fignums() == open_before


def test_invalid_initial_values_raise(fcnn):
    with pytest.raises(InversionError, match="std"):
        null_space_explorer({"m": fcnn}, std=0.0)
    with pytest.raises(InversionError, match="models"):
        null_space_explorer({})


def test_explorers_display_their_widget(explorer, fcnn, monkeypatch):
    shown = []
    monkeypatch.setattr(explorers, "display", shown.append)
    explorer._ipython_display_()
    lm_explorer(fcnn, 2, max_iter=5)._ipython_display_()
    assert shown[0] is explorer.widget and isinstance(shown[-1], widgets.VBox)


# --------------------------------------------------------------------------- LM


@pytest.fixture
def lm(fcnn):
    return lm_explorer(fcnn, 3, seed=0)


def test_lm_iterate_zero_is_the_random_start_of_forward_pass_inv(lm, fcnn):
    start = torch.rand((1, 1, 28, 28), generator=torch.Generator().manual_seed(0),
                       dtype=torch.float64)
    assert torch.equal(lm.iterates[0], start[0])
    same = nni.forward_pass_inv(fcnn, target_distribution(3, 0.9), seed=0, restarts=0,
                                dtype=torch.float64)
    assert torch.equal(lm.iterates[-1].to(same.inputs.dtype), same.inputs[0])


def test_lm_last_iterate_verifies_for_an_easy_target(lm):
    n = int(lm.result.info["iterations"][0])
    assert n >= 2 and lm.iterates.shape == (n + 1, 1, 28, 28) and lm.probs.shape == (n + 1, 10)
    assert lm.iteration.max == n and lm.iteration.value == n
    assert bool(lm.verified[-1]) and not bool(lm.verified[0])
    assert (lm.probs[-1] - lm.target).abs().max() <= 1e-3
    assert "verified" in lm.status.value and "not verified" not in lm.status.value


def test_lm_residual_norms_are_those_of_the_iterates(lm, fcnn):
    # the logit residual's norm is that of z - log p with its mean removed
    with torch.no_grad():
        z = copy.deepcopy(fcnn).double()(lm.iterates)
    c = z - lm.target.log()
    norms = (c - c.mean(dim=1, keepdim=True)).norm(dim=1)
    assert torch.allclose(norms, lm.residual_norms, rtol=1e-9, atol=1e-12)
    assert torch.equal(lm.residual_norms,
                       lm.result.info["residual_history"][0, : len(lm.iterates)])
    assert (lm.residual_norms[1:] < lm.residual_norms[:-1]).all()


def test_lm_slider_updates_figure_and_status(lm):
    n = lm.iteration.max
    for k in (0, 1, n):
        old = lm.figure
        lm.iteration.value = k
        assert lm.figure is not old
        assert f"iteration <b>{k} / {n}</b>" in lm.status.value
        assert f"‖r‖ = {float(lm.residual_norms[k]):.3e}" in lm.status.value
        image_ax, bar_ax, res_ax = lm.figure.axes[:3]
        shown = torch.as_tensor(image_ax.images[0].get_array().data)
        assert torch.equal(shown, lm.iterates[k, 0])
        heights = torch.tensor([p.get_height() for p in bar_ax.patches], dtype=torch.float64)
        assert torch.allclose(heights, lm.probs[k], atol=1e-12)
        marker = res_ax.lines[1]  # the current iteration, on the ‖r‖ curve
        assert list(marker.get_xdata()) == [k]
        assert marker.get_ydata()[0] == pytest.approx(float(lm.residual_norms[k]))
    lm.iteration.value = 0
    assert "not verified" in lm.status.value


def test_lm_explorer_reports_an_unfinished_run():
    model = _small_fcnn(2)
    ex = lm_explorer(model, target_distribution(5, 0.99), max_iter=1)
    assert ex.iteration.max == 1 and not bool(ex.verified[-1])
    assert "not verified" in ex.status.value and "max_iter=1 reached" in ex.status.value


def test_lm_explorer_rejects_options_it_sets(fcnn):
    with pytest.raises(InversionError, match="record_inputs"):
        lm_explorer(fcnn, 3, record_inputs=False)
