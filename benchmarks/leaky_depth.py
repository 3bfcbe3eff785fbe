"""How deep a random narrowing LeakyReLU network BackPassInv inverts, and why it stops.

LeakyReLU is a bijection and every narrowing linear layer is onto, so every
target has exact preimages at any depth. Numerically they get out of reach:
going back, a negative hidden entry is divided by the slope, and the
pseudoinverse of a narrowing layer amplifies along its small singular
directions, so the input needed grows geometrically with depth. Once the
input's entries are ~1e7 or more times the size of the logits, the float32
input (the model's dtype) no longer reproduces the logits, and from ~1e14 not
even float64 does.

For each slope, width ratio (each layer ``ratio`` times as wide as the one
before it, ending at 10) and depth, this builds the network with PyTorch's
default initialisation (seed = depth, or one network per ``--network-seeds``),
runs the default ``back_pass_inv`` on ``target_distribution(c, 0.9)`` for
c = 0..9, ``--n`` samples each (seed 1), and records the verified success rate,
the largest input entry, how many targets its pattern walk (step 3,
:mod:`nninvert_lib.pattern_walk`) ran on and how many of those verified, and
the seconds per network. The walk is what
takes the time: 1 s to a few minutes per target walked, on the deepest and
widest networks only (1,100–1,500 s for the ten targets at slope 0.01, ratio 0.75,
depth 10; 2,500 s with ``--n 10``). Beyond the default grid, ``--slopes 0.01
--ratios 0.75 --depths 11`` verifies 90% (4,400 s; 144 of 160 over four
networks, ``--network-seeds 1 2 3`` adding 100%, 80% and 90%) and ``--depths 12`` 20%
(6,250 s; ``--network-seeds 2 --walk-seconds 480`` 60%, 7,900 s). ``--out``
keeps such runs from replacing the grid's file of the same day, and
``--walk-seconds S`` stops each target's walk after about S seconds, the
drawing of its other samples around a verified walked preimage after about S
more, and the final rounding of its samples that still miss after about S
more again (the table then counts the targets that missed after their walk
was stopped; the JSON also records, as ``draws_stopped`` and
``roundings_stopped``, how many targets' draws and roundings were stopped).

``--continuation`` also measures a global alternative: a continuation in the
negative slope (:func:`slope_continuation`). At slope 1 the network is affine
and LM from ``x = 0`` reaches the minimum-norm preimage in a step or two; the
slope is then lowered geometrically to the network's own in ``--stages``
stages, each finished by LM (float64) from the previous stage's inputs. It
keeps the inputs small (largest entry ~1e3–1e5 instead of 1e7–1e21), but
the path of solutions folds back (LM stalls with the error stuck at
0.3–0.5) part of the way down for most targets.

``--float64`` also runs the default ``back_pass_inv`` on a float64 copy of
each network: the backward pass itself is exact, and in float64 it verifies
every sample in the default grid (inputs up to ~6e16) except at slope 0.01,
ratio 0.75, depth 10, where the input it needs (~3e21) outgrows float64 too.

``--smoothing`` measures a second global candidate
(:func:`smoothing_continuation`): every LeakyReLU is replaced by a smooth
blend ``s·u + (1 - s)·(softplus(βu) - log 2)/β`` whose derivative stays in
``(s, 1)``, so the Jacobian of the narrowing network never loses rank; β
rises geometrically from 1e-4 (almost affine) to 1e4 over ``--stages``
stages, each finished by LM from the previous stage's inputs, and LM on the
network itself finishes. Started from uniform random inputs in ``[0, 1)``
(one per sample), it keeps the inputs at ~1e2–1e6, but the smallest singular
value of the Jacobian drops to ~1e-6 part of the way (a near fold) and LM
stops following the path there for most targets when each layer is 0.75 times
as wide as the one before; with ratio 0.5 it verifies most targets.

``--conditioning`` records the condition number ``κ(J)`` of the logits'
Jacobian (:func:`jacobian_condition`) at standard-normal inputs and at the
float64 preimages. At slope 0.01 and ratio 0.75 it is ~5e6–3e7 at random
inputs from depth 4 on (at most ~3e4 in the other settings): there the logits
of a typical input barely move along some directions, and a generic target
needs a large input component along them. At the preimages BackPassInv finds,
``κ(J)`` is 6 to 1,000 times smaller (their activation patterns are not
typical ones), so what float32 cannot carry there is the size of the input
(verification rounds it to float32 and runs the model in float64; the first
layers must cancel those large entries), not the conditioning of ``J``.

``--milp-bound M`` asks whether small preimages exist at all
(:func:`bounded_preimage`): a mixed-integer program over the activation
patterns (HiGHS, big-M, one binary per unit) for an input whose every entry and
every pre-activation lies in ``[-M, M]``. An infeasible program
proves (up to HiGHS's tolerances) that every preimage of the target has an
input entry or a pre-activation beyond ``M``; a feasible one gives an input,
finished by 30 LM steps in the model's dtype if it does not verify at once.
Only networks up to ``--milp-max-depth`` are tried (the search grows
exponentially with the number of hidden units). At slope 0.01, ratio 0.75 and
``M = 1e4`` it found such inputs for all ten targets at depth 2 and decided
none of the ten within 60 s each at depth 4.

``--init he`` draws each network's weights instead from He (Kaiming)
uniform initialisation for the LeakyReLU's slope, ``U(±sqrt(6 / ((1 + slope²)
in)))``, about 2.4 times PyTorch's default bound, so that the signal keeps its
size from layer to layer (:func:`he_initialise`; the biases keep PyTorch's
default). It asks whether the depth limit comes from the default
initialisation's shrinking signal. It does not: at slope 0.01, ratio 0.75,
depth 12 (seed 12, walks stopped at 120 s) the He-initialised network verifies
30% (the default one 20%), with inputs up to ~2e21, and at depth 11 (seed 11)
30% as well (the default one 90% with no time limit).

``--directions`` asks where the network sends large inputs
(:func:`direction_spread`): 1,000 standard-normal inputs scaled by 1e3 and by
1e6, run through a float64 copy; it records how many classes win among them
and how many of those inputs give their winning class probability 0.9 or more
(and in how many classes). Going deeper, the logits of large inputs collapse
onto fewer directions: at slope 0.01 and ratio 0.75, the inputs scaled by 1e6
reach 9 classes at depth 4 and one at depth 10, so there the preimages of 0.9
on the other nine classes lie in thin cones far out. The collapse alone does
not decide success: at slope 0.1, depth 10 they reach two classes, and every
target still verifies.

    python benchmarks/leaky_depth.py                  # about 31 minutes on one CPU thread
    python benchmarks/leaky_depth.py --continuation --float64 --smoothing   # ~25 minutes
    python benchmarks/leaky_depth.py --slopes 0.01 --ratios 0.75 --depths 2 4 --milp-bound 1e4
    python benchmarks/leaky_depth.py --conditioning   # about 1 minute
    python benchmarks/leaky_depth.py --slopes 0.01 --ratios 0.75 --directions
    python benchmarks/leaky_depth.py --slopes 0.01 --ratios 0.75 --depths 10 --network-seeds 1 2
                                                      # two more networks, about 28 minutes
    python benchmarks/leaky_depth.py --slopes 0.01 --ratios 0.75 --depths 12 --init he \
        --walk-seconds 120 --out /tmp/he                  # about 25 minutes (29 at depth 11)

Writes ``benchmarks/results/<date>-<host>-leaky-depth.{json,md}`` (or ``--out``).
"""
from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path

import torch

import nninvert_lib as nni
from nninvert_lib import pattern_walk
from nninvert_lib.models.fcnn import make_fcnn
from report import run_header, write_experiment

HERE = Path(__file__).resolve().parent


def input_width(net: torch.nn.Module) -> int:
    """The input width of ``net``: its first ``nn.Linear``'s ``in_features``."""
    return next(m for m in net.modules() if isinstance(m, torch.nn.Linear)).in_features


def narrowing_widths(depth: int, ratio: float, out: int = 10) -> tuple[int, ...]:
    """``depth + 1`` widths ending at ``out``, each ``ratio`` times the one before it."""
    widths = [out]
    for _ in range(depth):
        widths.insert(0, int(round(widths[0] / ratio)))
    return tuple(widths)


def network_arguments(ap: argparse.ArgumentParser, classes: list[int]) -> None:
    """The options of the per-target experiments on one of this script's networks
    (``leaky_margins.py``, ``leaky_rounding.py``): its slope, width ratio and depth,
    the target classes (default ``classes``) and the results folder."""
    ap.add_argument("--slope", type=float, default=0.01)
    ap.add_argument("--ratio", type=float, default=0.75)
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--classes", type=int, nargs="+", default=classes)
    ap.add_argument("--out", type=Path, default=HERE / "results")


def leaky_network(slope: float, ratio: float, depth: int
                  ) -> tuple[torch.nn.Sequential, list]:
    """This script's network for ``slope``, ``ratio`` and ``depth`` (PyTorch's default
    initialisation, seed ``depth``) and its layers as the pattern walk reads them
    (:func:`~nninvert_lib.pattern_walk.piecewise_layers`)."""
    torch.manual_seed(depth)
    net = make_fcnn(narrowing_widths(depth, ratio), "leaky_relu", negative_slope=slope).eval()
    return net, pattern_walk.piecewise_layers(nni.plan_back_pass(net).steps)


def he_initialise(net: torch.nn.Module, slope: float, seed: int) -> None:
    """Redraw every ``nn.Linear`` weight of ``net`` in place from He (Kaiming)
    uniform initialisation for a LeakyReLU of negative slope ``slope``
    (:func:`torch.nn.init.kaiming_uniform_`): ``U(-b, b)`` with
    ``b = sqrt(6 / ((1 + slope²) · in_features))``, drawn from a generator
    seeded with ``seed``. Biases are left as they are."""
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.kaiming_uniform_(m.weight, a=slope, nonlinearity="leaky_relu",
                                           generator=gen)


def slope_continuation(net: torch.nn.Module, target: torch.Tensor, slope: float,
                       stages: int = 30, max_iter: int = 30) -> tuple[torch.Tensor, int]:
    """Inputs ``(n, in)`` for ``target`` ``(n, K)`` by continuation in the
    LeakyReLU slope from 1 down to ``slope`` (on a float64 copy of ``net``),
    and the stage at which the first sample stopped converging (``stages + 1``:
    none did)."""
    work = copy.deepcopy(net).double()
    leaky = [m for m in work.modules() if isinstance(m, torch.nn.LeakyReLU)]
    width = input_width(work)
    x = torch.zeros(len(target), width, dtype=torch.float64)
    first_fail = stages + 1
    for k in range(stages + 1):
        for m in leaky:
            m.negative_slope = math.exp(math.log(slope) * k / stages)
        res = nni.levenberg_marquardt(work, x, target, max_iter=max_iter, tol=1e-6)
        x = res.inputs.double()
        if not res.converged.all() and first_fail > stages:
            first_fail = k
    return x, first_fail


class SmoothLeakyReLU(torch.nn.Module):
    """``s·u + (1 - s)·(softplus(βu) - log 2)/β``: LeakyReLU(``s``) as β → ∞ (within
    ``(1 - s)·log 2/β``), the line ``(1 + s)/2 · u`` as β → 0, 0 at 0, slope in ``(s, 1)``."""

    def __init__(self, negative_slope: float, beta: float):
        super().__init__()
        self.negative_slope, self.beta = float(negative_slope), float(beta)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        s, b = self.negative_slope, self.beta
        return s * u + (1 - s) * (torch.nn.functional.softplus(b * u) - math.log(2.0)) / b


def smoothing_continuation(net: torch.nn.Sequential, x0: torch.Tensor, target: torch.Tensor,
                           beta0: float = 1e-4, beta1: float = 1e4, stages: int = 30,
                           max_iter: int = 30) -> torch.Tensor:
    """Inputs ``(n, in)`` (float64) for ``target`` ``(n, K)`` by continuation in the
    sharpness β of :class:`SmoothLeakyReLU` (from ``beta0`` to ``beta1``,
    geometrically, ``stages + 1`` LM solves from ``x0``), finished by LM on ``net``."""
    work = copy.deepcopy(net).double()
    smooth = []
    for i, m in enumerate(work):
        if isinstance(m, torch.nn.LeakyReLU):
            work[i] = SmoothLeakyReLU(m.negative_slope, beta0)
            smooth.append(work[i])
    x = x0.double()
    for k in range(stages + 1):
        for m in smooth:
            m.beta = beta0 * (beta1 / beta0) ** (k / stages)
        x = nni.levenberg_marquardt(work, x, target, max_iter=max_iter, tol=1e-7).inputs.double()
    return nni.levenberg_marquardt(copy.deepcopy(net).double(), x, target,
                                   max_iter=max_iter).inputs.double()


def bounded_preimage(net: torch.nn.Sequential, target: torch.Tensor, bound: float,
                     time_limit: float = 60.0) -> tuple[str, torch.Tensor | None]:
    """Is there an input in ``[-bound, bound]`` whose pre-activations (every
    LeakyReLU's input, the last one's too when the network ends with one) all lie
    in ``[-bound, bound]`` and whose logits are ``log(target) + k`` for some shift
    ``k``? ``target``: ``(K,)``.

    A big-M feasibility program over the LeakyReLU activation patterns (SciPy's
    ``milp``, HiGHS). Returns ``("infeasible", None)``, ``("feasible", x)`` with
    ``x`` ``(1, in)`` float64, or ``("undecided", None)`` when ``time_limit``
    seconds ran out first.
    """
    import numpy as np
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    slopes = [m.negative_slope for m in net.modules() if isinstance(m, torch.nn.LeakyReLU)]
    if len(slopes) not in (len(linears) - 1, len(linears)) or len(set(slopes)) != 1:
        raise ValueError("bounded_preimage needs Linear, LeakyReLU, ..., Linear (LeakyReLU) "
                         "with one slope")
    s, big = float(slopes[0]), float(bound)
    ws = [m.weight.detach().double().numpy() for m in linears]
    bs = [m.bias.detach().double().numpy() for m in linears]
    n_in, activated = ws[0].shape[1], [w.shape[0] for w in ws[:len(slopes)]]
    # variables: x, then (h, a, d) per activated layer, then the shift k
    offsets, off = [], n_in
    for n in activated:
        offsets.append((off, off + n, off + 2 * n))
        off += 3 * n
    k_var, n_var = off, off + 1
    rows, cols, vals, lo, hi = [], [], [], [], []

    def add(coefs: dict, low: float, high: float) -> None:
        r = len(lo)
        for c, v in coefs.items():
            rows.append(r); cols.append(c); vals.append(v)
        lo.append(low); hi.append(high)

    for layer, n in enumerate(activated):
        h, a, d = offsets[layer]
        src = 0 if layer == 0 else offsets[layer - 1][1]
        w, b = ws[layer], bs[layer]
        for i in range(n):
            coefs = {h + i: 1.0}
            coefs.update({src + j: -w[i, j] for j in range(w.shape[1])})
            add(coefs, b[i], b[i])                                   # h = W src + b
            add({h + i: 1.0, d + i: -big}, -np.inf, 0.0)             # d = 0  =>  h <= 0
            add({h + i: 1.0, d + i: -big}, -big, np.inf)             # d = 1  =>  h >= 0
            add({a + i: 1.0, h + i: -1.0, d + i: big}, -np.inf, big)  # d = 1  =>  a = h
            add({a + i: 1.0, h + i: -1.0, d + i: -big}, -big, np.inf)
            add({a + i: 1.0, h + i: -s, d + i: -big}, -np.inf, 0.0)  # d = 0  =>  a = s h
            add({a + i: 1.0, h + i: -s, d + i: big}, 0.0, np.inf)
    z = torch.log(target.double()).numpy()
    last = offsets[-1][1]
    for i in range(len(z)):                                           # logits = z + k
        if len(activated) == len(linears):                            # ... after a LeakyReLU
            coefs, rhs = {last + i: 1.0, k_var: -1.0}, z[i]
        else:                                                         # ... W a + b
            coefs = {last + j: ws[-1][i, j] for j in range(ws[-1].shape[1])}
            coefs[k_var], rhs = -1.0, z[i] - bs[-1][i]
        add(coefs, rhs, rhs)
    lower, upper = np.full(n_var, -np.inf), np.full(n_var, np.inf)
    lower[:n_in], upper[:n_in] = -big, big
    integrality = np.zeros(n_var)
    for (h, a, d), n in zip(offsets, activated):
        lower[h:h + n], upper[h:h + n] = -big, big
        lower[a:a + n], upper[a:a + n] = -s * big, big
        lower[d:d + n], upper[d:d + n], integrality[d:d + n] = 0.0, 1.0, 1
    cost = np.zeros(n_var)                                            # feasibility only
    matrix = coo_matrix((vals, (rows, cols)), shape=(len(lo), n_var)).tocsr()
    res = milp(cost, constraints=LinearConstraint(matrix, lo, hi), integrality=integrality,
               bounds=Bounds(lower, upper), options={"time_limit": time_limit})
    if res.status == 2:
        return "infeasible", None
    if res.x is None:
        return "undecided", None
    return "feasible", torch.tensor(res.x[:n_in], dtype=torch.float64).unsqueeze(0)


def milp_row(net: torch.nn.Sequential, target: torch.Tensor, bound: float,
             time_limit: float) -> dict:
    """:func:`bounded_preimage` for each row of ``target`` ``(B, K)``: counts, the
    largest input entry among the feasible ones, and how many verify in the model's
    dtype (at once, or after 30 LM steps from the MILP's input)."""
    counts = {"infeasible": 0, "feasible": 0, "undecided": 0}
    verified, largest = 0, 0.0
    t = time.perf_counter()
    dtype = next(net.parameters()).dtype
    for row in target:
        status, x = bounded_preimage(net, row, bound, time_limit)
        counts[status] += 1
        if x is None:
            continue
        largest = max(largest, float(x.abs().max()))
        ok = nni.verify(net, x.to(dtype), row[None])[1]
        if not ok.all():
            ok = nni.levenberg_marquardt(net, x.to(dtype), row[None], max_iter=30).converged
        verified += int(ok.all())
    return {"bound": bound, **counts, "verified": verified,
            "max_abs_input": largest if counts["feasible"] else None,
            "seconds": time.perf_counter() - t}


def jacobian_condition(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``κ(J) = σ_max / σ_min`` of the logits' Jacobian ``J = ∂net(x)/∂x``
    ``(K, in)`` at each row of ``x`` ``(n, in)``, on a float64 copy of ``net``.

    For a piecewise-linear network ``J = W_L D_{L-1} ⋯ D_1 W_1`` with ``D``
    the LeakyReLU slopes (1 or ``s``) of the pattern at ``x``. Rounding the
    input to float32 (unit roundoff ``u ≈ 6e-8``; what verification does before
    it runs the model in float64) moves the logits by roughly
    ``u·κ(J)·‖Δz‖`` where the target needs a logit change
    ``Δz`` along ``J``'s small singular directions, so patterns with
    ``κ(J) ≳ 1e5`` leave no float32 preimage within ``atol=1e-3``.
    """
    work = copy.deepcopy(net).double()
    jac = torch.func.vmap(torch.func.jacrev(lambda v: work(v[None])[0]))(x.double())
    sv = torch.linalg.svdvals(jac.detach())
    return sv[:, 0] / sv[:, -1]


def direction_spread(net: torch.nn.Module, n: int = 1000,
                     scales: tuple[float, ...] = (1e3, 1e6), seed: int = 3) -> list[dict]:
    """Where ``net`` sends large inputs: ``n`` standard-normal inputs ``(n, in)``
    from ``seed``, scaled by each of ``scales``, through a float64 copy of
    ``net``. Per scale: ``classes``, how many classes win (argmax) among them;
    ``confident``, how many give their winning class probability ≥ 0.9; and
    ``confident_classes``, how many classes those confident inputs reach."""
    work = copy.deepcopy(net).double()
    width = input_width(work)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, width, generator=gen, dtype=torch.float64)
    out = []
    with torch.no_grad():
        for scale in scales:
            p = torch.softmax(work(scale * x), dim=1)
            top, cls = p.max(dim=1)
            sure = top >= 0.9
            out.append({"scale": scale, "classes": int(cls.unique().numel()),
                        "confident": int(sure.sum()),
                        "confident_classes": int(cls[sure].unique().numel())})
    return out


def classes_short(res: nni.InversionResult, n: int) -> list[int]:
    """The target classes (argmax of each target row) with fewer than ``n`` verified
    samples in ``res``."""
    cls = res.target.argmax(dim=1)
    return [int(c) for c in cls.unique() if int(res.converged[cls == c].sum()) < n]


def walks_stopped(res: nni.InversionResult) -> int:
    """How many targets in ``res`` missed after their pattern walk was stopped by
    ``walk_seconds`` (``info["walks_stopped"]``) and still have a sample that
    does not verify."""
    index = res.info["target_index"]
    return sum(1 for r in res.info["walks_stopped"] if not bool(res.converged[index == r].all()))


def _largest_entry(x: torch.Tensor) -> float | None:
    """``max |x|`` in float64, or None where it is not finite (the input overflowed)."""
    big = float(x.double().abs().max())
    return big if math.isfinite(big) else None


def _largest(value: float | None) -> str:
    """A table cell for a largest input entry (``—`` where it was not finite)."""
    return "—" if value is None else f"{value:.2g}"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slopes", type=float, nargs="+", default=[0.1, 0.01])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.5, 0.75])
    ap.add_argument("--depths", type=int, nargs="+", default=[2, 4, 6, 8, 10])
    ap.add_argument("--max-width", type=int, default=3000,
                    help="skip networks whose input is wider (SVD time)")
    ap.add_argument("--n", type=int, default=4, help="samples per class")
    ap.add_argument("--network-seeds", type=int, nargs="+", default=None, metavar="SEED",
                    help="initialise one network per seed (default: one, seed = depth)")
    ap.add_argument("--walk-seconds", type=float, default=None, metavar="S",
                    help="stop each target's pattern walk after about S seconds "
                         "(back_pass_inv's walk_seconds; default: no limit)")
    ap.add_argument("--init", choices=["default", "he"], default="default",
                    help="weights from PyTorch's default initialisation or from He "
                         "uniform initialisation for the slope (he_initialise)")
    ap.add_argument("--continuation", action="store_true",
                    help="also measure the continuation in the slope (slope_continuation)")
    ap.add_argument("--stages", type=int, default=30, help="stages of either continuation")
    ap.add_argument("--float64", action="store_true",
                    help="also run back_pass_inv on a float64 copy of each network")
    ap.add_argument("--smoothing", action="store_true",
                    help="also measure the continuation in a smoothing (smoothing_continuation)")
    ap.add_argument("--conditioning", action="store_true",
                    help="also record the condition number of the input Jacobian at "
                         "standard-normal inputs and at the float64 preimages "
                         "(jacobian_condition)")
    ap.add_argument("--directions", action="store_true",
                    help="also record where 1,000 large random inputs land "
                         "(direction_spread)")
    ap.add_argument("--milp-bound", type=float, default=None, metavar="M",
                    help="also ask a MILP for a preimage with every input entry and "
                         "pre-activation in [-M, M] (bounded_preimage), one per class")
    ap.add_argument("--milp-max-depth", type=int, default=4,
                    help="skip the MILP on deeper networks (default 4)")
    ap.add_argument("--milp-time-limit", type=float, default=60.0,
                    help="seconds per MILP (default 60)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    target = nni.target_distribution(list(range(10)), 0.9)
    rows = []
    for slope in args.slopes:
        for ratio in args.ratios:
            for depth, net_seed in [(d, s) for d in args.depths
                                    for s in (args.network_seeds or [d])]:
                widths = narrowing_widths(depth, ratio)
                if widths[0] > args.max_width:
                    continue
                torch.manual_seed(net_seed)
                net = make_fcnn(widths, "leaky_relu", negative_slope=slope).eval()
                if args.init == "he":
                    he_initialise(net, slope, net_seed)
                t = time.perf_counter()
                res = nni.back_pass_inv(net, target, n_samples=args.n, seed=1,
                                        walk_seconds=args.walk_seconds)
                rows.append({"slope": slope, "ratio": ratio, "depth": depth,
                             "network_seed": net_seed,
                             "input_width": widths[0], "success_rate": float(res.success_rate),
                             "max_abs_input": _largest_entry(res.inputs),
                             "walked": res.info["pattern_walks"],
                             "walk_verified": res.info["pattern_walks_verified"],
                             "classes_short": classes_short(res, args.n),
                             "walks_stopped": walks_stopped(res),
                             "draws_stopped": len(res.info["draws_stopped"]),
                             "roundings_stopped": len(res.info["roundings_stopped"]),
                             "seconds": time.perf_counter() - t})
                if args.continuation:
                    t = time.perf_counter()
                    rows_t = target.repeat_interleave(args.n, dim=0)
                    x, first_fail = slope_continuation(net, rows_t, slope, args.stages)
                    ok = nni.verify(net, x.to(torch.float32), rows_t)[1]
                    rows[-1]["continuation"] = {
                        "success_rate": float(ok.double().mean()),
                        "max_abs_input": float(x.abs().max()),
                        "first_failing_slope": (None if first_fail > args.stages else
                                                slope ** (first_fail / args.stages)),
                        "seconds": time.perf_counter() - t}
                if args.float64 or args.conditioning:
                    res64 = nni.back_pass_inv(copy.deepcopy(net).double(), target.double(),
                                              n_samples=args.n, seed=1)
                if args.float64:
                    rows[-1]["float64"] = {"success_rate": float(res64.success_rate),
                                           "max_abs_input": _largest_entry(res64.inputs)}
                if args.conditioning:
                    gen = torch.Generator().manual_seed(2)
                    natural = jacobian_condition(net, torch.randn(
                        args.n * 10, widths[0], generator=gen, dtype=torch.float64))
                    found = res64.inputs[res64.converged].reshape(-1, widths[0])
                    at_found = jacobian_condition(net, found) if len(found) else None
                    rows[-1]["conditioning"] = {
                        "random_median": float(natural.median()),
                        "random_min": float(natural.min()),
                        "preimage_median": (None if at_found is None
                                            else float(at_found.median())),
                        "preimage_min": None if at_found is None else float(at_found.min())}
                if args.smoothing:
                    t = time.perf_counter()
                    rows_t = target.repeat_interleave(args.n, dim=0)
                    gen = torch.Generator().manual_seed(1)
                    x0 = torch.rand(len(rows_t), widths[0], generator=gen, dtype=torch.float64)
                    x = smoothing_continuation(net, x0, rows_t.double(), stages=args.stages)
                    ok = nni.verify(net, x.to(torch.float32), rows_t)[1]
                    rows[-1]["smoothing"] = {
                        "success_rate": float(ok.double().mean()),
                        "max_abs_input": _largest_entry(x),
                        "seconds": time.perf_counter() - t}
                if args.directions:
                    rows[-1]["directions"] = direction_spread(net)
                if args.milp_bound is not None and depth <= args.milp_max_depth:
                    rows[-1]["milp"] = milp_row(net, target, args.milp_bound,
                                                args.milp_time_limit)
                print(rows[-1], flush=True)
    out = {**run_header(), "init": args.init, "n_per_class": args.n,
           "milp_bound": args.milp_bound,
           "walk_seconds": args.walk_seconds, "rows": rows}
    seeded = args.network_seeds is not None
    head = ("| slope | width ratio | depth | " + ("network seed | " if seeded else "") +
            "input width | verified | largest input entry | "
            f"targets walked: verified / walked | classes with fewer than {args.n} verified | "
            "seconds |")
    rule = "|---:|---:|---:|" + ("---:|" if seeded else "") + "---:|---:|---:|---:|---|---:|"
    if args.walk_seconds is not None:
        head += f" walks stopped at {args.walk_seconds:g} s |"
        rule += "---:|"
    if args.continuation:
        head += (" continuation: verified | its largest input entry | slope where LM "
                 "first stalls |")
        rule += "---:|---:|---:|"
    if args.float64:
        head += " float64 model: verified | its largest input entry |"
        rule += "---:|---:|"
    if args.smoothing:
        head += " smoothing: verified | its largest input entry |"
        rule += "---:|---:|"
    if args.conditioning:
        head += (" κ(J) at random inputs: median (smallest) | κ(J) at the float64 "
                 "preimages: median (smallest) |")
        rule += "---:|---:|"
    if args.directions:
        head += "".join(f" ×{d['scale']:g} inputs: classes won | p ≥ 0.9: inputs (classes) |"
                        for d in rows[0]["directions"]).replace("e+0", "e") if rows else ""
        rule += "---:|---:|" * (len(rows[0]["directions"]) if rows else 0)
    if args.milp_bound is not None:
        head += (f" MILP, inputs and pre-activations in ±{args.milp_bound:.0e}: infeasible / "
                 "feasible / undecided | feasible and verified | their largest input entry |")
        rule += "---|---:|---:|"
    lines = [head, rule]
    for r in rows:
        line = (f"| {r['slope']} | {r['ratio']} | {r['depth']} | "
                + (f"{r['network_seed']} | " if seeded else "") + f"{r['input_width']} | "
                f"{r['success_rate']:.0%} | {_largest(r['max_abs_input'])} | "
                f"{r['walk_verified']} / {r['walked']} | "
                f"{', '.join(map(str, r['classes_short'])) or '—'} | {r['seconds']:.1f} |")
        if args.walk_seconds is not None:
            line += f" {r['walks_stopped']} |"
        c = r.get("continuation")
        if c:
            stall = "—" if c["first_failing_slope"] is None else f"{c['first_failing_slope']:.2g}"
            line += f" {c['success_rate']:.0%} | {c['max_abs_input']:.2g} | {stall} |"
        for key in ("float64", "smoothing"):
            c = r.get(key)
            if c:
                line += f" {c['success_rate']:.0%} | {_largest(c['max_abs_input'])} |"
        c = r.get("conditioning")
        if c:
            line += f" {c['random_median']:.1e} ({c['random_min']:.1e}) |"
            line += (" — |" if c["preimage_median"] is None else
                     f" {c['preimage_median']:.1e} ({c['preimage_min']:.1e}) |")
        for d in r.get("directions", []):
            line += f" {d['classes']} | {d['confident']} ({d['confident_classes']}) |"
        c = r.get("milp")
        if c:
            line += (f" {c['infeasible']} / {c['feasible']} / {c['undecided']} | "
                     f"{c['verified']} | {_largest(c['max_abs_input'])} |")
        elif args.milp_bound is not None:
            line += " — | — | — |"
        lines.append(line)
    if args.init == "he":
        lines.insert(0, "Weights from He uniform initialisation for the slope "
                        "(`--init he`); biases from PyTorch's default.\n")
    write_experiment(args.out, "leaky-depth", out, "\n".join(lines) + "\n")
    return out


if __name__ == "__main__":
    main()
