"""Section 5: how the costs grow with batch size and with network width.

Random narrowing SELU FCNNs ``784 → w → w/2 → 10`` (PyTorch's default
initialisation, seeded, float32), targets ``target_distribution(c, 0.9)``
for 10 classes:

* BackPassInv (both strategies): seconds per sample of a whole call;
* ForwardPassInv: seconds per sample of one Levenberg–Marquardt iteration on
  the full batch (float64, the library's LM engine),
  ``(T(N) - T(0)) / N`` with nobody stopping early (the
  number of iterations a target needs is a property of the target, not of
  the batch or width).

Every grid point is repeated; the plot shows each cost relative to the
smallest batch (or width).
"""
from __future__ import annotations

import torch

import nninvert_lib as nni
from forward_section import lm_fixed_iterations
from nninvert_lib.forward import inversion_copy
from timing import log, summary, timed


def random_fcnn(width: int, seed: int = 0) -> torch.nn.Sequential:
    """``784 → width → width/2 → 10`` SELU FCNN with seeded default initialisation."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nni.make_fcnn((784, width, width // 2, 10)).eval()


def run_scaling(cfg: dict, device: str = "cpu") -> dict:
    widths, batches = cfg["scaling_widths"], cfg["scaling_batches"]
    n_iter, repeats = cfg["scaling_lm_iterations"], cfg["repeats"]
    out: dict = {"widths": widths, "batches": batches, "lm_iterations": n_iter, "points": []}
    rows = nni.target_distribution(list(range(10)), 0.9)
    for w in widths:
        model = random_fcnn(w).to(device)
        net = inversion_copy(model, dtype=torch.float64, device=device)[0]
        nni.back_pass_inv(model, rows, seed=0)              # warm-up, plan cached
        for b in batches:
            n_per = b // 10
            tgt = rows.repeat_interleave(n_per, dim=0).to(device)
            x0 = torch.rand(b, 784, generator=torch.Generator().manual_seed(0),
                            dtype=torch.float64).to(device)
            raw = {"anchored": [], "paper": [], "anchored_verified": [], "paper_verified": [],
                   "lm_n": [], "lm_0": []}
            for r in range(repeats):
                for s in ("anchored", "paper"):
                    sec, res = timed(lambda: nni.back_pass_inv(model, rows, n_samples=n_per,
                                                               seed=r, strategy=s), device)
                    raw[s].append(sec / b)
                    raw[f"{s}_verified"].append(int(res.converged.sum()))
                raw["lm_n"].append(timed(lambda: lm_fixed_iterations(
                    net, x0, tgt, n_iter), device)[0])
                raw["lm_0"].append(timed(lambda: lm_fixed_iterations(
                    net, x0, tgt, 0), device)[0])
            lm = [(a - z) / n_iter / b for a, z in zip(raw["lm_n"], raw["lm_0"])]
            point = {"width": w, "batch": b,
                     "back_pass_inv_seconds_per_sample": summary(raw["anchored"]),
                     "back_pass_inv_success_rate": sum(raw["anchored_verified"]) / (b * repeats),
                     "paper_seconds_per_sample": summary(raw["paper"]),
                     "paper_success_rate": sum(raw["paper_verified"]) / (b * repeats),
                     "lm_iteration_seconds_per_sample": summary(lm),
                     "raw_lm_seconds": {"n": raw["lm_n"], "0": raw["lm_0"]}}
            out["points"].append(point)
            log(f"  scaling w={w} batch={b}: BackPassInv "
                f"{point['back_pass_inv_seconds_per_sample']['median'] * 1e3:.3g} ms/sample "
                f"({point['back_pass_inv_success_rate']:.0%}), LM iteration "
                f"{point['lm_iteration_seconds_per_sample']['median'] * 1e3:.3g} ms/sample")
    return out
