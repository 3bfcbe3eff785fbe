"""The benchmark suite's entry point and its per-sample baseline (the suite itself runs with
``make bench``, not in the tests)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

import nninvert_lib as nni

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_bench_entry_point_has_help():
    out = subprocess.run([sys.executable, str(BENCH / "run.py"), "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "--quick" in out and "--sections" in out


def test_per_sample_baseline_inverts_a_narrowing_selu_net():
    """The baseline the speed ratios divide by must be a correct implementation."""
    sys.path.insert(0, str(BENCH))
    try:
        from per_sample import per_sample_back_pass
    finally:
        sys.path.remove(str(BENCH))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nni.make_fcnn([784, 10])
    verified, n = per_sample_back_pass(model, nni.target_distribution([0, 3, 7]), seed=0)
    assert (verified, n) == (3, 3)


def test_slope_continuation_inverts_a_shallow_leaky_net():
    """The continuation that ``leaky_depth.py --continuation`` compares against
    must reach targets where its path does not fold (a shallow net)."""
    sys.path.insert(0, str(BENCH))
    try:
        from leaky_depth import narrowing_widths, slope_continuation
    finally:
        sys.path.remove(str(BENCH))
    assert narrowing_widths(3, 0.5) == (80, 40, 20, 10)
    with torch.random.fork_rng():
        torch.manual_seed(2)
        net = nni.make_fcnn(narrowing_widths(2, 0.5), "leaky_relu", negative_slope=0.1).eval()
    target = nni.target_distribution([0, 5], 0.9)
    x, first_fail = slope_continuation(net, target, 0.1, stages=5)
    assert first_fail == 6                       # no stage failed
    assert nni.verify(net, x.float(), target)[1].all()
    assert x.abs().max() < 1e4


def test_report_names_the_thread_count_where_it_is_not_one():
    """The 2-thread ForwardPassInv section must not be mistaken for the 1-thread one."""
    sys.path.insert(0, str(BENCH))
    try:
        from report import FORWARD_KEYS, model_label
    finally:
        sys.path.remove(str(BENCH))
    assert model_label({"model": "fcnn6", "threads": 1}) == "FCNN-6"
    assert model_label({"model": "fcnn6", "threads": 2}) == "FCNN-6, 2 threads"
    assert "forward_fcnn6_2threads" in FORWARD_KEYS
