"""Rounding the pattern walk's preimages to float32, stage by stage.

On a deep random LeakyReLU(0.01) network (``leaky_depth.py``'s slope 0.01, width
ratio 0.75, depth 10) the pattern walk (:mod:`nninvert_lib.pattern_walk`) finds
float64 preimages of 1e10–1e18 for the targets ``target_distribution(c, 0.9)``.
For each target this script takes the first walk (no noise, as step 3 of
BackPassInv's default starts) and rounds it to float32 four ways:

* plainly (every entry to its nearest float32);
* by :func:`~nninvert_lib.pattern_walk.round_preimage` with its greedy search
  only (``successive=False, absorbed=False``: whole-ulp moves, with
  ``ROUND_RESTARTS`` restarts);
* with the successive stage as well (``absorbed=False``: the greedy search
  started again from ``_round_successive`` where it misses);
* by ``round_preimage`` as BackPassInv calls it, whose last stage is
  :func:`~nninvert_lib.pattern_walk.absorbed_rounding` (entries rounded one at
  a time, each error absorbed exactly by a linear program).

Each error is the largest probability error ``max_k |softmax_k - p_k|`` of a
float64 NumPy forward pass, the one the rounding steers by. The last answer is
also evaluated the way :func:`nninvert_lib.verify` judges it (the model in
PyTorch, float64) and in NumPy's extended precision (``np.longdouble``: a
64-bit significand on x86-64 Linux; the JSON records its precision), to check
that float64 evaluation is not what decides: at inputs of 1e12 and more the
first layer's pre-activations are of that size, and float64 holds them only
to ~1e-4, which the layers above amplify.

On the committed run the greedy search and the successive stage verify two of
the ten first walks (classes 8 and 9, inputs below 1e11); the absorbed
rounding verifies six more, with inputs up to 7.4e15, at errors of 3e-9 to
3e-6 (20–45 s each). The two left (classes 0 and 3) are not float64
preimages to begin with: at 9e16 and 2e18 float64's own rounding leaves the
walked inputs 7e-4 and 0.015 from the target, and the rounding does not start
from them. The three evaluations agree to within 1.5e-5. BackPassInv's own
walks (``leaky_depth.py``) add null-space noise and up to six walks per target.

    python benchmarks/leaky_rounding.py                # ten targets, about 10 minutes

Writes ``benchmarks/results/<date>-<host>-leaky-rounding-depth<depth>.{json,md}``
(or into ``--out``).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import nninvert_lib as nni
from nninvert_lib import pattern_walk as pw

from leaky_depth import leaky_network, network_arguments
from report import run_header, write_experiment


def rounding_row(net: torch.nn.Module, layers: list, c: int) -> dict:
    """One target's first walk and its three roundings (see the module docstring)."""
    t = time.perf_counter()
    p = nni.target_distribution(c, 0.9)
    z = torch.log(p.double()).numpy()
    x0 = pw.backward_walk(layers, z, dtype=torch.float32)
    walked = time.perf_counter() - t
    t = time.perf_counter()
    _, greedy = pw.round_preimage(layers, x0, z, torch.float32, restarts=pw.ROUND_RESTARTS,
                                  gen=torch.Generator().manual_seed(0), successive=False,
                                  absorbed=False)
    t_greedy = time.perf_counter() - t
    t = time.perf_counter()
    _, successive = pw.round_preimage(layers, x0, z, torch.float32,
                                      restarts=pw.ROUND_RESTARTS,
                                      gen=torch.Generator().manual_seed(0), absorbed=False)
    t_successive = time.perf_counter() - t
    t = time.perf_counter()
    xr, full = pw.round_preimage(layers, x0, z, torch.float32, restarts=pw.ROUND_RESTARTS,
                                 gen=torch.Generator().manual_seed(0))
    t_full = time.perf_counter() - t
    probs, ok = nni.verify(net, torch.from_numpy(xr).float()[None], p)
    return {"class": c, "max_abs_input": float(np.abs(x0).max()),
            "walked_error": float(pw._probability_error(pw.forward(layers, x0)[1], z)),
            "plain_error": pw._score(layers, x0, z, "rounding", torch.float32),
            "greedy_error": greedy, "successive_error": successive, "rounded_error": full,
            "torch_float64_error": float((probs[0] - p.double()).abs().max()),
            "extended_error": pw.extended_error(layers, xr, z),
            "verified": bool(ok[0]), "walk_seconds": walked, "greedy_seconds": t_greedy,
            "successive_seconds": t_successive, "rounding_seconds": t_full}


def table(out: dict) -> str:
    """The Markdown table of a run (``main``'s JSON)."""
    lines = [f"Slope {out['slope']}, width ratio {out['ratio']}, depth {out['depth']} "
             f"(input width {out['input_width']}); probability errors, float64 NumPy "
             f"unless stated; extended precision: {out['extended_digits']} decimal digits.",
             "",
             "| class | walked input: largest entry | walked (float64) | plainly rounded | "
             "greedy search | with the successive stage | with the absorbed rounding | "
             "that input, PyTorch float64 (verify) | extended precision | verified | "
             "seconds: walk / rounding |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in out["rows"]:
        lines.append(
            f"| {r['class']} | {r['max_abs_input']:.2g} | {r['walked_error']:.1e} | "
            f"{r['plain_error']:.1e} | {r['greedy_error']:.1e} | {r['successive_error']:.1e} | "
            f"{r['rounded_error']:.1e} | "
            f"{r['torch_float64_error']:.1e} | {r['extended_error']:.1e} | "
            f"{'yes' if r['verified'] else 'no'} | "
            f"{r['walk_seconds']:.0f} / {r['rounding_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    network_arguments(ap, list(range(10)))
    args = ap.parse_args(argv)
    net, layers = leaky_network(args.slope, args.ratio, args.depth)
    rows = []
    for c in args.classes:
        rows.append(rounding_row(net, layers, c))
        print(rows[-1], flush=True)
    out = {**run_header(), "slope": args.slope, "ratio": args.ratio,
           "depth": args.depth, "input_width": layers[0][0].shape[1],
           "extended_digits": int(np.finfo(np.longdouble).precision), "rows": rows}
    write_experiment(args.out, f"leaky-rounding-depth{args.depth}", out, table(out))
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)            # the times in the results are on one thread
    main()
