"""Small preimages of piecewise-linear networks, by walking their activation patterns.

A chain of ``nn.Linear`` layers and LeakyReLUs (slope ``s > 0``) is affine on
the region of each *activation pattern* (which units are negative): with
``D_l = diag(1 or s)``, every pre-activation is ``a_l = M_l x + m_l`` and the
output is ``A x + c`` there. The preimages of a target's logits
``z + k·1`` (``k`` free: softmax forgets it) that lie in one region form a
polyhedron, so within a region the best preimage is a linear program.

Why it is needed: BackPassInv's layer-by-layer minimum-norm solutions divide
the negative entries of every hidden vector by ``s`` going back, so on deep
narrowing LeakyReLU(0.01) networks their inputs reach 1e10–1e21. They are exact
in float64 but useless in float32: rounding the input to float32 moves it by
``u·|x|`` (unit roundoff ``u ≈ 6e-8``) and the logits by up to
``max_k Σ_i |(P A)_ki| u |x_i|`` (``P`` removes the mean, which softmax
ignores). That first-order bound is what :func:`walk_patterns` minimises.

:func:`walk_patterns` (one region after another): solve the linear program in
the region of the current point; units the optimum leaves at 0 lie on the
boundary with a neighbouring region, and the optimum is still a preimage there
(a unit at 0 has the same output for either slope), so those units are
flipped and the program solved again in the neighbour, as long as the
objective falls. The programs are posed relative to the current point and
scaled (every row and variable of order one, however large the input). Deep
in a network the logits' rows still reach 1e9 and more (the input's large
entries cancel in the layers below), far beyond what the solver's tolerance
can hold to a preimage, so ``_solve`` eliminates the equalities exactly
(null-space parametrisation) before HiGHS sees the program. Each answer is
then corrected by least squares in its region, holding the units at 0 there
(``_newton``), and kept only if it reproduces the centred logits
(``PREIMAGE_TOL``). The walk can stop in a local optimum.

:func:`backward_walk` (going back layer by layer, like BackPassInv): the new
hidden vector is the minimum-norm solution of its layer, then the walk shrinks
it on the sub-network above it (objective: the largest entry of that
sub-network's input and pre-activations, a negative input entry counted
``1/s`` times, as the layer below must produce it divided by ``s``), so the
next layer back starts from a small vector instead of an amplified one. The
input is shrunk the same way on the whole network, then walked with the
rounding objective. Sub-networks whose programs would exceed ``MAX_ENTRIES``
are skipped: on a wide input the walk covers the narrower layers only.

:func:`round_preimage` then rounds the walked preimage to the model's dtype and
moves its entries by whole units in the last place, greedily, until the
rounding errors of the many input entries cancel in the few logits (a
closest-vector problem): this turns rounding errors of 1e-3–1e-1 in the
probabilities into 1e-5–1e-4. Where that is not enough it starts again from
``_round_successive``, which rounds the entries one at a time and lets the
entries still free absorb each error by least squares. On the deepest networks
those corrections flip units and stop working; :func:`absorbed_rounding` then
first zeroes a few entries by a move along the first layer's null space (the
network's output does not change) and rounds the others one at a time, each
error absorbed exactly by the linear program of the entries still free, so
the point stays a preimage; the zeroed entries, rounded last, are small and
their own rounding errors negligible.

The walks find local optima only, and where they end depends on where they
start (``top`` of :func:`backward_walk`); :func:`walk_preimages` starts again
with null-space noise. On the last layers alone, :func:`enumerated_minimum`
solves the program of every activation pattern. A target's further samples
are random preimages in the walked preimage's region (:func:`region_samples`)
or, where that program is too large, the walked preimage plus first-layer
null-space noise (:func:`null_samples`), each rounded the same way.

On a random narrowing LeakyReLU(0.01) network with widths 55-41-31-23-17-13-10
(PyTorch's default initialisation) the backward pass's inputs are ~1e9–1e12 and
2% of its samples verify in float32; BackPassInv with the walk verifies every
sample (about 1 s per target walked). ``benchmarks/leaky_depth.py`` measures
deeper and wider networks.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import torch
from tqdm.auto import tqdm

#: a pre-activation within this fraction of its layer's largest is on a boundary.
TIGHT: float = 1e-7
#: a point of the walk must reproduce the centred logits to this (times 1 + max|z|),
#: or as well as the starting point does.
PREIMAGE_TOL: float = 1e-7
#: the walk stops after this many programs without a better point.
PATIENCE: int = 8
#: restarts of :func:`round_preimage` for a walked preimage that misses once rounded.
ROUND_RESTARTS: int = 8
#: ``_round_successive`` leaves this many of the smallest input entries to the
#: greedy search.
SUCCESSIVE_KEEP: int = 20
#: :func:`absorbed_rounding` zeroes this many fewer input entries than the first
#: layer's null space has dimensions (zeroing all of them is ill-conditioned).
ABSORBER_MARGIN: int = 3
#: fractions of a Newton step ``_round_successive`` tries, in turn.
DAMPING: tuple[float, ...] = (1.0, 0.5, 0.25, 0.1, 0.03, 0.01)
#: the walk's objectives that measure a preimage's size (:func:`walk_patterns`).
SIZES: tuple[str, ...] = ("size", "input_size")
#: :func:`backward_walk`'s choices of the last layer's input.
TOPS: tuple[str, ...] = ("min_norm", "walk")
#: don't walk networks whose programs would hold more matrix entries than this
#: (input width × total width): HiGHS's time grows fast beyond it.
MAX_ENTRIES: int = 400_000

Layer = tuple[np.ndarray, np.ndarray, "float | None"]


def piecewise_layers(steps: Sequence) -> list[Layer] | None:
    """The plan's steps as ``[(W (out, in), b (out,), slope or None), ...]``
    (float64 NumPy; ``slope`` of the LeakyReLU after the layer, ``None`` if
    none), or ``None`` when the chain is not Linear/LeakyReLU/Identity only."""
    layers: list[list] = []
    for step in steps:
        weight = getattr(step, "weight", None)
        if weight is not None:
            layers.append([weight.detach().double().cpu().numpy(),
                           step.bias.detach().double().cpu().numpy(), None])
            continue
        name = step.inverse.name
        if name == "identity":
            continue
        if name != "leaky_relu" or not layers or layers[-1][2] is not None:
            return None
        layers[-1][2] = float(step.inverse.param)
    return [tuple(layer) for layer in layers] if layers else None


def past_deadline(deadline: float | None) -> bool:
    """Whether the :func:`time.monotonic` time ``deadline`` (``None``: none) has passed."""
    return deadline is not None and time.monotonic() >= deadline


def input_slope(layers: Sequence[Layer], i: int) -> float | None:
    """The slope of the LeakyReLU that the input of ``layers[i:]`` comes out of
    (``None`` at the network's input or after a layer without one)."""
    return layers[i - 1][2] if i else None


def top_output(layers: Sequence[Layer], z: np.ndarray) -> np.ndarray:
    """The last layer's output ``(K,)`` that the backward pass starts from for
    the logits ``z + k·1``: ``z`` shifted to 1 and above where a LeakyReLU ends
    the network (so that nothing is divided by its slope), else centred."""
    return z - z.min() + 1.0 if layers[-1][2] is not None else z - z.mean()


def pre_activation(h: np.ndarray, slope: float | None) -> np.ndarray:
    """The pre-activation whose LeakyReLU of ``slope`` is ``h`` (any shape):
    ``h`` with its negative entries divided by ``slope`` (``h`` itself where
    ``slope`` is ``None``, a layer without one)."""
    return h if slope is None else np.where(h >= 0, h, h / slope)


def _slopes(a: np.ndarray, slope: float) -> np.ndarray:
    return np.where(a >= 0, 1.0, slope)


def _signs(pre: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The activation pattern (``±1`` per unit) of the pre-activations ``pre``."""
    return [np.where(a >= 0, 1.0, -1.0) for a in pre]


def forward(layers: Sequence[Layer], x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Pre-activations of the activated layers and the output, float64, for ``x`` ``(in,)``."""
    pre, h = [], x
    for w, b, slope in layers:
        a = w @ h + b
        if slope is None:
            h = a
        else:
            pre.append(a)
            h = a * _slopes(a, slope)
    return pre, h


def _affine(layers: Sequence[Layer], signs: Sequence[np.ndarray]
            ) -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple[np.ndarray, np.ndarray]]:
    """``(M_l, m_l)`` of each activated layer's pre-activation and ``(A, c)`` of the
    output, on the region of the pattern ``signs`` (``±1`` per unit)."""
    n = layers[0][0].shape[1]
    mat, off, out, k = np.eye(n), np.zeros(n), [], 0
    for w, b, slope in layers:
        mat, off = w @ mat, w @ off + b
        if slope is not None:
            out.append((mat, off))
            d = np.where(signs[k] > 0, 1.0, slope)
            mat, off, k = d[:, None] * mat, d * off, k + 1
    return out, (mat, off)


def _unit_rows(layers: Sequence[Layer], signs: Sequence[np.ndarray] | None, x: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                          np.ndarray]:
    """The hidden units' pre-activations near ``x`` ``(in,)`` on the region of the
    pattern ``signs`` (``None``: the pattern of ``x`` itself), for the linear
    programs: ``(sign, M, a, size, A, out)``.

    ``sign`` ``(U,)`` is the pattern's ``±1`` of all ``U`` hidden units,
    ``M`` ``(U, in)`` their affine maps' matrices, ``a`` ``(U,)`` their values
    at ``x`` (from the forward pass, not from ``M x + m``, which would cancel)
    and ``size`` ``(U,)`` each unit's layer's ``max(1, max_i |a_i|)``: a
    program divides each layer's rows by it, so that they are of order one.
    ``A`` ``(K, in)`` is the output's matrix on the region and ``out`` ``(K,)``
    the logits at ``x``. A unit stays on its side for a move ``δ`` where
    ``sign·(a + M δ) ≥ 0``."""
    vals, out = forward(layers, x)
    if signs is None:
        signs = _signs(vals)
    hidden, (A, _) = _affine(layers, signs)
    size = np.concatenate([np.full(len(a), max(1.0, float(np.abs(a).max()))) for a in vals])
    return (np.concatenate(signs), np.vstack([m for m, _ in hidden]), np.concatenate(vals),
            size, A, out)


def _program(layers, signs, z, objective, x0, input_slope=None):
    """The region's linear program around ``x0`` (a point on the region's closure).

    A unit of ``signs`` that disagrees with ``x0`` (a flipped unit at 0, up to
    rounding) may stay on the wrong side by as much as it is at ``x0``, so ``x0``
    itself is always feasible. Unknowns ``x = x0 + S·y`` with
    ``S = max(1, max|x0|)``, so that every
    variable and right-hand side is of order one however large the input (the
    pre-activations at ``x0`` come from the forward pass, not from ``M x0 + m``,
    which would cancel). Variables: ``y`` (first ``in``), the softmax shift
    ``k``, then the objective's own, its value last (``"size"`` and
    ``"input_size"``: in units of ``S``; ``"rounding"``: in units of
    :func:`rounding_unit` logits). Each
    layer's rows are scaled to order one.
    Returns ``(cost, A_ub, b_ub, A_eq, b_eq, bounds, S)``.
    """
    sg, M, a, size, A, out = _unit_rows(layers, signs, x0)
    n, K = A.shape[1], A.shape[0]
    S = max(1.0, float(np.abs(x0).max()))
    f = S / size
    rows, rhs = [], []

    def block(height, nv):
        return np.zeros((height, nv))

    sized = objective in SIZES
    nv = n + 2 if sized else 2 * n + 2
    ends = np.cumsum([len(sl) for sl in signs])
    for u in np.split(np.arange(len(a)), ends[:-1]):      # layer by layer
        b = block(len(u), nv)                               # sign·a >= 0, rows of order one
        b[:, :n] = -(f[u] * sg[u])[:, None] * M[u]
        rows.append(b)
        rhs.append(f[u] * np.maximum(sg[u] * a[u], 0.0) / S)
        if objective == "size":          # t >= |a_l|/S
            for sign in (1.0, -1.0):
                b = block(len(u), nv)
                b[:, :n], b[:, -1] = (sign * f[u])[:, None] * M[u], -f[u]
                rows.append(b)
                rhs.append(-sign * f[u] * a[u] / S)
    for sign in (1.0, -1.0):             # "size": t >= |x|/S; "rounding": r >= |x|/S
        weight = sign                    # "size" after a LeakyReLU: t >= max(x, -x/slope)/S
        if sized and input_slope is not None and sign < 0:
            weight = sign / input_slope
        b = block(n, nv)
        b[:, :n] = weight * np.eye(n)
        if sized:
            b[:, -1] = -1.0
        else:
            b[:, n + 1:2 * n + 1] = -np.eye(n)
        rows.append(b)
        rhs.append(-weight * x0 / S)
    if sized:
        bounds = [(None, None)] * (n + 1) + [(0, None)]
    else:                                # e >= Σ_i |(P A)_ki| |x_i|, in rounding_unit logits
        b = block(K, nv)
        b[:, n + 1:2 * n + 1] = S * np.abs(A - A.mean(axis=0)) / rounding_unit(A, S)
        b[:, -1] = -1.0
        rows.append(b)
        rhs.append(np.zeros(K))
        bounds = [(None, None)] * (n + 1) + [(0, None)] * (n + 1)
    cost = np.zeros(nv)
    cost[-1] = 1.0
    eq = np.zeros((K, nv))
    eq[:, :n], eq[:, n] = S * A, -1.0                               # S A y - k = z - out
    return cost, np.vstack(rows), np.concatenate(rhs), eq, z - out, bounds, S


def rounding_unit(A: np.ndarray, S: float) -> float:
    """The unit (in logits) of the ``"rounding"`` program's objective variable:
    the largest coefficient ``S·|(P A)_ki|`` of its row, so that the row's
    coefficients are at most 1 and the variable's own is -1."""
    return max(S * float(np.abs(A - A.mean(axis=0)).max()), 1e-300)


def _solve(cost, a_ub, b_ub, a_eq, b_eq, bounds) -> np.ndarray | None:
    """``min cost·v`` subject to ``a_ub v <= b_ub``, ``a_eq v = b_eq`` and ``bounds``
    (SciPy's ``linprog`` conventions), or ``None`` where HiGHS finds no answer.

    The equalities are eliminated before HiGHS sees them: the variables they
    involve are written ``v_p + N w`` (``v_p`` the minimum-norm solution,
    ``N`` an orthonormal basis of their null space, by SVD), so they hold to
    float64 precision rather than to the solver's tolerance, which deep in a
    network (the logits' rows reach 1e9 and more as the input's entries cancel
    in the layers below) would leave answers far from any preimage. The rows
    left are scaled to largest coefficient 1 (HiGHS fails on some unscaled
    ones; it drops coefficients below 1e-9, so ``_program`` keeps each
    row's own coefficients of comparable size)."""
    from scipy.optimize import linprog

    cols = np.flatnonzero(np.abs(a_eq).max(axis=0) > 0)
    rest = np.setdiff1d(np.arange(len(cost)), cols)
    u, sv, vt = np.linalg.svd(a_eq[:, cols])
    rank = int((sv > sv[0] * 1e-14).sum())
    v_p = vt[:rank].T @ ((u[:, :rank].T @ b_eq) / sv[:rank])
    null = vt[rank:].T
    rows = [np.hstack([a_ub[:, cols] @ null, a_ub[:, rest]])]
    rhs = [b_ub - a_ub[:, cols] @ v_p]
    for j, c in enumerate(cols):          # bounds of the eliminated variables, as rows
        low, high = bounds[c]
        for sign, limit in ((-1.0, low), (1.0, high)):
            if limit is not None:
                row = np.zeros(rows[0].shape[1])
                row[:null.shape[1]] = sign * null[j]
                rows.append(row[None])
                rhs.append(np.array([sign * (limit - v_p[j])]))
    a, b = np.vstack(rows), np.concatenate(rhs)
    c = np.concatenate([cost[cols] @ null, cost[rest]])
    scale = np.abs(a).max(axis=1)
    scale[scale == 0] = 1.0
    res = linprog(c, A_ub=a / scale[:, None], b_ub=b / scale,
                  bounds=[(None, None)] * null.shape[1] + [bounds[i] for i in rest],
                  method="highs")
    if res.status != 0:
        return None
    sol = res.x
    v = np.empty(len(cost))
    v[cols] = v_p + null @ sol[:null.shape[1]]
    v[rest] = sol[null.shape[1]:]
    return v


def _region_program(layers, signs, z, objective, x0, input_slope=None):
    """Solve the region's linear program around ``x0``; the new input or ``None``."""
    *program, S = _program(layers, signs, z, objective, x0, input_slope)
    sol = _solve(*program)
    return None if sol is None else x0 + S * sol[:len(x0)]


def _residual(layers, x, z) -> float:
    """``max |centred(f(x)) - centred(z)|``: how far ``x`` is from a preimage, in logits."""
    out = forward(layers, x)[1]
    r = out - z
    return float(np.abs(r - r.mean()).max())


def _newton(layers, x, z, steps: int = 6, free: np.ndarray | None = None,
            damping: Sequence[float] = (1.0,)):
    """Least-squares corrections of ``x`` onto the centred target, each in the
    region of the current point, kept only while they reduce the residual.

    A program's answer is a vertex: many units sit at 0 (up to the solver's
    tolerance), and a plain least-squares step flips some of them, which
    breaks the region's affine model. The step therefore first holds the
    units within ``TIGHT`` of 0 there (on the face they span the map is affine
    whatever their side); if that does not reduce the residual, it is tried
    without them. ``free`` (bool ``(in,)``) limits the corrections to those
    input entries; each step is tried at the fractions ``damping`` of its
    length in turn, the first that reduces the residual kept."""
    cols = slice(None) if free is None else free
    best = _residual(layers, x, z)
    for _ in range(steps):
        pre, out = forward(layers, x)
        hidden, (A, _) = _affine(layers, _signs(pre))
        r = (z - out) - (z - out).mean()
        rows, rhs = [(A - A.mean(axis=0))[:, cols]], [r]
        for (M, _), a in zip(hidden, pre):
            tight = np.abs(a) <= TIGHT * np.abs(a).max()
            if tight.any():
                scale = np.abs(M[tight]).max(axis=1)
                scale[scale == 0] = 1.0
                rows.append(M[tight][:, cols] / scale[:, None])
                rhs.append(-a[tight] / scale)
        found = False
        for system in ((np.vstack(rows), np.concatenate(rhs)), (rows[0], r)):
            step = np.linalg.lstsq(*system, rcond=None)[0]
            for fraction in damping:
                trial = x.copy()
                trial[cols] += fraction * step
                res = _residual(layers, trial, z)
                if res < best:
                    found = True
                    break
            if found:
                break
        if not found:
            break
        x, best = trial, res
    return x


def _score(layers, x, z, objective, dtype, input_slope=None):
    """The walk's measure of ``x``: for ``"size"`` the largest entry of the input and
    the pre-activations (``"input_size"``: of the input only); for ``"rounding"``
    the largest probability error once ``x`` is rounded to ``dtype`` (what
    verification sees)."""
    if objective in SIZES:
        size = np.abs(x) if input_slope is None else np.maximum(x, -x / input_slope)
        if objective == "input_size":
            return float(size.max())
        pre, _ = forward(layers, x)
        return max([size.max()] + [np.abs(a).max() for a in pre])
    xr = torch.from_numpy(x).to(dtype).double().numpy()
    out = forward(layers, xr)[1]
    if not np.isfinite(out).all():
        return np.inf
    return float(_probability_error(out, z))


def _probability_error(out: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``max_k |softmax(out)_k - softmax(z)_k|`` per row of ``out`` ``(..., K)``."""
    p, q = np.exp(out - out.max(axis=-1, keepdims=True)), np.exp(z - z.max())
    return np.abs(p / p.sum(axis=-1, keepdims=True) - q / q.sum()).max(axis=-1)


def extended_error(layers: Sequence[Layer], x: np.ndarray, z: np.ndarray) -> float:
    """The largest probability error ``max_k |softmax(f(x))_k - softmax(z)_k|`` of
    ``x`` ``(in,)`` with the network evaluated in ``np.longdouble`` (NumPy
    promotes every product and sum to it; extended precision on x86-64 Linux,
    float64 on some platforms)."""
    out = forward(layers, x.astype(np.longdouble))[1]
    return float(_probability_error(out.astype(np.float64), z))


def _binary_fractions(a: np.ndarray) -> tuple[np.ndarray, int]:
    """Integers ``n`` (object array, the shape of ``a``) and ``e`` with ``a = n / 2**e``
    exactly: every finite float is a binary fraction."""
    ratios = [float(v).as_integer_ratio() for v in np.ravel(a)]
    e = max(d.bit_length() - 1 for _, d in ratios)
    n = np.array([m << (e - d.bit_length() + 1) for m, d in ratios], dtype=object)
    return n.reshape(np.shape(a)), e


def exact_error(layers: Sequence[Layer], x: np.ndarray, z: np.ndarray) -> float:
    """The largest probability error ``max_k |softmax(f(x))_k - softmax(z)_k|`` of
    ``x`` ``(in,)`` with the network evaluated in exact arithmetic.

    Every weight, bias, slope and input entry is read as the binary fraction
    ``n / 2**e`` that its float holds (the slope 0.01 as the float64 nearest
    to it), and every product and sum is carried out on Python integers, so
    nothing is rounded until the centred logits ``f(x) - max f(x)``, each to
    the float64 nearest to it. This is the network as mathematics defines it:
    an ``x`` whose error is small here is a preimage, however large its
    entries, even where float64 and extended precision (:func:`evaluation_error`)
    cannot tell. About 0.1 s for a 305-wide network of twelve layers.

    Raises ``ValueError`` for an ``x`` with NaN or infinite entries."""
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError("exact_error: x must be finite; it has NaN or infinite entries")
    h, e = _binary_fractions(x)
    for w, b, slope in layers:
        wn, ew = _binary_fractions(w)
        bn, eb = _binary_fractions(b)
        top = max(ew + e, eb)
        a = wn.dot(h) * (1 << (top - ew - e)) + bn * (1 << (top - eb))
        if slope is not None:
            sn, sd = float(slope).as_integer_ratio()
            a = np.array([v * sd if v >= 0 else v * sn for v in a], dtype=object)
            top += sd.bit_length() - 1
        h, e = a, top
    largest = max(h)
    out = np.array([float(Fraction(int(v - largest), 1 << e)) for v in h])
    return float(_probability_error(out, z))


def evaluation_error(layers: Sequence[Layer], x: np.ndarray, z: np.ndarray) -> float:
    """The largest probability error ``max_k |softmax(f(x))_k - softmax(z)_k|`` of
    ``x`` ``(in,)``, counting float64's own rounding in the forward pass: the
    error in extended precision (``np.longdouble``) plus how far float64's
    differs from it.

    From inputs of ~1e17 on, the first layers' float64 sums carry rounding
    errors large enough to move the logits; the error then depends on the
    order of the sums (NumPy's and PyTorch's differ), and a rounding tuned
    against one evaluation may miss in the other. This bound does not trust
    either one beyond where they agree. Where ``np.longdouble`` is float64
    (some platforms) it is the float64 error."""
    extended = extended_error(layers, x, z)
    plain = float(_probability_error(forward(layers, x)[1], z))
    return extended + abs(plain - extended)


def _output_map(layers: Sequence[Layer], x: np.ndarray) -> np.ndarray:
    """``A`` ``(K, in)``, the output's affine map on the region of ``x``, multiplied
    from the output down (``K`` rows at a time: cheap on wide inputs)."""
    pre, _ = forward(layers, x)
    k = len(pre)
    mat = None
    for w, b, slope in reversed(layers):
        if slope is not None:
            k -= 1
            d = _slopes(pre[k], slope)
            mat = d[:, None] * w if mat is None else (mat * d) @ w
        else:
            mat = w if mat is None else mat @ w
    return mat


def round_preimage(layers: Sequence[Layer], x: np.ndarray, z: np.ndarray,
                   dtype: torch.dtype, *, good: float = 2.5e-4, max_steps: int = 400,
                   candidates: int = 256, restarts: int = 0,
                   gen: torch.Generator | None = None, successive: bool = True,
                   absorbed: bool = True, deadline: float | None = None
                   ) -> tuple[np.ndarray, float]:
    """The preimage ``x`` ``(in,)`` of the logits ``z + k·1`` (float64) rounded to
    ``dtype``, then moved by whole units in the last place (ulps), one input
    entry at a time, while that brings the probabilities closer to the
    target. Returns the input (float64 holding ``dtype`` values) and its
    largest probability error ``max_k |softmax(f(x))_k - softmax(z)_k|``.

    Rounding moves each entry by up to half an ulp, ``u·|x_i|``, and the
    logits by the sum of those moves through the network: on a large preimage
    far more than the target allows. But each entry can be rounded either way
    or moved by a few ulps, and with far more entries than logits some
    combination cancels most of the error (a closest-vector problem, solved
    greedily). Each step ranks the entries by the best move of the region's
    affine map ``A`` (with ``r`` the centred logits' residual and ``a_i`` the
    centred column ``i``: ``-(a_i·r)/|a_i|²``, in whole ulps of ``x_i``),
    evaluates that move, half of it and ±1, ±2, ±4, ±8 ulps of the
    ``candidates`` best exactly (a float64 forward pass: moves flip units near
    0, which the affine map does not see) and keeps the best, until the error
    is at most ``good`` or no move helps.

    Where that misses ``good`` and ``x`` itself meets it in float64 (on
    programs that :func:`fits`; unless ``successive`` is off), the greedy
    search starts again from ``_round_successive``, which fixes the entries
    one at a time and lets the others absorb each error, and the better
    answer is kept. On the deep LeakyReLU(0.01) network of
    ``benchmarks/leaky_depth.py`` (width ratio 0.75, depth 10) this takes
    BackPassInv from 40% to 70% verified; on one walked input of 6e12 it
    lowers the error from 0.026 to 0.0045 (``benchmarks/leaky_rounding.py``).
    Where that still misses ``good`` (and unless ``absorbed`` is off),
    :func:`absorbed_rounding` rounds the entries one at a time with each
    error absorbed exactly by a linear program, and the better answer is kept.
    The greedy search stops in local optima. With ``restarts``
    (and ``gen``) it starts again that many times from ``x`` moved along the
    null space of the centred ``A`` by about 4 ulps (still a preimage, rounded
    differently), and keeps the best. ``deadline``: a :func:`time.monotonic`
    time after which none of these further searches starts (the first greedy
    search always runs) and the absorbed rounding absorbs no further entry.
    """
    best = _round_greedy(layers, x, z, dtype, good, max_steps, candidates)
    exact = best[1] > good and _probability_error(forward(layers, x)[1], z) <= good
    if successive and exact and fits(layers) and not past_deadline(deadline):
        trial = _round_greedy(layers, _round_successive(layers, x, z, dtype), z, dtype,
                              good, max_steps, candidates)
        if trial[1] < best[1]:
            best = trial
    if (absorbed and exact and best[1] > good and absorbers(layers, dtype)
            and not past_deadline(deadline)):
        trial = absorbed_rounding(layers, x, z, dtype, good=good, max_steps=max_steps,
                                  candidates=candidates, deadline=deadline)
        if trial[1] < best[1]:
            best = trial
    if restarts and best[1] > good:
        A = _output_map(layers, x)
        null = np.linalg.svd(A - A.mean(axis=0))[2][len(z) - 1:].T
        size = 4 * torch.finfo(dtype).eps * np.abs(x).max()
        for _ in range(restarts):
            if past_deadline(deadline):
                break
            v = null @ torch.randn(null.shape[1], generator=gen, dtype=torch.float64).numpy()
            start = _newton(layers, x + size * v / np.abs(v).max(), z)
            trial = _round_greedy(layers, start, z, dtype, good, max_steps, candidates)
            if trial[1] < best[1]:
                best = trial
            if best[1] <= good:
                break
    return best


def _neighbours(value: float, dtype: torch.dtype) -> list[float]:
    """The ``dtype`` values next to ``value`` on either side (one if it is one)."""
    near = torch.tensor(value, dtype=torch.float64).to(dtype)
    if float(near) == value or not math.isfinite(float(near)):
        return [float(near)]
    away = torch.tensor(math.inf if float(near) < value else -math.inf, dtype=dtype)
    return [float(near), float(torch.nextafter(near, away))]


def _round_successive(layers: Sequence[Layer], x: np.ndarray, z: np.ndarray,
                      dtype: torch.dtype, keep: int = SUCCESSIVE_KEEP) -> np.ndarray:
    """The preimage ``x`` ``(in,)`` of the logits ``z + k·1`` with all but its
    ``keep`` smallest entries set to ``dtype`` values one at a time, largest
    first, the entries still free corrected after each so that it stays a
    preimage; float64.

    Rounding every entry at once leaves the sum of their errors for
    :func:`_round_greedy` to cancel. Here each entry's error is absorbed by
    the entries still free (Babai's nearest-plane rounding, with the network
    evaluated exactly): after fixing entry ``i``, damped :func:`_newton` steps
    on the free entries bring the logits back, holding the units at 0 where
    they can. Entry ``i`` takes whichever of its two neighbouring ``dtype``
    values leaves the smaller residual after that correction. The largest
    entries go first (their units in the last place are the largest); the
    ``keep`` smallest are left free for the greedy search, whose single-ulp
    moves are finest there."""
    x = x.copy()
    free = np.ones(len(x), dtype=bool)
    for i in np.argsort(-np.abs(x))[:max(len(x) - keep, 0)]:
        free[i] = False
        values = _neighbours(float(x[i]), dtype)
        best, best_res = x.copy(), np.inf
        best[i] = values[0]
        for value in values:
            trial = x.copy()
            trial[i] = value
            trial = _newton(layers, trial, z, steps=30, free=free, damping=DAMPING)
            res = _residual(layers, trial, z)
            if res < best_res:
                best, best_res = trial, res
        x = best
    return x


def absorbers(layers: Sequence[Layer], dtype: torch.dtype) -> int:
    """How many input entries :func:`absorbed_rounding` zeroes to absorb the
    rounding errors: the dimension of the first layer's null space less
    ``ABSORBER_MARGIN``; 0 where it does not apply (a ``dtype`` as fine as
    float64, a first layer without that many null directions, or programs
    beyond ``MAX_ENTRIES``)."""
    w = layers[0][0]
    if torch.finfo(dtype).eps <= np.finfo(np.float64).eps or not fits(layers):
        return 0
    return max(w.shape[1] - np.linalg.matrix_rank(w) - ABSORBER_MARGIN, 0)


def _zero_entries(layers: Sequence[Layer], x: np.ndarray, z: np.ndarray, count: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``x`` moved along the null space of the first layer's weight so that its
    ``count`` smallest entries are 0 (the first layer's output, and so the
    network's, does not change), corrected by :func:`_newton`; and the mask of
    those entries ``(in,)``."""
    w = layers[0][0]
    _, sv, vt = np.linalg.svd(w)
    null = vt[int((sv > sv[0] * 1e-12).sum()):].T
    zeroed = np.zeros(len(x), dtype=bool)
    zeroed[np.argsort(np.abs(x))[:count]] = True
    x = x + null @ np.linalg.lstsq(null[zeroed], -x[zeroed], rcond=None)[0]
    return _newton(layers, x, z), zeroed


def _linearize(layers, x, z):
    """What :func:`_absorb` needs of the preimage ``x`` ``(in,)`` of ``z + k·1``
    on its region, computed once for both neighbours of an entry:
    ``(G, g, PA, r)`` with ``G x' + g ≥ 0`` ``(U, in)``, ``(U,)`` the units'
    sides for a move ``x'`` (rows of order one), ``PA`` ``(K, in)`` the
    output's centred matrix and ``r`` ``(K,)`` the logits' residual."""
    sg, M, a, size, A, out = _unit_rows(layers, None, x)
    f = 1.0 / size
    return (f * sg)[:, None] * M, f * sg * a, A - A.mean(axis=0), out - z


def _absorb(lin, x, free, j, step, unit, anchor, zeroed, soft=False):
    """The correction ``(in,)`` of the ``free`` entries of the preimage ``x`` that
    keeps ``x`` a preimage of ``z + k·1`` in its region once entry ``j`` moves
    by ``step``, or ``None`` where the region holds none; it minimises the
    largest of ``|x_i|`` over the ``zeroed`` entries and ``|x_i - anchor_i|``
    over the others (``unit`` scales the program's variables; ``lin`` is
    :func:`_linearize` at ``x``). ``soft``: the correction in the region that
    minimises the largest centred logit's miss instead (it always exists), and
    that miss: ``(correction, miss)``."""
    G, g, PA, r = lin
    nf = int(free.sum())
    nv = nf + 1                                         # y = correction / unit, the bound
    a_eq = np.zeros((len(r), nv))
    a_eq[:, :nf] = unit * PA[:, free]
    a_ub = [np.hstack([-unit * G[:, free], np.zeros((len(g), 1))])]
    b_ub = [g + G[:, j] * step]
    now = np.where(zeroed, x, x - anchor)[free] / unit
    for sign in (1.0, -1.0):
        row = np.zeros((nf, nv))
        row[:, :nf], row[:, -1] = sign * np.eye(nf), -1.0
        a_ub.append(row)
        b_ub.append(-sign * now)
    cost = np.zeros(nv)
    cost[-1] = 1.0
    target = -(r - r.mean()) - PA[:, j] * step        # what the correction must add
    if soft:
        return _absorb_soft(np.vstack(a_ub), np.concatenate(b_ub), a_eq, target, free, unit)
    sol = _solve(cost, np.vstack(a_ub), np.concatenate(b_ub), a_eq, target,
                 [(None, None)] * nf + [(0, None)])
    if sol is None:
        return None
    correction = np.zeros(len(x))
    correction[free] = unit * sol[:nf]
    return correction


def _absorb_soft(a_ub, b_ub, a_eq, target, free, unit):
    """``_absorb``'s program with ``a_eq v = target`` relaxed to
    ``|a_eq v - target| <= m``, minimising ``m`` (then, a little, the bound):
    the correction ``(in,)`` and ``m``, or ``None``."""
    from scipy.optimize import linprog

    nv = a_ub.shape[1]
    rows = [np.hstack([a_ub, np.zeros((len(a_ub), 1))])]
    rhs = [b_ub]
    for sign in (1.0, -1.0):
        rows.append(np.hstack([sign * a_eq, -np.ones((len(a_eq), 1))]))
        rhs.append(sign * target)
    a, b = np.vstack(rows), np.concatenate(rhs)
    scale = np.abs(a).max(axis=1)
    scale[scale == 0] = 1.0
    cost = np.zeros(nv + 1)
    cost[-1], cost[-2] = 1.0, 1e-9
    res = linprog(cost, A_ub=a / scale[:, None], b_ub=b / scale,
                  bounds=[(None, None)] * (nv - 1) + [(0, None), (0, None)], method="highs")
    if res.status != 0:
        return None
    correction = np.zeros(len(free))
    correction[free] = unit * res.x[:nv - 1]
    return correction, float(res.x[-1])


def absorbed_rounding(layers: Sequence[Layer], x: np.ndarray, z: np.ndarray,
                      dtype: torch.dtype, *, count: int | None = None, good: float = 2.5e-4,
                      max_steps: int = 400, candidates: int = 256,
                      deadline: float | None = None) -> tuple[np.ndarray, float]:
    """The preimage ``x`` ``(in,)`` of the logits ``z + k·1`` rounded to ``dtype``
    one entry at a time, each rounding absorbed exactly by the entries still
    free; then polished like :func:`round_preimage`. Returns the input (float64
    holding ``dtype`` values) and its largest probability error. ``deadline``:
    a :func:`time.monotonic` time after which no further entry is absorbed
    (one program per entry, each a linear program over the whole network):
    the entries left are rounded to nearest, and the polish starts from there.

    Rounding a large preimage all at once moves the logits by far more than
    the target allows, and on the deep LeakyReLU(0.01) networks the region of
    the preimage is too thin for least-squares corrections
    (``_round_successive``): they flip units and stop reducing the error.
    Here:

    1. ``count`` of the smallest entries are set to 0 by a move along the
       null space of the first layer's weight ``W₁`` (``W₁ v = 0``: nothing
       after the first layer changes; default :func:`absorbers`). Near 0 the
       ``dtype`` grid is fine, so these entries can absorb errors and still be
       rounded almost exactly at the end.
    2. The other entries are rounded one at a time, largest first, to
       whichever of their two neighbouring ``dtype`` values lets the entries
       still free bring the logits back exactly: on the region of the current
       point (``a_l = M_l x + m_l``, output ``A x + c``) the correction ``e``
       of the free entries solves the linear program
       ``P A e = -P(f(x) - z) - P A_j δ_j``, ``sign·(a_l + M_l (e + δ_j e_j)) ≥ 0``
       for every unit (``P`` removes the mean), minimising the largest
       ``|x_i + e_i|`` over the zeroed entries and ``|e_i|`` (from their value
       after step 1) over the others, in units ``ε·2^⌊log₂ max|x|⌋``. Unlike
       a least-squares step it keeps every unit on its side, so the point
       stays an exact preimage.
    3. The zeroed entries, now of the size of the corrections (about an ulp
       of the largest entry), are rounded; their own errors are ~``ε`` times
       smaller, and :func:`_round_greedy` moves single ulps from there.

    An entry whose program holds for neither neighbour is tried again after
    the others. Where no program holds any more (the last few large entries,
    once few entries are free), each remaining entry takes the neighbour whose
    correction misses the centred logits least (the program with its
    equalities relaxed), and the polish takes it from there.

    On ``benchmarks/leaky_rounding.py``'s depth-10 network it verifies six of
    the ten first walks that the greedy search and the successive stage leave
    at errors of 2e-3 to 0.9 (inputs 8e11 to 7.4e15), at 3e-9 to 3e-6, in
    20–45 s each.
    """
    if count is None:
        count = absorbers(layers, dtype)
    x, zeroed = _zero_entries(layers, x, z, count)
    anchor = x.copy()
    unit = torch.finfo(dtype).eps * 2.0 ** np.floor(np.log2(np.abs(x).max()))
    free = np.ones(len(x), dtype=bool)
    todo = [j for j in np.argsort(-np.abs(x)) if not zeroed[j]]
    while todo:
        deferred = []
        for j in todo:
            if past_deadline(deadline):
                break
            free[j] = False
            best, best_size = None, np.inf
            lin = _linearize(layers, x, z)
            for value in _neighbours(float(x[j]), dtype):
                e = _absorb(lin, x, free, j, value - x[j], unit, anchor, zeroed)
                if e is None:
                    continue
                size = float(np.abs(np.where(zeroed, x + e, x + e - anchor)[free]).max())
                if size < best_size:
                    best, best_size = x + e, size
                    best[j] = value
            if best is None:               # no program holds: try again after the others
                free[j] = True
                deferred.append(j)
            else:
                x = best
        if past_deadline(deadline):
            break
        if len(deferred) == len(todo):     # no progress: the smallest miss, one at a time
            for j in deferred:
                if past_deadline(deadline):
                    break
                free[j] = False
                best, best_miss = None, np.inf
                lin = _linearize(layers, x, z)
                for value in _neighbours(float(x[j]), dtype):
                    found = _absorb(lin, x, free, j, value - x[j], unit, anchor, zeroed,
                                    soft=True)
                    if found is not None and found[1] < best_miss:
                        best, best_miss = x + found[0], found[1]
                        best[j] = value
                if best is None:
                    x = x.copy()
                    x[j] = _neighbours(float(x[j]), dtype)[0]
                else:
                    x = best
            break
        todo = deferred
    return _round_greedy(layers, x, z, dtype, good, max_steps, candidates)


def _round_greedy(layers, x, z, dtype, good, max_steps, candidates):
    """One greedy search of :func:`round_preimage` from ``x`` rounded to ``dtype``."""
    eps, tiny = torch.finfo(dtype).eps, torch.finfo(dtype).tiny
    xr = torch.from_numpy(x).to(dtype).double().numpy()
    w1, b1, slope1 = layers[0]

    def outputs(first: np.ndarray) -> np.ndarray:   # rows of first-layer values -> logits
        h = first
        if slope1 is not None:
            h = np.where(h >= 0, h, slope1 * h)
        for w, b, slope in layers[1:]:
            h = h @ w.T + b
            if slope is not None:
                h = np.where(h >= 0, h, slope * h)
        return h

    first = w1 @ xr + b1
    out = outputs(first[None])[0]
    err = float(_probability_error(out, z))
    for _ in range(max_steps):
        if err <= good or not np.isfinite(err):
            break
        A = _output_map(layers, xr)
        J = A - A.mean(axis=0)
        r = (out - z) - (out - z).mean()
        ulp = eps * np.exp2(np.floor(np.log2(np.maximum(np.abs(xr), tiny))))
        gr, gn = J.T @ r, (J * J).sum(axis=0)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            best = -gr / gn / ulp
        best = np.round(np.clip(np.nan_to_num(best), -2.0 ** 20, 2.0 ** 20))
        gain = 2 * best * ulp * gr + (best * ulp) ** 2 * gn      # change of |r|², to first order
        idx = np.argsort(gain)[:candidates]
        one = np.ones(len(idx))
        moves = np.stack([best[idx], np.round(best[idx] / 2), one, -one, 2 * one, -2 * one,
                          4 * one, -4 * one, 8 * one, -8 * one], axis=1)
        rows = np.repeat(idx, moves.shape[1])
        new = xr[rows] + moves.ravel() * ulp[rows]
        new = torch.from_numpy(new).to(dtype).double().numpy()       # representable
        firsts = first[None] + (new - xr[rows])[:, None] * w1[:, rows].T  # one entry changed
        outs = outputs(firsts)
        errs = _probability_error(outs, z)
        errs[~np.isfinite(outs).all(axis=1) | (new == xr[rows])] = np.inf
        k = int(np.argmin(errs))
        if not errs[k] < err:
            break
        trial = xr.copy()
        trial[rows[k]] = new[k]
        first_k = w1 @ trial + b1                   # exactly, as verification computes it
        out_k = outputs(first_k[None])[0]
        err_k = float(_probability_error(out_k, z))
        if not err_k < err:
            break
        xr, first, out, err = trial, first_k, out_k, err_k
    return xr, err


def walk_patterns(layers: Sequence[Layer], x: np.ndarray, z: np.ndarray, *,
                  objective: str = "rounding", max_programs: int = 40,
                  dtype: torch.dtype = torch.float32, good: float = 2.5e-4,
                  input_slope: float | None = None,
                  deadline: float | None = None) -> np.ndarray:
    """Walk from the preimage ``x`` ``(in,)`` of the logits ``z + k·1`` ``(K,)``
    across activation regions to a better preimage.

    ``objective="rounding"``: each region's program minimises
    ``max_k Σ_i |(P A)_ki| |x_i|`` (how far rounding the input moves the
    centred logits, to first order), and the walk keeps the point whose
    rounding to ``dtype`` moves the probabilities least, stopping once that is
    at most ``good``. ``objective="size"``: the largest entry of the input and
    of every pre-activation; with ``input_slope`` (the input is a hidden vector
    after a LeakyReLU of that slope) an input entry counts as ``max(x_i,
    -x_i/input_slope)``, the size of the pre-activation the layer below must
    then produce. ``objective="input_size"``: the same, of the input only (the
    pre-activations may grow). ``deadline``: a :func:`time.monotonic` time
    after which no further program is solved. Returns the best preimage found
    (``x`` itself if none is better), float64."""
    if objective not in ("rounding",) + SIZES:
        raise ValueError(f"objective must be 'rounding', 'size' or 'input_size', "
                         f"got {objective!r}")
    pre, _ = forward(layers, x)
    signs = _signs(pre)
    best, best_score, stale, failures = x, _score(layers, x, z, objective, dtype,
                                                  input_slope), 0, 0
    current = x
    tol = max(PREIMAGE_TOL * (1.0 + np.abs(z).max()), _residual(layers, x, z))
    for _ in range(max_programs):
        if objective == "rounding" and best_score <= good:
            break
        if past_deadline(deadline):
            break
        new = _region_program(layers, signs, z, objective, current, input_slope)
        if new is not None:
            new = _newton(layers, new, z)
        if new is None or _residual(layers, new, z) > tol:
            # numerically infeasible, or the answer is no preimage (rounding):
            # restart once from the best point
            failures += 1
            if failures > 1:
                break
            current = best
            signs = _signs(forward(layers, best)[0])
            continue
        failures = 0
        current = new
        pre, _ = forward(layers, current)
        score = _score(layers, current, z, objective, dtype, input_slope)
        if score < 0.99 * best_score:
            best, best_score, stale = current, score, 0
        else:
            stale += 1
            if stale >= PATIENCE:
                break
        signs = [np.where(np.abs(a) <= TIGHT * np.abs(a).max(), -sg, sg)
                 for a, sg in zip(pre, signs)]
    return best


def fits(layers: Sequence[Layer]) -> bool:
    """Whether the programs of the network ``layers`` stay within ``MAX_ENTRIES``."""
    return layers[0][0].shape[1] * sum(w.shape[0] for w, *_ in layers) <= MAX_ENTRIES


def _walk_starts(layers: Sequence[Layer]) -> list[int]:
    """The layers ``i`` from which :func:`backward_walk` walks the sub-network
    ``layers[i:]`` (the input's, and every hidden vector after a LeakyReLU but
    the last), where its programs fit ``MAX_ENTRIES``."""
    return [i for i in range(len(layers) - 1)
            if (i == 0 or layers[i - 1][2] is not None) and fits(layers[i:])]


#: :func:`enumerated_minimum` refuses sub-networks with more hidden units than this
#: (``2^MAX_UNITS`` programs).
MAX_UNITS: int = 16


def hidden_units(layers: Sequence[Layer]) -> int:
    """How many units of ``layers`` are followed by a LeakyReLU."""
    return sum(w.shape[0] for w, _, slope in layers if slope is not None)


def pattern_minimum(layers: Sequence[Layer], signs: Sequence[np.ndarray], z: np.ndarray,
                    scale: float, input_slope: float | None) -> np.ndarray | None:
    """The preimage ``(in,)`` of the logits ``z + k·1`` ``(K,)`` of smallest size
    (:func:`_score`'s ``"size"``) on the region of the pattern ``signs``,
    or ``None`` where the region holds none. The unknowns are in units of
    ``scale`` (the size expected), and the equalities are eliminated exactly by
    :func:`_solve`."""
    pre, (A, c) = _affine(layers, signs)
    n, K = A.shape[1], A.shape[0]
    nv = n + 2                                # y = x / scale, the shift k, size / scale
    rows, rhs = [], []
    for sg, (M, m) in zip(signs, pre):
        row = np.zeros((len(m), nv))          # sign·(M x + m) >= 0
        row[:, :n] = -sg[:, None] * M
        rows.append(row)
        rhs.append(sg * m / scale)
        for sign in (1.0, -1.0):              # |M x + m| <= size
            row = np.zeros((len(m), nv))
            row[:, :n], row[:, -1] = sign * M, -1.0
            rows.append(row)
            rhs.append(-sign * m / scale)
    for weight in (1.0, -1.0 if input_slope is None else -1.0 / input_slope):
        row = np.zeros((n, nv))               # x <= size, -x (or -x/s) <= size
        row[:, :n], row[:, -1] = weight * np.eye(n), -1.0
        rows.append(row)
        rhs.append(np.zeros(n))
    cost = np.zeros(nv)
    cost[-1] = 1.0
    eq = np.zeros((K, nv))
    eq[:, :n], eq[:, n] = scale * A, -1.0     # A x + c - k = z
    sol = _solve(cost, np.vstack(rows), np.concatenate(rhs), eq, z - c,
                 [(None, None)] * (n + 1) + [(0, None)])
    return None if sol is None else scale * sol[:n]


def pattern_minima(layers: Sequence[Layer], z: np.ndarray, scale: float,
                   input_slope: float | None = None) -> list[tuple[float, np.ndarray]]:
    """The smallest preimage of the logits ``z + k·1`` ``(K,)`` on *every*
    activation pattern of ``layers`` (at most ``MAX_UNITS`` hidden units) that
    holds one: :func:`pattern_minimum` on each, corrected by least squares in its
    region (:func:`_newton`). Returns ``[(size, x), ...]`` (``x`` ``(in,)``, size
    as :func:`_score`'s ``"size"``), smallest first; patterns that differ only in
    units at 0 give the same point, which is listed once. ``scale``: the size
    expected. Raises ``ValueError`` beyond ``MAX_UNITS`` units."""
    units = hidden_units(layers)
    if units > MAX_UNITS:
        raise ValueError(f"{units} hidden units: enumerating 2^{units} patterns "
                         f"is too many (at most {MAX_UNITS} units)")
    widths = [w.shape[0] for w, _, slope in layers if slope is not None]
    found: list[tuple[float, np.ndarray]] = []
    for code in range(2 ** units):
        bits = np.array([1.0 if code >> j & 1 else -1.0 for j in range(units)])
        signs = np.split(bits, np.cumsum(widths)[:-1])
        x = pattern_minimum(layers, signs, z, scale, input_slope)
        if x is None:
            continue
        x = _newton(layers, x, z)
        if _residual(layers, x, z) > 1e-6 * (1 + np.abs(z).max()):
            continue
        size = _score(layers, x, z, "size", torch.float64, input_slope)
        if not any(np.allclose(x, y, rtol=1e-9, atol=1e-9 * size) for _, y in found):
            found.append((size, x))
    return sorted(found, key=lambda item: item[0])


def enumerated_minimum(layers: Sequence[Layer], z: np.ndarray, scale: float,
                       input_slope: float | None = None) -> tuple[float, np.ndarray]:
    """The smallest size of any preimage of ``z + k·1`` under ``layers`` (at most
    ``MAX_UNITS`` hidden units), by :func:`pattern_minimum` on every activation
    pattern (:func:`pattern_minima`), and that preimage ``(in,)``. ``scale``: the
    size expected. Raises ``ValueError`` beyond ``MAX_UNITS`` units or where no
    pattern holds a preimage."""
    minima = pattern_minima(layers, z, scale, input_slope)
    if not minima:
        raise ValueError("no activation pattern holds a preimage")
    size, x = minima[0]
    return float(size), x


def _null_noise(w: np.ndarray, size: float, gen: torch.Generator | None) -> np.ndarray:
    """A random vector ``(in,)`` of norm ``size`` in the null space of ``w``
    ``(out, in)``: a standard normal vector from ``gen`` projected onto it
    (the same direction, in law, as the paper's random coefficients on a
    basis of the null space)."""
    g = torch.randn(w.shape[1], generator=gen, dtype=torch.float64).numpy()
    v = g - w.T @ np.linalg.solve(w @ w.T, w @ g)
    return size * v / np.linalg.norm(v)


def backward_walk(layers: Sequence[Layer], z: np.ndarray, *, max_programs: int = 30,
                  size_programs: int = 10, dtype: torch.dtype = torch.float32,
                  std: float = 0.0, gen: torch.Generator | None = None,
                  trace: list | None = None, top: str = "min_norm",
                  size_objective: str = "size",
                  top_input: np.ndarray | None = None,
                  deadline: float | None = None) -> np.ndarray:
    """A preimage ``(in,)`` float64 of the logits ``z + k·1`` ``(K,)``: back
    layer by layer, each hidden vector the minimum-norm solution of its layer
    (plus, with ``std > 0``, the paper's null-space noise of norm
    ``std·‖h_p‖`` from ``gen``), shrunk by :func:`walk_patterns` (``"size"``
    with the slope of the LeakyReLU it comes out of as ``input_slope``, at
    most ``size_programs`` programs) on the layers above it; the input
    likewise on the whole network, then walked with the ``"rounding"``
    objective (at most ``max_programs``). Sub-networks whose programs would
    exceed ``MAX_ENTRIES`` are not walked (on a wide input the walk covers
    only the narrower layers above it).

    Where the network ends with a LeakyReLU, ``top`` chooses the last layer's
    input: ``"min_norm"`` (the minimum-norm solution for the logits shifted
    to 1 and above) or ``"walk"`` (that, shrunk by the ``"size"`` walk on the
    last layer: on ``benchmarks/leaky_growth.py``'s depth-10 network it
    reaches the smallest size of any pattern there, :func:`enumerated_minimum`,
    within 1%). Each walk below starts from it, and the walks find local
    optima only, so the two lead to different preimages, neither the smaller
    in general. :func:`walk_preimages` uses ``"min_norm"``: trying
    ``"walk"`` as its second walk (the noisy ones alternating) verified 50%
    instead of 70% on that network (``benchmarks/leaky_depth.py``).
    ``top_input`` (the last layer's input width ``(in,)``): start from this
    preimage of ``z + k·1`` under ``layers[-1:]`` instead (one of
    :func:`pattern_minima`'s, say); ``top`` and the noise do not apply to it.

    ``trace``, a list, receives ``(i, h)`` for each layer ``i`` going back:
    the input of ``layers[i:]`` it settled on (before the final
    ``"rounding"`` walk). ``size_objective``: the objective of the walks going
    back, ``"size"`` or ``"input_size"`` (:func:`walk_patterns`).
    ``deadline``: a :func:`time.monotonic` time after which the walks solve no
    further program (the layers still left are the plain backward pass)."""
    if size_objective not in SIZES:
        raise ValueError(f"size_objective must be one of {SIZES}, got {size_objective!r}")
    if top not in TOPS:
        raise ValueError(f"top must be one of {TOPS}, got {top!r}")
    width = layers[-1][0].shape[1]
    if top_input is not None and np.shape(top_input) != (width,):
        raise ValueError(f"top_input must be the last layer's input, shape ({width},), "
                         f"got {np.shape(top_input)}")
    starts = set(_walk_starts(layers))
    h = top_output(layers, z)
    last = len(layers) - 1
    for i in range(last, -1, -1):
        w, b, slope = layers[i]
        below = input_slope(layers, i)
        if i == last and top_input is not None:
            h = np.asarray(top_input, dtype=np.float64)
            if trace is not None:
                trace.append((i, h.copy()))
            continue
        a = pre_activation(h, slope)
        h = np.linalg.lstsq(w, a - b, rcond=None)[0]
        if std > 0 and w.shape[1] > w.shape[0]:
            h = h + _null_noise(w, std * np.linalg.norm(h), gen)
        if (i == last and slope is not None and top == "walk") or i in starts:
            h = walk_patterns(layers[i:], h, z, objective=size_objective,
                              max_programs=size_programs, input_slope=below,
                              deadline=deadline)
        if trace is not None:
            trace.append((i, h.copy()))
    if 0 not in starts:
        return h
    return walk_patterns(layers, h, z, objective="rounding", max_programs=max_programs,
                         dtype=dtype, deadline=deadline)


def walkable(layers: Sequence[Layer] | None) -> bool:
    """Whether :func:`backward_walk` applies (a chain of Linear layers and
    LeakyReLUs) and walks at least one sub-network."""
    if not layers or all(slope is None for *_, slope in layers):
        return False
    return bool(_walk_starts(layers))


def walk_preimages(layers: Sequence[Layer], targets: torch.Tensor, dtype: torch.dtype, *,
                   attempts: int = 5, std: float = 0.1, atol: float = 1e-3,
                   gen: torch.Generator | None = None, progress: bool = False,
                   seconds: float | None = None, stopped: set | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`backward_walk` for each row of ``targets`` ``(n, K)`` probabilities
    (``progress``: a ``tqdm.auto`` bar over the rows; ``seconds``: the time
    the walks of one row may take, after which they solve no further program,
    start no further walk and no further rounding search (a program or search
    under way finishes, so a row can overrun it), ``None`` for no limit;
    ``stopped``, a set, receives the rows that missed and ran out of that time),
    walked for inputs rounded to ``dtype`` (the model's) and rounded by
    :func:`round_preimage` (with ``ROUND_RESTARTS``): first without noise,
    then with null-space noise ``std``, up to ``attempts`` walks in all, until
    one misses the target by at most ``atol/4`` once rounded (a margin that
    :func:`region_samples` needs: its samples miss by about as much as their
    anchor; the miss as :func:`evaluation_error` bounds it, so that a
    rounding that only float64's own errors place within the target does not
    count). Where the first walk's float64 preimage itself already misses
    that margin (its inputs are beyond what float64 holds), the next walk
    starts from the walked last layer (``top="walk"``, no noise, its rounding
    drawing from a generator of ``gen``'s seed + 1; on
    ``benchmarks/leaky_growth.py``'s depth-10 network it ends 15 and 8,000
    times smaller for the two targets this applies to). If none does, one
    more walk without noise shrinks only the input of each sub-network going
    back (``size_objective="input_size"``; its rounding draws from a
    generator of ``gen``'s seed, so that ``gen`` is left as the other rows
    expect). Keeps each row's best walk. Returns the rounded inputs
    ``(n, in)`` (float64 holding ``dtype`` values), whether each verifies
    (misses by at most ``0.9·atol``) ``(n,)`` bool, and the float64 preimages
    they were rounded from ``(n, in)`` (the anchors of :func:`region_samples`
    and :func:`null_samples`)."""
    z = torch.log(targets.double().cpu()).numpy()
    xs, ok, exact = [], [], []
    for i, row in enumerate(tqdm(z, desc="pattern walk", unit="target", disable=not progress,
                                 leave=False)):
        deadline = None if seconds is None else time.monotonic() + seconds
        side = None if gen is None else torch.Generator().manual_seed(gen.initial_seed())
        walks = [(std if attempt else 0.0, "size", gen, "min_norm") for attempt in range(attempts)]
        walks.append((0.0, "input_size", side, "min_norm"))   # the last: pre-activations may grow
        best, best_score = None, np.inf
        k = 0
        while k < len(walks):
            if k and past_deadline(deadline):
                break
            noise, objective, draws, top = walks[k]
            k += 1
            x = backward_walk(layers, row, dtype=dtype, std=noise, gen=draws,
                              size_objective=objective, top=top, deadline=deadline)
            if k == 1 and attempts and evaluation_error(layers, x, row) > atol / 4:
                # beyond float64 already: next, the walk from the walked last layer
                other = None if gen is None else torch.Generator().manual_seed(
                    gen.initial_seed() + 1)
                walks.insert(1, (0.0, "size", other, "walk"))
            xr, score = round_preimage(layers, x, row, dtype, good=atol / 4,
                                       restarts=ROUND_RESTARTS, gen=draws, deadline=deadline)
            score = max(score, evaluation_error(layers, xr, row))
            if score < best_score:
                best, best_score = (xr, x), score
            if best_score <= atol / 4:
                break
        xs.append(best[0])
        exact.append(best[1])
        ok.append(best_score <= 0.9 * atol)
        if stopped is not None and best_score > atol / 4 and past_deadline(deadline):
            stopped.add(i)
    return (torch.tensor(np.stack(xs), dtype=torch.float64), torch.tensor(ok),
            torch.tensor(np.stack(exact), dtype=torch.float64))


def region_samples(layers: Sequence[Layer], anchor: np.ndarray, z: np.ndarray, n: int,
                   gen: torch.Generator, *, slack: float = 1.5, retries: int = 8,
                   dtype: torch.dtype = torch.float32, atol: float = 1e-3,
                   deadline: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` preimages ``(n, in)`` float64 of the logits ``z + k·1`` around the
    walked preimage ``anchor``, and which of them were drawn ``(n,)`` bool.
    ``deadline``: a :func:`time.monotonic` time after which no further draw
    starts (one under way finishes): the samples not drawn by then are the
    anchor, marked not drawn.

    In the anchor's region the preimages whose first-order rounding bound is at
    most ``slack`` times the anchor's form a polytope (the ``"rounding"``
    program with its objective capped). A sample is
    ``anchor + u·(v - anchor)``, ``v`` the vertex of that polytope that
    minimises a random linear function of ``x`` (standard normal weights from
    ``gen``), ``u`` uniform in ``(0, 1]``: by convexity an exact preimage in
    the same region. One whose input, rounded to ``dtype``, misses the target by
    more than ``0.9·atol`` (what verification measures) is drawn again, with
    ``u`` halved each time (up to ``retries`` times). If every draw misses,
    that sample and the ones after it are drawn by :func:`null_samples`
    instead (in the null space of the first layer's weight, ``std`` 0.1), and
    a row that misses there too is the anchor, marked not drawn.

    Null-space noise added going back, layer by layer, would be amplified by
    every pseudoinverse and negative slope below it and leave float32's reach;
    these samples keep the anchor's size and its rounding error.

    The polytope's vertices are only as exact as the solver: its rows'
    coefficients ``S·|M_i|`` (``M_i`` a unit's affine map) exceed the units'
    values by far where the input's entries cancel, and HiGHS's tolerance of
    1e-7 of a row's largest coefficient then leaves units well on their wrong
    side. On ``benchmarks/leaky_depth.py``'s depth-10 network (slope 0.01,
    ratio 0.75), at class 3's anchor of 2.4e16 the vertices miss their rows by
    up to 0.1 of their layer's largest value, and every draw misses the target
    by 0.1 to 0.99, even at ``u = 1/256``; samples in the first layer's null
    space keep every layer after it exactly, and they verify.
    """
    width = len(anchor)
    pre, _ = forward(layers, anchor)
    signs = _signs(pre)
    cost, a_ub, b_ub, a_eq, b_eq, bounds, S = _program(layers, signs, z, "rounding", anchor)
    A = _affine(layers, signs)[1][0]
    cap = (slack * float((np.abs(A - A.mean(axis=0)) @ np.abs(anchor)).max())
           / rounding_unit(A, S))
    bounds = [(-3.0, 3.0)] * width + bounds[width:-1] + [(0.0, cap)]
    out, drawn = np.repeat(anchor[None], n, axis=0), np.zeros(n, dtype=bool)
    for j in range(n):
        for attempt in range(retries + 1):
            if past_deadline(deadline):
                return out, drawn
            weights = torch.randn(width, generator=gen, dtype=torch.float64).numpy()
            u = (float(torch.rand((), generator=gen, dtype=torch.float64)) or 1.0) / 2 ** attempt
            sol = _solve(np.concatenate([weights, np.zeros(len(cost) - width)]),
                         a_ub, b_ub, a_eq, b_eq, bounds)
            if sol is None:
                continue
            x = _newton(layers, anchor + u * S * sol[:width], z, steps=1)
            x, score = round_preimage(layers, x, z, dtype, good=atol / 4, restarts=2, gen=gen,
                                      deadline=deadline)
            if max(score, evaluation_error(layers, x, z)) <= 0.9 * atol:
                out[j], drawn[j] = x, True
                break
        if not drawn[j]:                 # the program does not resolve this anchor
            out[j:], drawn[j:] = null_samples(layers, anchor, z, n - j, gen, retries=retries,
                                              dtype=dtype, atol=atol, deadline=deadline)
            break
    return out, drawn


def null_samples(layers: Sequence[Layer], anchor: np.ndarray, z: np.ndarray, n: int,
                 gen: torch.Generator, *, std: float = 0.1, retries: int = 8,
                 dtype: torch.dtype = torch.float32, atol: float = 1e-3,
                 deadline: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` preimages ``(n, in)`` of the logits ``z + k·1`` around the walked
    preimage ``anchor`` where :func:`region_samples`' program is too large (the
    input is wide), and which of them were drawn ``(n,)`` bool (``deadline``:
    as in :func:`region_samples`).

    A sample is ``anchor + v``, ``v`` random in the null space of the first
    layer's weight with ``‖v‖ = std·‖anchor‖`` (the paper's null-space
    sampling, at the input only): the first layer, and so the network, maps it
    exactly where it maps the anchor. It is rounded to ``dtype`` by
    :func:`round_preimage`; one that then misses the target by more than
    ``0.9·atol`` is drawn again with ``std`` halved (up to ``retries`` times);
    if every draw misses, its row is the anchor and it is marked not drawn.
    A first layer without a null space (as wide as its input or wider) gives
    no samples."""
    w = layers[0][0]
    out, drawn = np.repeat(anchor[None], n, axis=0), np.zeros(n, dtype=bool)
    if w.shape[0] >= w.shape[1]:
        return out, drawn
    for j in range(n):
        size = std * np.linalg.norm(anchor)
        for _ in range(retries + 1):
            if past_deadline(deadline):
                return out, drawn
            x, score = round_preimage(layers, anchor + _null_noise(w, size, gen), z, dtype,
                                      good=atol / 4, deadline=deadline)
            if max(score, evaluation_error(layers, x, z)) <= 0.9 * atol:
                out[j], drawn[j] = x, True
                break
            size /= 2
    return out, drawn

