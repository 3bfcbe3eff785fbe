"""How thin the pattern walk's preimages are, measured against the float32 grid.

On a deep random LeakyReLU(0.01) network (``leaky_depth.py``'s slope 0.01, width
ratio 0.75, depth 10) the pattern walk (:mod:`nninvert_lib.pattern_walk`) finds
exact float64 preimages for most targets, but they do not survive being
rounded to float32. This script tests one explanation, target by target, and
rules it out.

On the activation region of the walked preimage ``x0`` the network is affine:
pre-activation ``i`` is ``a_i(x) = M_i x + m_i`` and the logits ``A x + c``.
Rounding an input whose entries are at most ``R`` to float32 (unit roundoff
``u = 2^-24``) moves ``a_i`` by at most ``u·R·‖M_i‖₁``. If every unit clears zero
by ``μ`` times that bound with ``μ ≥ 1``, no rounding flips a unit: the network
stays affine, and rounding becomes a closest-vector problem in the few logits.
:func:`margin_preimage` solves the linear program

    min R  subject to  A x + c = z + k·1,  |x_j| ≤ R,
                       sign_i · a_i(x) ≥ μ · u · R · ‖M_i‖₁  (every hidden unit),

and :func:`largest_margin` bisects for the largest ``μ`` for which it is
feasible. A typical rounding (independent signs) moves ``a_i`` about
``√n`` times less than the bound, so we expected the targets that miss to
have ``μ`` far below ``1/√n`` and those that verify to have more.

They do not. At depth 10 the three targets that missed (classes 1, 5 and 7,
before ``round_preimage`` had its successive stage) allow ``μ`` of 5e-3, 1e-3
and 2e-4; at depth 8, where the same three verify,
6.5e-9, 0.029 and 8.5e-6. The walk's preimages sit at vertices, with units at
zero whichever the depth, and :func:`~nninvert_lib.pattern_walk.round_preimage`
copes with the flips (each move is checked by a forward pass). How close the
preimages lie to their regions' walls is not what separates depth 10 from
depth 8.

    python benchmarks/leaky_margins.py                 # classes 1 5 7, about 4 minutes
    python benchmarks/leaky_margins.py --depth 8       # where every target verifies

Writes ``benchmarks/results/<date>-<host>-leaky-margins-depth<depth>.{json,md}``
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

#: float32's unit roundoff: rounding moves an entry x by at most U·|x|
U = 2.0 ** -24


def margin_preimage(layers: list, x0: np.ndarray, z: np.ndarray, mu: float
                    ) -> tuple[np.ndarray, float] | None:
    """The preimage ``(in,)`` of the logits ``z + k·1`` ``(K,)`` on the activation
    region of ``x0`` with the smallest bound ``R`` on its entries such that every
    hidden unit clears zero by ``mu·U·R·‖M_i‖₁``, and that ``R``; ``None`` where
    no such preimage exists (HiGHS, posed relative to ``x0`` like the walk's own
    programs, the equalities eliminated exactly by ``pattern_walk._solve``)."""
    sg, M, a, size, A, out = pw._unit_rows(layers, None, x0)
    n, K = A.shape[1], A.shape[0]
    S = max(1.0, float(np.abs(x0).max()))
    f = S / size
    nv = n + 2                           # x = x0 + S·y, the shift k, R / S
    b = np.zeros((len(a), nv))           # sign·a >= mu·U·R·‖M_i‖₁, rows of order one
    b[:, :n] = -(f * sg)[:, None] * M
    b[:, -1] = f * mu * U * np.abs(M).sum(axis=1)
    rows, rhs = [b], [f * sg * a / S]
    for sign in (1.0, -1.0):             # |x0/S + y| <= R/S
        b = np.zeros((n, nv))
        b[:, :n], b[:, -1] = sign * np.eye(n), -1.0
        rows.append(b)
        rhs.append(-sign * x0 / S)
    cost = np.zeros(nv)
    cost[-1] = 1.0
    eq = np.zeros((K, nv))
    eq[:, :n], eq[:, n] = S * A, -1.0
    sol = pw._solve(cost, np.vstack(rows), np.concatenate(rhs), eq, z - out,
                    [(None, None)] * (n + 1) + [(0, None)])
    return None if sol is None else (x0 + S * sol[:n], float(sol[-1] * S))


def largest_margin(layers: list, x0: np.ndarray, z: np.ndarray, high: float = 1.0,
                   steps: int = 12) -> tuple[float, float]:
    """The largest ``mu`` in ``(0, high]`` with a :func:`margin_preimage`, bracketed
    by ``steps`` programs: ``(feasible, infeasible)`` (``feasible`` 0 when no tried
    ``mu`` was, ``infeasible`` inf when ``high`` is). Down by factors of 100 until
    one is feasible, then geometric bisection."""
    if margin_preimage(layers, x0, z, high) is not None:
        return high, float("inf")
    lo, hi = 0.0, high
    for _ in range(steps):
        mid = (lo * hi) ** 0.5 if lo > 0 else hi * 1e-2
        if margin_preimage(layers, x0, z, mid) is not None:
            lo = mid
        else:
            hi = mid
    return lo, hi


def table(out: dict) -> str:
    """The Markdown table of a run (``main``'s JSON)."""
    n = out["input_width"]
    lines = [f"Slope {out['slope']}, width ratio {out['ratio']}, depth {out['depth']} "
             f"(input width {n}; a typical rounding moves a pre-activation about "
             f"1/√{n} = {n ** -0.5:.3f} of the bound).", "",
             "| class | walked preimage: largest entry | probability error once rounded | "
             "largest feasible margin μ | seconds |", "|---:|---:|---:|---:|---:|"]
    for r in out["rows"]:
        lines.append(f"| {r['class']} | {r['max_abs_input']:.2g} | {r['rounded_error']:.2g} | "
                     f"{r['largest_margin']:.2g} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    network_arguments(ap, [1, 5, 7])
    args = ap.parse_args(argv)
    net, layers = leaky_network(args.slope, args.ratio, args.depth)
    rows = []
    for c in args.classes:
        t = time.perf_counter()
        z = torch.log(nni.target_distribution(c, 0.9)).numpy()
        x0 = pw.backward_walk(layers, z, dtype=torch.float32)
        _, error = pw.round_preimage(layers, x0, z, torch.float32, restarts=pw.ROUND_RESTARTS,
                                     gen=torch.Generator().manual_seed(0))
        feasible, infeasible = largest_margin(layers, x0, z)
        rows.append({"class": c, "max_abs_input": float(np.abs(x0).max()),
                     "rounded_error": float(error), "largest_margin": feasible,
                     "first_infeasible_margin": infeasible,
                     "seconds": time.perf_counter() - t})
        print(rows[-1], flush=True)
    out = {**run_header(), "slope": args.slope, "ratio": args.ratio,
           "depth": args.depth, "input_width": layers[0][0].shape[1], "rows": rows}
    write_experiment(args.out, f"leaky-margins-depth{args.depth}", out, table(out))
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)            # the times in the results are on one thread
    main()
