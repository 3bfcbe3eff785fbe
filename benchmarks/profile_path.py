"""Where the time of one benchmark path goes: cProfile (Python) and torch.profiler (ops).

    python benchmarks/profile_path.py vit_tiny        # ForwardPassInv, 10 × 2, p=0.9, float32
    python benchmarks/profile_path.py dinov3_base     # ForwardPassInv, 1 image, 5 iterations
    python benchmarks/profile_path.py backward_fcnn6  # BackPassInv, 10 × 1,000

One thread, as the benchmarks; the trained models must be cached (``make train``).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

PATHS = ("vit_tiny", "dinov3_base", "backward_fcnn6")


def path_fn(name: str):
    import nninvert_lib as nni

    rows = nni.target_distribution(list(range(10)), 0.9)
    if name == "backward_fcnn6":
        model, _ = nni.load_model("fcnn6", "quick", train=False, progress=False)
        nni.back_pass_inv(model, rows, n_samples=2, seed=0)          # plan cached
        return lambda: nni.back_pass_inv(model, rows, n_samples=1000, seed=0)
    model, _ = nni.load_model(name, "quick", train=False, progress=False)
    if name == "vit_tiny":
        return lambda: nni.forward_pass_inv(model, rows, n_samples=2, seed=0,
                                            dtype=torch.float32)
    return lambda: nni.forward_pass_inv(model, rows[:1], n_samples=1, seed=0, max_iter=5,
                                        dtype=torch.float32)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", choices=PATHS)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(1)
    fn = path_fn(args.path)

    t0 = time.perf_counter()
    prof = cProfile.Profile()
    prof.enable()
    res = fn()
    prof.disable()
    print(f"{args.path}: {time.perf_counter() - t0:.2f} s under cProfile, "
          f"success {res.success_rate:.0%}")
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(args.top)
    print(buf.getvalue())

    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as tp:
        fn()
    print(tp.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
