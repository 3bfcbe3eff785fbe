"""Softmax inversion: exact up to the constant, the constant chosen, bad targets refused."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nninvert_lib.activations import SELU_LOWER
from nninvert_lib.errors import InversionError
from nninvert_lib.result import target_distribution
from nninvert_lib.softmax import invert_softmax, softmax_constant_fit

weights = st.lists(st.floats(1e-3, 1.0), min_size=2, max_size=12)


@settings(max_examples=80, deadline=None)
@given(w=weights)
def test_softmax_of_inverse_softmax_is_the_target(w):
    p = torch.tensor(w, dtype=torch.float64)
    p = p / p.sum()
    z = invert_softmax(p)
    torch.testing.assert_close(torch.softmax(z, dim=-1), p, rtol=1e-12, atol=1e-14)
    assert abs(float(z.sum())) < 1e-9        # centred logits by default


@settings(max_examples=40, deadline=None)
@given(w=weights, lower=st.floats(-3.0, 2.0))
def test_lower_bound_keeps_every_logit_above_it_with_the_margin(w, lower):
    p = torch.tensor(w, dtype=torch.float64)
    p = p / p.sum()
    z = invert_softmax(p, lower=lower, margin=0.25)
    assert float(z.min()) >= lower + 0.25 - 1e-9
    torch.testing.assert_close(torch.softmax(z, dim=-1), p, rtol=1e-12, atol=1e-14)


def test_paper_target_logits_lie_in_the_range_of_selu():
    z = invert_softmax(target_distribution(3, 0.9), lower=SELU_LOWER)
    assert float(z.min()) > SELU_LOWER
    assert float(z[3] - z[0]) == pytest.approx(float(torch.log(torch.tensor(0.9 / (0.1 / 9)))))


def test_bounded_range_centres_the_logits_inside_it():
    p = torch.tensor([0.3, 0.3, 0.4], dtype=torch.float64)
    z = invert_softmax(p, lower=-1.0, upper=1.0)
    assert float(z.min()) > -1 and float(z.max()) < 1
    assert float(z.max() + z.min()) == pytest.approx(0.0, abs=1e-12)


def test_batched_targets_and_explicit_shift():
    p = target_distribution([0, 4, 9])
    z = invert_softmax(p, shift=torch.tensor([0.0, 1.0, 2.0]))
    assert z.shape == (3, 10)
    torch.testing.assert_close(z - torch.log(p), torch.tensor([[0.0], [1.0], [2.0]],
                                                              dtype=torch.float64).expand(3, 10))


def test_constant_fit_is_the_nearest_point_of_the_preimage_line():
    p = target_distribution([2, 7])
    logits = torch.randn(2, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    c = softmax_constant_fit(p, logits)
    for d in (-1e-3, 1e-3):
        assert (torch.log(p) + (c + d)[:, None] - logits).norm(dim=1).gt(
            (torch.log(p) + c[:, None] - logits).norm(dim=1)).all()


@pytest.mark.parametrize("p, words", [
    ([0.5, 0.5, 0.0], "<= 0"),
    ([0.6, 0.5, -0.1], "<= 0"),
    ([0.5, float("nan"), 0.5], "NaN or inf"),
    ([0.5, float("inf"), 0.5], "NaN or inf"),
    ([0.5, 0.6, 0.1], "sum to 1"),
    ([1.0], "shape"),
])
def test_invalid_targets_raise_naming_the_problem(p, words):
    with pytest.raises(InversionError, match=words):
        invert_softmax(torch.tensor(p, dtype=torch.float64))


def test_target_of_the_wrong_length_for_the_model_raises():
    with pytest.raises(InversionError, match="model outputs 10"):
        invert_softmax(torch.full((5,), 0.2, dtype=torch.float64), num_classes=10)


def test_row_sum_tolerance_is_one_in_a_million():
    p = target_distribution(1).clone()
    p[0] += 5e-7
    invert_softmax(p)                      # within 1e-6
    p[0] += 1e-6
    with pytest.raises(InversionError, match="sum to 1"):
        invert_softmax(p)
