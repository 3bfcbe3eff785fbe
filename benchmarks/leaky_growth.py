"""Where the pattern walk's preimages grow, layer by layer, and how close the walk
comes to the smallest preimage where every pattern can be tried.

On a deep random LeakyReLU(0.01) network (``leaky_depth.py``'s slope 0.01, width
ratio 0.75, depth 10) the pattern walk (:mod:`nninvert_lib.pattern_walk`) ends
with inputs of 1e10 to 1e18, and the largest of them do not survive being
rounded to float32. Two questions, target by target:

1. Where does the size come from? :func:`~nninvert_lib.pattern_walk.backward_walk`
   goes back one layer at a time, and each sub-network ``layers[i:]`` has its
   input walked to the smallest *size* it finds: the largest entry of that
   input and of the sub-network's pre-activations (a negative input entry
   counted ``1/s`` times, the pre-activation the layer below must produce).
   The script records that size at every layer.
2. Is the walk stuck far from the best? On the last layer (10 units at depth
   10, ending with a LeakyReLU)
   :func:`~nninvert_lib.pattern_walk.enumerated_minimum` solves the linear
   program of *every* activation pattern (1,024 programs) and so finds the
   smallest size of any preimage there.

What it shows at depth 10: the last layer's minimum-norm input
(``--top min_norm``, the default) has size 900–1,800, 1.5 to 9 times the
smallest there (130–800), which the walk on that layer (``--top walk``)
reaches. Going back, the size grows about 10 to 100 times per layer, to
1e10–1e18 at the input. The smaller start does not carry through in size:
with ``--top walk`` classes 1, 4 and 5 end below 2e12, but classes 8 and 9
end at 1e13–1e14 instead of 1e10–1e11. Each layer's walk shrinks its own
sub-network, and the smallest there is not what leaves the layers below the
least to do. Before ``round_preimage`` had its absorbed rounding, inputs of
1e13 and more missed once rounded, and trying the walked start as
BackPassInv's second walk (its later, noisy walks alternating between the
two) verified 50% of the samples instead of 70% (``leaky_depth.py``), so
:func:`~nninvert_lib.pattern_walk.walk_preimages` keeps the minimum-norm
start. With it, every walked start rounds within the target (the last
column), while from the minimum-norm start classes 0 and 3 end at 2e18 and
9e16, beyond what float64 holds.

    python benchmarks/leaky_growth.py                  # ten targets, about 14 minutes
    python benchmarks/leaky_growth.py --top walk
    python benchmarks/leaky_growth.py --depth 8
    python benchmarks/leaky_growth.py --depth 12 --top-patterns 8
    python benchmarks/leaky_growth.py --depth 10 --layer-cost 20  # about 4 minutes
    python benchmarks/leaky_growth.py --depth 12 --layer-cost 20

``--top-patterns K`` asks whether the walk's size depends on where it starts: it
walks each target from the ``K`` smallest preimages of the last layer, one per
activation pattern of the last layer's units
(:func:`~nninvert_lib.pattern_walk.pattern_minima`;
``backward_walk(top_input=...)``), and records each walked input's largest entry
and its error in float64 and in exact arithmetic
(:func:`~nninvert_lib.pattern_walk.exact_error`;
``...-leaky-growth-depth<depth>-top-patterns``). At depth 12 (slope 0.01, ratio
0.75; ``--classes 0 1 2 3``, 28 minutes beside another benchmark) each of those
targets has three distinct last-layer preimages (sizes 230–510 and ~1e5), and
every walk from them ends at 1.8e20–3.4e22, none within the target in float64
or in exact arithmetic (errors 0.09–0.99): the walk's size there does not come
from its start on the last layer, and at that size its float64 programs hold
no preimage.
Some targets' walks take far longer (class 4's more than 35 minutes).

``--layer-cost DRAWS`` asks what each layer costs going back: the largest
pre-activation the layer below must produce over the largest entry of the
layer's target ``W_i h_i`` (at ``i = 0``, the input's largest entry), for the
walk (``backward_walk``, BackPassInv's first walk) beside the least any input of
that layer alone could cost for the same target (:func:`layer_cost`, a linear
program), and that least for ``DRAWS`` targets in random directions and for
``DRAWS`` the layer makes from nonnegative inputs
(``...-leaky-growth-depth<depth>-layer-cost``). At depth 10 a random target
costs 130–230 times at every hidden layer, one made from a nonnegative input
1.1–1.6 times. The walk pays 57–790 on the top two layers (17 → 13 → 10, few
free directions) for every class. Below them the input's size is about the
product of the factors, and the classes differ in how many layers the walk
pays random-target prices on: class 9 (4.4e10 in all) pays under 10 on each of
the seven lowest, class 0 (1.9e19) 84–630 on five of them. At depth 12
(about 15 minutes) the eight classes that miss even in float64 pay 160–930
on two to four of the four widest hidden layers, the two that verify (4 and
9) at most 87 there; with ``--size-programs 40`` classes 0 and 1 end at the
same points.

Writes ``benchmarks/results/<date>-<host>-leaky-growth-depth<depth>.{json,md}``
(or into ``--out``).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.optimize import linprog

import nninvert_lib as nni
from nninvert_lib import pattern_walk as pw

from leaky_depth import leaky_network, network_arguments
from report import run_header, write_experiment


def enumeration_start(layers: list) -> int:
    """The first layer ``i`` whose sub-network ``layers[i:]`` has at most
    ``pattern_walk.MAX_UNITS`` hidden units, starts after a LeakyReLU (or at the
    input), and has at least one (the last layers
    :func:`~nninvert_lib.pattern_walk.enumerated_minimum` can try whole)."""
    for i in range(len(layers)):
        units = pw.hidden_units(layers[i:])
        if (i == 0 or layers[i - 1][2] is not None) and 0 < units <= pw.MAX_UNITS:
            return i
    raise ValueError("no sub-network ending the network has 1 to "
                     f"{pw.MAX_UNITS} hidden units")


def growth_row(layers: list, c: int, top: str = "min_norm") -> dict:
    """One target's row: the walk's size at every layer going back, the
    enumerated minimum on the last layers beside the walk's size there, and the
    walked input's probability error once rounded to float32. ``top``:
    :func:`~nninvert_lib.pattern_walk.backward_walk`'s choice of the last
    layer's input."""
    t = time.perf_counter()
    z = torch.log(nni.target_distribution(c, 0.9)).numpy()
    trace: list = []
    x0 = pw.backward_walk(layers, z, dtype=torch.float32, trace=trace, top=top)
    sizes = {i: pw._score(layers[i:], h, z, "size", torch.float64, pw.input_slope(layers, i))
             for i, h in trace}
    walk_seconds = time.perf_counter() - t
    first = enumeration_start(layers)
    t = time.perf_counter()
    minimum, _ = pw.enumerated_minimum(layers[first:], z, sizes[first],
                                       pw.input_slope(layers, first))
    enum_seconds = time.perf_counter() - t
    _, error = pw.round_preimage(layers, x0, z, torch.float32, restarts=pw.ROUND_RESTARTS,
                                 gen=torch.Generator().manual_seed(0))
    return {"class": c, "sizes": {str(i): s for i, s in sorted(sizes.items())},
            "enumerated_from": first, "enumerated_minimum": minimum,
            "walk_at_enumerated": sizes[first], "max_abs_input": float(np.abs(x0).max()),
            "rounded_error": float(error), "walk_seconds": walk_seconds,
            "enumeration_seconds": enum_seconds}


def top_pattern_row(layers: list, c: int, count: int) -> dict:
    """One target's walks from ``count`` different starts: the smallest preimages
    of the last layer on ``count`` of its activation patterns
    (:func:`~nninvert_lib.pattern_walk.pattern_minima`, every pattern tried, the
    smallest first), each walked back to the input
    (``backward_walk(top_input=...)``). Per start: its size on the last layer,
    the walked input's largest entry and its probability error in float64 before
    any rounding (:func:`~nninvert_lib.pattern_walk.evaluation_error`) and in exact
    arithmetic (:func:`~nninvert_lib.pattern_walk.exact_error`)."""
    t = time.perf_counter()
    z = torch.log(nni.target_distribution(c, 0.9)).numpy()
    minima = pw.pattern_minima(layers[-1:], z, 100.0, pw.input_slope(layers, len(layers) - 1))
    starts = []
    for size, h in minima[:count]:
        x = pw.backward_walk(layers, z, dtype=torch.float32, top_input=h)
        starts.append({"top_size": float(size), "max_abs_input": float(np.abs(x).max()),
                       "float64_error": pw.evaluation_error(layers, x, z),
                       "exact_error": pw.exact_error(layers, x, z)})
    return {"class": c, "patterns": len(minima), "starts": starts,
            "seconds": time.perf_counter() - t}


def top_pattern_table(out: dict) -> str:
    """The Markdown table of a ``--top-patterns`` run (``main``'s JSON)."""
    lines = [f"Slope {out['slope']}, width ratio {out['ratio']}, depth {out['depth']}: the "
             f"walk from each of the {out['top_patterns']} smallest preimages of the last "
             "layer (of the distinct ones over all its activation patterns), back to the "
             "input. Their sizes on the last layer; the walked inputs' largest entries; "
             "how many of the walked inputs hold the target in float64 before any "
             "rounding (probability error at most 2.5e-4, the margin BackPassInv's walk "
             "asks before it rounds); and the smallest probability error of a walked "
             "input in exact arithmetic.", "",
             "| class | starts (distinct) | size on the last layer | walked input: smallest "
             "| median | largest | within 2.5e-4 in float64 | smallest error, exact "
             "arithmetic | seconds |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in out["rows"]:
        top = [s["top_size"] for s in r["starts"]]
        ends = sorted(s["max_abs_input"] for s in r["starts"])
        held = sum(s["float64_error"] <= 2.5e-4 for s in r["starts"])
        exact = min(s["exact_error"] for s in r["starts"])
        lines.append(f"| {r['class']} | {len(r['starts'])} ({r['patterns']}) | "
                     f"{min(top):.3g}–{max(top):.3g} | {ends[0]:.2g} | "
                     f"{float(np.median(ends)):.2g} | {ends[-1]:.2g} | {held} | "
                     f"{exact:.1e} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def cheapest_input(w: np.ndarray, c: np.ndarray, slope: float | None
                   ) -> tuple[float, np.ndarray]:
    """The smallest input ``h`` ``(in,)`` of one linear layer ``w`` ``(out, in)``
    with ``w h = c`` ``(out,)``, and how much larger it is than ``c``: the
    linear program ``min t`` over ``w h = c``, ``-s·t <= h_i <= t`` (``s`` the
    ``slope`` of the LeakyReLU that ``h`` comes out of, so ``t`` is the largest
    pre-activation the layer below must produce; ``|h_i| <= t`` where ``slope``
    is ``None``). Returns ``(t / max|c|, h)``."""
    out_w, n = w.shape
    scale = float(np.abs(c).max())
    low = 1.0 if slope is None else slope
    eye, ones = np.eye(n), np.ones((n, 1))
    a_ub = np.vstack([np.hstack([eye, -ones]), np.hstack([-eye, -low * ones])])
    cost = np.zeros(n + 1)
    cost[-1] = 1.0
    res = linprog(cost, A_ub=a_ub, b_ub=np.zeros(2 * n),
                  A_eq=np.hstack([w, np.zeros((out_w, 1))]), b_eq=c / scale,
                  bounds=[(None, None)] * (n + 1), method="highs")
    if res.status != 0:
        raise RuntimeError(f"cheapest_input: HiGHS failed ({res.message})")
    return float(res.fun), scale * res.x[:n]


def layer_cost(w: np.ndarray, c: np.ndarray, slope: float | None) -> float:
    """:func:`cheapest_input`'s ``t / max|c|``: what going back through the layer
    ``w`` costs, at the least, for the target ``c``."""
    return cheapest_input(w, c, slope)[0]


def one_layer_at_a_time(layers: list, z: np.ndarray) -> np.ndarray:
    """A preimage ``(in,)`` of the logits ``z + k·1`` built from the top down with
    each layer's input the cheapest for that layer alone (:func:`cheapest_input`),
    starting, like :func:`~nninvert_lib.pattern_walk.backward_walk`, from
    :func:`~nninvert_lib.pattern_walk.top_output`."""
    h = pw.top_output(layers, z)
    for i in range(len(layers) - 1, -1, -1):
        w, b, slope = layers[i]
        h = cheapest_input(w, pw.pre_activation(h, slope) - b, pw.input_slope(layers, i))[1]
    return h


def layer_cost_row(layers: list, c: int, size_programs: int = 10) -> dict:
    """One target's walked preimage (:func:`~nninvert_lib.pattern_walk.backward_walk`,
    as BackPassInv's first walk) and, at every layer ``i``, what going back
    through it cost: the largest pre-activation below it (the input's largest
    entry at ``i = 0``) over the largest entry of its target ``W_i h_i``
    (the walk's factor), beside :func:`layer_cost` of that same target (the
    least any input of that one layer could cost), and the largest input entry
    of :func:`one_layer_at_a_time`'s preimage. ``size_programs``:
    ``backward_walk``'s, per layer going back."""
    t = time.perf_counter()
    z = torch.log(nni.target_distribution(c, 0.9)).numpy()
    x = pw.backward_walk(layers, z, dtype=torch.float32, size_programs=size_programs)
    pre, _ = pw.forward(layers, x)
    walk, best = {}, {}
    for i, (w, b, _) in enumerate(layers):
        target = pre[i] - b
        below = np.abs(pre[i - 1]).max() if i else np.abs(x).max()
        walk[str(i)] = float(below / np.abs(target).max())
        best[str(i)] = layer_cost(w, target, pw.input_slope(layers, i))
    greedy = one_layer_at_a_time(layers, z)
    return {"class": c, "max_abs_input": float(np.abs(x).max()),
            "float64_error": pw.evaluation_error(layers, x, z), "walk": walk,
            "layer_cost": best, "one_layer_at_a_time": float(np.abs(greedy).max()),
            "seconds": time.perf_counter() - t}


def typical_costs(layers: list, draws: int, seed: int = 0) -> list[dict]:
    """Per layer ``i``, the median of :func:`layer_cost` over ``draws`` targets in
    a random direction (standard normal) and over ``draws`` that the layer makes
    from a nonnegative input (``W_i |g|``, ``g`` standard normal)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, (w, _, _) in enumerate(layers):
        slope = pw.input_slope(layers, i)
        rand = [layer_cost(w, rng.standard_normal(w.shape[0]), slope) for _ in range(draws)]
        made = [layer_cost(w, w @ np.abs(rng.standard_normal(w.shape[1])), slope)
                for _ in range(draws)]
        rows.append({"layer": i, "in": w.shape[1], "out": w.shape[0],
                     "random": float(np.median(rand)), "nonnegative": float(np.median(made))})
    return rows


def layer_cost_table(out: dict) -> str:
    """The Markdown tables of a ``--layer-cost`` run (``main``'s JSON)."""
    typical = out["typical"]
    lines = [f"Slope {out['slope']}, width ratio {out['ratio']}, depth {out['depth']}: what "
             "going back through layer `i` costs, as the largest pre-activation the layer "
             "below must produce (at `i = 0`, the largest input entry) over the largest "
             "entry of the layer's target `W_i h_i`, at its cheapest for one layer alone "
             "(a linear program). First for targets in a random direction and for targets "
             f"the layer makes from a nonnegative input (medians of {out['draws']} each):",
             "", "| layer `i` | widths | random target | from a nonnegative input |",
             "|---:|---:|---:|---:|"]
    for r in typical:
        lines.append(f"| {r['layer']} | {r['in']} → {r['out']} | {r['random']:.3g} | "
                     f"{r['nonnegative']:.3g} |")
    layers = [str(r["layer"]) for r in typical]
    lines += ["", "Then for the pattern walk's preimage of each target (BackPassInv's "
              f"first walk, `size_programs={out['size_programs']}`): the walk's factor at "
              "each layer, and in brackets the least any input of that layer alone could "
              "cost for the walk's target there; the walked input's largest entry, and its "
              "probability error in float64 before any rounding; and the largest input "
              "entry when every layer's input is the cheapest for that layer alone, from "
              "the top down.", "",
              "| class | largest input entry | error in float64 | one layer at a time | "
              + " | ".join(f"`i = {i}`" for i in layers) + " |",
              "|---:|---:|---:|---:|" + "---:|" * len(layers)]
    for r in out["rows"]:
        lines.append(f"| {r['class']} | {r['max_abs_input']:.2g} | "
                     f"{r['float64_error']:.2g} | {r['one_layer_at_a_time']:.2g} | "
                     + " | ".join(f"{r['walk'][i]:.3g} ({r['layer_cost'][i]:.3g})"
                                  for i in layers) + " |")
    return "\n".join(lines) + "\n"


def table(out: dict) -> str:
    """The Markdown table of a run (``main``'s JSON)."""
    rows = out["rows"]
    layers = sorted({int(i) for r in rows for i in r["sizes"]}, reverse=True)
    top = rows[0]["enumerated_from"]
    lines = [f"Slope {out['slope']}, width ratio {out['ratio']}, depth {out['depth']}: the "
             f"walk's size on `layers[i:]` going back (i = {layers[0]} … 0; the largest "
             "entry of the sub-network's input and pre-activations), the smallest size "
             f"of any preimage on `layers[{top}:]` (every activation pattern tried), "
             "and the walked input's probability error once rounded to float32. "
             f"The last layer's input: `top=\"{out['top']}\"`.", "",
             "| class | smallest on " f"`layers[{top}:]` | the walk's there | "
             + " | ".join(f"walk, i = {i}" for i in layers if i != top)
             + " | rounded error |",
             "|---:|---:|---:|" + "---:|" * (len(layers) - 1) + "---:|"]
    for r in rows:
        lines.append(f"| {r['class']} | {r['enumerated_minimum']:.3g} | "
                     f"{r['walk_at_enumerated']:.3g} | "
                     + " | ".join(f"{r['sizes'][str(i)]:.2g}" for i in layers if i != top)
                     + f" | {r['rounded_error']:.2g} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    network_arguments(ap, list(range(10)))
    ap.add_argument("--top", choices=pw.TOPS, default="min_norm",
                    help="backward_walk's choice of the last layer's input (default: min_norm)")
    ap.add_argument("--top-patterns", type=int, default=0, metavar="K",
                    help="instead: walk from each of the K smallest preimages of the last "
                         "layer (every activation pattern of its units tried)")
    ap.add_argument("--layer-cost", type=int, default=0, metavar="DRAWS",
                    help="instead: what going back through each layer costs the walk, "
                         "beside the least it could for one layer alone, and the median "
                         "of that over DRAWS random and DRAWS nonnegative-made targets")
    ap.add_argument("--size-programs", type=int, default=10, metavar="N",
                    help="with --layer-cost: backward_walk's programs per layer going back "
                         "(default 10, BackPassInv's)")
    args = ap.parse_args(argv)
    _, layers = leaky_network(args.slope, args.ratio, args.depth)
    if args.layer_cost:
        typical = typical_costs(layers, args.layer_cost)
        rows = []
        for c in args.classes:
            rows.append(layer_cost_row(layers, c, args.size_programs))
            print(rows[-1], flush=True)
        out = {**run_header(), "slope": args.slope, "ratio": args.ratio,
               "depth": args.depth, "draws": args.layer_cost, "typical": typical,
               "size_programs": args.size_programs,
               "input_width": layers[0][0].shape[1], "rows": rows}
        name = f"leaky-growth-depth{args.depth}-layer-cost" + (
            "" if args.size_programs == 10 else f"-programs{args.size_programs}")
        write_experiment(args.out, name, out, layer_cost_table(out))
        return out
    if args.top_patterns:
        rows = []
        for c in args.classes:
            rows.append(top_pattern_row(layers, c, args.top_patterns))
            print(rows[-1], flush=True)
        out = {**run_header(), "slope": args.slope, "ratio": args.ratio,
               "depth": args.depth, "top_patterns": args.top_patterns,
               "input_width": layers[0][0].shape[1], "rows": rows}
        write_experiment(args.out, f"leaky-growth-depth{args.depth}-top-patterns", out,
                         top_pattern_table(out))
        return out
    rows = []
    for c in args.classes:
        rows.append(growth_row(layers, c, args.top))
        print(rows[-1], flush=True)
    out = {**run_header(), "slope": args.slope, "ratio": args.ratio,
           "depth": args.depth, "top": args.top, "input_width": layers[0][0].shape[1],
           "rows": rows}
    name = f"leaky-growth-depth{args.depth}" + ("" if args.top == "min_norm" else f"-{args.top}")
    write_experiment(args.out, name, out, table(out))
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)            # the times in the results are on one thread
    main()
