"""Targets, results and the checks on a model's outputs (``nninvert_lib.result``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nninvert_lib.errors import InversionError
from nninvert_lib.result import (InversionResult, check_logits, check_target,
                                 prescribed_distribution, target_distribution, verify)


def test_probabilities_are_refused_with_the_remedy():
    probs = torch.softmax(torch.randn(3, 10, generator=torch.Generator().manual_seed(0)), dim=1)
    with pytest.raises(InversionError, match=r"probabilities.*model\[:-1\]"):
        check_logits(probs)
    with pytest.raises(InversionError, match="probabilities"):
        check_logits(probs.float())     # float32 rows sum to 1 only within rounding


@pytest.mark.parametrize("out", [
    torch.randn(3, 10, generator=torch.Generator().manual_seed(0)),     # logits
    torch.log_softmax(torch.randn(3, 10), dim=1),                       # log-probabilities
    torch.full((2, 10), 0.2),                                           # >= 0, rows sum to 2
    torch.empty(0, 10),                                                 # nothing to judge
])
def test_logits_and_log_probabilities_pass(out):
    check_logits(out)


@pytest.mark.parametrize("cls, shape", [
    (3, (10,)), (np.int64(3), (10,)), (torch.tensor(3), (10,)),
    ([1, 2], (2, 10)), (np.array([1, 2]), (2, 10)), (torch.tensor([1, 2]), (2, 10)),
    (range(3), (3, 10)),
])
def test_target_distribution_takes_ints_of_any_kind(cls, shape):
    t = target_distribution(cls, p=np.float32(0.5))
    assert t.shape == shape and t.dtype == torch.float64
    assert torch.allclose(t.reshape(-1, 10).sum(dim=1), torch.ones(1, dtype=torch.float64))
    assert (t.reshape(-1, 10).max(dim=1).values == 0.5).all()


@pytest.mark.parametrize("cls", ["3", "12", 3.0, [1.5], None, torch.tensor([1.0])])
def test_target_distribution_refuses_classes_that_are_not_ints(cls):
    """A string is not read digit by digit ("12" is not classes 1 and 2)."""
    with pytest.raises(InversionError, match="cls must be a class index"):
        target_distribution(cls)


@pytest.mark.parametrize("p", ["0.9", [0.9], True, 1.0, 0.0, float("nan"), None])
def test_target_distribution_refuses_a_p_that_is_not_a_probability(p):
    with pytest.raises(InversionError, match="p must be a number strictly between 0 and 1"):
        target_distribution(2, p=p)


def test_prescribed_distribution_spreads_the_rest_over_the_classes_not_named():
    t = prescribed_distribution({3: 0.45, np.int64(8): torch.tensor(0.45)})
    assert t.shape == (10,) and t.dtype == torch.float64
    assert t[3] == 0.45 and t[8] == torch.tensor(0.45).item()    # a float32 0.45
    assert torch.allclose(t[[0, 1, 2, 4, 5, 6, 7, 9]], torch.full((8,), 0.0125, dtype=torch.float64))
    check_target(t)                         # a valid target for every method
    assert torch.equal(prescribed_distribution({4: 0.9}), target_distribution(4, 0.9))
    full = prescribed_distribution({c: 0.25 for c in range(4)}, num_classes=4)
    assert torch.equal(full, torch.full((4,), 0.25, dtype=torch.float64))


@pytest.mark.parametrize("probs, message", [
    ({}, "non-empty mapping"),
    ([0.5, 0.5], "non-empty mapping"),
    ({10: 0.5}, r"classes must lie in 0..9, got 10"),
    ({-1: 0.5}, r"classes must lie in 0..9"),
    ({"3": 0.5}, "classes must be ints"),
    ({3: 0.0}, "class 3 must be a number strictly between 0 and 1"),
    ({3: 1.0}, "class 3 must be a number strictly between 0 and 1"),
    ({3: float("nan")}, "strictly between 0 and 1"),
    ({3: 0.6, 8: 0.4}, r"sum to 1, leaving nothing for the 8 classes not named"),
    ({c: 0.1 for c in range(9)} | {9: 0.2}, r"naming all 10 classes, .* sum to 1, got 1.1"),
])
def test_prescribed_distribution_names_what_is_wrong(probs, message):
    with pytest.raises(InversionError, match=message):
        prescribed_distribution(probs)


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))


def test_verify_takes_one_target_row_for_every_input(tiny):
    x = torch.randn(5, 12)
    probs = torch.softmax(tiny(x).double(), dim=1)
    row = probs[2]
    p1, ok1 = verify(tiny, x, row)
    p2, ok2 = verify(tiny, x, row.expand(5, -1))
    assert torch.equal(p1, p2) and torch.equal(ok1, ok2)
    assert ok1[2] and ok1.sum() < 5


@pytest.mark.parametrize("inputs, target, message", [
    (torch.randn(12), torch.full((4,), 0.25), "batch dimension first"),
    ([[0.0] * 12], torch.full((4,), 0.25), "must be a tensor"),
    (torch.randn(3, 12), torch.full((2, 4), 0.25), r"3 inputs but a target of shape \(2, 4\)"),
    (torch.randn(3, 7), torch.full((4,), 0.25), r"fails on inputs of shape \(3, 7\)"),
    (torch.randn(3, 12), torch.full((10,), 0.1), "returns 4 logits per input but the target "
                                                 "has 10 classes"),
])
def test_verify_names_what_does_not_fit(tiny, inputs, target, message):
    with pytest.raises(InversionError, match=message):
        verify(tiny, inputs, target)


def _result(converged: list[bool], reasons: list[str] | None) -> InversionResult:
    n = len(converged)
    info = {} if reasons is None else {"reasons": reasons}
    return InversionResult(torch.zeros(n, 2), torch.full((n, 2), 0.5), torch.full((n, 2), 0.5),
                           torch.tensor(converged, dtype=torch.bool), info)


def test_failure_summary_groups_reasons_that_differ_only_in_their_numbers():
    res = _result([True, False, False, False, False, False],
                  ["", "max_iter=30 reached (error 4.1e-01)", "layer '8': 2 entries outside",
                   "max_iter=30 reached (error 3.0e-02)", "x" * 400,
                   "max_iter=30 reached (error 1); more detail"])
    lines = res.failure_summary(kinds=2, width=50)
    assert lines[0] == "3 not verified, the first of them: max_iter=30 reached (error 4.1e-01)"
    assert len(lines) == 3 and lines[2] == "1 not verified for 1 other reason(s)"
    assert lines[1].startswith("1 not verified: ")
    assert res.failure_summary(kinds=3, width=50)[2] == "1 not verified: " + "x" * 49 + "…"
    assert res.message == ("1 of 6 samples verified; 3 not verified, the first of them: "
                           "max_iter=30 reached (error 4.1e-01); 2 not verified for 2 other "
                           "reason(s)")


def test_failure_summary_is_empty_when_all_verified_or_no_reasons_were_recorded():
    assert _result([True, True], ["", ""]).failure_summary() == []
    assert _result([True, True], ["", ""]).message == "2 of 2 samples verified"
    assert _result([False], None).failure_summary() == []
    assert _result([False], None).message == "0 of 1 samples verified"
    assert _result([False], [""]).failure_summary() == ["1 not verified: no reason recorded"]


def test_failure_summary_keeps_apart_what_differs_before_the_colon():
    res = _result([False] * 5, ["layer '8': 2 entries outside", "layer '8': 1 entry outside",
                                "layer '6': 3 entries outside", "stalled: damping 1e9",
                                "stalled: no progress"])
    assert res.failure_summary() == ["2 not verified, the first of them: layer '8': 2 entries "
                                     "outside",
                                     "2 not verified, the first of them: stalled: damping 1e9",
                                     "1 not verified: layer '6': 3 entries outside"]
