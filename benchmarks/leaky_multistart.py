"""Are there smaller preimages than the pattern walk's? Local searches on deep LeakyReLU nets.

On ``leaky_depth.py``'s random narrowing LeakyReLU networks BackPassInv's
pattern walk (:mod:`nninvert_lib.pattern_walk`) finds preimages whose largest
input entry grows with depth (1e12 at slope 0.01, width ratio 0.75, depth 8;
3e16 at depth 10; up to 5e25, mostly unverifiable, at depth 12). The walk only
improves its start locally, so this asks whether much smaller preimages exist,
by many cheap local searches from random directions at a moderate scale.

Per target ``p = target_distribution(c, 0.9)``: ``--starts`` inputs
``x = e^s · u / ‖u‖`` (``u`` standard normal, ``e^s = --scale``) on a float64
copy of the network; Adam (``--steps`` steps, learning rate ``--lr``, cosine
decay) on ``u`` and ``s`` minimises the centred-logit residual
``‖P(z(x) − log p)‖²`` (``P`` removes the mean, which softmax ignores), whose
zeros are exactly the preimages; then ``levenberg_marquardt`` (60 iterations,
no restarts, on a float64 copy, as the end points' entries reach 1e5 to 1e12)
from the end points on the network itself, verified like BackPassInv
(``atol=1e-3``: the input rounded to float32, the model run in float64).
Recorded: the smallest residual Adam reached, how many starts LM then verified,
and the largest input entry of the smallest of them. ``--compare`` also runs the
default ``back_pass_inv`` (one sample per class, seed 1) and records its input's
largest entry beside it.

Measured (slope 0.01, ratio 0.75, 256 starts of norm 1e5, 3,000 steps; see the
results files): at depth 8 LM verifies 1, 4 and 1 of the starts for classes 2,
3 and 9, with inputs of 1.4e5, 2.8e5 and 3.1e5, where BackPassInv's preimages
of the same targets reach 1.8e10, 1.1e8 and 4.1e5: the walk's preimages can be
far from the smallest. For the seven other classes every start stops in a
local minimum of the residual (smallest 0.03–2.5). At depth 10 it verifies 151
of 256 starts for class 2, the one class that large random inputs land in
there (``leaky_depth.py --directions``), with inputs of 2.2e4 where the walk's
reach 3e16, and none for the nine others. At depth 12 no start comes close for
any class (smallest residual 1.8–4.2; 4.2 is that of constant logits), so this
search, which shows that smaller preimages exist at depths 8 and 10, finds
none there.

    python benchmarks/leaky_multistart.py --depth 8 --compare    # about 2 minutes
    python benchmarks/leaky_multistart.py --depth 10             # about 2 minutes
    python benchmarks/leaky_multistart.py --depth 12             # about 4 minutes
    python benchmarks/leaky_multistart.py --depth 12 --margin-bounds 1e4,1e6,1e8,1e10,1e12

``--margin-bounds`` asks a weaker question per bound ``M``: how far can class ``c``
win at all with inputs in ``[-M, M]``? Adam (``--margin-starts`` starts,
``--margin-steps`` steps) on ``x = M·tanh(w)`` maximises a soft minimum of the
margins ``z_c − z_j`` (:func:`margin_search`); the target needs every margin
within ``log(0.9/0.0111) = 4.39 ± 0.09``. Recorded per bound: the largest
smallest margin reached, and how many of those end points LM (60 iterations,
float64) then turns into verified preimages of the target itself. At depth 12 (slope
0.01, ratio 0.75; ``--depth 12 --margin-bounds 1e4,1e6,1e8,1e10,1e12``, about 2
minutes) seven classes win by 10 to 220 with entries up to 1e6, class 1 by 11
with 1e8 and class 3 by 3e3 with 1e10; from 1e6 on, the margins grow in
proportion to ``M``. Class 6 wins in none of the searches (its best margin is
−3e4 at 1e12). LM from those end points verifies none: for most classes
winning is cheap; matching all nine other probabilities at once is what no
search here achieves. It does not separate depth 12 from depth 10, though: at
depth 10 four classes (0, 1, 3, 4) win in none of the searches up to 1e12, yet
the pattern walk verifies every target there.

Writes ``benchmarks/results/<date>-<host>-leaky-multistart-depth<depth>.{json,md}``
(with ``--margin-bounds``, ``...-leaky-multistart-class-margins-depth<depth>``), or
into ``--out``.
"""
from __future__ import annotations

import argparse
import copy
import math
import time

import torch

import nninvert_lib as nni
from nninvert_lib.forward import levenberg_marquardt

from leaky_depth import input_width, leaky_network, network_arguments
from report import run_header, write_experiment


def centred_residual_search(net: torch.nn.Module, target: torch.Tensor, starts: int,
                            steps: int, lr: float, scale: float, seed: int = 0
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Adam from ``starts`` random inputs on ``‖P(z(x) − log p)‖²``.

    ``net`` maps ``(n, in)`` to logits ``(n, K)``; ``target`` is ``(K,)``
    probabilities. Inputs are ``x = e^s · u / ‖u‖`` with ``u ~ N(0, I)`` (from
    ``seed``) and ``e^s = scale`` at the start, so Adam moves the direction and
    the size separately. Runs on a float64 copy of ``net``. Returns the end
    points ``(starts, in)`` (float64) and their residual norms ``(starts,)``.
    """
    work = copy.deepcopy(net).double().requires_grad_(False)
    width = input_width(work)
    goal = torch.log(target.double())
    goal = goal - goal.mean()
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(starts, width, generator=gen, dtype=torch.float64).requires_grad_(True)
    s = torch.full((starts, 1), math.log(scale), dtype=torch.float64).requires_grad_(True)
    opt = torch.optim.Adam([u, s], lr=lr)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)

    def residual() -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.exp(s) * u / u.norm(dim=1, keepdim=True)
        z = work(x)
        return x, (z - z.mean(dim=1, keepdim=True) - goal).norm(dim=1)

    for _ in range(steps):
        loss = residual()[1].square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()
    with torch.no_grad():
        x, res = residual()
    return x, res


def margin_search(net: torch.nn.Module, c: int, starts: int, steps: int, lr: float,
                  bound: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Adam from ``starts`` random inputs on the margins of class ``c`` inside a box.

    ``net`` maps ``(n, in)`` to logits ``(n, K)``. Inputs are ``x = bound·tanh(w)``,
    so every entry stays in ``(−bound, bound)``; ``w ~ N(0, 0.25)`` (from ``seed``)
    at the start. The loss is a soft minimum of the margins ``m_j = z_c − z_j``,
    ``−T·log Σ_j exp(−m_j / T)``, negated, with a temperature ``T`` of 5% of the
    mean ``|m_j|`` (plus 1e-3), so that it tracks the smallest margin at any scale.
    Runs on a float64 copy of ``net``. Returns the end points ``(starts, in)``
    (float64) and their smallest margins ``min_j m_j`` ``(starts,)``.
    """
    work = copy.deepcopy(net).double().requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    w = (0.5 * torch.randn(starts, input_width(work), generator=gen,
                           dtype=torch.float64)).requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)

    def margins() -> tuple[torch.Tensor, torch.Tensor]:
        x = bound * torch.tanh(w)
        z = work(x)
        return x, z[:, c:c + 1] - torch.cat([z[:, :c], z[:, c + 1:]], dim=1)

    for _ in range(steps):
        m = margins()[1]
        temp = 1e-3 + 0.05 * m.detach().abs().mean(dim=1, keepdim=True)
        loss = (temp * torch.logsumexp(-m / temp, dim=1, keepdim=True)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        x, m = margins()
    return x, m.min(dim=1).values


def margin_rows(net: torch.nn.Module, classes: list[int], bounds: list[float], starts: int,
                steps: int, lr: float) -> list[dict]:
    """Per class and bound: the largest smallest margin :func:`margin_search` reaches
    and how many of its end points LM (60 iterations, float64) turns into verified preimages
    of ``target_distribution(c, 0.9)``."""
    rows = []
    for c in classes:
        target = nni.target_distribution(c, 0.9)
        row = {"class": c, "bounds": []}
        for bound in bounds:
            t = time.perf_counter()
            x, m = margin_search(net, c, starts, steps, lr, bound)
            lm = levenberg_marquardt(net, x, target, max_iter=60, restarts=0,
                                     dtype=torch.float64)
            row["bounds"].append({"bound": bound, "largest_margin": float(m.max()),
                                  "median_margin": float(m.median()),
                                  "lm_verified": int(lm.converged.sum()),
                                  "seconds": time.perf_counter() - t})
        rows.append(row)
        print(row, flush=True)
    return rows


def margin_table(rows: list[dict], starts: int) -> list[str]:
    """Markdown: one row per class, one column per bound (largest smallest margin,
    and LM's verified end points of ``starts``)."""
    bounds = [b["bound"] for b in rows[0]["bounds"]]
    head = "| class | " + " | ".join(f"entries ≤ {b:g}" for b in bounds) + " |"
    lines = [head, "|---:|" + "---:|" * len(bounds)]
    for r in rows:
        cells = [f"{b['largest_margin']:.3g} ({b['lm_verified']} of {starts})"
                 for b in r["bounds"]]
        lines.append(f"| {r['class']} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    network_arguments(ap, list(range(10)))
    ap.add_argument("--starts", type=int, default=256, help="random starts per class")
    ap.add_argument("--steps", type=int, default=3000, help="Adam steps")
    ap.add_argument("--lr", type=float, default=0.05, help="Adam's learning rate")
    ap.add_argument("--scale", type=float, default=1e5, help="norm of the starting inputs")
    ap.add_argument("--compare", action="store_true",
                    help="also run the default back_pass_inv, one sample per class")
    ap.add_argument("--margin-bounds", type=str, default=None,
                    help="comma-separated input bounds M: instead of the residual "
                         "search, how far each class can win with entries in [-M, M]")
    ap.add_argument("--margin-starts", type=int, default=32)
    ap.add_argument("--margin-steps", type=int, default=1500)
    args = ap.parse_args(argv)
    net, _ = leaky_network(args.slope, args.ratio, args.depth)
    if args.margin_bounds:
        bounds = [float(b) for b in args.margin_bounds.split(",")]
        rows = margin_rows(net, args.classes, bounds, args.margin_starts, args.margin_steps,
                           args.lr)
        out = {**run_header(), "slope": args.slope, "ratio": args.ratio, "depth": args.depth,
               "starts": args.margin_starts, "steps": args.margin_steps, "lr": args.lr,
               "rows": rows}
        lines = [f"Slope {args.slope}, width ratio {args.ratio}, depth {args.depth}: the "
                 f"largest smallest margin z_c − z_j of {args.margin_starts} Adam searches "
                 f"({args.margin_steps} steps, learning rate {args.lr}) with every input "
                 "entry in [−M, M], and in brackets how many of their end points LM turns "
                 "into verified preimages of the target 0.9 (its margins: 4.39).", "",
                 *margin_table(rows, args.margin_starts)]
        write_experiment(args.out, f"leaky-multistart-class-margins-depth{args.depth}", out,
                         "\n".join(lines) + "\n")
        return out
    rows = []
    for c in args.classes:
        t = time.perf_counter()
        target = nni.target_distribution(c, 0.9)
        x, res = centred_residual_search(net, target, args.starts, args.steps, args.lr,
                                         args.scale)
        lm = levenberg_marquardt(net, x, target, max_iter=60, restarts=0, dtype=torch.float64)
        sizes = lm.inputs.abs().flatten(1).max(dim=1).values.double()
        ok = lm.converged
        row = {"class": c, "smallest_residual": float(res.min()),
               "median_residual": float(res.median()), "verified": int(ok.sum()),
               "smallest_verified_input": float(sizes[ok].min()) if ok.any() else None,
               "seconds": time.perf_counter() - t}
        if args.compare:
            t = time.perf_counter()
            back = nni.back_pass_inv(net, target, n_samples=1, seed=1)
            row["back_pass_inv"] = {"verified": bool(back.converged.all()),
                                    "largest_input": float(back.inputs.abs().max()),
                                    "seconds": time.perf_counter() - t}
        rows.append(row)
        print(row, flush=True)
    out = {**run_header(), "slope": args.slope, "ratio": args.ratio, "depth": args.depth,
           "starts": args.starts, "steps": args.steps, "lr": args.lr, "scale": args.scale,
           "rows": rows}
    head = ("| class | Adam: smallest residual (median) | LM from its end points: verified "
            f"of {args.starts} | smallest verified input's largest entry | seconds |")
    rule = "|---:|---:|---:|---:|---:|"
    if args.compare:
        head += " `back_pass_inv`: verified | its input's largest entry | seconds |"
        rule += "---|---:|---:|"
    lines = [f"Slope {args.slope}, width ratio {args.ratio}, depth {args.depth}; "
             f"{args.starts} starts of norm {args.scale:g}, {args.steps} Adam steps "
             f"(learning rate {args.lr}).", "", head, rule]
    for r in rows:
        size = r["smallest_verified_input"]
        line = (f"| {r['class']} | {r['smallest_residual']:.3g} ({r['median_residual']:.3g}) | "
                f"{r['verified']} | {'—' if size is None else f'{size:.2g}'} | "
                f"{r['seconds']:.0f} |")
        b = r.get("back_pass_inv")
        if b:
            line += (f" {'yes' if b['verified'] else 'no'} | {b['largest_input']:.2g} | "
                     f"{b['seconds']:.0f} |")
        lines.append(line)
    write_experiment(args.out, f"leaky-multistart-depth{args.depth}", out,
                     "\n".join(lines) + "\n")
    return out


if __name__ == "__main__":
    main()
