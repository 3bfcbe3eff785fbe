"""Tests for nninvert_lib.frontier: the continuation in the target probability."""
import math

import pytest
import torch
from torch import nn

import nninvert_lib as nni


class BoundedLogits(nn.Module):
    """``a · tanh(W x)``: every logit lies in ``(-a, a)``, so ``target_distribution(c, p)``
    is reachable exactly for ``p < e^{2a} / (e^{2a} + K - 1)`` (others at ``-a``, ``c`` at
    ``a``)."""

    def __init__(self, d: int = 20, k: int = 10, a: float = 2.0):
        super().__init__()
        self.lin = nn.Linear(d, k)
        self.a = a
        self.register_buffer("offset", torch.zeros(k))

    def forward(self, x):
        return self.a * torch.tanh(self.lin(x.flatten(1))) + self.offset


def _ceiling(a: float = 2.0, k: int = 10) -> float:
    return math.exp(2 * a) / (math.exp(2 * a) + k - 1)


@pytest.fixture
def bounded():
    torch.manual_seed(0)
    return BoundedLogits().double().eval()


def test_peak_frontier_stops_below_a_bounded_models_ceiling(bounded):
    ceiling = _ceiling()  # 0.858
    fr = nni.peak_frontier(bounded, classes=[0, 3, 7], p_start=0.5, step=0.05, min_step=0.005,
                           n_samples=3, input_shape=(20,), seed=0)
    assert torch.all(fr.highest < ceiling)
    assert torch.all(fr.highest > ceiling - 0.01)  # the continuation gets close to it
    assert torch.all(fr.stalled_at > fr.highest)
    assert fr.reaches(0.8).all() and not fr.reaches(0.9).any()


def test_every_reported_peak_is_proved_by_its_inputs(bounded):
    fr = nni.peak_frontier(bounded, classes=[1, 2], p_start=0.5, step=0.1, min_step=0.05,
                           n_samples=2, input_shape=(20,), seed=1)
    for c, p, x in zip(fr.classes, fr.highest.tolist(), fr.inputs):
        assert len(x) > 0
        ok = nni.verify(bounded, x, nni.target_distribution([c] * len(x), p))[1]
        assert ok.all()
    rows = fr.rows()
    assert [r["class"] for r in rows] == [1, 2] and all(r["verified"] >= 1 for r in rows)
    assert fr.history[0] == (1, 0.5, fr.history[0][2], 2)


def test_peak_frontier_on_a_vit_reaches_its_start(tiny_vit):
    fr = nni.peak_frontier(tiny_vit, classes=[0, 1], p_start=0.5, step=0.2, min_step=0.1,
                           p_max=0.9, n_samples=2, max_iter=20, seed=0, input_shape=(1, 28, 28))
    assert not torch.isnan(fr.highest).any()
    for c, p, x in zip(fr.classes, fr.highest.tolist(), fr.inputs):
        assert nni.verify(tiny_vit, x, nni.target_distribution([c] * len(x), p))[1].all()


def test_unreached_start_is_reported_not_raised(bounded):
    # 0.95 is above the ceiling: nothing verifies, and the result says so
    fr = nni.peak_frontier(bounded, classes=[4], p_start=0.95, p_max=0.99, n_samples=2,
                           input_shape=(20,), max_iter=10)
    assert torch.isnan(fr.highest).all() and torch.isnan(fr.stalled_at).all()
    assert len(fr.inputs[0]) == 0 and not fr.reaches(0.5).any()
    # the start rounds went one step below, one above, ... within (0, p_max]
    assert [(c, round(p, 6), v) for c, p, v, _ in fr.history] == [
        (4, 0.95, 0), (4, 0.93, 0), (4, 0.97, 0), (4, 0.91, 0), (4, 0.99, 0)]
    assert fr.info["start_rounds"] == 5 and fr.info["rounds"] == 0


def test_a_missed_start_is_tried_again_below_and_above():
    """Logits ``0.5·tanh(Wx) + 4·e_2``: class 2 leads by 3 to 5, so target_distribution(2, p)
    is reachable exactly for ``e³/(e³ + 9) < p < e⁵/(e⁵ + 9)`` (0.691 to 0.943)."""
    torch.manual_seed(0)
    model = BoundedLogits(a=0.5).double().eval()
    model.offset[2] = 4.0
    low, high = math.exp(3) / (math.exp(3) + 9), math.exp(5) / (math.exp(5) + 9)
    fr = nni.peak_frontier(model, classes=[2], p_start=0.5, step=0.1, min_step=0.01,
                           n_samples=2, input_shape=(20,), seed=0)
    starts = [(round(p, 6), v) for c, p, v, _ in fr.history[:5]]
    assert starts[:4] == [(0.5, 0), (0.4, 0), (0.6, 0), (0.3, 0)]
    assert starts[4][0] == 0.7 > low and starts[4][1] >= 1 and fr.info["start_p"] == [0.7]
    assert 0.7 <= float(fr.highest[0]) < high


def test_same_seed_same_frontier(bounded):
    kw = dict(classes=[5], p_start=0.6, step=0.1, min_step=0.05, n_samples=2, input_shape=(20,))
    a, b = nni.peak_frontier(bounded, seed=3, **kw), nni.peak_frontier(bounded, seed=3, **kw)
    assert torch.equal(a.highest, b.highest) and torch.equal(a.inputs[0], b.inputs[0])


@pytest.mark.parametrize("kw, match", [
    (dict(p_start=1.0), "p_start"),
    (dict(p_start=0.9, p_max=0.8), "larger than p_start"),
    (dict(step=0.01, min_step=0.02), "min_step"),
    (dict(step=0.0), "step"),
    (dict(n_samples=0), "n_samples"),
    (dict(start_tries=0), "start_tries"),
    (dict(classes=[10]), "0..9"),
    (dict(classes=[]), "at least one class"),
    (dict(restarts=2), "without restarts"),
])
def test_bad_arguments_raise(bounded, kw, match):
    with pytest.raises(nni.InversionError, match=match):
        nni.peak_frontier(bounded, input_shape=(20,), **kw)
