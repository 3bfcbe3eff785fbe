"""collect_verified: top-up rounds until each target row has distinct verified inputs."""
import pytest
import torch

import nninvert_lib as nni
from nninvert_lib import InversionError, collect_verified, make_fcnn, target_distribution


@pytest.fixture(scope="module")
def leaky_net():
    """A random LeakyReLU(0.01) net on which LM often stalls: class 0 is reached by
    about one start in four within 10 iterations, class 3 by none."""
    torch.manual_seed(4)
    return make_fcnn((160, 80, 40, 20, 10), "leaky_relu", negative_slope=0.01).eval()


TWO = target_distribution([0, 3], 0.9)


def test_one_call_is_not_enough_but_top_up_rounds_are(leaky_net):
    once = nni.forward_pass_inv(leaky_net, TWO[:1], n_samples=3, seed=0, input_shape=(160,),
                                max_iter=10)
    assert int(once.converged.sum()) < 3
    res = collect_verified(nni.forward_pass_inv, leaky_net, TWO, 3, max_rounds=8,
                           input_shape=(160,), max_iter=10)
    info = res.info
    assert res.inputs.shape == (6, 160) and res.converged.shape == (6,)
    assert info["verified_per_row"][0] == 3 and info["attempts_per_row"][0] > 4
    assert res.converged[:3].all()
    # class 3 is never reached: every round ran, the shortfall is reported, not hidden
    assert info["verified_per_row"][1] == 0 and info["rounds"] == 8
    assert info["seeds"] == list(range(8)) and not res.converged[3:].any()
    # and says why: the reasons of the attempts that fill row 1
    assert info["reasons"][:3] == [""] * 3 and all(info["reasons"][3:])
    assert sum(int(line.split()[0]) for line in res.failure_summary()) == 3
    # row 1 is 3 short in every round: ceil(1.25 * 3) = 4 attempts each time
    assert info["attempts_per_row"][1] == 8 * 4
    # the flags are honest and the rows are in order
    probs, ok = nni.verify(leaky_net, res.inputs, res.target)
    assert torch.equal(ok, res.converged)
    assert torch.equal(res.target, TWO.repeat_interleave(3, dim=0))
    kept = res.inputs[:3].double()
    d = torch.cdist(kept, kept) + torch.eye(3, dtype=torch.float64) * 1e9
    assert d.min() > 1e-6


def test_same_seed_same_result_and_any_method(leaky_net):
    a = collect_verified(nni.back_pass_inv, leaky_net, TWO, 3, seed=5)
    b = collect_verified(nni.back_pass_inv, leaky_net, TWO, 3, seed=5)
    assert torch.equal(a.inputs, b.inputs) and a.converged.all()
    assert a.info["method"] == "back_pass_inv" and a.info["rounds"] == 1


def test_near_duplicates_count_once(leaky_net):
    res = collect_verified(nni.back_pass_inv, leaky_net, TWO[:1], 2, max_rounds=2,
                           min_distance=1e12, std=0.1)
    # every sample is "near" the first: one distinct input, the rest filled from duplicates
    assert res.info["verified_per_row"] == [1] and res.info["rounds"] == 2
    assert res.converged.all()      # the fillers are verified, only not distinct


@pytest.mark.parametrize("kwargs, match", [
    ({"n_verified": 0}, "n_verified"),
    ({"n_verified": 2, "max_rounds": 0}, "max_rounds"),
    ({"n_verified": 2, "oversample": 0.5}, "oversample"),
    ({"n_verified": 2, "min_distance": -1.0}, "min_distance"),
    ({"n_verified": 2, "n_samples": 4}, "n_samples"),
])
def test_invalid_arguments_raise(leaky_net, kwargs, match):
    with pytest.raises(InversionError, match=match):
        collect_verified(nni.back_pass_inv, leaky_net, TWO, **kwargs)


def test_invalid_target_raises(leaky_net):
    with pytest.raises(InversionError):
        collect_verified(nni.back_pass_inv, leaky_net, torch.tensor([0.5, 0.6]), 2)
