"""The generalized method on tiny timm ViTs built here (milliseconds to build)."""
from __future__ import annotations

import copy
import math

import pytest
import timm
import torch
from torch import nn

from nninvert_lib.errors import InversionError
from nninvert_lib.generalized import (embedding_residual_basis, generalized_inv,
                                      head_reachability, invert_head,
                                      sample_embeddings)
from nninvert_lib.softmax import invert_softmax
from nninvert_lib.result import target_distribution
from conftest import TINY_VIT

def _reachable_target(model, n=1, seed=1):
    x = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return torch.softmax(model(x).double(), dim=-1)


@pytest.mark.parametrize("overrides,kind", [
    ({}, "layernorm"),                                          # class token, final norm
    ({"global_pool": "avg", "fc_norm": True}, "layernorm"),     # fc_norm before the head
    ({"global_pool": "avg", "fc_norm": False}, "layernorm-avg"),  # average of normed tokens
    ({"final_norm": False}, "none"),
])
def test_invert_head_recognises_the_norm_before_the_head(overrides, kind, make_vit):
    assert invert_head(make_vit(**overrides)).norm == kind


@pytest.mark.parametrize("overrides", [{}, {"final_norm": False},
                                       {"global_pool": "avg", "fc_norm": False}])
def test_sampled_embeddings_give_the_target_through_the_head(overrides, make_vit):
    model = make_vit(**overrides)
    head = invert_head(model)
    target = target_distribution([0, 4, 9], 0.9)
    e, feasible = sample_embeddings(head, target, 0.1, torch.Generator().manual_seed(0))
    assert feasible.all()
    with torch.no_grad():
        probs = torch.softmax(model.double().get_classifier()(e), dim=-1)
    assert (probs - target).abs().max() < 1e-9
    if head.norm == "layernorm":
        u = head.normalized(e)
        assert u.mean(dim=1).abs().max() < 1e-9
        assert torch.allclose(u.norm(dim=1), torch.full((3,), math.sqrt(head.dim),
                                                        dtype=torch.float64))
        with torch.no_grad():  # e is a LayerNorm output: the norm maps u back to it
            assert torch.allclose(model.norm(u), e, atol=1e-4)
    if head.norm == "layernorm-avg":
        assert (head.normalized(e).norm(dim=1) <= math.sqrt(head.dim) + 1e-9).all()
    assert not torch.allclose(e[0], e[1])  # a distribution, not one point


def test_null_basis_is_orthonormal_and_invisible_to_the_head(tiny_vit):
    head = invert_head(tiny_vit)
    n = head.null_basis
    assert torch.allclose(n.T @ n, torch.eye(n.shape[1], dtype=torch.float64), atol=1e-10)
    assert (head.weight @ (head.gamma[:, None] * n)).abs().max() < 1e-8
    assert n.sum(dim=0).abs().max() < 1e-8            # mean-free: a LayerNorm output
    assert n.shape[1] == head.dim - head.pinv.rank - 1


def test_generalized_inv_reaches_target_on_tiny_vit(tiny_vit):
    target = _reachable_target(tiny_vit, n=2)
    res = generalized_inv(tiny_vit, target, n_samples=2, seed=0, embedding_rank=32)
    assert res.inputs.shape == (4, 1, 28, 28) and res.inputs.dtype == torch.float32
    assert res.converged.all(), res.info["reasons"]
    assert res.info["head_norm"] == "layernorm" and res.info["feasible"].all()
    assert res.info["embedding_target"].shape == (4, 192)
    assert torch.isfinite(res.info["embedding_distance"]).all()
    assert len({tuple(x.flatten()[:20].tolist()) for x in res.inputs}) == 4
    assert res.info["chord"] == 2 and not res.info["broyden"]


def test_generalized_inv_takes_broyden_chord_steps(tiny_vit):
    target = _reachable_target(tiny_vit, n=2)
    res = generalized_inv(tiny_vit, target, n_samples=2, seed=0, embedding_rank=32, chord=4,
                          broyden=True)
    assert res.converged.all(), res.info["reasons"]
    assert res.info["broyden"] and res.info["chord"] == 4
    assert (res.info["jacobians"] >= 1).all()


def test_generalized_inv_takes_low_precision_jacobians(tiny_vit):
    target = _reachable_target(tiny_vit, n=2)
    res = generalized_inv(tiny_vit, target, n_samples=2, seed=0, embedding_rank=32,
                          jacobian_dtype=torch.bfloat16)
    assert res.converged.all(), res.info["reasons"]
    assert res.info["jacobian_dtype"] == "torch.bfloat16"


def test_generalized_inv_is_deterministic_and_leaves_the_model_untouched(tiny_vit):
    before = copy.deepcopy(tiny_vit.state_dict())
    target = _reachable_target(tiny_vit)
    a = generalized_inv(tiny_vit, target, seed=3, embedding_rank=16, max_iter=3)
    b = generalized_inv(tiny_vit, target, seed=3, embedding_rank=16, max_iter=3)
    assert torch.equal(a.inputs, b.inputs)
    assert torch.equal(a.info["embedding_target"], b.info["embedding_target"])
    assert all(torch.equal(before[k], v) for k, v in tiny_vit.state_dict().items())
    assert all(m.fused_attn for m in tiny_vit.modules() if hasattr(m, "fused_attn"))


def test_unreachable_target_is_reported_not_raised(tiny_vit):
    res = generalized_inv(tiny_vit, target_distribution(0, 0.9), seed=0, embedding_rank=16,
                          max_iter=2, atol=1e-12)
    assert not res.converged.any() and res.info["reasons"][0] != "converged"


def test_target_outside_the_norms_image_is_flagged(tiny_vit):
    # a logit gap of 700 needs ‖u‖ far beyond the LayerNorm sphere's radius √D
    z = torch.zeros(10, dtype=torch.float64)
    z[0] = 700.0
    target = torch.softmax(z, dim=0)
    head = invert_head(tiny_vit)
    _, feasible = sample_embeddings(head, target[None], 0.1, torch.Generator().manual_seed(0))
    assert not feasible.any()
    res = generalized_inv(tiny_vit, target, seed=0, embedding_rank=16, max_iter=1)
    assert not res.info["feasible"].any() and "outside" in res.info["reasons"][0]


@pytest.mark.parametrize("bad,match", [
    (dict(target=[0.5, 0.5]), "10"),
    (dict(target=[0.0] + [1 / 9] * 9), "<= 0"),
    (dict(std=-1.0), "std"),
    (dict(anchor="mean"), "anchor"),
    (dict(embedding_rank=3), "embedding_rank"),
    (dict(colour="red"), "unknown option"),
    (dict(n_samples=0), "n_samples"),
    (dict(broyden=True, chord=0), "chord >= 1"),
    (dict(jacobian_dtype=torch.bfloat16, dtype=torch.float64), "lowers float32"),
])
def test_invalid_input_raises(tiny_vit, bad, match):
    kwargs = dict(target=target_distribution(1, 0.9))
    kwargs.update(bad)
    with pytest.raises(InversionError, match=match):
        generalized_inv(tiny_vit, **kwargs)


def test_models_without_an_invertible_head_raise():
    with pytest.raises(InversionError, match="timm vision transformer"):
        generalized_inv(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)),
                        target_distribution(1, 0.9))
    headless = timm.create_model("vit_tiny_patch16_224", **{**TINY_VIT, "num_classes": 0})
    with pytest.raises(InversionError, match="nn.Linear"):
        generalized_inv(headless, target_distribution(1, 0.9))


def test_head_reachability_certifies_targets_outside_the_norms_image(tiny_vit, make_vit):
    # timm's initial head (std 0.02) keeps the logits small: 0.9 is out of reach
    ratio, unreachable = head_reachability(make_vit(head_gain=1.0), target_distribution([0, 1], 0.9))
    assert unreachable.all() and (ratio > 1).all()
    # what the model produces is reachable, so the bound never exceeds 1 there
    own = _reachable_target(tiny_vit, n=3)
    ratio, unreachable = head_reachability(tiny_vit, own)
    assert not unreachable.any() and (ratio <= 1).all()
    # with atol -> 0 the bound is the minimum-norm preimage of the exact target
    head = invert_head(tiny_vit)
    target = target_distribution([2, 5], 0.6)
    exact, _ = head_reachability(head, target, atol=1e-12)
    rhs = invert_softmax(target) - head.bias - head.beta @ head.weight.T
    u = head.pinv.solve(rhs)
    v = head.pinv.solve(torch.ones(1, 10, dtype=torch.float64))[0]
    u = u - ((u @ v) / (v @ v))[:, None] * v
    assert torch.allclose(exact, (u ** 2).sum(dim=1) / head.dim, rtol=1e-4)
    assert not head_reachability(make_vit(final_norm=False), target)[1].any()  # no norm, no bound


def test_embedding_residual_rows_are_logit_differences_then_weighted_null_directions(tiny_vit):
    head = invert_head(tiny_vit)
    b = embedding_residual_basis(head, 32, 0.1, torch.Generator().manual_seed(0))
    assert b.shape == (192, 32)
    w = head.weight
    assert (w @ b[:, 9:]).abs().max() < 1e-10                  # invisible to the head
    n = b[:, 9:] / 0.1
    assert torch.allclose(n.T @ n, torch.eye(23, dtype=torch.float64), atol=1e-10)
    e = torch.randn(2, 192, dtype=torch.float64)
    z = e @ w.T
    rows = e @ b[:, :9]                                        # centred logit coordinates
    centred = z - z.mean(dim=1, keepdim=True)
    assert torch.allclose(rows.norm(dim=1), centred.norm(dim=1))
    assert embedding_residual_basis(head, None, 1.0, torch.Generator()).shape == (192, 191)


def test_polish_off_reports_the_backbone_inversion_alone(tiny_vit):
    target = _reachable_target(tiny_vit)
    res = generalized_inv(tiny_vit, target, seed=0, polish=False, max_iter=1, null_weight=1.0)
    assert not res.info["polished"].any() and res.info["polish"] is False
    both = generalized_inv(tiny_vit, target, seed=0, max_iter=1, null_weight=1.0)
    done = both.info["polished"]
    assert done.any()           # the polish's Jacobians are counted with the rest
    assert (both.info["jacobians"][done] > res.info["jacobians"][done]).all()
    assert torch.equal(both.info["jacobians"][~done], res.info["jacobians"][~done])
    with pytest.raises(InversionError, match="null_weight"):
        generalized_inv(tiny_vit, target, null_weight=-1.0)
