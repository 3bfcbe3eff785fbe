"""Activation inverses: exact on each range, refused outside it, conditioning reported."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nninvert_lib.activations import (SELU_ALPHA, SELU_LAMBDA, SELU_LOWER, activation_condition,
                                      invert_activation)
from nninvert_lib.errors import InversionError

INVERTIBLE = [nn.SELU(), nn.LeakyReLU(0.01), nn.LeakyReLU(0.3), nn.ELU(), nn.ELU(0.5),
              nn.Tanh(), nn.Sigmoid(), nn.Identity()]

pre_activations = st.lists(st.floats(-8.0, 8.0, allow_nan=False), min_size=1, max_size=12)


@pytest.mark.parametrize("act", INVERTIBLE, ids=lambda a: repr(a))
@settings(max_examples=40, deadline=None)
@given(u=pre_activations)
def test_activation_of_inverse_returns_the_activation_values(act, u):
    u = torch.tensor(u, dtype=torch.float64)
    y = act(u)
    if isinstance(act, (nn.Tanh, nn.Sigmoid)):
        y = y[(y.abs() < 1 - 1e-9) & (y > (-1 if isinstance(act, nn.Tanh) else 1e-9))]
        if y.numel() == 0:
            return
    x = invert_activation(act, y, max_cond=None)
    torch.testing.assert_close(act(x), y, rtol=1e-9, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(y=st.floats(SELU_LOWER + 1e-6, 50.0))
def test_selu_inverse_is_y_over_lambda_above_zero_and_log1p_below(y):
    x = float(invert_activation("selu", torch.tensor([y], dtype=torch.float64), max_cond=None))
    expected = y / SELU_LAMBDA if y > 0 else math.log1p(y / (SELU_LAMBDA * SELU_ALPHA))
    assert x == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_selu_constants_are_the_ones_torch_uses():
    u = torch.linspace(-5, 5, 101, dtype=torch.float64)
    mine = SELU_LAMBDA * torch.where(u > 0, u, SELU_ALPHA * torch.expm1(u))
    torch.testing.assert_close(nn.SELU()(u), mine)
    assert SELU_LOWER == pytest.approx(-1.7581, abs=1e-4)


def test_names_are_accepted_like_modules():
    y = torch.tensor([-0.5, 0.2], dtype=torch.float64)
    torch.testing.assert_close(invert_activation("LeakyReLU", y), invert_activation(nn.LeakyReLU(), y))
    torch.testing.assert_close(invert_activation("selu", y), invert_activation(nn.SELU(), y))


@pytest.mark.parametrize("act, y, words", [
    (nn.SELU(), [0.5, SELU_LOWER], "outside the range"),
    (nn.SELU(), [-2.0], "outside the range"),
    (nn.ELU(), [-1.0], "outside the range"),
    (nn.Tanh(), [1.0], "outside the range"),
    (nn.Sigmoid(), [0.0], "outside the range"),
    (nn.SELU(), [float("nan")], "NaN"),
    (nn.LeakyReLU(), [float("inf")], "NaN or inf"),
])
def test_values_outside_the_range_raise_naming_the_range(act, y, words):
    with pytest.raises(InversionError, match=words):
        invert_activation(act, torch.tensor(y, dtype=torch.float64))


def test_ill_conditioned_inverse_raises_unless_allowed():
    y = torch.tensor([1.0, SELU_LOWER + 1e-12], dtype=torch.float64)
    with pytest.raises(InversionError, match="ill-conditioned"):
        invert_activation("selu", y)
    u = invert_activation("selu", y, max_cond=None)
    assert torch.isfinite(u).all()


@pytest.mark.parametrize("act", [nn.ReLU(), nn.GELU(), "relu", "gelu"])
def test_relu_and_gelu_are_refused_naming_forward_pass_inv(act):
    with pytest.raises(InversionError, match="forward_pass_inv"):
        invert_activation(act, torch.tensor([0.5]))


def test_leaky_relu_with_non_positive_slope_is_refused():
    with pytest.raises(InversionError, match="slope must be > 0"):
        invert_activation(nn.LeakyReLU(0.0), torch.tensor([0.5]))


def test_leaky_relu_condition_is_one_single_signed_and_up_to_one_over_slope_mixed():
    act = nn.LeakyReLU(0.1)
    pos = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert float(activation_condition(act, pos)) == pytest.approx(1.0)
    assert float(activation_condition(act, -pos)) == pytest.approx(1.0)
    mixed = torch.tensor([1.0, -1e-3], dtype=torch.float64)
    k = float(activation_condition(act, mixed))
    assert 1.0 < k <= 10.0 and k == pytest.approx(10.0, rel=1e-3)


def test_selu_condition_grows_without_bound_towards_minus_lambda_alpha():
    gaps = [1.0, 1e-2, 1e-4, 1e-6, 1e-8]
    ks = [float(activation_condition("selu", torch.tensor([0.5, SELU_LOWER + g],
                                                          dtype=torch.float64))) for g in gaps]
    assert all(b > a for a, b in zip(ks, ks[1:]))
    assert ks[-1] > 1e6


def test_condition_is_reported_per_vector_of_a_batch():
    y = torch.tensor([[0.1, 0.2], [0.1, SELU_LOWER + 1e-5]], dtype=torch.float64)
    u, k = invert_activation("selu", y, return_cond=True)
    assert u.shape == (2, 2) and k.shape == (2,)
    assert k[1] > 100 * k[0]
    assert torch.isinf(activation_condition("selu", torch.tensor([[-3.0, 0.0]])))[0]
