"""Walking the activation regions of piecewise-linear networks (nninvert_lib.pattern_walk)."""
import copy
import time
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nninvert_lib import back_pass_inv, backward, pattern_walk, target_distribution, verify
from nninvert_lib.backward import plan_back_pass
from nninvert_lib.models.fcnn import make_fcnn

TEN = torch.stack([target_distribution(c, 0.9) for c in range(10)])


def _net(widths, slope=0.01, seed=0, final=True, act="leaky_relu"):
    torch.manual_seed(seed)
    kw = {"negative_slope": slope} if act == "leaky_relu" else {}
    return make_fcnn(widths, act, final_activation=final, **kw).eval()


@pytest.fixture(scope="module")
def deep_leaky():
    """55 → 41 → 31 → 23 → 17 → 13 → 10, LeakyReLU(0.01), PyTorch's default
    initialisation: ``benchmarks/leaky_depth.py``'s network at ratio 0.75, depth 6."""
    return _net((55, 41, 31, 23, 17, 13, 10), seed=6)


def _layers(net):
    return pattern_walk.piecewise_layers(plan_back_pass(net).steps)


def _centred(v):
    return v - v.mean()


def _record_walks(monkeypatch, key, default):
    """The list that records ``key`` (``default`` where not passed) of every
    ``backward_walk`` call from now on."""
    seen, walk = [], pattern_walk.backward_walk

    def spy(*args, **kwargs):
        seen.append(kwargs.get(key, default))
        return walk(*args, **kwargs)

    monkeypatch.setattr(pattern_walk, "backward_walk", spy)
    return seen


@pytest.mark.parametrize("final", [True, False])
def test_layers_reproduce_the_model_and_its_affine_map_on_a_region(final):
    net = _net((12, 9, 7, 5), slope=0.1, seed=1, final=final)
    layers = _layers(net)
    assert [w.shape for w, _, _ in layers] == [(9, 12), (7, 9), (5, 7)]
    assert [s for *_, s in layers] == [0.1, 0.1, 0.1 if final else None]
    x = np.random.default_rng(0).normal(size=12) * 3
    pre, out = pattern_walk.forward(layers, x)
    want = net.double()(torch.from_numpy(x)[None])[0].detach().numpy()
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    signs = [np.where(a >= 0, 1.0, -1.0) for a in pre]
    affine, (A, c) = pattern_walk._affine(layers, signs)
    np.testing.assert_allclose(A @ x + c, out, atol=1e-10)
    for (M, m), a in zip(affine, pre):
        np.testing.assert_allclose(M @ x + m, a, atol=1e-10)


def test_only_linear_leaky_relu_chains_are_walked():
    assert _layers(_net((12, 9, 5), act="selu")) is None
    assert pattern_walk.walkable(_layers(_net((12, 9, 5))))
    assert not pattern_walk.walkable(None)
    wide = _layers(_net((2000, 300, 10), seed=0))
    assert not pattern_walk.walkable(wide)        # programs too large


def test_pre_activation_inverts_the_leaky_relu():
    h = np.array([-2.0, -0.5, 0.0, 3.0])
    pre = pattern_walk.pre_activation(h, 0.01)
    np.testing.assert_allclose(pre, [-200.0, -50.0, 0.0, 3.0])
    np.testing.assert_allclose(torch.nn.functional.leaky_relu(torch.from_numpy(pre), 0.01), h)
    assert pattern_walk.pre_activation(h, None) is h      # a layer without a LeakyReLU


def test_walk_keeps_an_exact_preimage_and_never_worsens_it(deep_leaky):
    layers = _layers(deep_leaky)
    z = np.log(TEN[3].double().numpy())
    exact = copy.deepcopy(deep_leaky).double()      # its backward sample is exact in float64
    start = back_pass_inv(exact, TEN[3:4].double(), 1, seed=1).inputs[0].flatten().numpy()
    for objective in ("size", "rounding"):
        walked = pattern_walk.walk_patterns(layers, start, z, objective=objective)
        out = pattern_walk.forward(layers, walked)[1]
        np.testing.assert_allclose(_centred(out), _centred(z), atol=1e-5)
        before = pattern_walk._score(layers, start, z, objective, torch.float32)
        after = pattern_walk._score(layers, walked, z, objective, torch.float32)
        assert after <= before
    assert np.abs(walked).max() < np.abs(start).max() / 10
    # a hidden vector after a LeakyReLU: negative entries count 1/slope times
    h = pattern_walk.forward(layers, start)[0][0]
    h = np.where(h >= 0, h, 0.01 * h)
    sub = layers[1:]
    walked = pattern_walk.walk_patterns(sub, h, z, objective="size", input_slope=0.01)
    np.testing.assert_allclose(_centred(pattern_walk.forward(sub, walked)[1]), _centred(z),
                               atol=1e-5)
    weighted = [pattern_walk._score(sub, v, z, "size", torch.float32, input_slope=0.01)
                for v in (h, walked)]
    assert weighted[1] < weighted[0] / 10
    assert weighted[1] >= np.maximum(walked, -walked / 0.01).max()
    with pytest.raises(ValueError, match="objective"):
        pattern_walk.walk_patterns(layers, start, z, objective="norm")


def test_backward_walk_finds_float32_preimages_the_backward_pass_cannot(deep_leaky):
    """The backward pass's inputs here are ~1e9–1e12 and almost never verify once
    rounded to float32; one walk per target (no noise) verifies for all 10."""
    layers = _layers(deep_leaky)
    x, walked, _ = pattern_walk.walk_preimages(layers, TEN, torch.float32, attempts=1)
    ok = verify(deep_leaky, x.float(), TEN)[1]
    assert torch.equal(ok, walked)
    plain = back_pass_inv(deep_leaky, TEN, 1, seed=1, strategy="paper")
    assert int(ok.sum()) >= 9
    assert int(plain.converged.sum()) <= 1


def test_backward_walk_traces_each_layer_going_back(deep_leaky):
    """``trace`` gets one ``(i, h)`` per layer, from the last to the input, each
    ``h`` an input of ``layers[i:]`` that reproduces the target's centred logits;
    the walk's answer is the same with or without it."""
    layers = _layers(deep_leaky)
    z = np.log(TEN[2].double().numpy())
    trace = []
    x = pattern_walk.backward_walk(layers, z, trace=trace)
    assert [i for i, _ in trace] == list(range(len(layers) - 1, -1, -1))
    for i, h in trace:
        assert h.shape == (layers[i][0].shape[1],)
        assert pattern_walk._residual(layers[i:], h, z) < 1e-6 * (1 + np.abs(z).max())
    np.testing.assert_array_equal(x, pattern_walk.backward_walk(layers, z))


def test_enumerated_minimum_is_the_smallest_preimage():
    """Trying every activation pattern finds a preimage no larger than the pattern
    walk's, nor than its own program's answer at the walk's pattern; more than
    ``MAX_UNITS`` units are refused."""
    pw = pattern_walk
    layers = _layers(_net((17, 11, 10), seed=3, final=False))
    z = np.log(TEN[6].double().numpy())
    walked = pw.backward_walk(layers, z)
    walk_size = pw._score(layers, walked, z, "size", torch.float64)
    size, x = pw.enumerated_minimum(layers, z, walk_size)
    assert pw._residual(layers, x, z) < 1e-6 * (1 + np.abs(z).max())
    assert size == pytest.approx(pw._score(layers, x, z, "size", torch.float64))
    assert 0 < size <= walk_size * (1 + 1e-9)
    own = pw.pattern_minimum(layers, pw._signs(pw.forward(layers, walked)[0]), z,
                             walk_size, None)
    assert own is not None
    assert size <= pw._score(layers, own, z, "size", torch.float64) * (1 + 1e-6)
    wide = _layers(_net((30, 20, 10), final=False))
    with pytest.raises(ValueError, match="2\\^20 patterns"):
        pw.enumerated_minimum(wide, z, 1.0)


def test_top_choices_lead_to_different_preimages(deep_leaky):
    """``backward_walk``'s ``top``: each choice gives a preimage; on the last layer
    ``"walk"`` is no larger than ``"min_norm"``, and no choice is smaller than
    ``enumerated_minimum``."""
    pw = pattern_walk
    layers = _layers(deep_leaky)
    z = np.log(TEN[7].double().numpy())
    sizes, inputs = {}, {}
    for top in pw.TOPS:
        trace = []
        inputs[top] = pw.backward_walk(layers, z, top=top, trace=trace)
        assert pw._residual(layers, inputs[top], z) < 1e-6 * (1 + np.abs(z).max())
        i, h = trace[0]
        sizes[top] = pw._score(layers[i:], h, z, "size", torch.float64, layers[i - 1][2])
    smallest, _ = pw.enumerated_minimum(layers[i:], z, sizes["walk"], layers[i - 1][2])
    assert smallest <= sizes["walk"] * (1 + 1e-9) <= sizes["min_norm"] * (1 + 1e-9)
    assert not np.array_equal(inputs["min_norm"], inputs["walk"])
    with pytest.raises(ValueError, match="top must be one of"):
        pw.backward_walk(layers, z, top="best")


def test_backward_walk_starts_from_each_of_the_last_layers_pattern_minima(deep_leaky):
    """``pattern_minima`` lists one preimage per distinct point, smallest first, its
    first the ``enumerated_minimum``; ``backward_walk(top_input=h)`` keeps ``h`` as
    the last layer's input and walks the layers below from it to a preimage;
    a ``top_input`` of another width is refused."""
    pw = pattern_walk
    layers = _layers(deep_leaky)
    z = np.log(TEN[7].double().numpy())
    slope = layers[-2][2]
    minima = pw.pattern_minima(layers[-1:], z, 100.0, slope)
    sizes = [size for size, _ in minima]
    assert len(minima) >= 3 and sizes == sorted(sizes)
    assert sizes[0] == pytest.approx(pw.enumerated_minimum(layers[-1:], z, 100.0, slope)[0])
    for _, h in minima:
        assert pw._residual(layers[-1:], h, z) < 1e-6 * (1 + np.abs(z).max())
    ends = []
    for _, h in minima[:2]:
        trace = []
        x = pw.backward_walk(layers, z, top_input=h, trace=trace)
        np.testing.assert_array_equal(trace[0][1], h)
        assert pw._residual(layers, x, z) < 1e-6 * (1 + np.abs(z).max())
        ends.append(x)
    assert not np.array_equal(*ends)
    with pytest.raises(ValueError, match="top_input must be the last layer's input"):
        pw.backward_walk(layers, z, top_input=np.zeros(3))


def test_input_size_walk_shrinks_the_input_only(deep_leaky):
    """``"input_size"``: the walk's answer is a preimage whose input is no larger
    than where it started; ``backward_walk`` passes it to every walk going back,
    and refuses an unknown objective."""
    pw = pattern_walk
    layers = _layers(deep_leaky)
    z = np.log(TEN[4].double().numpy())
    trace = []
    pw.backward_walk(layers, z, trace=trace)
    i, h = next((i, h) for i, h in trace if i == 2)
    walked = pw.walk_patterns(layers[i:], h, z, objective="input_size",
                              input_slope=layers[i - 1][2])
    assert pw._residual(layers[i:], walked, z) < 1e-6 * (1 + np.abs(z).max())
    size = pw._score(layers[i:], walked, z, "input_size", torch.float64, layers[i - 1][2])
    start = pw._score(layers[i:], h, z, "input_size", torch.float64, layers[i - 1][2])
    assert size <= start
    x = pw.backward_walk(layers, z, size_objective="input_size")
    assert pw._residual(layers, x, z) < 1e-6 * (1 + np.abs(z).max())
    with pytest.raises(ValueError, match="size_objective must be one of"):
        pw.backward_walk(layers, z, size_objective="rounding")
    with pytest.raises(ValueError, match="objective must be"):
        pw.walk_patterns(layers, x, z, objective="norm")


def test_walks_out_of_time_solve_no_program_and_start_no_further_walk(monkeypatch):
    """A deadline already past: ``walk_patterns`` returns its start unchanged,
    ``round_preimage`` runs its first greedy search only, and
    ``walk_preimages`` runs one walk per row and reports the rows that
    missed as stopped. With no limit, the missed row runs every walk."""
    layers = _layers(_net((24, 18, 13, 10), slope=1e-12, seed=0))
    x = pattern_walk.backward_walk(layers, np.log(TEN[0].double().numpy()))
    same = pattern_walk.walk_patterns(layers, x, np.log(TEN[1].double().numpy()),
                                      deadline=0.0)
    assert np.array_equal(same, x)
    greedy, search = [], pattern_walk._round_greedy
    monkeypatch.setattr(pattern_walk, "_round_greedy",
                        lambda *a, **k: greedy.append(1) or search(*a, **k))
    _, err = pattern_walk.round_preimage(layers, x, np.log(TEN[0].double().numpy()),
                                         torch.float32, restarts=8, deadline=0.0)
    assert err > 1e-3 and len(greedy) == 1       # no restart after the first search
    calls = _record_walks(monkeypatch, "top", "min_norm")
    stopped: set = set()
    _, ok, _ = pattern_walk.walk_preimages(layers, TEN[:1], torch.float32, seconds=1e-9,
                                           stopped=stopped)
    assert not ok[0] and stopped == {0} and len(calls) == 1
    calls.clear()
    stopped.clear()
    pattern_walk.walk_preimages(layers, TEN[:1], torch.float32, stopped=stopped)
    assert not stopped and len(calls) > 1


def test_walk_preimages_ends_with_an_input_size_walk_only_where_the_others_miss(
        deep_leaky, monkeypatch):
    """Where a walk verifies, no ``"input_size"`` walk runs; with no other walk
    allowed (``attempts=0``) it is the one returned, and ``gen`` is left as it was."""
    pw = pattern_walk
    layers = _layers(deep_leaky)
    calls = _record_walks(monkeypatch, "size_objective", "size")
    t = TEN[5:6]
    pw.walk_preimages(layers, t, torch.float32, gen=torch.Generator().manual_seed(0))
    assert calls and "input_size" not in calls
    calls.clear()
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    x, ok, exact = pw.walk_preimages(layers, t, torch.float32, attempts=0, gen=gen)
    assert calls == ["input_size"]
    assert torch.equal(gen.get_state(), state)
    assert torch.equal(ok, verify(deep_leaky, x.float(), t)[1])
    z = np.log(t[0].double().numpy())
    assert pw._residual(layers, exact[0].numpy(), z) < 1e-6 * (1 + np.abs(z).max())

def test_region_samples_are_distinct_verified_preimages(deep_leaky):
    layers = _layers(deep_leaky)
    t = TEN[3:4]
    anchor = pattern_walk.walk_preimages(layers, t, torch.float32)[2][0].numpy()
    z = np.log(t[0].double().numpy())
    gen = torch.Generator().manual_seed(0)
    xs, drawn = pattern_walk.region_samples(layers, anchor, z, 8, gen)
    assert drawn.sum() >= 6
    xs = xs[drawn]
    ok = verify(deep_leaky, torch.from_numpy(xs).float(), t.expand(len(xs), -1))[1]
    assert ok.all()
    assert (torch.pdist(torch.from_numpy(xs)) > 1e-6 * np.linalg.norm(anchor)).all()
    again, _ = pattern_walk.region_samples(layers, anchor, z, 8, torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(xs, again[drawn])


def test_region_samples_fall_back_to_the_first_layers_null_space(deep_leaky, monkeypatch):
    """Where no draw of the region's program gives a verified sample (here the
    program holds no answer at all), that sample and the rest are drawn in the
    null space of the first layer's weight: verified, distinct, and moved from the
    anchor along W1's null space only."""
    layers = _layers(deep_leaky)
    t = TEN[3:4]
    anchor = pattern_walk.walk_preimages(layers, t, torch.float32)[2][0].numpy()
    z = np.log(t[0].double().numpy())
    monkeypatch.setattr(pattern_walk, "_solve", lambda *args: None)
    xs, drawn = pattern_walk.region_samples(layers, anchor, z, 4, torch.Generator().manual_seed(0))
    assert drawn.all()
    assert verify(deep_leaky, torch.from_numpy(xs).float(), t.expand(4, -1))[1].all()
    assert (torch.pdist(torch.from_numpy(xs)) > 1e-3 * np.linalg.norm(anchor)).all()
    w = layers[0][0]
    moves = xs - anchor
    assert (np.linalg.norm(moves, axis=1) > 1e-3 * np.linalg.norm(anchor)).all()
    assert (np.linalg.norm(moves @ w.T, axis=1)
            <= 1e-5 * np.linalg.norm(w, 2) * np.linalg.norm(moves, axis=1)).all()


@pytest.mark.parametrize("draw", ["region_samples", "null_samples"])
def test_samples_past_their_deadline_are_not_drawn(deep_leaky, draw):
    """With its ``deadline`` passed, neither sampler starts a draw: every row is
    the anchor, marked not drawn, and no randomness is used."""
    layers = _layers(deep_leaky)
    t = TEN[3:4]
    anchor = pattern_walk.walk_preimages(layers, t, torch.float32)[2][0].numpy()
    z = np.log(t[0].double().numpy())
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    xs, drawn = getattr(pattern_walk, draw)(layers, anchor, z, 3, gen,
                                            deadline=time.monotonic() - 1)
    assert not drawn.any()
    np.testing.assert_array_equal(xs, np.repeat(anchor[None], 3, axis=0))
    assert torch.equal(gen.get_state(), state)


def test_walk_seconds_also_bounds_the_samples_drawn_around_a_walked_preimage(
        deep_leaky, monkeypatch):
    """The walk itself is let run without a limit here (and verifies), and so is
    the final rounding; the draws around the walked preimage get
    ``walk_seconds`` of their own, 1e-9 s, so none is drawn: the target is
    listed in ``draws_stopped``, its first sample is the walked one, and later
    stages finish the other three."""
    walk = pattern_walk.walk_preimages
    round_missed = backward._Finisher.round_missed

    def unlimited(*args, **kwargs):
        return walk(*args, **{**kwargs, "seconds": None})

    def round_unlimited(fin, *args):
        fin.walk_seconds = None
        return round_missed(fin, *args)

    monkeypatch.setattr(pattern_walk, "walk_preimages", unlimited)
    monkeypatch.setattr(backward._Finisher, "round_missed", round_unlimited)
    res = back_pass_inv(deep_leaky, TEN[3], n_samples=4, seed=1, walk_seconds=1e-9)
    assert res.info["pattern_walks_verified"] == 1
    assert res.info["walks_stopped"] == [] and res.info["draws_stopped"] == [0]
    assert res.info["stage"][0] == "walk" and "walk" not in res.info["stage"][1:]
    assert res.converged.all(), res.info["reasons"]


@pytest.fixture(scope="module")
def unrounded_walks(deep_leaky):
    """One walked preimage per target, without the final rounding walk, and its
    probability error once plainly rounded to float32; several miss."""
    layers = _layers(deep_leaky)
    xs, plain = [], []
    for c in range(10):
        z = np.log(TEN[c].double().numpy())
        xs.append(pattern_walk.backward_walk(layers, z, max_programs=0))
        plain.append(pattern_walk._score(layers, xs[-1], z, "rounding", torch.float32))
    return np.stack(xs), plain


def test_round_preimage_cancels_most_of_the_rounding_error(deep_leaky, unrounded_walks):
    """round_preimage brings the walked preimages that miss once rounded within reach."""
    layers = _layers(deep_leaky)
    exact = copy.deepcopy(deep_leaky).double()
    missed = 0
    for c, (x, plain) in enumerate(zip(*unrounded_walks)):
        z = np.log(TEN[c].double().numpy())
        xr, err = pattern_walk.round_preimage(layers, x, z, torch.float32)
        assert err <= plain
        np.testing.assert_array_equal(xr, xr.astype(np.float32))     # representable
        assert np.abs(xr - x).max() <= 1e-5 * np.abs(x).max()          # a few ulps away
        probs = torch.softmax(exact(torch.from_numpy(xr)[None]), dim=1)[0]
        assert (probs - TEN[c].double()).abs().max().item() == pytest.approx(err, rel=1e-3)
        if plain > 1e-3:
            missed += 1
            assert err <= min(plain / 4, 0.9e-3)
            assert verify(deep_leaky, torch.from_numpy(xr)[None].float(), TEN[c:c + 1])[1].all()
    assert missed >= 2


def test_round_successive_fixes_the_entries_one_at_a_time_and_stays_a_preimage(
        deep_leaky, unrounded_walks):
    """_round_successive: every entry but the ``keep`` smallest holds a float32
    value, and the point is still nearly a preimage in float64 (the free entries
    absorbed most of each rounding error: what is left is at most an eighth of
    what plain rounding leaves, and under 1e-4), close to the walked one; the
    greedy search finishes it within the target."""
    layers = _layers(deep_leaky)
    for c, (x, plain) in enumerate(zip(*unrounded_walks)):
        z = np.log(TEN[c].double().numpy())
        xs = pattern_walk._round_successive(layers, x, z, torch.float32, keep=5)
        fixed = np.argsort(-np.abs(x))[:-5]
        np.testing.assert_array_equal(xs[fixed], xs[fixed].astype(np.float32))
        assert not np.array_equal(xs, xs.astype(np.float32))     # the 5 left are not
        assert np.abs(xs - x).max() <= 1e-3 * np.abs(x).max()
        exact = pattern_walk._probability_error(pattern_walk.forward(layers, x)[1], z)
        after = pattern_walk._probability_error(pattern_walk.forward(layers, xs)[1], z)
        assert exact < 1e-10 and after <= min(plain / 8, 1e-4) + 1e-8
        xr, err = pattern_walk._round_greedy(layers, xs, z, torch.float32, 2.5e-4, 400, 256)
        assert err <= 2.5e-4
        assert verify(deep_leaky, torch.from_numpy(xr)[None].float(), TEN[c:c + 1])[1].all()


def test_round_preimage_tries_the_successive_rounding_where_the_greedy_search_misses(
        deep_leaky, unrounded_walks, monkeypatch):
    """round_preimage starts the greedy search again from _round_successive where
    its first search misses ``good`` (here set below what it reaches), and keeps the
    better answer; where the first search meets ``good``, or with
    ``successive=False``, it does not."""
    layers = _layers(deep_leaky)
    calls = []
    successive = pattern_walk._round_successive

    def spy(*args, **kwargs):
        calls.append(1)
        return successive(*args, **kwargs)

    monkeypatch.setattr(pattern_walk, "_round_successive", spy)
    x, z = unrounded_walks[0][1], np.log(TEN[1].double().numpy())
    greedy = pattern_walk._round_greedy(layers, x, z, torch.float32, 1e-7, 400, 256)[1]
    assert greedy > 1e-7
    xr, err = pattern_walk.round_preimage(layers, x, z, torch.float32, good=1e-7)
    assert calls == [1] and err <= greedy
    pattern_walk.round_preimage(layers, x, z, torch.float32, good=max(greedy, 1e-6) * 1.01)
    pattern_walk.round_preimage(layers, x, z, torch.float32, good=1e-7, successive=False)
    assert calls == [1]


def test_back_pass_inv_rounds_the_samples_that_still_miss(deep_leaky, unrounded_walks):
    """Its last step: float64 preimages that miss once rounded to float32 are
    rounded entry by entry (stage "rounded")."""
    plan = plan_back_pass(deep_leaky)
    xs, plain = unrounded_walks
    x = torch.from_numpy(xs.copy())
    fin = backward._Finisher(deep_leaky, plan, TEN.double(), torch.arange(10), (55,),
                             torch.float32, 0.1, 1e-3, 2, 30, torch.Generator().manual_seed(0))
    before = fin.verified(x, TEN.double())
    assert not before.all()
    stage = ["lm"] * 10
    fin.round_missed(x, stage)
    after = verify(deep_leaky, x.float(), TEN)[1]
    assert after.all()
    assert stage == ["lm" if ok else "rounded" for ok in before.tolist()]
    assert stage.count("rounded") == int((~before).sum()) >= 2
    assert sum(p > 1e-3 for p in plain) >= 2


def test_walk_seconds_bounds_the_final_rounding_of_a_targets_samples(deep_leaky, unrounded_walks):
    """With ``walk_seconds`` the final rounding of one target's samples shares
    that time. Here the ten walked preimages are filed under one target row.
    With 1e-9 s no sample is rounded and the row is listed in
    ``roundings_stopped``; with ample time every missed sample is rounded,
    each search given the target's one deadline, as without a limit."""
    plan = plan_back_pass(deep_leaky)
    xs, _ = unrounded_walks
    calls = []
    rounder = pattern_walk.round_preimage

    def spy(*args, **kwargs):
        calls.append(kwargs["deadline"])
        return rounder(*args, **kwargs)

    def round_all(walk_seconds):
        fin = backward._Finisher(deep_leaky, plan, TEN.double(), torch.zeros(10, dtype=torch.long),
                                 (55,), torch.float32, 0.1, 1e-3, 2, 30,
                                 torch.Generator().manual_seed(0), walk_seconds=walk_seconds)
        x, stage = torch.from_numpy(xs.copy()), ["lm"] * 10
        missed = int((~fin.verified(x, TEN.double())).sum())
        calls.clear()
        fin.round_missed(x, stage)
        return fin, stage, missed

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pattern_walk, "round_preimage", spy)
        fin, stage, missed = round_all(1e-9)
        assert missed >= 2 and calls == []
        assert "rounded" not in stage and fin.roundings_stopped == [0]
        fin, stage, _ = round_all(1e6)
        assert len(calls) == missed and len(set(calls)) == 1 and calls[0] is not None
        assert stage.count("rounded") == missed and fin.roundings_stopped == []


def test_wide_inputs_walk_the_narrow_layers_and_sample_the_input_null_space(
        deep_leaky, monkeypatch):
    """With programs over the whole network too large, the walk covers the
    sub-networks that fit, and a target's samples are its walked preimage
    plus first-layer null-space noise."""
    layers = _layers(deep_leaky)
    monkeypatch.setattr(pattern_walk, "MAX_ENTRIES", 5000)     # 55·135 entries do not fit
    assert pattern_walk.walkable(layers) and not pattern_walk.fits(layers)
    assert pattern_walk.fits(layers[1:])
    t = TEN[2:3]
    z = np.log(t[0].double().numpy())
    _, ok, anchor = pattern_walk.walk_preimages(layers, t, torch.float32)
    assert ok.all()
    anchor = anchor[0].numpy()
    gen = torch.Generator().manual_seed(0)
    xs, drawn = pattern_walk.null_samples(layers, anchor, z, 6, gen)
    assert drawn.all()
    ok = verify(deep_leaky, torch.from_numpy(xs).float(), t.expand(len(xs), -1))[1]
    assert ok.all()
    assert (torch.pdist(torch.from_numpy(xs)) > 1e-3 * np.linalg.norm(anchor)).all()
    w, b, _ = layers[0]
    first = xs @ w.T + b
    assert np.abs(first - (w @ anchor + b)).max() <= 1e-4 * np.abs(w @ anchor + b).max()
    res = back_pass_inv(deep_leaky, TEN, n_samples=4, seed=1)
    assert res.info["pattern_walks_verified"] >= 8
    assert res.success_rate >= 0.8, res.info["reasons"]


def test_back_pass_inv_walks_targets_without_anchors(deep_leaky, monkeypatch):
    res = back_pass_inv(deep_leaky, TEN, n_samples=4, seed=1)
    assert res.success_rate >= 0.95, res.info["reasons"]
    assert res.info["pattern_walks"] == 10 and res.info["pattern_walks_verified"] >= 9
    assert res.info["verified_by_stage"]["walk"] >= 36
    for c in range(10):            # samples of a class are pairwise distinct
        x = res.inputs[4 * c:4 * c + 4][res.converged[4 * c:4 * c + 4]].flatten(1).double()
        if len(x) > 1:
            assert (torch.pdist(x) > 0).all()
    monkeypatch.setattr(pattern_walk, "MAX_ENTRIES", 0)     # no walk
    without = back_pass_inv(deep_leaky, TEN, n_samples=4, seed=1)
    assert without.info["pattern_walks"] == 0
    assert without.success_rate < 0.25
    assert backward.ANCHOR_ROUNDS > 0


@pytest.fixture(scope="module")
def inflated():
    """A 30-20-14-10 LeakyReLU(0.01) network, class 3's target, and a preimage of it
    pushed to ~1e8 along the first layer's null space: exact in float64, but
    rounding it to float32 moves the probabilities by ~1e-2."""
    net = _net((30, 20, 14, 10), seed=0, final=False)
    layers = _layers(net)
    z = np.log(TEN[3].double().numpy())
    x = pattern_walk.backward_walk(layers, z)
    null = np.linalg.svd(layers[0][0])[2][20:].T
    g = np.random.default_rng(0).standard_normal(10)
    return net, layers, z, pattern_walk._newton(layers, x + 1e8 * null @ g, z)


def test_zero_entries_moves_along_the_first_layers_null_space(inflated):
    _, layers, z, x = inflated
    moved, zeroed = pattern_walk._zero_entries(layers, x, z, 7)
    assert zeroed.sum() == 7 and set(np.flatnonzero(zeroed)) == set(np.argsort(np.abs(x))[:7])
    assert np.abs(moved[zeroed]).max() <= 1e-6 * np.abs(x).max()
    w, b, _ = layers[0]
    np.testing.assert_allclose(w @ moved, w @ x, atol=1e-6 * np.abs(w @ x).max())
    assert pattern_walk._residual(layers, moved, z) < 1e-6


def test_absorbers_is_the_null_space_less_a_margin(inflated):
    _, layers, _, _ = inflated
    assert pattern_walk.absorbers(layers, torch.float32) == 30 - 20 - pattern_walk.ABSORBER_MARGIN
    assert pattern_walk.absorbers(layers, torch.float64) == 0       # nothing to round
    square = _layers(_net((10, 10, 5), seed=0))
    assert pattern_walk.absorbers(square, torch.float32) == 0       # no null space


def test_absorbed_rounding_rounds_what_the_greedy_search_cannot(inflated):
    """Each entry rounded with its error absorbed exactly by the linear program of
    the entries still free, and the zeroed entries rounded last: within the target
    where plain rounding and round_preimage's earlier stages miss."""
    net, layers, z, x = inflated
    assert pattern_walk._probability_error(pattern_walk.forward(layers, x)[1], z) < 1e-9
    plain = pattern_walk._score(layers, x, z, "rounding", torch.float32)
    _, before = pattern_walk.round_preimage(layers, x, z, torch.float32, absorbed=False)
    xr, err = pattern_walk.absorbed_rounding(layers, x, z, torch.float32)
    assert plain > 1e-3 and before > 2.5e-4
    assert err <= min(2.5e-4, before / 4)
    np.testing.assert_array_equal(xr, xr.astype(np.float32))              # representable
    exact = copy.deepcopy(net).double()
    probs = torch.softmax(exact(torch.from_numpy(xr)[None]), dim=1)[0]
    assert (probs - TEN[3].double()).abs().max().item() == pytest.approx(err, rel=1e-3)
    assert verify(net, torch.from_numpy(xr)[None].float(), TEN[3:4])[1].all()
    # round_preimage runs it where its other stages miss, and keeps the better answer
    _, default = pattern_walk.round_preimage(layers, x, z, torch.float32)
    assert default <= err


def test_absorbed_rounding_absorbs_no_entry_after_its_deadline(inflated, monkeypatch):
    """A clock that reads the number of programs solved so far: with the deadline
    at 3, the entry whose programs take it there is the last one absorbed (two
    programs per entry, one per neighbouring float32 value), and the rest are
    rounded to nearest and polished: a float32 input all the same."""
    _, layers, z, x = inflated
    calls, absorb = [], pattern_walk._absorb

    def spy(*args, **kwargs):
        calls.append(1)
        return absorb(*args, **kwargs)

    monkeypatch.setattr(pattern_walk, "_absorb", spy)
    monkeypatch.setattr(pattern_walk, "time", SimpleNamespace(monotonic=lambda: len(calls)))
    xr, err = pattern_walk.absorbed_rounding(layers, x, z, torch.float32, deadline=3)
    assert len(calls) == 4
    np.testing.assert_array_equal(xr, xr.astype(np.float32))
    assert np.isfinite(err)
    calls.clear()
    pattern_walk.absorbed_rounding(layers, x, z, torch.float32, deadline=0)
    assert calls == []


def test_extended_and_exact_errors_match_float64_on_a_small_network():
    torch.manual_seed(0)
    w1, b1, w2, b2 = (torch.randn(*s, dtype=torch.float64).numpy()
                      for s in ((5, 4), (5,), (3, 5), (3,)))
    layers = [(w1, b1, 0.1), (w2, b2, None)]
    x = np.array([0.5, -1.0, 2.0, 0.25])
    h = w1 @ x + b1
    logits = w2 @ np.where(h >= 0, h, 0.1 * h) + b2
    p = np.exp(logits - logits.max())
    p /= p.sum()
    q = np.full(3, 1 / 3)
    assert pattern_walk.extended_error(layers, x, np.log(q)) == pytest.approx(
        np.abs(p - q).max(), abs=1e-14)
    assert pattern_walk.exact_error(layers, x, np.log(q)) == pytest.approx(
        np.abs(p - q).max(), abs=1e-14)


def test_exact_error_keeps_what_floats_round_away():
    """Sums of ±2**60 and 1s: float64 (an ulp of 256 there) loses each 1 added to
    2**60 before it cancels; exact arithmetic keeps them, through a LeakyReLU of
    slope 0.01 (read as the float64 nearest to it)."""
    w1 = np.array([[1.0, 1, 1, 1, 1, 1], [-1.0, 0, 0, 0, 0, -1]])
    b1 = np.array([0.0, -3.0])
    layers = [(w1, b1, 0.01), (np.eye(2), np.zeros(2), None)]
    x = np.array([2.0 ** 60, 1, 1, 1, 1, -2.0 ** 60])
    logits = np.array([4.0, float(Fraction(-3) * Fraction(0.01))])   # the second one negative
    assert pattern_walk.exact_error(layers, x, logits) < 1e-15
    p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert pattern_walk.exact_error(layers, x, np.zeros(2)) == pytest.approx(
        abs(p[0] - 0.5), abs=1e-15)
    with pytest.raises(ValueError, match="finite"):
        pattern_walk.exact_error(layers, np.where(x > 0, np.inf, x), logits)


def test_evaluation_error_counts_float64s_own_rounding(inflated):
    _, layers, z, x = inflated
    plain = pattern_walk._probability_error(pattern_walk.forward(layers, x)[1], z)
    assert pattern_walk.evaluation_error(layers, x, z) == pytest.approx(plain, abs=1e-9)
    null = np.linalg.svd(layers[0][0])[2][20:].T
    huge = x + 1e17 * null @ np.ones(10)          # first-layer sums of ~1e17: float64 rounds
    plain = pattern_walk._probability_error(pattern_walk.forward(layers, huge)[1], z)
    assert pattern_walk.evaluation_error(layers, huge, z) >= plain


def test_absorbing_one_rounding_keeps_a_preimage_and_the_relaxed_program_agrees(inflated):
    """One step of absorbed_rounding: the largest entry set to a float32 neighbour,
    the free entries corrected by the region's program, the point is still a
    preimage; the relaxed program (used where the exact one has no answer)
    misses by ~0 there and its miss is the corrected point's residual."""
    _, layers, z, x = inflated
    x1, zeroed = pattern_walk._zero_entries(layers, x, z, 7)
    unit = torch.finfo(torch.float32).eps * 2.0 ** np.floor(np.log2(np.abs(x1).max()))
    j = int(np.argmax(np.abs(x1)))
    free = np.ones(len(x1), dtype=bool)
    free[j] = False
    value = pattern_walk._neighbours(float(x1[j]), torch.float32)[1]     # the farther one
    plain = x1.copy()
    plain[j] = value
    assert pattern_walk._residual(layers, plain, z) > 1e-3
    lin = pattern_walk._linearize(layers, x1, z)
    for soft in (False, True):
        found = pattern_walk._absorb(lin, x1, free, j, value - x1[j], unit, x1, zeroed,
                                     soft=soft)
        e, miss = found if soft else (found, 0.0)
        assert e[j] == 0 and miss < 1e-9
        moved = x1 + e
        moved[j] = value
        assert pattern_walk._residual(layers, moved, z) < 1e-6


def test_walk_preimages_walks_from_the_walked_last_layer_where_float64_runs_out(
        deep_leaky, monkeypatch):
    """Where the first walk's float64 preimage already misses (as evaluation_error
    judges it), the next walk starts from the walked last layer (top="walk");
    where float64 holds it, the walks are as before."""
    layers = _layers(deep_leaky)
    tops = _record_walks(monkeypatch, "top", "min_norm")
    pattern_walk.walk_preimages(layers, TEN[3:4], torch.float32,
                                gen=torch.Generator().manual_seed(0))
    assert tops == ["min_norm"]
    tops.clear()
    real, calls = pattern_walk.evaluation_error, []

    def beyond(*args):          # the first walk, unrounded and rounded, misses
        calls.append(1)
        return 1.0 if len(calls) <= 2 else real(*args)

    monkeypatch.setattr(pattern_walk, "evaluation_error", beyond)
    xs, ok, _ = pattern_walk.walk_preimages(layers, TEN[3:4], torch.float32,
                                            gen=torch.Generator().manual_seed(0))
    assert tops == ["min_norm", "walk"] and ok.all()
