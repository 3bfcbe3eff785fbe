"""The benchmark suite's entry point and its per-sample baseline (the suite itself runs with
``make bench``, not in the tests)."""
from __future__ import annotations

import copy
import importlib
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import nninvert_lib as nni

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def bench_module(name: str):
    """Import one of the benchmark scripts (they import each other by bare name)."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


def test_bench_entry_point_has_help():
    out = subprocess.run([sys.executable, str(BENCH / "run.py"), "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "--quick" in out and "--sections" in out


def test_every_results_file_the_book_and_readme_cite_exists():
    """A page, notebook or docstring that quotes a measurement names its results file; a
    rename must not strand it."""
    root = BENCH.parent
    cited = []
    for page in [*sorted((root / "book").glob("*.md")), root / "README.md",
                 *sorted((root / "notebooks").glob("*.ipynb")),
                 *sorted((root / "nninvert_lib").glob("*.py")), *sorted(BENCH.glob("*.py"))]:
        text = page.read_text()
        if page.suffix == ".ipynb":
            text = "\n".join("".join(c["source"]) for c in json.loads(text)["cells"])
        cited += [(page, (page.parent / p).resolve())
                  for p in re.findall(r"```\{include\}\s+(\S+)", text)]
        cited += [(page, BENCH / "results" / name)
                  for name in re.findall(r"benchmarks/results/([\w.\-]+\.(?:md|json))", text)]
        cited += [(page, BENCH / "results" / f"{stem}.{ext}")
                  for stem in re.findall(r"benchmarks/results/([\w.\-]+)\.\{md,json\}", text)
                  for ext in ("md", "json")]
    assert len(cited) > 20
    missing = [f"{page.name}: {path.relative_to(root)}" for page, path in cited
               if not path.exists()]
    assert not missing, missing


def test_contention_times_one_and_two_threads_alone_and_beside_a_busy_process(tmp_path):
    before = torch.get_num_threads()
    out = bench_module("contention").main(["--repeats", "2", "--targets", "10", "--workloads",
                                           "fcnn6_step", "back_pass_inv", "--out",
                                           str(tmp_path)])
    assert torch.get_num_threads() == before          # restored
    assert [(r["workload"], r["busy"]) for r in out["rows"]] == [
        ("fcnn6_step", False), ("back_pass_inv", False),
        ("fcnn6_step", True), ("back_pass_inv", True)]
    for r in out["rows"]:
        assert r["threads_1"] > 0 and r["threads_2"] > 0
        assert r["two_over_one"] == pytest.approx(r["threads_2"] / r["threads_1"])
    table = next(tmp_path.glob("*-contention.md")).read_text()
    assert table.count("beside a busy process") == 2 and table.count("| alone |") == 2


def test_per_sample_baseline_inverts_a_narrowing_selu_net():
    """The baseline the speed ratios divide by must be a correct implementation."""
    per_sample_back_pass = bench_module("per_sample").per_sample_back_pass
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nni.make_fcnn([784, 10])
    verified, n = per_sample_back_pass(model, nni.target_distribution([0, 3, 7]), seed=0)
    assert (verified, n) == (3, 3)


def test_leaky_depth_table_reports_the_walked_targets(tmp_path):
    """``leaky_depth.py`` writes one row per network, with how many targets the
    pattern walk (step 3 of BackPassInv's default) was tried on and verified."""
    leaky_depth = bench_module("leaky_depth")
    out = leaky_depth.main(["--slopes", "0.01", "--ratios", "0.75", "--depths", "2", "4",
                            "--n", "1", "--directions", "--out", str(tmp_path)])
    assert [r["depth"] for r in out["rows"]] == [2, 4]
    for row in out["rows"]:
        assert 0 <= row["walk_verified"] <= row["walked"] <= 10
        assert [d["scale"] for d in row["directions"]] == [1e3, 1e6]
        assert set(row["classes_short"]) <= set(range(10))
        assert (row["classes_short"] == []) == (row["success_rate"] == 1.0)
    table = next(tmp_path.glob("*-leaky-depth.md")).read_text().splitlines()
    assert "targets walked: verified / walked" in table[0]
    assert "classes with fewer than 1 verified" in table[0]
    assert "×1e6 inputs: classes won" in table[0]
    assert len(table) == 4
    assert all(line.count("|") == table[0].count("|") for line in table)


def test_leaky_depth_network_seeds_give_one_row_per_network(tmp_path):
    """``--network-seeds`` initialises one network per seed at each depth (each row
    names its seed, and the table gets a column for it); the networks differ."""
    leaky_depth = bench_module("leaky_depth")
    out = leaky_depth.main(["--slopes", "0.1", "--ratios", "0.5", "--depths", "2",
                            "--n", "1", "--network-seeds", "5", "6", "--out", str(tmp_path)])
    assert [(r["depth"], r["network_seed"]) for r in out["rows"]] == [(2, 5), (2, 6)]
    table = next(tmp_path.glob("*-leaky-depth.md")).read_text().splitlines()
    assert "| network seed |" in table[0]
    assert [line.split("|")[4].strip() for line in table[2:]] == ["5", "6"]
    assert all(line.count("|") == table[0].count("|") for line in table)
    assert out["rows"][0]["max_abs_input"] != out["rows"][1]["max_abs_input"]


def test_he_initialise_draws_weights_within_the_he_bound_and_keeps_biases():
    """``he_initialise`` redraws each weight from ``U(±sqrt(6 / ((1 + s²) in)))``
    (wider than PyTorch's default ``±1/sqrt(in)``), reproducibly, and leaves
    the biases alone."""
    leaky_depth = bench_module("leaky_depth")
    torch.manual_seed(0)
    net = leaky_depth.make_fcnn((400, 300, 10), "leaky_relu", negative_slope=0.01)
    biases = [m.bias.clone() for m in net if isinstance(m, torch.nn.Linear)]
    leaky_depth.he_initialise(net, 0.01, seed=3)
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    for m, b in zip(linears, biases):
        bound = (6 / ((1 + 0.01 ** 2) * m.in_features)) ** 0.5
        assert m.weight.abs().max() <= bound
        assert m.weight.abs().max() > 0.95 * bound > 2 / m.in_features ** 0.5
        assert torch.equal(m.bias, b)
    again = leaky_depth.make_fcnn((400, 300, 10), "leaky_relu", negative_slope=0.01)
    leaky_depth.he_initialise(again, 0.01, seed=3)
    assert torch.equal(again[1].weight, linears[0].weight)


def test_leaky_depth_init_he_is_recorded_in_both_files(tmp_path):
    out = bench_module("leaky_depth").main(
        ["--slopes", "0.1", "--ratios", "0.5", "--depths", "2", "--n", "1",
         "--init", "he", "--out", str(tmp_path)])
    assert out["init"] == "he" and out["rows"][0]["success_rate"] == 1.0
    assert "He uniform" in next(tmp_path.glob("*-leaky-depth.md")).read_text()


def test_classes_short_names_the_targets_with_too_few_verified_samples():
    target = nni.target_distribution([0, 0, 1, 1, 2, 2], 0.9)
    ok = torch.tensor([True, True, True, False, False, False])
    res = nni.InversionResult(torch.zeros(6, 4), target.clone(), target, ok)
    assert bench_module("leaky_depth").classes_short(res, 2) == [1, 2]
    assert bench_module("leaky_depth").classes_short(res, 1) == [2]


def test_walks_stopped_counts_the_targets_whose_walk_ran_out_of_time():
    """A target counts once if ``walk_seconds`` stopped its walk and a sample of
    it still misses; a stopped target whose samples all verified in a later
    stage does not count, nor does a target that missed without being stopped."""
    target = nni.target_distribution([0, 0, 1, 1, 2, 2, 3, 3], 0.9)
    ok = torch.tensor([False, False, False, True, False, False, True, True])
    info = {"target_index": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), "walks_stopped": [0, 2, 3]}
    res = nni.InversionResult(torch.zeros(8, 4), target.clone(), target, ok, info)
    assert bench_module("leaky_depth").walks_stopped(res) == 2
    info["walks_stopped"] = []
    assert bench_module("leaky_depth").walks_stopped(res) == 0


def test_leaky_depth_walk_seconds_bounds_the_walks_and_adds_a_column(tmp_path):
    """``--walk-seconds`` reaches ``back_pass_inv``: at slope 1e-12 the walks need
    far more than 1e-9 s, so every target that misses was stopped by the limit,
    and the table counts those targets in a column of its own."""
    leaky_depth = bench_module("leaky_depth")
    out = leaky_depth.main(["--slopes", "1e-12", "--ratios", "0.75", "--depths", "3",
                            "--n", "1", "--walk-seconds", "1e-9", "--out", str(tmp_path)])
    row = out["rows"][0]
    assert out["walk_seconds"] == 1e-9 and row["walked"] == 10
    assert row["walks_stopped"] == len(row["classes_short"]) > 0
    assert 0 <= row["draws_stopped"] <= row["walk_verified"]
    assert row["roundings_stopped"] == len(row["classes_short"])   # none rounded at the end
    table = next(tmp_path.glob("*-leaky-depth.md")).read_text().splitlines()
    assert "| walks stopped at 1e-09 s |" in table[0]
    assert table[2].split("|")[-2].strip() == str(row["walks_stopped"])
    assert all(line.count("|") == table[0].count("|") for line in table)


def test_leaky_rounding_compares_the_roundings_and_the_evaluations(tmp_path):
    """``leaky_rounding.py``: per target, the errors of plain rounding, the greedy
    search and the successive stage never increase in that order, the absorbed
    rounding ends within ``good`` or below the successive stage, and the verified
    flag agrees with the PyTorch float64 error that verify judges."""
    leaky_rounding = bench_module("leaky_rounding")
    out = leaky_rounding.main(["--depth", "6", "--classes", "1", "2", "--out", str(tmp_path)])
    assert [r["class"] for r in out["rows"]] == [1, 2] and out["input_width"] == 55
    for r in out["rows"]:
        assert r["walked_error"] < 1e-9
        assert r["successive_error"] <= r["greedy_error"] <= r["plain_error"]
        assert r["rounded_error"] <= max(r["successive_error"], 2.5e-4)
        assert r["verified"] == (r["torch_float64_error"] <= 1e-3)
        assert abs(r["extended_error"] - r["rounded_error"]) < 1e-6   # small inputs agree
    table = next(tmp_path.glob("*-leaky-rounding-depth6.md")).read_text().splitlines()
    assert len(table) == 6 and "extended precision" in table[2]


def test_direction_spread_counts_the_classes_large_inputs_reach():
    """On logits ``(x_0, x_1, x_2, x_3, 0, ..., 0)`` a large input wins the class of
    its largest positive entry, surely; one with no positive entry ties classes
    4..9 (argmax: 4) at probability 1/6."""
    direction_spread = bench_module("leaky_depth").direction_spread
    net = torch.nn.Sequential(torch.nn.Linear(4, 10))
    with torch.no_grad():
        net[0].weight.copy_(torch.cat([torch.eye(4), torch.zeros(6, 4)]))
        net[0].bias.zero_()
    (spread,) = direction_spread(net, n=500, scales=(1e6,), seed=5)
    x = torch.randn(500, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    some_positive = int((x > 0).any(dim=1).sum())
    assert 0 < some_positive < 500
    assert spread == {"scale": 1e6, "classes": 5, "confident": some_positive,
                      "confident_classes": 4}


def test_slope_continuation_inverts_a_shallow_leaky_net():
    """The continuation that ``leaky_depth.py --continuation`` compares against
    must reach targets where its path does not fold (a shallow net)."""
    leaky_depth = bench_module("leaky_depth")
    narrowing_widths = leaky_depth.narrowing_widths
    slope_continuation = leaky_depth.slope_continuation
    assert narrowing_widths(3, 0.5) == (80, 40, 20, 10)
    with torch.random.fork_rng():
        torch.manual_seed(2)
        net = nni.make_fcnn(narrowing_widths(2, 0.5), "leaky_relu", negative_slope=0.1).eval()
    target = nni.target_distribution([0, 5], 0.9)
    x, first_fail = slope_continuation(net, target, 0.1, stages=5)
    assert first_fail == 6                       # no stage failed
    assert nni.verify(net, x.float(), target)[1].all()
    assert x.abs().max() < 1e4


def test_smoothing_continuation_tends_to_leaky_relu_and_inverts_a_shallow_net():
    """``leaky_depth.py --smoothing``: the smooth blend is LeakyReLU within
    ``(1 - s)·log 2/β`` and the near-affine line as β → 0, and the continuation
    reaches targets on a shallow net."""
    leaky_depth = bench_module("leaky_depth")
    u = torch.linspace(-5, 5, 101, dtype=torch.float64)
    sharp = leaky_depth.SmoothLeakyReLU(0.1, 1e3)(u)
    exact = torch.nn.functional.leaky_relu(u, 0.1)
    assert (sharp - exact).abs().max() <= 0.9 * math.log(2) / 1e3 + 1e-12
    flat = leaky_depth.SmoothLeakyReLU(0.1, 1e-6)(u)
    assert torch.allclose(flat, 0.55 * u, atol=1e-4)
    with torch.random.fork_rng():
        torch.manual_seed(2)
        net = nni.make_fcnn(leaky_depth.narrowing_widths(2, 0.5), "leaky_relu",
                            negative_slope=0.1).eval()
    target = nni.target_distribution([0, 5], 0.9).double()
    x0 = torch.rand(2, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = leaky_depth.smoothing_continuation(net, x0, target, stages=5)
    assert nni.verify(net, x.float(), target.float())[1].all()
    assert x.abs().max() < 1e4


def test_report_names_the_thread_count_where_it_is_not_one():
    """The 2-thread ForwardPassInv section must not be mistaken for the 1-thread one."""
    report = bench_module("report")
    model_label = report.model_label
    assert model_label({"model": "fcnn6", "threads": 1}) == "FCNN-6"
    assert model_label({"model": "fcnn6", "threads": 2}) == "FCNN-6, 2 threads"
    assert "forward_fcnn6_2threads" in report.FORWARD_KEYS


def test_bounded_preimage_finds_small_preimages_and_proves_their_absence():
    """The MILP of leaky_depth.py: a preimage within a generous bound verifies; one whose
    hidden values must stay within 1e-3 cannot give logits 4.4 apart."""
    bounded_preimage = bench_module("leaky_depth").bounded_preimage
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nni.make_fcnn([16, 12, 8, 4], "leaky_relu", negative_slope=0.1).double().eval()
    target = nni.target_distribution(2, 0.9, num_classes=4)
    status, x = bounded_preimage(net, target, 1e3, time_limit=30)
    assert status == "feasible" and x.shape == (1, 16)
    assert nni.verify(net, x, target[None], atol=1e-6)[1].all()
    assert bounded_preimage(net, target, 1e-3, time_limit=30) == ("infeasible", None)


def test_jacobian_condition_is_that_of_the_activation_pattern():
    """``leaky_depth.jacobian_condition``: κ of ``W2 D W1`` with ``D`` the slopes at ``x``."""
    leaky_depth = bench_module("leaky_depth")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nni.make_fcnn([8, 5, 3], "leaky_relu", negative_slope=0.01).eval()
        x = torch.randn(4, 8, dtype=torch.float64)
    kappa = leaky_depth.jacobian_condition(net, x)
    lin = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    w1, b1 = lin[0].weight.double(), lin[0].bias.double()
    w2, b2 = lin[1].weight.double(), lin[1].bias.double()
    for row, k in zip(x, kappa):
        u1 = w1 @ row + b1
        d1 = torch.where(u1 > 0, 1.0, 0.01 * torch.ones_like(u1))
        u2 = w2 @ (d1 * u1) + b2
        d2 = torch.where(u2 > 0, 1.0, 0.01 * torch.ones_like(u2))
        sv = torch.linalg.svdvals(d2[:, None] * w2 @ (d1[:, None] * w1)).detach()
        assert math.isclose(float(k), float(sv[0] / sv[-1]), rel_tol=1e-9)
    assert next(net.parameters()).dtype == torch.float32   # the network is not converted


def test_training_memory_bound_is_below_the_measured_peak():
    """``notebook_memory.py --training``: a model trained from an empty cache in a fresh
    process; the bound that ``load_model`` checks does not exceed the real peak."""
    row = bench_module("notebook_memory").measure_training("fcnn1", "smoke", timeout=600)
    assert row["ok"], row.get("error")
    assert 100 < row["bound_mb"] <= row["peak_mb"]
    assert 0.0 <= row["val_accuracy"] <= 1.0


def test_margin_preimage_clears_every_unit_by_the_margin():
    """``leaky_margins.py``: the program's answer is a preimage whose every hidden
    unit clears zero by ``mu·u·R·‖M_i‖₁``; a larger ``mu`` than the largest feasible
    one is infeasible."""
    from nninvert_lib import pattern_walk as pw

    margins = bench_module("leaky_margins")
    torch.manual_seed(2)
    net = nni.make_fcnn([17, 13, 10], "leaky_relu", negative_slope=0.01).eval()
    layers = pw.piecewise_layers(nni.plan_back_pass(net).steps)
    z = torch.log(nni.target_distribution(4, 0.9)).numpy()
    x0 = pw.backward_walk(layers, z)
    # |a_i| <= u·R·‖M_i‖₁ / u: no margin beyond 1/u = 2^24 is possible
    mu, too_much = margins.largest_margin(layers, x0, z, high=2.0 ** 25, steps=20)
    assert 0 < mu < too_much < 2.0 ** 24 and too_much / mu < 1.1
    x, R = margins.margin_preimage(layers, x0, z, mu)
    assert pw._residual(layers, x, z) < 1e-8 * (1 + np.abs(z).max())
    assert np.abs(x).max() <= R * (1 + 1e-9)
    pre, _ = pw.forward(layers, x)
    hidden, _ = pw._affine(layers, pw._signs(pre))
    for (M, _), a in zip(hidden, pre):
        assert (np.abs(a) >= 0.999 * mu * margins.U * R * np.abs(M).sum(axis=1)).all()
    assert margins.margin_preimage(layers, x0, z, too_much * 1.01) is None


def test_leaky_margins_writes_one_row_per_class(tmp_path):
    margins = bench_module("leaky_margins")
    out = margins.main(["--depth", "2", "--classes", "3", "8", "--out", str(tmp_path)])
    assert [r["class"] for r in out["rows"]] == [3, 8]
    for r in out["rows"]:
        assert r["rounded_error"] < 1e-3 and 0 < r["largest_margin"] <= 1
    assert out["numpy"] == np.__version__ and out["scipy"] and out["threads"] >= 1
    table = (tmp_path / f"{out['date']}-{out['host']}-leaky-margins-depth2.md").read_text()
    assert table.count("\n| 3 |") == 1 and "largest feasible margin μ" in table


def test_leaky_growth_writes_one_row_per_class(tmp_path):
    growth = bench_module("leaky_growth")
    out = growth.main(["--depth", "4", "--classes", "1", "--out", str(tmp_path)])
    (row,) = out["rows"]
    top = row["enumerated_from"]
    assert sorted(int(i) for i in row["sizes"]) == list(range(4)) and top == 3
    assert 0 < row["enumerated_minimum"] <= row["walk_at_enumerated"] * (1 + 1e-9)
    assert row["walk_at_enumerated"] == row["sizes"][str(top)]
    assert row["rounded_error"] < 1e-3
    table = (tmp_path / f"{out['date']}-{out['host']}-leaky-growth-depth4.md").read_text()
    assert table.count("\n| 1 |") == 1 and f"smallest on `layers[{top}:]`" in table


def test_layer_cost_is_the_cheapest_input_of_one_layer():
    """Square and invertible, with no slope: the only input, ``w⁻¹c``. Wide: at
    most what a nonnegative input that makes ``c`` costs, and at least what any
    input does, ``max|c| / max_k Σ_i |w_ki|`` (divided by ``max|c|``)."""
    growth = bench_module("leaky_growth")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 5))
    c = rng.standard_normal(5)
    exact = np.abs(np.linalg.solve(w, c)).max() / np.abs(c).max()
    assert growth.layer_cost(w, c, None) == pytest.approx(exact, rel=1e-6)
    w = rng.uniform(-1, 1, (9, 12))
    h = np.abs(rng.standard_normal(12))
    c = w @ h
    cost = growth.layer_cost(w, c, 0.01)
    assert 1 / np.abs(w).sum(axis=1).max() <= cost <= h.max() / np.abs(c).max() * (1 + 1e-9)
    assert growth.layer_cost(w, rng.standard_normal(9), 0.01) > cost


def test_leaky_growth_layer_cost_puts_the_walk_beside_one_layer_alone(tmp_path):
    growth = bench_module("leaky_growth")
    out = growth.main(["--depth", "4", "--classes", "1", "--layer-cost", "3",
                       "--out", str(tmp_path)])
    (row,) = out["rows"]
    assert [r["layer"] for r in out["typical"]] == [0, 1, 2, 3]
    for i in map(str, range(4)):     # the walk's own input is one the program could take
        assert 0 < row["layer_cost"][i] <= row["walk"][i] * (1 + 1e-6)
    assert row["float64_error"] < 1e-3
    _, layers = bench_module("leaky_depth").leaky_network(0.01, 0.75, 4)
    z = torch.log(nni.target_distribution(1, 0.9)).double().numpy()
    x = growth.one_layer_at_a_time(layers, z)          # a preimage, however large
    assert np.abs(x).max() == pytest.approx(row["one_layer_at_a_time"])
    assert nni.pattern_walk.evaluation_error(layers, x, z) < 1e-6
    table = (tmp_path / f"{out['date']}-{out['host']}-leaky-growth-depth4-layer-cost.md"
             ).read_text()
    assert "| 3 | 13 → 10 |" in table     # the layers' table, then one row per class
    assert sum(line.startswith("| 1 | ") and "(" in line for line in table.splitlines()) == 1


def test_leaky_growth_walks_from_several_last_layer_patterns(tmp_path):
    growth = bench_module("leaky_growth")
    out = growth.main(["--depth", "4", "--classes", "1", "--top-patterns", "2",
                       "--out", str(tmp_path)])
    (row,) = out["rows"]
    assert len(row["starts"]) == 2 and row["patterns"] >= 2
    tops = [s["top_size"] for s in row["starts"]]
    assert tops == sorted(tops) and tops[0] > 0
    for s in row["starts"]:
        assert s["max_abs_input"] > 0 and 0 <= s["float64_error"] < 1e-3
        assert s["exact_error"] == pytest.approx(s["float64_error"], abs=1e-6)  # small inputs
    name = f"{out['date']}-{out['host']}-leaky-growth-depth4-top-patterns.md"
    table = (tmp_path / name).read_text()
    assert table.count("\n| 1 | 2 (") == 1


def test_leaky_multistart_search_reaches_exact_preimages_on_a_shallow_net(tmp_path):
    multi = bench_module("leaky_multistart")
    net, _ = multi.leaky_network(0.01, 0.75, 2)
    target = nni.target_distribution(4, 0.9)
    x, res = multi.centred_residual_search(net, target, starts=8, steps=300, lr=0.05,
                                           scale=10.0)
    assert x.shape == (8, net[1].in_features) and res.shape == (8,)
    with torch.no_grad():
        z = copy.deepcopy(net).double()(x)
    goal = torch.log(target.double())
    centred = (z - z.mean(1, keepdim=True)) - (goal - goal.mean())
    assert torch.allclose(centred.norm(dim=1), res)     # the residual it reports is x's
    assert res.min() < 0.5       # close on a shallow net (constant logits: 4.2); LM ends it
    out = multi.main(["--depth", "2", "--classes", "4", "--starts", "8", "--steps", "300",
                      "--scale", "10", "--compare", "--out", str(tmp_path)])
    (row,) = out["rows"]
    assert row["class"] == 4 and row["verified"] >= 1 and row["back_pass_inv"]["verified"]
    assert 0 < row["smallest_verified_input"] and row["smallest_residual"] == float(res.min())
    table = (tmp_path / f"{out['date']}-{out['host']}-leaky-multistart-depth2.md").read_text()
    assert table.count("\n| 4 |") == 1 and "of 8" in table


def test_leaky_multistart_margin_search_stays_in_its_box_and_reports_true_margins(tmp_path):
    multi = bench_module("leaky_multistart")
    net, _ = multi.leaky_network(0.01, 0.75, 2)
    x, m = multi.margin_search(net, 4, starts=4, steps=200, lr=0.05, bound=50.0)
    assert x.shape == (4, net[1].in_features) and x.abs().max() < 50.0
    with torch.no_grad():
        z = copy.deepcopy(net).double()(x)
    others = torch.cat([z[:, :4], z[:, 5:]], dim=1)
    assert torch.allclose((z[:, 4:5] - others).min(dim=1).values, m)   # x's own margins
    assert m.max() > 4.39        # class 4 wins by more than the target's margin
    out = multi.main(["--depth", "2", "--classes", "4", "--margin-bounds", "0.01,50",
                      "--margin-starts", "4", "--margin-steps", "200", "--out", str(tmp_path)])
    (row,) = out["rows"]
    small, large = row["bounds"]
    assert small["largest_margin"] < 4.39 < large["largest_margin"]   # 0.01: near x = 0
    assert large["lm_verified"] >= 1         # on a shallow net LM ends what the search began
    table = (tmp_path / f"{out['date']}-{out['host']}-leaky-multistart-class-margins-depth2.md"
             ).read_text()
    assert f"| {large['largest_margin']:.3g} ({large['lm_verified']} of 4) |" in table


def _softmax_at_random_images(model, classes, device):
    """Stands in for ``forward_section.model_targets`` (no MNIST): the model's softmax
    at one random image per class, reachable by construction."""
    x = torch.rand(len(classes), 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        p = torch.softmax(model(x).double(), dim=-1)
    return p / p.sum(dim=1, keepdim=True)


def test_lm_variants_counts_jacobians_and_sets_scipy_beside_each_setting(tmp_path, monkeypatch):
    lm = bench_module("lm_variants")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nni.make_fcnn([784, 32, 10], activation="selu")
    monkeypatch.setattr(lm.nni, "load_model", lambda *a, **k: (net, {"val_accuracy": 0.5}))
    monkeypatch.setattr(lm, "model_targets", _softmax_at_random_images)
    out = lm.main(["--models", "fcnn6", "--n", "1", "--repeats", "2", "--scipy-subset", "1",
                   "--out", str(tmp_path)])
    kinds = out["models"]["fcnn6"]["kinds"]
    assert set(kinds) == {"p=0.9", "model-produced"}
    for rec in kinds.values():
        assert set(rec) == {*lm.SETTINGS, "scipy"} and "jacobians" not in rec["scipy"]
        for setting in lm.SETTINGS:
            r = rec[setting]
            assert r["images"] == 10 and len(r["verified"]) == 2
            assert r["jacobians"]["median"] >= 1 and r["scipy_over_lm"]["median"] > 0
    table = (tmp_path / f"{out['date']}-{out['host']}-lm-variants-fcnn6.md").read_text()
    assert table.count("| FCNN-6 | p=0.9 |") == len(lm.SETTINGS) + 1
    assert "chord 5 + Broyden" in table
    per_image = out["models"]["fcnn6"]["jacobian_seconds_per_image"]
    assert len(per_image["values"]) == 4 and per_image["min"] > 0
    for i, kind in enumerate(["p=0.9", "model-produced"]):   # measured in this order
        scipy = kinds[kind]["scipy"]["seconds_per_verified"]["values"]
        jac = per_image["values"][2 * i: 2 * i + 2]          # SciPy's time over a Jacobian's
        assert kinds[kind]["scipy"]["ceiling"]["values"] == pytest.approx(
            [a / b for a, b in zip(scipy, jac)])
    assert table.count("| FCNN-6 | 10 |") == 2
    one = lm.main(["--models", "fcnn6", "--n", "1", "--repeats", "1", "--scipy-subset", "1",
                   "--kinds", "model-produced", "--out", str(tmp_path)])
    assert list(one["models"]["fcnn6"]["kinds"]) == ["model-produced"]
    low = lm.main(["--models", "fcnn6", "--n", "1", "--repeats", "1", "--scipy-subset", "1",
                   "--kinds", "p=0.9", "--jacobian-dtype", "bfloat16", "--out", str(tmp_path)])
    rec = low["models"]["fcnn6"]
    added = lm.low_precision_settings("bfloat16")
    assert set(rec["kinds"]["p=0.9"]) == {*lm.SETTINGS, *added, "scipy"}
    for setting in added:
        assert rec["kinds"]["p=0.9"][setting]["jacobians"]["median"] >= 1
    assert rec["kinds"]["p=0.9"]["scipy"]["ceiling_low_precision"]["median"] > 0
    assert rec["low_precision_jacobian_seconds_per_image"]["min"] > 0
    table = (tmp_path / f"{low['date']}-{low['host']}-lm-variants-fcnn6-bfloat16.md").read_text()
    assert "one bfloat16 Jacobian per image" in table and "chord 2, bfloat16 Jacobians" in table


def test_lm_variants_times_the_generalized_method_without_scipy(tmp_path, monkeypatch, tiny_vit):
    lm = bench_module("lm_variants")
    monkeypatch.setattr(lm.nni, "load_model", lambda *a, **k: (tiny_vit, {"val_accuracy": 0.5}))
    monkeypatch.setattr(lm, "model_targets", _softmax_at_random_images)
    out = lm.main(["--models", "vit_tiny", "--method", "generalized", "--n", "1",
                   "--repeats", "1", "--kinds", "model-produced", "--out", str(tmp_path)])
    rec = out["models"]["vit_tiny"]
    assert set(rec["kinds"]["model-produced"]) == set(lm.SETTINGS)
    assert "jacobian_seconds_per_image" not in rec
    for r in rec["kinds"]["model-produced"].values():
        assert r["jacobians"]["median"] >= 1 and "scipy_over_lm" not in r
    stem = f"{out['date']}-{out['host']}-lm-variants-vit_tiny-generalized"
    table = (tmp_path / f"{stem}.md").read_text()
    assert table.startswith("# The generalized method")
    assert "SciPy ÷" not in table and "ceiling" not in table


def test_forward_report_sets_lm_with_broyden_beside_the_default_and_judges_the_default():
    report = bench_module("report")

    def s(v):
        return {"median": v, "min": v, "max": v, "values": [v]}

    lm = {"success_rate": 1.0, "seconds_per_image": s(0.2), "seconds_per_verified_image": s(0.2)}
    rec = {"lm": lm, "lm_broyden": {**lm, "seconds_per_verified_image": s(0.1)},
           "scipy": {"n": 2, "success_rate": 1.0, "seconds_per_image": s(2.2),
                     "seconds_per_verified_image": s(2.2), "seconds_per_iteration": s(0.3)},
           "scipy_over_lm_per_image": s(11.0), "scipy_over_lm_per_verified_image": s(11.0),
           "scipy_over_lm_broyden_per_verified_image": s(22.0)}
    it = {"batch": 20, "lm_seconds_per_iteration": s(0.4), "forward_plus_vjp_seconds": s(0.6),
          "ratio": s(0.7), "jacobians_per_iteration": s(0.7), "overhead": s(1.0)}
    sec = {"model": "vit_tiny", "classes": 10, "n_per_class": 2, "dtype": "float32",
           "max_iter": 30, "targets": {"p=0.9": rec}, "per_iteration": it}
    lines = report.forward_lines({"forward_vit_tiny": sec}, ("forward_vit_tiny",))
    (row,) = [line for line in lines if line.startswith("| ViT-tiny | p=0.9")]
    assert row.endswith("| 11.0× | 11.0× | 100%, 0.1 s | 22.0× | — | — |")
    (target,) = [r for r in report.target_lines({"sections": {"forward_vit_tiny": sec}})
                 if "ViT-tiny" in r and "20×" in r]
    assert "11.0×" in target and "with `broyden=True` 22.0×" in target
    assert "bfloat16" not in target
    assert target.endswith("| missed |")       # judged on the default LM
    fast = {**rec, "lm_bf16": {**lm, "seconds_per_verified_image": s(0.05)},
            "scipy_over_lm_bf16_per_verified_image": s(44.0)}
    sec_fast = {**sec, "targets": {"p=0.9": fast}}
    lines = report.forward_lines({"forward_vit_tiny": sec_fast}, ("forward_vit_tiny",))
    (row,) = [line for line in lines if line.startswith("| ViT-tiny | p=0.9")]
    assert row.endswith("| 100%, 0.1 s | 22.0× | 100%, 0.05 s | 44.0× |")
    (target,) = [r for r in report.target_lines({"sections": {"forward_vit_tiny": sec_fast}})
                 if "ViT-tiny" in r and "20×" in r]
    assert "and bfloat16 Jacobians 44.0×" in target and target.endswith("| missed |")
    old = {k: v for k, v in rec.items() if "broyden" not in k}     # results from before
    lines = report.forward_lines({"forward_vit_tiny": {**sec, "targets": {"p=0.9": old}}},
                                 ("forward_vit_tiny",))
    assert [line for line in lines if line.startswith("| ViT-tiny")][0].endswith(
        "| — | — | — | — |")


def test_peak_rate_cuts_the_rows_of_products_too_slow_in_their_dtype(monkeypatch):
    """A product whose dtype is slow here (judged from a 256-cube) keeps only the
    rows that fit ``product_seconds``; a fast one keeps all of them."""
    jp = bench_module("jacobian_peak")
    shapes = []

    def one_second(fn, **kwargs):
        shapes.append(tuple(fn().shape))
        return 1.0

    monkeypatch.setattr(jp, "per_call", one_second)
    rate = jp.peak_rate([(5000, 64, 32), (3, 64, 32)], torch.float32, product_seconds=2.0)
    # the 256-cube ran at 2·256³ FLOP/s, so 2 s hold 2·2·256³ / (2·64·32) = 16,384 rows
    assert shapes == [(256, 256), (5000, 32), (3, 32)]
    assert rate == 2 * 5000 * 64 * 32
    shapes.clear()
    jp.peak_rate([(5000, 64, 32)], torch.float32, product_seconds=0.1)
    assert shapes == [(256, 256), (int(0.1 * 2 * 256 ** 3 / (2 * 64 * 32)), 32)]


def test_jacobian_peak_counts_a_jacobians_products_and_bounds_lm_by_the_peak(
        tmp_path, monkeypatch, tiny_vit):
    jp = bench_module("jacobian_peak")
    monkeypatch.setattr(jp, "PRODUCT_SECONDS", 0.05)   # products of ~50 ms are enough here
    roofline = bench_module("roofline")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nni.make_fcnn([784, 32, 10], activation="selu")
    jacobian = roofline.forward_and_vjp(net, torch.rand(4, 784), rows=9,
                                        input_shape=(784,))["both"]
    # a forward pass and nine input VJPs through 784 -> 32 -> 10, and no weight gradients
    assert jp.jacobian_flops(jacobian, 4) == 2 * (784 * 32 + 32 * 10) * (1 + 9)
    monkeypatch.setattr(jp.nni, "load_model", lambda *a, **k: (tiny_vit, {"val_accuracy": 0.5}))
    monkeypatch.setattr(jp, "model_targets", _softmax_at_random_images)
    out = jp.main(["--models", "vit_tiny", "--kind", "model-produced", "--n", "1",
                   "--repeats", "2", "--scipy-subset", "1", "--out", str(tmp_path)])
    rec = out["models"]["vit_tiny"]
    scipy = [r["seconds_per_verified"] for r in rec["scipy"]]
    for setting, (_, dtype) in jp.SETTINGS.items():
        key = str(dtype).removeprefix("torch.")
        peaks, jac = rec["peak"][key]["values"], rec["jacobian_seconds"][key]["values"]
        assert min(peaks) > 0 and min(jac) > 0
        assert rec["efficiency"][key]["values"] == pytest.approx(
            [rec["flops_per_jacobian"] / p / s for p, s in zip(peaks, jac)])
        runs = rec["lm"][setting]
        assert all(r["images"] == 10 and r["verified"] == 10 and r["jacobians"] >= 1
                   for r in runs)
        # all of LM's products (its Jacobians and more) at the peak
        total = rec["lm_flops_per_verified"][setting]
        assert total > min(r["jacobians"] for r in runs) * rec["flops_per_jacobian"]
        assert rec["summary"][setting]["scipy_over_peak"]["values"] == pytest.approx(
            [sp / (total / p) for sp, p in zip(scipy, peaks)])
    assert rec["scipy_summary"]["jacobians"]["median"] >= 1
    table = (tmp_path / f"{out['date']}-{out['host']}-jacobian-peak.md").read_text()
    assert table.count("| ViT-tiny | model-produced |") == len(jp.SETTINGS) + 1
    assert "Jacobians per image allowed at 20×" in table
