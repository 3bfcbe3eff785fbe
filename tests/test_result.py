"""Targets, results and the checks on a model's outputs (``nninvert_lib.result``)."""
from __future__ import annotations

import pytest
import torch

from nninvert_lib.errors import InversionError
from nninvert_lib.result import check_logits


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
