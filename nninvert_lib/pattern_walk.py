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
scaled (every row and variable of order one, however large the input), each
answer is corrected by least squares in its region and kept only if it
reproduces the centred logits (``PREIMAGE_TOL``). The walk can stop in a
local optimum.

:func:`backward_walk` (going back layer by layer, like BackPassInv): the new
hidden vector is the minimum-norm solution of its layer, then the walk shrinks
it on the sub-network above it (objective: the largest entry of that
sub-network's input and pre-activations), so the next layer back starts from a
small vector instead of an amplified one. The input is shrunk the same way on
the whole network, then walked with the rounding objective.

On a random narrowing LeakyReLU(0.01) network with widths 55-41-31-23-17-13-10
(PyTorch's default initialisation) the backward pass's inputs are ~1e9–1e12 and
2% of its samples verify in float32; one backward walk per target verifies for
9 of the 10 targets, and BackPassInv with the walk verifies every sample
(inputs up to ~3e9, about 1 s per target walked). Deeper, it reaches 62% at
depth 8 and 8% at depth 10 (``benchmarks/leaky_depth.py``).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: a pre-activation within this fraction of its layer's largest is on a boundary.
TIGHT: float = 1e-7
#: a point of the walk must reproduce the centred logits to this (times 1 + max|z|),
#: or as well as the starting point does.
PREIMAGE_TOL: float = 1e-7
#: the walk stops after this many programs without a better point.
PATIENCE: int = 8
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


def _program(layers, signs, z, objective, x0):
    """The region's linear program around ``x0`` (a point on the region's closure).

    A unit of ``signs`` that disagrees with ``x0`` (a flipped unit at 0, up to
    rounding) may stay on the wrong side by as much as it is at ``x0``, so ``x0``
    itself is always feasible. Unknowns ``x = x0 + S·y`` with
    ``S = max(1, max|x0|)``, so that every
    variable and right-hand side is of order one however large the input (the
    pre-activations at ``x0`` come from the forward pass, not from ``M x0 + m``,
    which would cancel). Variables: ``y`` (first ``in``), the softmax shift
    ``k``, then the objective's own, its value last (``"size"``: in units of
    ``S``; ``"rounding"``: in logits). Each layer's rows are scaled to order one.
    Returns ``(cost, A_ub, b_ub, A_eq, b_eq, bounds, S)``.
    """
    pre, (A, _) = _affine(layers, signs)
    vals, out = forward(layers, x0)
    n, K = A.shape[1], A.shape[0]
    S = max(1.0, float(np.abs(x0).max()))
    rows, rhs = [], []

    def block(height, nv):
        return np.zeros((height, nv))

    nv = n + 2 if objective == "size" else 2 * n + 2
    for sg, (M, _), a in zip(signs, pre, vals):            # sign·a >= 0, rows of order one
        f = S / max(1.0, float(np.abs(a).max()))
        b = block(len(a), nv)
        b[:, :n] = -f * sg[:, None] * M
        rows.append(b)
        rhs.append(f * np.maximum(sg * a, 0.0) / S)
        if objective == "size":          # t >= |a_l|/S
            for sign in (1.0, -1.0):
                b = block(len(a), nv)
                b[:, :n], b[:, -1] = sign * f * M, -f
                rows.append(b)
                rhs.append(-sign * f * a / S)
    for sign in (1.0, -1.0):             # "size": t >= |x|/S; "rounding": r >= |x|/S
        b = block(n, nv)
        b[:, :n] = sign * np.eye(n)
        if objective == "size":
            b[:, -1] = -1.0
        else:
            b[:, n + 1:2 * n + 1] = -np.eye(n)
        rows.append(b)
        rhs.append(-sign * x0 / S)
    if objective == "size":
        bounds = [(None, None)] * (n + 1) + [(0, None)]
    else:                                # e >= Σ_i |(P A)_ki| |x_i|, in logits
        b = block(K, nv)
        b[:, n + 1:2 * n + 1] = S * np.abs(A - A.mean(axis=0))
        b[:, -1] = -1.0
        rows.append(b)
        rhs.append(np.zeros(K))
        bounds = [(None, None)] * (n + 1) + [(0, None)] * (n + 1)
    cost = np.zeros(nv)
    cost[-1] = 1.0
    eq = np.zeros((K, nv))
    eq[:, :n], eq[:, n] = S * A, -1.0                               # S A y - k = z - out
    return cost, np.vstack(rows), np.concatenate(rhs), eq, z - out, bounds, S


def _solve(cost, a_ub, b_ub, a_eq, b_eq, bounds) -> np.ndarray | None:
    from scipy.optimize import linprog

    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=bounds,
                  method="highs")
    return res.x if res.status == 0 else None


def _region_program(layers, signs, z, objective, x0):
    """Solve the region's linear program around ``x0``; the new input or ``None``."""
    *program, S = _program(layers, signs, z, objective, x0)
    sol = _solve(*program)
    return None if sol is None else x0 + S * sol[:len(x0)]


def _residual(layers, x, z) -> float:
    """``max |centred(f(x)) - centred(z)|``: how far ``x`` is from a preimage, in logits."""
    out = forward(layers, x)[1]
    r = out - z
    return float(np.abs(r - r.mean()).max())


def _newton(layers, x, z, steps: int = 2):
    """Least-squares corrections of ``x`` onto the centred target, each in the
    region of the current point, kept only while they reduce the residual."""
    best = _residual(layers, x, z)
    for _ in range(steps):
        pre, out = forward(layers, x)
        signs = _signs(pre)
        A = _affine(layers, signs)[1][0]
        r = (z - out) - (z - out).mean()
        trial = x + np.linalg.lstsq(A - A.mean(axis=0), r, rcond=None)[0]
        res = _residual(layers, trial, z)
        if not res < best:
            break
        x, best = trial, res
    return x


def _score(layers, x, z, objective, dtype):
    """The walk's measure of ``x``: for ``"size"`` the largest entry of the input and
    the pre-activations; for ``"rounding"`` the largest probability error once ``x``
    is rounded to ``dtype`` (what verification sees)."""
    if objective == "size":
        pre, _ = forward(layers, x)
        return max([np.abs(x).max()] + [np.abs(a).max() for a in pre])
    xr = torch.from_numpy(x).to(dtype).double().numpy()
    out = forward(layers, xr)[1]
    if not np.isfinite(out).all():
        return np.inf
    p, q = np.exp(out - out.max()), np.exp(z - z.max())
    return float(np.abs(p / p.sum() - q / q.sum()).max())


def walk_patterns(layers: Sequence[Layer], x: np.ndarray, z: np.ndarray, *,
                  objective: str = "rounding", max_programs: int = 40,
                  dtype: torch.dtype = torch.float32, good: float = 2.5e-4) -> np.ndarray:
    """Walk from the preimage ``x`` ``(in,)`` of the logits ``z + k·1`` ``(K,)``
    across activation regions to a better preimage.

    ``objective="rounding"``: each region's program minimises
    ``max_k Σ_i |(P A)_ki| |x_i|`` (how far rounding the input moves the
    centred logits, to first order), and the walk keeps the point whose
    rounding to ``dtype`` moves the probabilities least, stopping once that is
    at most ``good``. ``objective="size"``: the largest entry of the input and
    of every pre-activation. Returns the best preimage found (``x`` itself if
    none is better), float64."""
    if objective not in ("rounding", "size"):
        raise ValueError(f"objective must be 'rounding' or 'size', got {objective!r}")
    pre, _ = forward(layers, x)
    signs = _signs(pre)
    best, best_score, stale, failures = x, _score(layers, x, z, objective, dtype), 0, 0
    current = x
    tol = max(PREIMAGE_TOL * (1.0 + np.abs(z).max()), _residual(layers, x, z))
    for _ in range(max_programs):
        if objective == "rounding" and best_score <= good:
            break
        new = _region_program(layers, signs, z, objective, current)
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
        score = _score(layers, current, z, objective, dtype)
        if score < 0.99 * best_score:
            best, best_score, stale = current, score, 0
        else:
            stale += 1
            if stale >= PATIENCE:
                break
        signs = [np.where(np.abs(a) <= TIGHT * np.abs(a).max(), -sg, sg)
                 for a, sg in zip(pre, signs)]
    return best


def backward_walk(layers: Sequence[Layer], z: np.ndarray, *, max_programs: int = 30,
                  size_programs: int = 10, dtype: torch.dtype = torch.float32,
                  std: float = 0.0, gen: torch.Generator | None = None) -> np.ndarray:
    """A preimage ``(in,)`` float64 of the logits ``z + k·1`` ``(K,)``: back
    layer by layer, each hidden vector the minimum-norm solution of its layer
    (plus, with ``std > 0``, the paper's null-space noise
    ``std·‖h_p‖·N c/‖N c‖``, ``c`` from ``gen``), shrunk by
    :func:`walk_patterns` (``"size"``, at most ``size_programs`` programs) on
    the layers above it; the input likewise on the whole network, then walked
    with the ``"rounding"`` objective (at most ``max_programs``)."""
    w, b, slope = layers[-1]
    h = z - z.min() + 1.0 if slope is not None else z - z.mean()   # >= 0 before a LeakyReLU
    for i in range(len(layers) - 1, -1, -1):
        w, b, slope = layers[i]
        a = h if slope is None else np.where(h >= 0, h, h / slope)
        h = np.linalg.lstsq(w, a - b, rcond=None)[0]
        if std > 0 and w.shape[1] > w.shape[0]:
            basis = np.linalg.svd(w)[2][w.shape[0]:].T            # null space of W
            v = basis @ torch.randn(basis.shape[1], generator=gen, dtype=torch.float64).numpy()
            h = h + std * np.linalg.norm(h) * v / np.linalg.norm(v)
        if i < len(layers) - 1 and (i == 0 or layers[i - 1][2] is not None):
            h = walk_patterns(layers[i:], h, z, objective="size", max_programs=size_programs)
    return walk_patterns(layers, h, z, objective="rounding", max_programs=max_programs,
                         dtype=dtype)


def walkable(layers: Sequence[Layer] | None) -> bool:
    """Whether :func:`backward_walk` applies and its programs are small enough."""
    if not layers or all(slope is None for *_, slope in layers):
        return False
    width = layers[0][0].shape[1]
    total = sum(w.shape[0] for w, *_ in layers)
    return width * total <= MAX_ENTRIES


def walk_preimages(layers: Sequence[Layer], targets: torch.Tensor, dtype: torch.dtype, *,
                   attempts: int = 3, std: float = 0.1, atol: float = 1e-3,
                   gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`backward_walk` for each row of ``targets`` ``(n, K)`` probabilities,
    walked for inputs rounded to ``dtype`` (the model's): first without noise,
    then with null-space noise ``std``, up to ``attempts`` walks in all, until
    one misses the target by at most ``atol/4`` once rounded (a margin that
    :func:`region_samples` needs: its samples miss by about as much as their
    anchor). Keeps each row's best walk. Returns the inputs ``(n, in)``
    float64 and whether each verifies (misses by at most ``0.9·atol``) ``(n,)`` bool."""
    z = torch.log(targets.double().cpu()).numpy()
    xs, ok = [], []
    for row in z:
        best, best_score = None, np.inf
        for attempt in range(attempts):
            x = backward_walk(layers, row, dtype=dtype, std=std if attempt else 0.0, gen=gen)
            score = _score(layers, x, row, "rounding", dtype)
            if score < best_score:
                best, best_score = x, score
            if best_score <= atol / 4:
                break
        xs.append(best)
        ok.append(best_score <= 0.9 * atol)
    return torch.tensor(np.stack(xs), dtype=torch.float64), torch.tensor(ok)


def region_samples(layers: Sequence[Layer], anchor: np.ndarray, z: np.ndarray, n: int,
                   gen: torch.Generator, *, slack: float = 1.5, retries: int = 8,
                   dtype: torch.dtype = torch.float32, atol: float = 1e-3
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` preimages ``(n, in)`` float64 of the logits ``z + k·1`` around the
    walked preimage ``anchor``, and which of them were drawn ``(n,)`` bool.

    In the anchor's region the preimages whose first-order rounding bound is at
    most ``slack`` times the anchor's form a polytope (the ``"rounding"``
    program with its objective capped). A sample is
    ``anchor + u·(v - anchor)``, ``v`` the vertex of that polytope that
    minimises a random linear function of ``x`` (standard normal weights from
    ``gen``), ``u`` uniform in ``(0, 1]``: by convexity an exact preimage in
    the same region. One whose input, rounded to ``dtype``, misses the target by
    more than ``0.9·atol`` (what verification measures) is drawn again, with
    ``u`` halved each time (up to ``retries`` times); if every draw misses, its
    row is the anchor and it is marked not drawn.

    Null-space noise added going back, layer by layer, would be amplified by
    every pseudoinverse and negative slope below it and leave float32's reach;
    these samples keep the anchor's size and its rounding error.
    """
    width = len(anchor)
    pre, _ = forward(layers, anchor)
    signs = _signs(pre)
    cost, a_ub, b_ub, a_eq, b_eq, bounds, S = _program(layers, signs, z, "rounding", anchor)
    A = _affine(layers, signs)[1][0]
    cap = slack * float((np.abs(A - A.mean(axis=0)) @ np.abs(anchor)).max())
    bounds = [(-3.0, 3.0)] * width + bounds[width:-1] + [(0.0, cap)]
    out, drawn = np.repeat(anchor[None], n, axis=0), np.zeros(n, dtype=bool)
    for j in range(n):
        for attempt in range(retries + 1):
            weights = torch.randn(width, generator=gen, dtype=torch.float64).numpy()
            u = (float(torch.rand((), generator=gen, dtype=torch.float64)) or 1.0) / 2 ** attempt
            sol = _solve(np.concatenate([weights, np.zeros(len(cost) - width)]),
                         a_ub, b_ub, a_eq, b_eq, bounds)
            if sol is None:
                continue
            x = _newton(layers, anchor + u * S * sol[:width], z, steps=1)
            if _score(layers, x, z, "rounding", dtype) <= 0.9 * atol:
                out[j], drawn[j] = x, True
                break
    return out, drawn
