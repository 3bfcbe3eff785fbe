"""Thresholded pseudoinverse and null-space sampling of a linear layer."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nninvert_lib.errors import InversionError
from nninvert_lib.linear import sample_null_space, thresholded_pinv


def _matrix_with_singular_values(s, out_f, in_f, seed=0):
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(out_f, out_f, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(in_f, in_f, generator=g, dtype=torch.float64))
    sig = torch.zeros(out_f, in_f, dtype=torch.float64)
    sig[range(len(s)), range(len(s))] = torch.tensor(s, dtype=torch.float64)
    return u @ sig @ v.T


def test_kept_rank_and_condition_numbers_before_and_after_thresholding():
    w = _matrix_with_singular_values([10.0, 5.0, 1.0, 0.01], 4, 7)
    inv = thresholded_pinv(w, max_cond=100.0)
    assert inv.rank == 3
    assert inv.cond_before == pytest.approx(1000.0)
    assert inv.cond_after == pytest.approx(10.0)
    assert inv.null_basis.shape == (7, 4)          # 7 - 3: dropped + never seen directions
    torch.testing.assert_close(inv.null_basis.T @ inv.null_basis, torch.eye(4, dtype=torch.float64))


@settings(max_examples=25, deadline=None)
@given(out_f=st.integers(1, 8), extra=st.integers(0, 8), seed=st.integers(0, 10_000),
       max_cond=st.sampled_from([2.0, 10.0, 100.0]))
def test_weight_times_pinv_part_is_the_projection_onto_the_kept_column_space(out_f, extra, seed,
                                                                              max_cond):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, out_f + extra, generator=g, dtype=torch.float64)
    inv = thresholded_pinv(w, max_cond)
    rhs = torch.randn(3, out_f, generator=g, dtype=torch.float64)      # z - b
    x_p = inv.solve(rhs)
    projection = rhs @ inv.col_basis @ inv.col_basis.T
    torch.testing.assert_close(x_p @ w.T, projection, rtol=1e-9, atol=1e-9)
    assert inv.cond_after <= max_cond + 1e-9


def test_null_space_vectors_map_to_zero_when_nothing_is_dropped():
    w = torch.randn(16, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    inv = thresholded_pinv(w, 1e6)
    assert inv.rank == 16 and inv.null_dim == 24
    assert (w @ inv.null_basis).abs().max() < 1e-12


def test_dropped_directions_map_to_at_most_sigma_max_over_max_cond():
    w = _matrix_with_singular_values([10.0, 5.0, 1.0, 0.01], 4, 7)
    inv = thresholded_pinv(w, 100.0)
    assert torch.linalg.matrix_norm(w @ inv.null_basis, ord=2) <= 10.0 / 100.0


def test_samples_keep_the_layer_output_and_step_std_times_the_norm():
    w = torch.randn(8, 20, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    inv = thresholded_pinv(w)
    x_p = inv.solve(torch.randn(5, 8, generator=torch.Generator().manual_seed(3),
                                dtype=torch.float64))
    x = sample_null_space(x_p, inv.null_basis, std=0.1,
                          generator=torch.Generator().manual_seed(4))
    assert x.shape == x_p.shape
    torch.testing.assert_close(x @ w.T, x_p @ w.T, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close((x - x_p).norm(dim=1), 0.1 * x_p.norm(dim=1))


def test_same_generator_seed_gives_bit_identical_samples():
    w = torch.randn(6, 30, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    inv = thresholded_pinv(w)
    x_p = inv.solve(torch.ones(4, 6, dtype=torch.float64))
    a = sample_null_space(x_p, inv.null_basis, 0.1, torch.Generator().manual_seed(7))
    b = sample_null_space(x_p, inv.null_basis, 0.1, torch.Generator().manual_seed(7))
    c = sample_null_space(x_p, inv.null_basis, 0.1, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.cdist(a, a).add(torch.eye(4, dtype=torch.float64)).min() > 0  # pairwise distinct


def test_expanding_layer_has_no_null_space_and_gives_least_squares():
    w = torch.randn(12, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    inv = thresholded_pinv(w)
    assert inv.null_dim == 0
    rhs = torch.randn(12, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    expected = torch.linalg.lstsq(w, rhs[:, None]).solution[:, 0]
    torch.testing.assert_close(inv.solve(rhs), expected)
    assert torch.equal(sample_null_space(inv.solve(rhs), inv.null_basis), inv.solve(rhs))


@pytest.mark.parametrize("weight, max_cond, words", [
    (torch.ones(3, 4), 0.5, "max_cond"),
    (torch.full((3, 4), float("nan")), 100.0, "NaN"),
    (torch.zeros(3, 4), 100.0, "all zeros"),
    (torch.ones(3), 100.0, "2-D"),
])
def test_invalid_weights_raise(weight, max_cond, words):
    with pytest.raises(InversionError, match=words):
        thresholded_pinv(weight, max_cond)
