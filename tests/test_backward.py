"""BackPassInv: the literal pass, the default (anchored) strategy, refusals and reports.

Tiny models are built (or trained for ~100 SGD steps on synthetic clusters) in
the test; nothing depends on the model cache. The trained paper FCNNs are
measured in the module docstring of ``nninvert_lib/backward.py``.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from nninvert_lib import backward, pattern_walk
from nninvert_lib.backward import _lm_polish, back_pass_inv, plan_back_pass
from nninvert_lib.errors import InversionError
from nninvert_lib.models.fcnn import make_fcnn
from nninvert_lib.result import target_distribution

TEN = target_distribution(list(range(10)), 0.9)


def _random_leaky_net(widths, slope=0.1, final=True, seed=0):
    torch.manual_seed(seed)
    return make_fcnn(widths, "leaky_relu", final_activation=final,
                     negative_slope=slope).eval()


@pytest.fixture(scope="module")
def trained_selu_net():
    """784 → 128 → 64 → 32 → 10 SELU (SELU after the last Linear too), trained on
    ten Gaussian clusters: deep enough that the literal pass leaves SELU's range."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    centers = torch.randn(10, 784, generator=g)
    net = make_fcnn((784, 128, 64, 32, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    for _ in range(100):
        y = torch.randint(0, 10, (64,), generator=g)
        x = centers[y] + torch.randn(64, 784, generator=g)
        loss = nn.functional.cross_entropy(net(x.reshape(-1, 1, 28, 28)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def test_back_pass_inv_reaches_target_on_one_layer_selu_fcnn():
    net = make_fcnn((784, 10)).eval()
    res = back_pass_inv(net, TEN, n_samples=5, seed=0, strategy="paper")
    assert res.inputs.shape == (50, 1, 28, 28) and res.inputs.dtype == torch.float32
    assert res.success_rate == 1.0
    assert res.info["reasons"] == [""] * 50


@pytest.mark.parametrize("final", [True, False])
@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_random_narrowing_leaky_relu_nets_of_several_depths_invert_at_95_percent(depth, final):
    widths = (320, 160, 80, 40, 20)[:depth] + (10,)
    net = _random_leaky_net(widths, final=final, seed=depth)
    res = back_pass_inv(net, TEN, n_samples=4, seed=1)
    assert res.success_rate >= 0.95, res.info["reasons"]
    assert res.inputs.shape == (40, 320)


def test_targets_the_first_draw_misses_get_fresh_backward_draws(monkeypatch):
    """Slope 0.01, each layer 0.75 times as wide as the one before it, depth 4: one
    backward draw per sample verifies about half of them in float32 (their inputs
    reach ~1e8) and leaves some targets with none. Fresh backward draws, a bounded
    number per target, give every target verified samples."""
    net = _random_leaky_net((31, 23, 17, 13, 10), slope=0.01, seed=4)
    res = back_pass_inv(net, TEN, n_samples=4, seed=1)
    assert res.success_rate >= 0.95, res.info["reasons"]
    assert 0 < res.info["backward_redraws"] <= 10 * (backward.ANCHOR_ROUNDS
                                                     * backward.ANCHOR_DRAWS
                                                     + 4 * backward.REDRAW_FACTOR)
    monkeypatch.setattr(backward, "ANCHOR_ROUNDS", 0)        # no redraws
    monkeypatch.setattr(backward, "REDRAW_MIN_RATE", 2.0)
    monkeypatch.setattr(pattern_walk, "MAX_ENTRIES", 0)      # nor the pattern walk
    monkeypatch.setattr(backward._Finisher, "round_missed",  # nor the final rounding
                        lambda self, x, stage: None)
    without = back_pass_inv(net, TEN, n_samples=4, seed=1)
    assert without.info["backward_redraws"] == 0
    assert without.success_rate < 0.95


@pytest.mark.parametrize("slope, widths, words", [
    (1e-12, (24, 18, 13, 10), "did not hold a preimage this large"),
    (1e-10, (17, 13, 10), "in float64 it reaches the target"),
])
def test_a_failed_pattern_walk_says_how_far_its_preimage_misses_and_why(slope, widths, words):
    """Tiny slopes make the walked preimages huge: 4.5e25 (it misses in float64,
    and in exact arithmetic too: the walk's float64 programs did not hold a
    preimage there) and 3.1e10 (exact in float64, spoilt by rounding to
    float32). The failed sample's reason says so, beside the last stage's own
    miss."""
    net = _random_leaky_net(widths, slope=slope, seed=0)
    res = back_pass_inv(net, target_distribution(0), n_samples=1, seed=1)
    assert res.info["pattern_walks"] == 1 and res.info["pattern_walks_verified"] == 0
    assert not res.converged[0]
    reason = res.info["reasons"][0]
    assert "pattern walk: its best preimage (largest input entry" in reason
    assert "once rounded to float32" in reason and words in reason
    size = float(reason.split("largest input entry ")[1].split(")")[0])
    assert size > 1e9


@pytest.mark.parametrize("logits, words", [
    ((4.0, 0.0), "in exact arithmetic it reaches the target (error 1.4e-17): an input "
                 "this large is beyond what float64 evaluates"),
    ((5.0, 0.0), "in exact arithmetic: the walk, solving its programs in float64, did not "
                 "hold a preimage this large"),
    ((0.0, 0.0), "though in float64 it reaches the target"),
])
def test_a_walk_note_tells_float64s_miss_from_the_walks(logits, words):
    """A net on which float64 and extended precision both lose what exact arithmetic
    keeps: (1 + 2**-52)**2 - (1 + 2**-51) is 2**-104, which the second layer
    makes a logit of 4; floats round the product to 1 + 2**-51 and make it 0.
    Which of the three reasons the note gives follows from the target."""
    eps = 2.0 ** -52
    layers = [(np.array([[1 + eps]]), np.array([-(1 + 2 * eps)]), 0.01),
              (np.array([[2.0 ** 106], [0.0]]), np.zeros(2), None)]
    x = torch.tensor([1 + eps], dtype=torch.float64)
    fake = SimpleNamespace(atol=1e-3, dtype=torch.float64,
                           rounded_probs=lambda xs: (xs, torch.full((1, 2), 0.5,
                                                                    dtype=torch.float64)))
    t = torch.softmax(torch.tensor(logits, dtype=torch.float64), dim=0)
    note = backward._Finisher.walk_note(fake, layers, x, x, t)
    assert note.startswith("pattern walk: its best preimage (largest input entry 1)")
    assert words in note


def test_a_walk_cut_short_by_walk_seconds_says_so():
    """The walk on this net fails with time or without; with ``walk_seconds``
    it solves no program after its time is up, and the failed sample's reason
    says that more time may do better; nor is the sample rounded at the end,
    which the reason also says. Without the limit it says neither."""
    net = _random_leaky_net((24, 18, 13, 10), slope=1e-12, seed=0)
    cut = back_pass_inv(net, target_distribution(0), n_samples=1, seed=1, walk_seconds=1e-9)
    assert cut.info["pattern_walks"] == 1 and not cut.converged[0]
    assert "the walk stopped at walk_seconds=1e-09 s" in cut.info["reasons"][0]
    assert "pattern walk: its best preimage" in cut.info["reasons"][0]
    assert cut.info["walks_stopped"] == [0] and cut.info["draws_stopped"] == []
    assert cut.info["roundings_stopped"] == [0]     # nor has the final rounding time
    assert "the final rounding of this target's samples stopped" in cut.info["reasons"][0]
    full = back_pass_inv(net, target_distribution(0), n_samples=1, seed=1)
    assert "walk_seconds" not in full.info["reasons"][0]
    assert full.info["walks_stopped"] == [] and full.info["roundings_stopped"] == []


def test_progress_shows_a_bar_over_the_targets_the_pattern_walk_runs_on(capsys):
    net = _random_leaky_net((24, 18, 13, 10), slope=1e-12, seed=0)
    back_pass_inv(net, target_distribution(0), n_samples=1, seed=1)
    assert "pattern walk" not in capsys.readouterr().err
    res = back_pass_inv(net, target_distribution(0), n_samples=1, seed=1, progress=True)
    assert res.info["pattern_walks"] == 1
    assert "pattern walk" in capsys.readouterr().err


def test_literal_pass_fails_on_trained_deep_selu_net_and_says_why(trained_selu_net):
    res = back_pass_inv(trained_selu_net, TEN, n_samples=4, seed=0, strategy="paper")
    failed = [r for r, ok in zip(res.info["reasons"], res.converged.tolist()) if not ok]
    assert failed, "the literal pass was expected to leave SELU's range on this net"
    assert all("left its range" in r and "selu" in r for r in failed)


def test_default_strategy_reaches_target_on_trained_deep_selu_net(trained_selu_net):
    res = back_pass_inv(trained_selu_net, TEN, n_samples=8, seed=0)
    assert res.success_rate >= 0.95
    assert res.max_error.max() <= 1e-3 or not res.converged.all()
    assert set(res.info["stage"]) <= {"backward", "lm", "anchored"}
    assert "anchored" in res.info["stage"]       # most samples come from null-space sampling


def test_samples_of_one_target_are_pairwise_distinct(trained_selu_net):
    for strategy, net in (("paper", make_fcnn((784, 10)).eval()),
                          ("anchored", trained_selu_net)):
        res = back_pass_inv(net, target_distribution(3), n_samples=12, seed=0, strategy=strategy)
        x = res.inputs.double().reshape(12, -1)
        d = torch.cdist(x, x) + torch.eye(12, dtype=torch.float64) * 1e9
        assert d.min() > 1e-3 * x.norm(dim=1).mean(), strategy


def test_same_seed_gives_bit_identical_inputs_and_another_seed_does_not(trained_selu_net):
    a = back_pass_inv(trained_selu_net, TEN[:2], n_samples=5, seed=7)
    b = back_pass_inv(trained_selu_net, TEN[:2], n_samples=5, seed=7)
    c = back_pass_inv(trained_selu_net, TEN[:2], n_samples=5, seed=8)
    assert torch.equal(a.inputs, b.inputs)
    assert not torch.equal(a.inputs, c.inputs)


def test_expanding_network_reports_converged_false_instead_of_raising():
    net = make_fcnn((2, 10), activation="leaky_relu").eval()    # 2 inputs, 10 logits
    for strategy in ("paper", "anchored"):
        res = back_pass_inv(net, target_distribution(4), n_samples=3, seed=0,
                            strategy=strategy, lm_max_iter=5)
        assert not res.converged.any()
        assert all(r for r in res.info["reasons"])
        assert res.info["layers"][0]["expanding"]


def test_network_without_final_activation_and_nested_sequential():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(784, 64), nn.SELU()),
                        nn.Sequential(nn.Linear(64, 10))).eval()
    res = back_pass_inv(net, TEN, n_samples=3, seed=0)
    assert res.success_rate == 1.0


def test_batched_targets_give_n_samples_per_row_in_row_order():
    net = make_fcnn((784, 32, 10)).eval()
    res = back_pass_inv(net, target_distribution([1, 5]), n_samples=3, seed=0)
    assert res.inputs.shape == (6, 1, 28, 28)
    assert res.info["target_index"].tolist() == [0, 0, 0, 1, 1, 1]
    assert res.target[3].argmax() == 5


def test_inputs_have_the_models_dtype_and_a_custom_input_shape():
    net = make_fcnn((784, 32, 10)).double().eval()
    res = back_pass_inv(net, TEN[0], n_samples=2, seed=0, input_shape=(784,))
    assert res.inputs.dtype == torch.float64 and res.inputs.shape == (2, 784)


@pytest.mark.parametrize("layer, words", [
    (nn.ReLU(), "forward_pass_inv"),
    (nn.GELU(), "forward_pass_inv"),
    (nn.LayerNorm(32), "LayerNorm"),
    (nn.Conv1d(1, 1, 1), "Conv1d"),
])
def test_unsupported_layers_raise_naming_them(layer, words):
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), layer, nn.Linear(32, 10))
    with pytest.raises(InversionError, match=words):
        back_pass_inv(net, TEN[0])


def _polished(nets: tuple[nn.Module, ...], target: torch.Tensor) -> list[torch.Tensor]:
    """Each net's inputs after three steps of BackPassInv's LM polish, all from the
    same seeded 784-pixel starts (one per target row)."""
    x0 = torch.randn(len(target), 784, dtype=torch.float64,
                     generator=torch.Generator().manual_seed(0))
    return [_lm_polish(net, plan_back_pass(net), x0, target.double(), (1, 28, 28), 3, 1e-3,
                       torch.Generator().manual_seed(0))[0] for net in nets]


@pytest.mark.parametrize("dropout", [nn.Dropout(0.5), nn.AlphaDropout(0.1)])
def test_dropout_is_the_identity_as_in_eval_mode(dropout):
    torch.manual_seed(0)
    plain = make_fcnn((784, 32, 16, 10), "selu", final_activation=False)
    lin1, act1, lin2, act2, lin3 = list(plain)[1:]
    with_dropout = nn.Sequential(nn.Flatten(), dropout, lin1, act1, dropout, lin2, act2,
                                 dropout, lin3)
    with_dropout.train()                # the methods run an eval-mode copy regardless
    res, ref = (back_pass_inv(net, TEN[:2], n_samples=2, seed=0)
                for net in (with_dropout, plain))
    assert res.converged.all() and torch.equal(res.inputs, ref.inputs)
    assert with_dropout.training        # the caller's model is left as it was
    # the LM polish runs the layers after the first Linear: none of them twice
    assert torch.equal(*_polished((with_dropout, plain), TEN[:2]))


def _batch_norm(width: int, seed: int) -> nn.BatchNorm1d:
    """A BatchNorm1d with random running statistics and affine parameters."""
    gen = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm1d(width)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(width, generator=gen))
        bn.running_var.copy_(0.5 + torch.rand(width, generator=gen))
        bn.weight.copy_(0.5 + torch.rand(width, generator=gen))
        bn.bias.copy_(0.3 * torch.randn(width, generator=gen))
    return bn.eval()


def test_batch_norm_after_a_linear_is_folded_into_it():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), _batch_norm(32, 1), nn.SELU(),
                        nn.Linear(32, 16), _batch_norm(16, 2), nn.SELU(), nn.Linear(16, 10)
                        ).double().eval()
    target = target_distribution([0, 1, 2], 0.5)   # 0.9 is beyond this random net for class 2
    res = back_pass_inv(net, target, n_samples=2, seed=0)
    assert res.converged.all()      # verified on the model itself, BatchNorm and all
    scale, shift = backward.batch_norm_affine(net[2])
    first = plan_back_pass(net).steps[0]
    lin = net[1].weight.detach()
    assert torch.allclose(first.weight, scale[:, None] * lin)
    assert torch.allclose(first.bias, scale * net[1].bias.detach() + shift)
    # the LM polish runs what follows the first Linear and its BatchNorm, once
    folded = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), *list(net)[3:]).double().eval()
    with torch.no_grad():
        folded[1].weight.copy_(first.weight)
        folded[1].bias.copy_(first.bias)
    assert torch.allclose(*_polished((net, folded), target), atol=1e-8, rtol=0)
    # a forward pass in train mode updates the running statistics: the plan follows
    net.train()
    net(torch.randn(8, 1, 28, 28, dtype=torch.float64))
    net.eval()
    scale, shift = backward.batch_norm_affine(net[2])
    assert torch.allclose(plan_back_pass(net).steps[0].weight, scale[:, None] * lin)


@pytest.mark.parametrize("net, words", [
    (nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.SELU(), _batch_norm(32, 0),
                   nn.Linear(32, 10)), "directly after an nn.Linear"),
    (nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.BatchNorm1d(32, track_running_stats=False),
                   nn.SELU(), nn.Linear(32, 10)), "running statistics"),
])
def test_batch_norm_that_cannot_be_folded_is_refused(net, words):
    with pytest.raises(InversionError, match=words):
        back_pass_inv(net, TEN[0])


def test_final_log_softmax_is_skipped_and_final_softmax_refused():
    torch.manual_seed(0)
    net = make_fcnn((784, 32, 10), "selu", final_activation=False)
    res = back_pass_inv(nn.Sequential(*net, nn.LogSoftmax(dim=1)), TEN[:2], n_samples=2, seed=0)
    ref = back_pass_inv(net, TEN[:2], n_samples=2, seed=0)
    assert res.converged.all() and torch.equal(res.inputs, ref.inputs)
    with pytest.raises(InversionError, match=r"ends in a softmax.*model\[:-1\]"):
        back_pass_inv(nn.Sequential(*net, nn.Softmax(dim=1)), TEN[0])


def test_model_that_is_not_sequential_is_refused():
    class Net(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(InversionError, match="nn.Sequential"):
        back_pass_inv(Net(), TEN[0])


@pytest.mark.parametrize("kwargs, words", [
    ({"target": torch.full((5,), 0.2)}, "model outputs 10"),
    ({"target": torch.tensor([0.5, 0.5] + [0.0] * 8)}, "<= 0"),
    ({"target": torch.tensor([float("nan")] * 10)}, "NaN"),
    ({"target": torch.full((10,), 0.11)}, "sum to 1"),
    ({"n_samples": 0}, "n_samples"),
    ({"std": -1.0}, "std"),
    ({"strategy": "magic"}, "strategy"),
    ({"input_shape": (1, 27, 27)}, "input_shape"),
    ({"max_cond": 0.5}, "max_cond"),
    ({"walk_seconds": 0}, "walk_seconds"),
    ({"walk_seconds": float("inf")}, "walk_seconds"),
])
def test_invalid_arguments_raise_naming_the_problem(kwargs, words):
    net = make_fcnn((784, 32, 10)).eval()
    args = {"target": TEN[0], **kwargs}
    with pytest.raises(InversionError, match=words):
        back_pass_inv(net, **args)


def test_plan_is_computed_once_per_model_and_rebuilt_when_weights_change():
    net = make_fcnn((784, 32, 10)).eval()
    first = plan_back_pass(net)
    assert plan_back_pass(net) is first
    with torch.no_grad():
        net[1].weight.mul_(2.0)
    second = plan_back_pass(net)
    assert second is not first
    assert second.linear_steps[0].inverse.singular_values[0] == pytest.approx(
        2 * float(first.linear_steps[0].inverse.singular_values[0]))
    assert plan_back_pass(net, max_cond=10.0) is not second
