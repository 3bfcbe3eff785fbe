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
