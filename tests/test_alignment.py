"""The class-token alignment bound and warm start, on tiny timm ViTs built here."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from nninvert_lib.alignment import align_to_head, backbone_alignment, head_directions
from nninvert_lib.errors import InversionError
from nninvert_lib.forward import forward_pass_inv
from nninvert_lib.generalized import generalized_inv, head_reachability, invert_head
from nninvert_lib.result import target_distribution, verify

def _inputs(n, seed=1):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_needed_alignment_is_the_square_root_of_the_reachability_ratio(tiny_vit):
    target = target_distribution([0, 3, 7], 0.6)
    d, needed = head_directions(tiny_vit, target)
    ratio, _ = head_reachability(tiny_vit, target)
    assert torch.allclose(needed ** 2, ratio, rtol=1e-9)
    assert torch.allclose(d.norm(dim=1), torch.ones(3, dtype=torch.float64))
    head = invert_head(tiny_vit)
    assert (d.sum(dim=1).abs() < 1e-8).all()                       # in 1⊥, like u
    assert (d @ head.null_basis).abs().max() < 1e-8                # in the head's row space


def test_every_input_that_verifies_meets_the_necessary_alignment(tiny_vit, make_vit):
    x = _inputs(6)
    with torch.no_grad():
        own = torch.softmax(tiny_vit(x).double(), dim=-1)          # x verifies its own output
    assert verify(tiny_vit, x, own)[1].all()
    _, reached, needed = align_to_head(tiny_vit, x, own, steps=0)
    assert (reached >= needed - 1e-5).all()
    # a target the head cannot produce needs more than any unit vector gives
    _, needed_far = head_directions(make_vit(head_gain=1.0), target_distribution([0, 1], 0.9))
    assert (needed_far > 1).all()


def test_alignment_ascent_raises_the_alignment_and_leaves_the_model_alone(tiny_vit):
    before = copy.deepcopy(tiny_vit.state_dict())
    fused = [m.fused_attn for m in tiny_vit.modules() if hasattr(m, "fused_attn")]
    x0 = _inputs(4)
    target = target_distribution([1, 2, 5, 9], 0.9)
    _, start, _ = align_to_head(tiny_vit, x0, target, steps=0)
    x, reached, needed = align_to_head(tiny_vit, x0, target, steps=30, bounds=(0.0, 1.0))
    assert (reached > start).all()
    assert x.shape == x0.shape and x.dtype == x0.dtype
    assert x.min() >= 0 and x.max() <= 1
    again, reached2, _ = align_to_head(tiny_vit, x0, target, steps=30, bounds=(0.0, 1.0))
    assert torch.equal(x, again) and torch.equal(reached, reached2)        # deterministic
    assert all(torch.equal(v, before[k]) for k, v in tiny_vit.state_dict().items())
    assert fused == [m.fused_attn for m in tiny_vit.modules() if hasattr(m, "fused_attn")]


def test_backbone_alignment_keeps_the_best_start_per_target(tiny_vit):
    target = target_distribution([0, 6], 0.9)
    reached, needed = backbone_alignment(tiny_vit, target, n_starts=3, steps=5, seed=2)
    assert reached.shape == needed.shape == (2,)
    x0 = torch.rand(6, 784, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    _, each, _ = align_to_head(tiny_vit, x0.reshape(6, 1, 28, 28),
                               target.repeat_interleave(3, dim=0), steps=5)
    assert torch.allclose(reached, each.reshape(2, 3).amax(dim=1))


def test_bad_arguments_and_models_without_a_normed_head_raise(tiny_vit, make_vit):
    target = target_distribution(3, 0.9)
    with pytest.raises(InversionError, match="no norm"):
        head_directions(make_vit(final_norm=False), target)
    with pytest.raises(InversionError, match="steps must be an int >= 0"):
        align_to_head(tiny_vit, _inputs(1), target, steps=-1)
    with pytest.raises(InversionError, match="lr must be"):
        align_to_head(tiny_vit, _inputs(1), target, lr=0)
    with pytest.raises(InversionError, match="x0 has 2 inputs but target has 3 rows"):
        align_to_head(tiny_vit, _inputs(2), target_distribution([1, 2, 3], 0.9))
    with pytest.raises(InversionError, match="n_starts"):
        backbone_alignment(tiny_vit, target, n_starts=0)
    fcnn = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with pytest.raises(InversionError, match="warm_start needs a vision transformer"):
        forward_pass_inv(fcnn, target, seed=0, warm_start=5)
    with pytest.raises(InversionError, match="warm_start must be an int >= 0"):
        forward_pass_inv(tiny_vit, target, seed=0, warm_start=1.5)


@pytest.mark.parametrize("method", [forward_pass_inv, generalized_inv])
def test_warm_start_is_recorded_and_the_flags_stay_honest(tiny_vit, method):
    target = target_distribution([0, 4], 0.6)
    res = method(tiny_vit, target, n_samples=2, seed=0, max_iter=10, warm_start=10)
    info = res.info
    assert info["warm_start"] == 10 and info["warm_start_seconds"] > 0
    assert info["alignment"].shape == info["alignment_needed"].shape == (4,)
    assert info["seconds"] >= info["warm_start_seconds"]
    assert torch.equal(res.converged, verify(tiny_vit, res.inputs, res.target)[1])
    cold = method(tiny_vit, target, n_samples=2, seed=0, max_iter=10)
    assert cold.info["warm_start"] == 0 and "alignment" not in cold.info
    assert torch.equal(cold.info["x0"], info["x0"])            # same random draws


def test_generalized_warm_start_ascends_on_its_own_copy(tiny_vit, monkeypatch):
    """The generalized method runs the ascent on the working copy it already holds: the
    same alignment as align_to_head from the same starts, without a second copy."""
    import nninvert_lib.alignment as alignment_module

    target = target_distribution([2, 5], 0.6)
    res = generalized_inv(tiny_vit, target, n_samples=2, seed=0, max_iter=5, warm_start=8)
    x0 = res.info["x0"].reshape(4, 1, 28, 28)
    _, reached, needed = align_to_head(tiny_vit, x0, res.target, steps=8)
    assert torch.allclose(res.info["alignment"], reached, atol=1e-6)
    assert torch.equal(res.info["alignment_needed"], needed)

    def no_second_copy(*args, **kwargs):
        raise AssertionError("the ascent made its own copy of the model")

    monkeypatch.setattr(alignment_module, "inversion_copy", no_second_copy)
    again = generalized_inv(tiny_vit, target, n_samples=2, seed=0, max_iter=5, warm_start=8)
    assert torch.equal(again.info["alignment"], res.info["alignment"])
