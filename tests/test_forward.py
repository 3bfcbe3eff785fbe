"""ForwardPassInv (Levenberg–Marquardt on the input) on tiny models built here.

These tests check the claims on models that build in milliseconds; the
measurements on the trained models quoted in ``nninvert_lib/forward.py`` are
not repeated here.
"""
from __future__ import annotations

import copy
import time

import pytest
import torch
from torch import nn

import nninvert_lib as nni
from nninvert_lib.errors import InversionError
from nninvert_lib.forward import forward_pass_inv, inversion_copy, levenberg_marquardt
from nninvert_lib.result import target_distribution, verify

SHAPE = (1, 8, 8)


def _seeded(fn):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return fn()


@pytest.fixture
def selu_fcnn():
    return _seeded(lambda: nni.make_fcnn([64, 32, 10], activation="selu"))


@pytest.fixture
def relu_fcnn():
    return _seeded(lambda: nni.make_fcnn([64, 32, 10], activation="relu",
                                         final_activation=False))


def _reachable_target(model, shape, n=1, seed=1):
    """Softmax of the model at a random input: reachable by construction."""
    x = torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return torch.softmax(model(x).double(), dim=-1)


def test_forward_pass_inv_reaches_target_on_selu_fcnn(selu_fcnn):
    target = target_distribution([0, 3, 7], 0.9)
    res = forward_pass_inv(selu_fcnn, target, n_samples=3, seed=0, input_shape=SHAPE)
    assert res.inputs.shape == (9, *SHAPE) and res.inputs.dtype == torch.float32
    assert res.converged.all(), res.info["reasons"]
    assert (res.max_error <= 1e-3).all()
    # rows in order: n_samples per target row
    assert torch.equal(res.target, target.repeat_interleave(3, dim=0))
    probs, ok = verify(selu_fcnn, res.inputs, res.target)
    assert ok.all() and torch.allclose(probs, res.probs)
    assert (res.info["iterations"] <= 30).all()
    assert res.info["reasons"] == ["converged"] * 9
    # the SELUs of the working copy ran as FastELU; the caller's stay nn.SELU
    assert res.info["fast_activations"] == 2
    assert sum(isinstance(m, torch.nn.SELU) for m in selu_fcnn.modules()) == 2


def test_forward_pass_inv_reaches_target_on_relu_fcnn(relu_fcnn):
    res = forward_pass_inv(relu_fcnn, target_distribution(4, 0.8), n_samples=4, seed=0,
                           input_shape=SHAPE)
    assert res.converged.all(), res.info["reasons"]


def test_forward_pass_inv_reaches_target_on_tiny_timm_vit(tiny_vit):
    target = _reachable_target(tiny_vit, (1, 28, 28), n=2)
    assert target.max() > 0.5  # moderately peaked
    res = forward_pass_inv(tiny_vit, target, n_samples=1, seed=0)
    assert res.converged.all(), res.info["reasons"]
    assert res.info["fused_attn_disabled"] == 2
    assert res.info["jacobian"] == "auto" and res.info["jacobian_fallback"] is None


def test_inversion_leaves_the_model_untouched(tiny_vit):
    tiny_vit.train()
    before = copy.deepcopy(tiny_vit.state_dict())
    fused = [getattr(m, "fused_attn", None) for m in tiny_vit.modules()]
    grads = [p.requires_grad for p in tiny_vit.parameters()]
    forward_pass_inv(tiny_vit, _reachable_target(tiny_vit.eval(), (1, 28, 28)), seed=0,
                     max_iter=2)
    tiny_vit.train()
    forward_pass_inv(tiny_vit, _reachable_target(copy.deepcopy(tiny_vit).eval(), (1, 28, 28)),
                     seed=0, max_iter=2)
    after = tiny_vit.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [getattr(m, "fused_attn", None) for m in tiny_vit.modules()] == fused
    assert any(f is True for f in fused)
    assert [p.requires_grad for p in tiny_vit.parameters()] == grads
    assert tiny_vit.training and all(p.grad is None for p in tiny_vit.parameters())
    assert next(tiny_vit.parameters()).dtype == torch.float32


def test_inversion_copy_switches_fused_attention_off_on_the_copy_only(tiny_vit):
    net, n = inversion_copy(tiny_vit, torch.float64)
    assert n == 2 and not any(getattr(m, "fused_attn", False) for m in net.modules())
    assert all(m.fused_attn for m in tiny_vit.modules() if hasattr(m, "fused_attn"))
    assert next(net.parameters()).dtype == torch.float64 and not net.training


def test_unreachable_target_comes_back_not_converged():
    # tanh logits lie in (-1, 1): no class can exceed e²/(e² + 9) ≈ 0.45
    model = _seeded(lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Tanh()))
    res = forward_pass_inv(model, target_distribution(2, 0.9), n_samples=2, seed=0,
                           input_shape=SHAPE, max_iter=10)
    assert not res.converged.any()
    assert all(r != "converged" for r in res.info["reasons"])
    assert (res.info["iterations"] <= 10).all()
    assert torch.isfinite(res.inputs).all()


def test_same_seed_gives_bit_identical_inputs(selu_fcnn):
    target = target_distribution(1, 0.9)
    a = forward_pass_inv(selu_fcnn, target, n_samples=3, seed=7, input_shape=SHAPE)
    b = forward_pass_inv(selu_fcnn, target, n_samples=3, seed=7, input_shape=SHAPE)
    c = forward_pass_inv(selu_fcnn, target, n_samples=3, seed=8, input_shape=SHAPE)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.info["x0"], b.info["x0"])
    assert not torch.equal(a.info["x0"], c.info["x0"])
    assert a.info["seed"] == 7
    assert not torch.equal(a.inputs[0], a.inputs[1])  # different starts, different images


def test_seed_none_is_recorded_and_leaves_global_rng_alone(selu_fcnn):
    state = torch.random.get_rng_state()
    res = forward_pass_inv(selu_fcnn, target_distribution(1, 0.9), seed=None, input_shape=SHAPE)
    assert torch.equal(state, torch.random.get_rng_state())
    again = forward_pass_inv(selu_fcnn, target_distribution(1, 0.9), seed=res.info["seed"],
                             input_shape=SHAPE)
    assert torch.equal(res.inputs, again.inputs)


@pytest.mark.parametrize("bad,match", [
    ([0.5, 0.5, 0.0, 0, 0, 0, 0, 0, 0, 0], "<= 0"),
    ([0.2] * 10, "sum to 1"),
    ([float("nan")] + [0.1] * 9, "NaN"),
    ([0.5, 0.5], "10"),
])
def test_invalid_targets_raise(selu_fcnn, bad, match):
    with pytest.raises(InversionError, match=match):
        forward_pass_inv(selu_fcnn, torch.tensor(bad), input_shape=SHAPE)


@pytest.mark.parametrize("options,match", [
    ({"n_samples": 0}, "n_samples"),
    ({"bounds": (1.0, 0.0)}, "lo < hi"),
    ({"max_iter": -1}, "max_iter"),
    ({"residual": "mse"}, "residual must be one of"),
    ({"method": "newton"}, "method must be one of"),
    ({"max_step": 0.0}, "max_step"),
    ({"step_bound": 1.0}, "unknown option"),
    ({"input_shape": (0, 8)}, "input_shape"),
])
def test_invalid_options_raise(selu_fcnn, options, match):
    options.setdefault("input_shape", SHAPE)
    with pytest.raises(InversionError, match=match):
        forward_pass_inv(selu_fcnn, target_distribution(0, 0.9), **options)


def test_torch_and_scipy_paths_agree(selu_fcnn):
    target = target_distribution([2, 5], 0.9)
    lm = forward_pass_inv(selu_fcnn, target, n_samples=2, seed=3, input_shape=SHAPE)
    sp = forward_pass_inv(selu_fcnn, target, n_samples=2, seed=3, input_shape=SHAPE,
                          method="scipy")
    assert lm.converged.all() and sp.converged.all(), sp.info["reasons"]
    assert torch.equal(lm.info["x0"], sp.info["x0"])
    assert (lm.probs - sp.probs).abs().max() <= 2e-3
    assert sp.info["method"] == "scipy" and len(sp.info["scipy_status"]) == 4


def test_bounds_keep_inputs_in_the_box(selu_fcnn):
    # a random 64-pixel net cannot reach 0.9 inside the box; a target it produces there it can
    target = _reachable_target(selu_fcnn, SHAPE)
    res = forward_pass_inv(selu_fcnn, target, n_samples=3, seed=0,
                           input_shape=SHAPE, bounds=(0.0, 1.0))
    assert res.inputs.min() >= 0 and res.inputs.max() <= 1
    assert res.info["bounds"] == (0.0, 1.0)
    assert res.converged.all(), res.info["reasons"]


def test_max_step_bounds_every_step(selu_fcnn):
    start = torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(0))
    res = levenberg_marquardt(selu_fcnn, start, target_distribution(0, 0.9), max_iter=1,
                              max_step=0.01)
    assert (res.inputs - start).abs().max() <= 0.01 + 1e-6
    assert res.info["max_step"] == 0.01


def test_history_is_recorded_and_never_increases(selu_fcnn):
    res = forward_pass_inv(selu_fcnn, target_distribution([1, 8], 0.9), n_samples=2, seed=0,
                           input_shape=SHAPE)
    hist = res.info["residual_history"]
    assert hist.shape == (4, 31) and torch.isfinite(hist[:, 0]).all()
    for row, it in zip(hist, res.info["iterations"]):
        seen = row[: int(it) + 1]
        assert torch.isfinite(seen).all() and torch.isnan(row[int(it) + 1:]).all()
        assert (seen[1:] <= seen[:-1] + 1e-12).all()  # only accepted steps change x
    assert res.info["error_history"].shape == (4, 31)


def test_stalled_samples_restart_from_new_random_inputs():
    # ReLU before the first layer: a negative start has a zero Jacobian and cannot move
    model = _seeded(lambda: nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Linear(64, 10)))
    start = -torch.ones(2, *SHAPE)
    target = target_distribution(3, 0.6)
    stuck = levenberg_marquardt(model, start, target, patience=2)
    assert not stuck.converged.any() and "stalled" in stuck.info["reasons"][0]
    res = levenberg_marquardt(model, start, target, patience=2, restarts=1, seed=0)
    assert res.converged.all(), res.info["reasons"]
    assert res.info["restarts"].tolist() == [1, 1]


def test_start_at_a_solution_takes_no_iterations(selu_fcnn):
    x = torch.rand(2, *SHAPE)
    with torch.no_grad():
        target = torch.softmax(selu_fcnn(x).double(), dim=-1)
    res = levenberg_marquardt(selu_fcnn, x, target)
    assert res.converged.all() and res.info["iterations"].tolist() == [0, 0]
    assert torch.equal(res.inputs, x)


@pytest.mark.parametrize("residual", ["prob", "logprob", "wlogit"])
def test_other_residuals_are_available(selu_fcnn, residual):
    res = forward_pass_inv(selu_fcnn, target_distribution(5, 0.5), n_samples=2, seed=0,
                           input_shape=SHAPE, residual=residual, max_iter=60)
    assert res.info["residual"] == residual
    assert res.converged.all(), res.info["reasons"]


def test_loop_jacobian_matches_vmap(tiny_vit):
    target = _reachable_target(tiny_vit, (1, 28, 28))
    a = forward_pass_inv(tiny_vit, target, seed=0, max_iter=3, jacobian="vmap")
    b = forward_pass_inv(tiny_vit, target, seed=0, max_iter=3, jacobian="loop")
    assert torch.allclose(a.inputs, b.inputs, atol=1e-5)


def test_float64_model_gives_float64_inputs_and_float32_working_dtype_works(selu_fcnn):
    res = forward_pass_inv(copy.deepcopy(selu_fcnn).double(), target_distribution(0, 0.9),
                           seed=0, input_shape=SHAPE)
    assert res.inputs.dtype == torch.float64 and res.converged.all()
    res32 = forward_pass_inv(selu_fcnn, target_distribution(0, 0.9), seed=0,
                             input_shape=SHAPE, dtype=None)
    assert res32.info["dtype"] == "torch.float32"
    assert res32.converged.all(), res32.info["reasons"]


def test_batch_size_and_progress_options(selu_fcnn):
    target = target_distribution([0, 1], 0.9)
    a = forward_pass_inv(selu_fcnn, target, n_samples=2, seed=0, input_shape=SHAPE,
                         dtype=torch.float64)
    b = forward_pass_inv(selu_fcnn, target, n_samples=2, seed=0, input_shape=SHAPE,
                         dtype=torch.float64, batch_size=3, progress=True)
    assert torch.allclose(a.inputs, b.inputs, atol=1e-6) and b.converged.all()


def test_progress_bar_ends_on_the_final_counts_and_redraws_at_most_every_tenth_second(
        selu_fcnn, capsys):
    t = time.perf_counter()
    res = forward_pass_inv(selu_fcnn, target_distribution([0, 1], 0.9), n_samples=2, seed=0,
                           input_shape=SHAPE, progress=True, chord=0, tau=1e3)  # ~14 steps
    seconds = time.perf_counter() - t
    shown = [line for line in capsys.readouterr().err.replace("\n", "\r").split("\r")
             if line.startswith("LM")]
    assert res.converged.all() and "active=0" in shown[-1] and "converged=4" in shown[-1]
    # the first and the final drawing, and at most one per 0.1 s between (not one per step)
    assert int(res.info["iterations"].min()) >= 10
    assert len(shown) <= 3 + seconds / 0.1, shown


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda(selu_fcnn):
    res = forward_pass_inv(selu_fcnn.cuda(), target_distribution(0, 0.9), n_samples=2,
                           seed=0, input_shape=SHAPE)
    assert res.inputs.is_cuda and res.converged.all()


def test_chord_steps_reuse_the_jacobian(selu_fcnn):
    target = target_distribution([0, 9], 0.9)
    plain = forward_pass_inv(selu_fcnn, target, n_samples=2, seed=0, input_shape=SHAPE, chord=0)
    chord = forward_pass_inv(selu_fcnn, target, n_samples=2, seed=0, input_shape=SHAPE)
    assert chord.converged.all() and chord.info["chord"] == 2
    assert chord.info["n_vjp"] <= plain.info["n_vjp"]
    assert chord.info["n_forward"] > chord.info["n_vjp"]
    with pytest.raises(InversionError, match="chord"):
        forward_pass_inv(selu_fcnn, target, input_shape=SHAPE, chord=-1)


def test_broyden_update_is_the_smallest_change_that_maps_the_step_to_the_residual_change():
    """Broyden's update: the new J maps s to Δr (the secant condition) and leaves
    J unchanged on vectors orthogonal to s; only the rows asked for change."""
    from nninvert_lib.forward import _broyden

    g = torch.Generator().manual_seed(0)
    jac = torch.randn(3, 4, 20, generator=g, dtype=torch.float64)
    gram = jac @ jac.mT
    before = jac.clone()
    s = torch.randn(2, 20, generator=g, dtype=torch.float64)
    dr = torch.randn(2, 4, generator=g, dtype=torch.float64)
    rows = torch.tensor([2, 0])
    _broyden(jac, gram, rows, s, dr)
    assert torch.equal(jac[1], before[1])
    for k, i in enumerate(rows.tolist()):
        assert torch.allclose(jac[i] @ s[k], dr[k], atol=1e-12)
        v = torch.randn(20, generator=g, dtype=torch.float64)
        v -= (v @ s[k]) / (s[k] @ s[k]) * s[k]              # orthogonal to the step
        assert torch.allclose(jac[i] @ v, before[i] @ v, atol=1e-12)
        assert torch.allclose(gram[i], jac[i] @ jac[i].T, atol=1e-12)
    # a zero step changes nothing
    _broyden(jac, gram, torch.tensor([1]), torch.zeros(1, 20, dtype=torch.float64),
             torch.ones(1, 4, dtype=torch.float64))
    assert torch.equal(jac[1], before[1])


def test_broyden_chord_steps_converge_with_fewer_jacobians(selu_fcnn):
    target = target_distribution(list(range(10)), 0.9)
    kw = dict(n_samples=2, seed=0, input_shape=SHAPE, chord=5)
    plain = forward_pass_inv(selu_fcnn, target, **kw)
    quasi = forward_pass_inv(selu_fcnn, target, broyden=True, **kw)
    again = forward_pass_inv(selu_fcnn, target, broyden=True, **kw)
    assert quasi.converged.all() and quasi.info["broyden"] and not plain.info["broyden"]
    assert torch.equal(quasi.inputs, again.inputs)
    jp, jq = plain.info["jacobians"], quasi.info["jacobians"]
    assert jq.shape == (20,) and (jq >= 1).all()
    assert jq.sum() < jp.sum()
    assert not torch.equal(quasi.inputs, plain.inputs)
    with pytest.raises(InversionError, match="chord >= 1"):
        forward_pass_inv(selu_fcnn, target, input_shape=SHAPE, broyden=True, chord=0)
    with pytest.raises(InversionError, match="broyden must be"):
        forward_pass_inv(selu_fcnn, target, input_shape=SHAPE, broyden=1)


def test_jacobian_under_autocast_is_close_to_the_full_one_and_in_the_working_dtype():
    """The evaluator's Jacobian with jacobian_dtype: computed in low precision (so not
    equal to the float32 one), returned in float32, and within ~1% of it."""
    from nninvert_lib.forward import _Evaluator
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.SELU(), torch.nn.Linear(256, 10))
    x = torch.rand(5, 64)
    g = torch.eye(10)[:9].expand(5, 9, 10)
    full = _Evaluator(net, "vmap", None)
    j32 = full.rows(full(x)[1], g)
    for mode in ("vmap", "loop"):
        low = _Evaluator(net, mode, None, torch.bfloat16)
        z, handle = low(x)
        assert z.dtype == torch.float32 and torch.equal(z, net(x).detach())
        j16 = low.rows(handle, g)
        assert j16.dtype == torch.float32 and j16.shape == (5, 9, 64)
        rel = float((j16 - j32).detach().norm() / j32.detach().norm())
        assert 1e-5 < rel < 2e-2, rel
        assert low.n_forward == 2 and low.n_vjp == 1     # z of its own, and the handle


def test_jacobian_dtype_converges_and_is_verified_in_full_precision(selu_fcnn):
    target = target_distribution(list(range(10)), 0.9)
    kw = dict(n_samples=2, seed=0, input_shape=SHAPE)
    res = forward_pass_inv(selu_fcnn, target, jacobian_dtype=torch.bfloat16, **kw)
    plain = forward_pass_inv(selu_fcnn, target, **kw)
    assert res.converged.all(), res.info["reasons"]
    assert res.info["jacobian_dtype"] == "torch.bfloat16" and plain.info["jacobian_dtype"] is None
    probs, ok = verify(selu_fcnn, res.inputs, res.target)
    assert ok.all() and torch.equal(probs, res.probs)
    assert not torch.equal(res.inputs, plain.inputs)        # the steps did change
    again = forward_pass_inv(selu_fcnn, target, jacobian_dtype=torch.bfloat16, **kw)
    assert torch.equal(res.inputs, again.inputs)


@pytest.mark.parametrize("bad, match", [
    (dict(jacobian_dtype=torch.float64), "jacobian_dtype must be one of"),
    (dict(jacobian_dtype="bfloat16"), "jacobian_dtype must be one of"),
    (dict(jacobian_dtype=torch.bfloat16, dtype=torch.float64), "lowers float32 operations"),
    (dict(jacobian_dtype=torch.bfloat16, method="scipy"), "batched LM"),
])
def test_jacobian_dtype_refuses_what_autocast_would_not_do(selu_fcnn, bad, match):
    with pytest.raises(InversionError, match=match):
        forward_pass_inv(selu_fcnn, target_distribution(1, 0.9), input_shape=SHAPE, **bad)

def test_jacobians_per_sample_count_the_start_and_each_accepted_step(selu_fcnn):
    """Plain LM computes a Jacobian at the start and after each accepted step that
    did not finish the sample, so a converged sample has as many as accepted steps."""
    res = forward_pass_inv(selu_fcnn, target_distribution([1, 4], 0.9), n_samples=3, seed=2,
                           input_shape=SHAPE, chord=0, restarts=0)
    assert res.converged.all()
    accepted = (res.info["gain_ratio_history"][:, 1:] > 0).sum(dim=1)
    assert res.info["jacobians"].tolist() == accepted.tolist()
    assert (accepted >= 1).all()


def test_mu_and_gain_ratio_histories_are_recorded(selu_fcnn):
    res = forward_pass_inv(selu_fcnn, target_distribution(3, 0.9), seed=0, input_shape=SHAPE)
    it = int(res.info["iterations"][0])
    mu = res.info["mu_history"][0, : it + 1]
    assert torch.isfinite(mu).all() and (mu > 0).all()
    assert torch.isfinite(res.info["gain_ratio_history"][0, 1: it + 1]).any()


def test_record_inputs_keeps_every_iterate(selu_fcnn):
    target = target_distribution([2, 6], 0.9)
    res = forward_pass_inv(selu_fcnn, target, seed=0, input_shape=SHAPE, record_inputs=True)
    hist, its = res.info["input_history"], res.info["iterations"]
    assert hist.shape == (2, 31, *SHAPE) and hist.dtype == torch.float64
    # slice 0 is the start in the working dtype (the model's: float32)
    assert res.info["dtype"] == "torch.float32"
    assert torch.equal(hist[:, 0], res.info["x0"].float().double())
    for i, it in enumerate(its.tolist()):
        seen = hist[i, : it + 1]
        assert torch.equal(seen[-1].float(), res.inputs[i]) and torch.isnan(hist[i, it + 1:]).all()
        with torch.no_grad():  # the default "logit" residual: z - log p without its mean
            c = selu_fcnn(seen.float()).double() - target[i].log()
        norms = (c - c.mean(dim=1, keepdim=True)).norm(dim=1)
        assert torch.allclose(norms, res.info["residual_history"][i, : it + 1], rtol=1e-5,
                              atol=1e-6)
    plain = forward_pass_inv(selu_fcnn, target, seed=0, input_shape=SHAPE)
    assert "input_history" not in plain.info and torch.equal(plain.inputs, res.inputs)
    with pytest.raises(InversionError, match="record_inputs"):
        forward_pass_inv(selu_fcnn, target, input_shape=SHAPE, record_inputs=True,
                         method="scipy")


def test_row_space_iteration_is_the_same_iteration_on_the_input(selu_fcnn):
    """LM on the coordinates in the first layer's row space takes the same steps
    as LM on the input (float64): same iteration counts, same inputs."""
    model = selu_fcnn.double()
    target = target_distribution([0, 4, 9], 0.9)
    kw = dict(n_samples=2, seed=3, input_shape=SHAPE, chord=0)
    on_w = forward_pass_inv(model, target, **kw)
    on_x = forward_pass_inv(model, target, row_space=False, **kw)
    assert on_w.info["row_space_dim"] == 32 and on_x.info["row_space_dim"] is None
    assert on_w.converged.all() and on_x.converged.all()
    assert on_w.info["iterations"].tolist() == on_x.info["iterations"].tolist()
    assert torch.allclose(on_w.inputs, on_x.inputs, atol=1e-8, rtol=0)
    # the component of the start outside the row space is kept
    w1 = model[1].weight.detach()
    x0 = on_w.info["x0"].reshape(6, -1).double()
    null = torch.eye(64, dtype=torch.float64) - torch.linalg.pinv(w1) @ w1
    moved = on_w.inputs.reshape(6, -1) - x0
    assert (moved @ null).abs().max() < 1e-10 and moved.norm(dim=1).min() > 1e-3


def test_an_input_shape_the_model_cannot_take_is_named():
    net = nn.Sequential(nn.Linear(784, 32), nn.SELU(), nn.Linear(32, 10))   # no Flatten
    target = target_distribution(4, 0.9)
    with pytest.raises(InversionError, match=r"one input of shape \(1, 28, 28\).*input_shape="):
        forward_pass_inv(net, target, seed=0)
    assert forward_pass_inv(net, target, seed=0, input_shape=(784,)).inputs.shape == (1, 784)


def test_a_model_returning_probabilities_is_refused(selu_fcnn):
    target = target_distribution(4, 0.9)
    with pytest.raises(InversionError, match="outputs are probabilities"):
        forward_pass_inv(nn.Sequential(selu_fcnn, nn.Softmax(dim=1)), target,
                         input_shape=SHAPE, seed=0)
    # log-probabilities are logits shifted per row: the same softmax, the same inversion
    res = forward_pass_inv(nn.Sequential(selu_fcnn, nn.LogSoftmax(dim=1)), target,
                           n_samples=2, input_shape=SHAPE, seed=0)
    assert res.converged.all()


def test_row_space_looks_past_dropout(selu_fcnn):
    # input dropout (the identity in eval mode) must not hide the first Linear
    flatten, *rest = list(selu_fcnn)
    with_dropout = nn.Sequential(flatten, nn.Dropout(0.2), *rest)
    target = target_distribution([1, 6], 0.9)
    res, ref = (forward_pass_inv(net, target, n_samples=2, seed=0, input_shape=SHAPE)
                for net in (with_dropout, selu_fcnn))
    assert res.info["row_space_dim"] == 32 and res.converged.all()
    assert torch.equal(res.inputs, ref.inputs)


def test_row_space_is_skipped_where_it_does_not_apply(selu_fcnn):
    target = target_distribution(2, 0.9)
    boxed = forward_pass_inv(selu_fcnn, target, seed=0, input_shape=SHAPE, bounds=(0.0, 1.0))
    assert boxed.info["row_space_dim"] is None
    wide = _seeded(lambda: nni.make_fcnn([16, 32, 10], activation="selu"))   # o > d
    res = forward_pass_inv(wide, target, seed=0, input_shape=(16,))
    assert res.info["row_space_dim"] is None and res.converged.all()
    hist = forward_pass_inv(selu_fcnn, target, seed=0, input_shape=SHAPE, record_inputs=True)
    assert hist.info["row_space_dim"] == 32
    last = hist.info["iterations"][0]
    assert torch.allclose(hist.info["input_history"][0, last].float(), hist.inputs[0],
                          atol=1e-6)


def test_row_space_cache_follows_in_place_weight_changes(selu_fcnn):
    target = target_distribution(5, 0.9)
    assert forward_pass_inv(selu_fcnn, target, seed=0, input_shape=SHAPE).converged.all()
    with torch.no_grad():
        selu_fcnn[1].weight.mul_(-1.5)   # a stale QR would invert another network
    res = forward_pass_inv(selu_fcnn, target, seed=0, input_shape=SHAPE)
    assert res.info["row_space_dim"] == 32 and res.converged.all()
