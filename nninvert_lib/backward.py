"""BackPassInv: invert a network layer by layer, from the softmax back to the input.

The paper's backward pass (§III-B) for ``model = Sequential(Flatten?, Linear,
act, Linear, act, ..., Linear, act?)``:

1. softmax: ``z = log p + c`` (:func:`~nninvert_lib.softmax.invert_softmax`;
   ``c`` centres the logits and is raised until they lie in the range of the
   final activation, if there is one, with a margin);
2. activation: ``u = σ⁻¹(y)`` (:mod:`~nninvert_lib.activations`);
3. linear: ``h_p = W⁺(u - b)`` with the condition-number-limited pseudoinverse,
   then a null-space sample ``h = h_p + std·‖h_p‖·N c/‖N c‖``
   (:mod:`~nninvert_lib.linear`); repeat down to the input.

The pseudoinverses come from one SVD per layer, held by a :class:`BackPassPlan`
(:func:`plan_back_pass`). The plan is cached per model (weakly, so it dies with
the model) and rebuilt when a weight changes (its tensor version moves) or
``max_cond`` differs, so repeated calls pay for the SVDs once.

Two strategies (``strategy=``):

``"paper"`` — the literal algorithm. A sample whose hidden vector leaves the
range of the activation below it (SELU: an entry ``<= -λα``) redraws that
layer's null-space noise up to ``max_retries`` times (when its particular
solution ``W⁺(u - b)`` is itself in range; otherwise no redraw is likely to
help); if it still leaves the range it is clamped into the range so that an
input still comes out, and the sample is reported with its reason
(``info["reasons"]``). On the trained FCNN-1 and FCNN-2 it verifies every
sample; on FCNN-6 none. Already the minimum-norm solutions ``W⁺(u - b)`` (no
noise at all) have entries below ``-λα`` from the second layer back, and
their norms grow about 3–5× per layer going back (median ‖h‖ 3.0, 3.8, 6.8,
17, 76 for the 32-, 64-, 128-, 256- and 512-wide hidden vectors), so
redrawing the noise cannot help. Where the 1,000 samples first leave SELU's
range: the 64-wide input of layer 8 (97), the 128-wide input of layer 6
(442), the 256-wide input of layer 4 (441), the 512-wide input of layer 2
(20). The choice of the softmax constant matters: the centred logits (used
here) do best; shifting them by ±0.5 makes more samples fail earlier.

``"anchored"`` (default) — the paper's backward pass, repaired where it
fails, and still the paper's null-space sampling:

1. run the backward pass as above; every sample it verifies is kept. For a
   hidden vector feeding a LeakyReLU, the sample is first moved towards
   ``h >= 0`` by up to ``lookahead`` alternating projections between the
   layer's solution set ``{h : W h + b = u}`` and the orthant (ending on the
   solution set, so it stays exact): negative entries are divided by the slope
   when inverted, and without this the norms of deep LeakyReLU(0.01) samples
   grow by ~1/slope per layer until the input no longer fits in float32. The
   logits are likewise kept ``>= 0`` before a final LeakyReLU;
2. fresh backward draws where they are likely to pay: a target none of whose
   samples verified gets ``ANCHOR_DRAWS`` (8) per round for up to
   ``ANCHOR_ROUNDS`` (4) rounds, until one verifies, and a target whose
   samples verify at least ``REDRAW_MIN_RATE`` (a quarter) of the time gets
   ``1 / rate`` draws per failed sample (at most 4), once; each draw that
   verifies replaces a failed sample. On a random LeakyReLU(0.01) network with
   widths 31, 23, 17, 13, 10 this lifts 80% to 100%; on the trained FCNN-6,
   whose backward samples do not verify, it costs 32 draws per target;
3. on a network of Linear layers and LeakyReLUs only, a target still without
   a verified sample gets a *pattern walk*
   (:func:`nninvert_lib.pattern_walk.walk_preimages`): the backward pass with
   every hidden vector shrunk by linear programs over activation regions
   (on the sub-networks small enough: :data:`nninvert_lib.pattern_walk.MAX_ENTRIES`),
   the input walked until its float32 rounding keeps the target, then rounded
   entry by entry so that the rounding errors cancel
   (:func:`~nninvert_lib.pattern_walk.round_preimage`; up to 5 walks, the
   later ones with null-space noise, and where all miss a last one that
   shrinks only the input of each sub-network going back). Where one
   verifies, the target's samples are drawn in its region
   (:func:`~nninvert_lib.pattern_walk.region_samples`), or with first-layer
   null-space noise where the input is too wide for that
   (:func:`~nninvert_lib.pattern_walk.null_samples`).
   On the random LeakyReLU(0.01) network 55-41-31-23-17-13-10 this lifts 2% to
   100% (about 1 s per target walked; deeper and wider networks:
   ``benchmarks/leaky_depth.py``; ``walk_seconds`` bounds a target's walks,
   and again the draws around its walked preimage);
4. every target gets ``seeds_per_target`` verified *anchors*: its verified
   backward samples, topped up by finishing failed samples with
   Levenberg–Marquardt (:func:`nninvert_lib.forward.levenberg_marquardt`, the
   minimum-norm step) started from the repaired backward sample — the paper's
   *generalized method* (backward sample, then forward root finding). LM
   solves for the first layer's output ``u₁`` on the rest of the network and
   the input follows exactly (``x = x0 + W₁⁺(u₁ - u₁⁰)``), a Jacobian ~3x
   cheaper; a seed LM cannot finish gets one restart from a uniform random
   input. On FCNN-6 LM moves the input by ~1–2% of its norm;
5. every other failed sample (and every seed LM could not finish, where its
   target has an anchor) is drawn by *anchored null-space sampling*
   around an anchor ``x*`` of its target (round robin), whose hidden vectors
   ``a_k*`` are all in range: going back, each linear layer takes the
   particular solution nearest the anchor, ``h_p = a* + W⁺(u_new - u*)``, adds
   the paper's null-space noise ``s·‖h_p‖·N c/‖N c‖``, and each activation is
   inverted exactly. The top moves the anchor's logits onto the target
   exactly, so these samples hit the target to rounding error. The input
   layer's null space (unconstrained) gets ``s = std``; hidden layers start at
   ``s = std`` and a sample that leaves a range, comes nearer its edge than
   ``ANCHOR_RANGE_FRACTION`` of the anchor's distance, or fails verification
   is redrawn with ``s`` halved, up to ``max_retries`` times (on FCNN-6 most
   samples settle at ``s`` = 0.0125–0.025: noise injected high up arrives
   amplified by the pseudoinverses further down). Anchor units within
   ``SATURATION`` of SELU's ``-λα`` are held fixed (a masked minimum-norm
   solve keeps them out of the step). What still fails is finished by LM;
6. on a Linear/LeakyReLU network, a sample that still misses (typically a
   float64 preimage that float32 rounding spoils) is rounded entry by entry
   (:func:`~nninvert_lib.pattern_walk.round_preimage`, stage ``"rounded"``;
   within ``walk_seconds`` per target, if given); on random LeakyReLU(0.01)
   networks of widths 31-23-17-13-10 and 640-320-160-80-40-20-10 this
   rescues the one sample in 40 that missed;
7. everything is verified with :func:`~nninvert_lib.result.verify`.

Measured (trained ``paper``-profile FCNNs, targets ``target_distribution(c, 0.9)``
for c = 0..9, 100 samples each, seed 0, ``atol=1e-3``, one CPU thread):

=======  ===================================  =================================
model    ``"anchored"`` (default)             ``"paper"``
=======  ===================================  =================================
FCNN-1   100% verified, ~9,600 samples/s      100%, ~13,000 samples/s
FCNN-2   100% verified, ~7,700 samples/s      100%, ~7,700 samples/s
FCNN-6   100% verified, ~960 samples/s        0% (3,500 samples/s attempted)
=======  ===================================  =================================

The candidates for the global obstacle, measured on the trained FCNN-6 (10 classes
× 10-100 samples, target 0.9): LM started from the backward sample (what the default
does for its anchors) 100%; the range look-ahead below (``lookahead_range``) makes 41%
of the backward samples exact; a joint solve over all hidden vectors at once (Adam on
every layer's null-space coefficients against a range penalty,
``benchmarks/joint_solve.py``) 44%.

On FCNN-6 the default spends ~0.17 s in the backward pass, ~0.25 s in LM for
~50 seeds and fallbacks and ~0.55 s in anchored sampling per 1,000 samples.
A per-sample implementation that recomputes the SVDs on every call manages
144, 31 and 3.4 samples/s. Within a target, samples are pairwise distinct
(their median distance is about that between independent LM seeds). With
two threads on a loaded 2-core machine BLAS threads spin and every rate
drops several-fold (FCNN-6 default: ~220 samples/s).

``info`` records, per sample, ``stage`` (``"backward"``, ``"walk"``, ``"lm"``,
``"anchored"`` or ``"rounded"``), ``retries`` (noise redraws of the backward pass),
``anchored_retries``, ``hidden_std`` (the hidden noise scale used),
``reasons`` (``""`` when verified; for a target whose pattern walk did not verify,
also how far the walked preimage misses once rounded and in float64 itself) and
``paper_reasons`` (why the backward pass failed, if it did), plus counts per stage, ``backward_redraws`` (fresh
backward draws of step 2), ``pattern_walks`` and ``pattern_walks_verified``
(targets walked in step 3, and how many of those verified), LM iterations and
timings.

Networks with an expanding layer (``out > in``) are inverted by least squares
there; the result is verified like any other, so a target the network cannot
reach comes back with ``converged=False`` (never an exception).

Known limits: on small-input deep SELU nets (e.g. 64→48→32→24→16→10 trained to
near-zero loss) LM seeds rarely converge and anchors are saturated, so the
default reaches only a few percent there. Random narrowing LeakyReLU nets
invert on every network measured (``benchmarks/leaky_depth.py``, default
initialisation, 10 × 4 samples): 100% for slope 0.1 up to depth 10 at width
ratio 0.75 and depth 8 at 0.5 (the pattern walk of step 3 did depth 10 at
0.75: 0% without it), and for slope 0.01 up to depth 10 at ratio 0.75 (also
with 10 × 10 samples) and depth 8 at 0.5 (there the input is 2,560 wide and
the walk covers the narrower layers). Slope 0.01, ratio 0.75, depth 10 took
every stage: 95% before ``region_samples`` fell back to first-layer
null-space samples, 92% before the walk from the walked last layer, 80%
before ``round_preimage``'s absorbed rounding, 70% before the last,
input-only walk, 40% before its successive stage, 8% with the first walk.
Its walked inputs reach ~5e16, and from ~1e17 on float64's own rounding moves
the logits (``pattern_walk.evaluation_error``). At depth 12 slope 0.1 still
verifies 40 of 40 (inputs up to 4e10), but slope 0.01 verifies 8 of 40 (20%;
walked inputs up to 4.9e25, 6,248 s): that is where this method stops.
Walked inputs that large (1e20 and more at depths 11 and 12) miss in exact
arithmetic too (``pattern_walk.exact_error``, errors 0.09–0.99): solving its
programs in float64, the walk holds no preimage that large. The
walk's preimages are not the smallest: at depth 8, 256 local searches per
target (``benchmarks/leaky_multistart.py``) find preimages of classes 2 and 3
of size 1e5 where the walk's reach 1e10 and 1e8 (at depth 10, of class 2: 2e4),
but at depth 12 they find none.
Going back, a negative hidden entry is divided by the slope and a narrowing
layer's pseudoinverse amplifies its small singular directions, so the
backward pass's inputs reach 1e10–1e21 there. Other routes measured on
these nets did no better than the walk: starting it from the last layer's
smallest input (``pattern_walk.backward_walk(top="walk")`` as the second of
the 5 walks: 50% at depth 10), a per-layer solve minimising the
pre-activation norm (a convex problem: negative entries weighted by 1/slope²), LM from random
inputs, and a continuation from the start's own logits to the target. A
continuation in the slope itself (from 1, where the network is affine, down
to its own; ``leaky_depth.py --continuation``) keeps the inputs small
(largest entry 1e2–1e5), but LM stalls where the path of solutions folds
(around slope 0.3–0.5 at width ratio 0.75): it verifies 70% at slope 0.01,
ratio 0.5, depth 8, and 0–10% at ratio 0.75 from depth 4
on. Smoothing the kinks instead (``--smoothing``: LeakyReLU replaced by
``s·u + (1 - s)·(softplus(βu) - log 2)/β``, β raised from 1e-4 to 1e4, so
the Jacobian keeps full rank) does a little better (80–100% at ratio 0.5 from
depth 4; 0–48% at ratio 0.75) but the Jacobian's smallest singular value
still falls to ~1e-6 part of the way and LM loses the path. The backward
pass itself is exact: on float64 copies of the same networks (``--float64``)
the default verifies every sample (inputs up to ~6e16) everywhere but slope
0.01, ratio 0.75, depth 10 (inputs ~3e21). The tests use slope 0.1, and 0.01
for the pattern walk (``tests/test_pattern_walk.py``).
"""
from __future__ import annotations

import copy
import math
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from torch import nn

from . import pattern_walk
from .activations import ActivationInverse, as_activation_inverse
from .errors import InversionError
from .linear import PseudoInverse, sample_null_space, thresholded_pinv
from .modelcopy import DROPOUTS, flatten_sequential
from .result import PROBABILITIES_REFUSED, DEFAULT_ATOL, InversionResult, check_target, verify
from .softmax import invert_softmax, softmax_constant_fit

STRATEGIES: tuple[str, ...] = ("anchored", "paper")
#: default distance kept between the logits and the edge of the final activation's range.
SOFTMAX_MARGIN: float = 0.5
#: a failing hidden vector is clamped this far inside the range (fraction of
#: ``|lower|``, or of the range's width when it is bounded) to continue the pass.
REPAIR_MARGIN: float = 0.2
#: anchored samples keep every hidden entry at least this fraction of the
#: seed's own distance from the edge of the range.
ANCHOR_RANGE_FRACTION: float = 0.05
#: an anchor's hidden entry this close to the edge of the range (relative to
#: ``max(1, |edge|)``) is saturated: it is held fixed, not inverted.
SATURATION: float = 1e-3
#: the masked solves work on ``(rows, out, in)`` float64 slabs of at most this many bytes.
MASKED_SOLVE_BYTES: int = 32 * 2**20
#: anchored sampling handles this many samples at a time (bounds its memory:
#: about 1 MB per sample on FCNN-6 when done all at once).
ANCHORED_CHUNK: int = 2048
#: a target none of whose backward samples verifies gets this many fresh
#: backward draws per round, for up to ``ANCHOR_ROUNDS`` rounds.
ANCHOR_DRAWS: int = 8
ANCHOR_ROUNDS: int = 4
#: a target whose backward samples verify at least this often has its failed
#: samples redrawn once (``1 / rate`` draws per failed sample, at most
#: ``REDRAW_FACTOR``): fresh backward samples before anchored sampling.
REDRAW_MIN_RATE: float = 0.25
REDRAW_FACTOR: int = 4


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class LinearStep:
    """One ``nn.Linear`` of the plan, its pseudoinverse computed once (float64)."""

    name: str
    weight: torch.Tensor          # (out, in)
    bias: torch.Tensor            # (out,)
    inverse: PseudoInverse

    @property
    def expanding(self) -> bool:
        """``out > in``: no exact inverse in general, least squares instead."""
        return self.weight.shape[0] > self.weight.shape[1]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.weight.T + self.bias


@dataclass(frozen=True)
class ActivationStep:
    """One invertible activation of the plan."""

    name: str
    inverse: ActivationInverse

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.inverse.forward(u)


@dataclass
class BackPassPlan:
    """A model read as a chain of linear and activation steps, SVDs done once.

    Built by :func:`plan_back_pass`; reuse it for every call on the same model
    (the library does: plans are cached per model and weight version).

    Attributes:
        steps: the steps in forward order (``Flatten`` removed).
        flatten_first: whether the model starts with ``nn.Flatten``.
        in_features: width of the first linear layer's input.
        num_classes: width of the output (K).
        max_cond: the pseudoinverse threshold used.
        device: where the plan's tensors live (the model's device).
        fingerprint: identifies the weights it was built from.
    """

    steps: tuple[LinearStep | ActivationStep, ...]
    flatten_first: bool
    in_features: int
    num_classes: int
    max_cond: float
    device: torch.device
    fingerprint: tuple = field(repr=False, default=())

    @property
    def linear_steps(self) -> list[LinearStep]:
        return [s for s in self.steps if isinstance(s, LinearStep)]

    def forward_values(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Values before the first step and after each step, float64 ``(n, width)``."""
        vals = [x.to(device=self.device, dtype=torch.float64)]
        for step in self.steps:
            vals.append(step.forward(vals[-1]))
        return vals

    def describe(self) -> list[dict]:
        """One dict per linear step: shape, kept rank, κ before and after."""
        return [{"name": s.name, "shape": tuple(s.weight.shape), "rank": s.inverse.rank,
                 "null_dim": s.inverse.null_dim, "cond_before": s.inverse.cond_before,
                 "cond_after": s.inverse.cond_after, "expanding": s.expanding}
                for s in self.linear_steps]


def _fingerprint(model: nn.Module) -> tuple:
    """Identity and version of every parameter and buffer (a BatchNorm's running
    statistics are buffers, updated in place by a forward pass in train mode)."""
    return tuple((id(p), p.data_ptr(), p._version, tuple(p.shape), p.dtype, str(p.device))
                 for p in [*model.parameters(), *model.buffers()])


_PLAN_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def batch_norm_affine(bn: nn.BatchNorm1d, label: str = "BatchNorm1d"
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` ``(C,)`` float64 of an eval-mode ``BatchNorm1d``:
    ``y = scale·x + shift`` with ``scale = γ/√(σ² + ε)``, ``shift = β - scale·μ``
    (running mean ``μ`` and variance ``σ²``). Raises ``InversionError`` for a
    layer without running statistics (it normalises by each batch's own) or
    with a zero scale (not invertible)."""
    if bn.running_mean is None or bn.running_var is None:
        raise InversionError(f"{label}: BatchNorm1d without running statistics "
                             "(track_running_stats=False) normalises each batch by itself, "
                             "so it is no fixed map to invert")
    var = bn.running_var.detach().to(torch.float64)
    mean = bn.running_mean.detach().to(torch.float64)
    scale = 1.0 / torch.sqrt(var + bn.eps)
    shift = -mean * scale
    if bn.affine:
        gamma = bn.weight.detach().to(torch.float64)
        scale, shift = gamma * scale, gamma * shift + bn.bias.detach().to(torch.float64)
    if not bool((scale != 0).all() and torch.isfinite(scale).all() and
                torch.isfinite(shift).all()):
        raise InversionError(f"{label}: its scale γ/√(σ² + ε) holds 0, NaN or inf")
    return scale, shift


def plan_back_pass(model: nn.Module, max_cond: float = 100.0, *,
                   use_cache: bool = True) -> BackPassPlan:
    """Read ``model`` as linear and activation steps and compute each layer's SVD once.

    Args:
        model: an ``nn.Sequential`` (nesting allowed) of ``nn.Flatten``,
            ``nn.Linear`` and invertible activations (see
            :func:`~nninvert_lib.activations.invert_activation`); dropout layers
            (:data:`~nninvert_lib.modelcopy.DROPOUTS`, e.g. the ``nn.AlphaDropout`` of self-normalising
            SELU networks) are skipped, as they are the identity in eval mode,
            and an ``nn.BatchNorm1d`` directly after a Linear is folded into it
            (:func:`~nninvert_lib.backward.batch_norm_affine`: its running statistics,
            as in eval mode).
        max_cond: pseudoinverse threshold (see :func:`~nninvert_lib.linear.thresholded_pinv`).
        use_cache: return the cached plan for this model when its weights and
            ``max_cond`` are unchanged (the cache holds the model weakly).

    Returns:
        :class:`BackPassPlan` on the model's device, float64.

    Raises:
        InversionError: ``model`` is not an ``nn.Sequential``, holds a layer
            other than Flatten/Linear/invertible activation (named, with its
            position), a non-invertible activation (ReLU, GELU: the message names
            ``nni.forward_pass_inv``), ``nn.Flatten`` after the first layer, a
            BatchNorm1d that does not directly follow a Linear or has no running
            statistics, or no linear layer.
    """
    if not isinstance(model, nn.Sequential):
        raise InversionError(f"back_pass_inv needs an nn.Sequential of nn.Flatten, nn.Linear "
                             f"and invertible activations, got {type(model).__name__}; "
                             "invert other models with nni.forward_pass_inv")
    fp = (_fingerprint(model), float(max_cond))
    if use_cache:
        cached = _PLAN_CACHE.get(model)
        if cached is not None and cached["fingerprint"] == fp:
            return cached["plan"]
    steps: list = []          # LinearStep (a [name, W, b] list until the end) or ActivationStep
    flatten_first = False
    modules = flatten_sequential(model)
    for pos, (name, mod) in enumerate(modules):
        label = f"layer {name!r} ({type(mod).__name__})"
        if isinstance(mod, DROPOUTS):
            continue            # the identity in eval mode, where every method runs the model
        last = pos == len(modules) - 1
        if last and isinstance(mod, nn.LogSoftmax):
            continue            # logits - logsumexp: the same softmax, so the same target
        if last and isinstance(mod, nn.Softmax):
            raise InversionError(f"{label}: the model ends in a softmax; {PROBABILITIES_REFUSED}")
        if isinstance(mod, nn.Flatten):
            if steps:
                raise InversionError(f"{label}: nn.Flatten is only supported as the first layer")
            flatten_first = True
        elif isinstance(mod, nn.Linear):
            w = mod.weight.detach().to(torch.float64)
            b = (mod.bias.detach().to(torch.float64) if mod.bias is not None
                 else torch.zeros(w.shape[0], dtype=torch.float64, device=w.device))
            steps.append([name, w, b])          # made a LinearStep below
        elif isinstance(mod, nn.BatchNorm1d):
            if not steps or not isinstance(steps[-1], list):
                raise InversionError(f"{label}: BatchNorm1d is supported directly after an "
                                     "nn.Linear only (it is folded into that layer)")
            scale, shift = batch_norm_affine(mod, label)
            steps[-1][1] = scale[:, None] * steps[-1][1]
            steps[-1][2] = scale * steps[-1][2] + shift
        else:
            try:
                inv = as_activation_inverse(mod)
            except InversionError as err:
                raise InversionError(f"{label} cannot be inverted by the backward pass: {err}"
                                     ) from None
            steps.append(ActivationStep(name, inv))
    for i, step in enumerate(steps):
        if isinstance(step, list):
            name, w, b = step
            if not (torch.isfinite(w).all() and torch.isfinite(b).all()):
                raise InversionError(f"layer {name!r} (Linear): weights hold NaN or inf")
            steps[i] = LinearStep(name, w, b, thresholded_pinv(w, max_cond))
    lin = [s for s in steps if isinstance(s, LinearStep)]
    if not lin:
        raise InversionError("the model has no nn.Linear layer; back_pass_inv inverts "
                             "Sequential(Flatten?, Linear, activation, ..., Linear, activation?)")
    if not isinstance(steps[0], LinearStep):
        raise InversionError(f"the first layer after nn.Flatten must be nn.Linear, got "
                             f"{type(steps[0]).__name__} ({steps[0].name!r})")
    plan = BackPassPlan(steps=tuple(steps), flatten_first=flatten_first,
                        in_features=lin[0].weight.shape[1], num_classes=lin[-1].weight.shape[0],
                        max_cond=float(max_cond), device=lin[0].weight.device, fingerprint=fp)
    if use_cache:
        _PLAN_CACHE[model] = {"fingerprint": fp, "plan": plan}
    return plan


# --------------------------------------------------------------------------- helpers


def _repair_bounds(inv: ActivationInverse) -> tuple[float, float]:
    """A closed interval strictly inside the activation's range, for clamping."""
    lo, hi = inv.lower, inv.upper
    if math.isfinite(lo) and math.isfinite(hi):
        pad = 1e-3 * (hi - lo)
        return lo + pad, hi - pad
    lo_c = lo + REPAIR_MARGIN * max(abs(lo), 1.0) if math.isfinite(lo) else -math.inf
    hi_c = hi - REPAIR_MARGIN * max(abs(hi), 1.0) if math.isfinite(hi) else math.inf
    return lo_c, hi_c


def _top_logits(plan: BackPassPlan, t: torch.Tensor,
                shift: torch.Tensor | None = None, good: bool = False) -> torch.Tensor:
    """``log p + c`` for the last step: :func:`invert_softmax` with the final
    activation's range (``shift``, when given, is the starting constant;
    ``good``: LeakyReLU's logits are kept ``>= 0``, where its inverse is the identity)."""
    last = plan.steps[-1]
    lo, hi = ((last.inverse.lower, last.inverse.upper) if isinstance(last, ActivationStep)
              else (None, None))
    if good and isinstance(last, ActivationStep) and last.inverse.name == "leaky_relu":
        lo = 0.0
    lo = lo if lo is not None and math.isfinite(lo) else None
    hi = hi if hi is not None and math.isfinite(hi) else None
    return invert_softmax(t, lower=lo, upper=hi, margin=SOFTMAX_MARGIN, shift=shift)


def _range_problem(step: ActivationStep, vals: torch.Tensor) -> torch.Tensor:
    """Bool ``(n,)``: some entry outside the activation's range (or non-finite)."""
    return ~step.inverse.in_range(vals).all(dim=1)


def _describe_violations(step: ActivationStep, vals: torch.Tensor,
                         rows: torch.Tensor) -> list[str]:
    """One message per row in ``rows``: how the input of ``step`` left its range."""
    inv = step.inverse
    v = vals[rows]
    bad = ~inv.in_range(v)
    counts = bad.sum(dim=1).tolist()
    worst = torch.where(bad, v, torch.full_like(v, float("nan")))
    lows = torch.nan_to_num(worst, nan=float("inf")).amin(dim=1).tolist()
    out = []
    for k, lo in zip(counts, lows):
        w = f", lowest {lo:.4g}" if math.isfinite(lo) else ""
        out.append(f"the {v.shape[1]}-wide input of layer {step.name!r} ({inv.name}) left its "
                   f"range {inv.range_text()}: {k} entr{'y' if k == 1 else 'ies'} outside{w}")
    return out


# --------------------------------------------------------------------------- paper pass


def _good_region(inv: ActivationInverse, bounded: bool) -> tuple[float, float] | None:
    """Where an activation's inverse is well conditioned, or None (Identity; and
    activations with a bounded range unless ``bounded``)."""
    if inv.name == "identity":
        return None
    if inv.name == "leaky_relu":
        return (0.0, math.inf)     # single-signed: the inverse is the identity there
    return _repair_bounds(inv) if bounded else None


def _project_into(step: LinearStep, vals: torch.Tensor, h: torch.Tensor, lo: float,
                  hi: float, iters: int) -> torch.Tensor:
    """Alternating projections between ``{h : W h + b = vals}`` and the box
    ``[lo, hi]``, starting at ``h`` and ending on the affine set (exactness kept);
    only rows with an entry outside the box move. ``W⁺W`` is the projector onto
    the kept row space, so ``h - W⁺(W h + b - vals)`` is the orthogonal
    projection onto the (least-squares) solution set."""
    for _ in range(iters):
        out = ((h < lo) | (h > hi)).any(dim=1)
        if not out.any():
            break
        idx = out.nonzero().flatten()
        hc = h[idx].clamp(lo, hi)
        h[idx] = hc - step.inverse.solve(step.forward(hc) - vals[idx])
    return h


def _paper_pass(plan: BackPassPlan, t: torch.Tensor, std: float, gen: torch.Generator,
                max_retries: int, lookahead: int = 0, lookahead_range: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor]:
    """The backward pass for targets ``t`` ``(n, K)``; literal when ``lookahead=0``.

    A sample whose null-space sample leaves the range of the activation below
    redraws the noise, up to ``max_retries`` times, but only when its particular
    solution ``W⁺(u - b)`` is itself in range (otherwise no noise draw is
    likely to help and the reason says so).

    With ``lookahead > 0`` the logits are placed where the final activation's
    inverse is well conditioned (LeakyReLU: all ``>= 0``), and every hidden
    sample feeding a LeakyReLU is moved towards ``h >= 0`` (where no entry is
    divided by the slope, so norms do not grow by ``1/slope`` per layer) by up
    to ``lookahead`` alternating projections between the layer's solution set
    ``{h : W h + b = u}`` and that box, ending on the solution set. With
    ``lookahead_range`` the same is done for activations with a bounded range
    (SELU: towards ``h >= -λα + 0.2·λα``).

    Returns ``(x, in_range, reasons, retries)``: inputs ``(n, in)`` float64
    (hidden vectors that left their range were clamped into it so that an
    input still comes out), whether every hidden vector stayed in range, the
    first violation per sample (``""`` if none) and the noise redraws used.
    """
    n = len(t)
    reasons = [""] * n
    ok = torch.ones(n, dtype=torch.bool, device=plan.device)
    retries = torch.zeros(n, dtype=torch.long)
    xp_bad = torch.zeros(n, dtype=torch.bool, device=plan.device)
    vals = _top_logits(plan, t, good=lookahead > 0)
    steps = plan.steps
    for i in range(len(steps) - 1, -1, -1):
        step = steps[i]
        if isinstance(step, ActivationStep):
            bad = _range_problem(step, vals)
            if bad.any():
                new = (bad & ok).nonzero().flatten()
                hint = torch.where(xp_bad[new], 1, 0).tolist()
                msgs = _describe_violations(step, vals, new)
                for j, msg, h in zip(new.tolist(), msgs, hint):
                    reasons[j] = msg + ("; already the minimum-norm solution W⁺(u - b) is "
                                        "outside it" if h else "")
                ok &= ~bad
                lo, hi = _repair_bounds(step.inverse)
                vals = torch.where(bad[:, None], torch.nan_to_num(vals, nan=0.0).clamp(lo, hi),
                                   vals)
            vals = step.inverse.inverse(vals)
            continue
        pinv = step.inverse
        xp = pinv.solve(vals - step.bias)
        h = sample_null_space(xp, pinv.null_basis, std, gen)
        below = steps[i - 1] if i > 0 else None
        xp_bad[:] = False
        if isinstance(below, ActivationStep):
            xp_bad = _range_problem(below, xp)
            if pinv.null_dim > 0 and std > 0:
                for _ in range(max_retries):
                    bad = _range_problem(below, h) & ok & ~xp_bad
                    if not bad.any():
                        break
                    idx = bad.nonzero().flatten()
                    h[idx] = sample_null_space(xp[idx], pinv.null_basis, std, gen)
                    retries[idx.cpu()] += 1
            region = _good_region(below.inverse, lookahead_range)
            if lookahead > 0 and region is not None and pinv.null_dim > 0:
                h = _project_into(step, vals, h, *region, lookahead)
        vals = h
    return vals, ok, reasons, retries


# --------------------------------------------------------------------------- anchored sampling


def _too_close(step: ActivationStep, vals: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """Bool ``(n,)``: an entry outside the range, or nearer its edge than
    ``ANCHOR_RANGE_FRACTION`` of the anchor's own distance (the inverse's
    condition number would blow up). Entries equal to the anchor's are fine
    (their pre-activation is known)."""
    inv = step.inverse
    moved = vals != anchor
    bad = moved & ~inv.in_range(vals)
    if math.isfinite(inv.lower):
        bad |= moved & ((vals - inv.lower) < ANCHOR_RANGE_FRACTION * (anchor - inv.lower))
    if math.isfinite(inv.upper):
        bad |= moved & ((inv.upper - vals) < ANCHOR_RANGE_FRACTION * (inv.upper - anchor))
    return bad.any(dim=1)


def _saturated(step: ActivationStep, anchor: torch.Tensor) -> torch.Tensor:
    """Bool, shape of ``anchor``: entries within ``SATURATION`` of the range's edge,
    where the inverse cannot follow any change (SELU output ``-λα`` in float64)."""
    inv = step.inverse
    sat = torch.zeros_like(anchor, dtype=torch.bool)
    if math.isfinite(inv.lower):
        sat |= (anchor - inv.lower) <= SATURATION * max(1.0, abs(inv.lower))
    if math.isfinite(inv.upper):
        sat |= (inv.upper - anchor) <= SATURATION * max(1.0, abs(inv.upper))
    return sat


def _masked_solve(weight: torch.Tensor, rhs: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
    """Per row, the minimum-norm ``d`` with ``W d = rhs`` and ``d = 0`` off ``free``:
    ``d = F Wᵀ (W F Wᵀ)⁺ rhs``, ``F = diag(free)`` (batched ``(r, out)`` → ``(r, in)``),
    in blocks of rows of at most ``MASKED_SOLVE_BYTES`` each."""
    out, inp = weight.shape
    block = max(1, MASKED_SOLVE_BYTES // (8 * out * inp))   # rows per (block, out, in) slab
    d = torch.empty(len(rhs), inp, dtype=weight.dtype, device=weight.device)
    for s in range(0, len(rhs), block):
        wf = weight.unsqueeze(0) * free[s:s + block].unsqueeze(1).to(weight)  # (r, out, in)
        gram = wf @ wf.transpose(1, 2)                                          # (r, out, out)
        y = torch.linalg.pinv(gram, hermitian=True) @ rhs[s:s + block].unsqueeze(2)
        d[s:s + block] = (wf.transpose(1, 2) @ y).squeeze(2)
    return d


def _anchored_logits(plan: BackPassPlan, t: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``log p + c`` nearest the anchor's ``logits`` (``c`` from
    :func:`softmax_constant_fit`), moved only as far as needed to stay
    ``ANCHOR_RANGE_FRACTION`` of the anchor's distance inside the final
    activation's range (a fixed margin would move saturated logits a lot)."""
    logp = torch.log(t)
    c = softmax_constant_fit(t, logits)
    last = plan.steps[-1]
    if isinstance(last, ActivationStep):
        lo, hi = last.inverse.lower, last.inverse.upper
        if math.isfinite(lo):
            gap = ANCHOR_RANGE_FRACTION * (logits - lo).amin(dim=1)
            c = torch.maximum(c, lo + gap - logp.amin(dim=1))
        if math.isfinite(hi):
            gap = ANCHOR_RANGE_FRACTION * (hi - logits).amin(dim=1)
            c = torch.minimum(c, hi - gap - logp.amax(dim=1))
    return logp + c[:, None]


def _anchored_pass(plan: BackPassPlan, anchor_vals: list[torch.Tensor], t: torch.Tensor,
                   hidden_std: torch.Tensor, input_std: float, gen: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Null-space sampling around verified solutions (one anchor row per sample).

    ``anchor_vals`` are the anchors' forward values (``plan.forward_values``),
    row ``i`` belonging to sample ``i``. Going back, a linear layer takes the
    particular solution nearest the anchor, ``h_p = a* + W⁺(u_new - u*)``, plus
    the paper's noise ``s·‖h_p‖·N c/‖N c‖``: ``s = hidden_std`` ``(n,)`` for
    a layer whose input feeds an activation, ``s = input_std`` for the first
    layer (the input's null space is unconstrained). Activations are inverted
    exactly.

    Returns ``(x, ok, reasons)``: ``ok`` is False where a hidden vector left its
    range or came too close to its edge (see :func:`_too_close`); the caller
    redraws those with less noise. Measured on FCNN-6: with ``s = 0.1`` almost
    every sample fails (not at the layer that drew the noise, but lower down,
    where the change it causes arrives amplified by the pseudoinverses), with
    ``s = 0.0125`` about 60% pass.
    """
    n = len(t)
    steps = plan.steps
    vals = _anchored_logits(plan, t, anchor_vals[-1])
    ok = torch.ones(n, dtype=torch.bool, device=plan.device)
    reasons = [""] * n
    for i in range(len(steps) - 1, -1, -1):
        step = steps[i]
        if isinstance(step, ActivationStep):
            inv = step.inverse
            anchor_out = anchor_vals[i + 1]
            bad = _too_close(step, vals, anchor_out)
            for j in (bad & ok).nonzero().flatten().tolist():
                reasons[j] = (f"anchored sample: the input of layer {step.name!r} ({inv.name}) "
                              f"came too close to the edge of its range {inv.range_text()}")
            ok &= ~bad
            vals = torch.where(ok[:, None], vals, anchor_out)
            same = vals == anchor_out        # known pre-activation: exact even if saturated
            vals = torch.where(same, anchor_vals[i], inv.inverse(torch.where(same, 0.0, vals)))
            continue
        pinv = step.inverse
        delta = vals - anchor_vals[i + 1]
        if i == 0:      # the input layer, the costliest: only for samples still in range
            h_p = anchor_vals[0].clone()
            r = ok.nonzero().flatten()
            h_p[r] = h_p[r] + pinv.solve(delta[r])
        else:
            h_p = anchor_vals[i] + pinv.solve(delta)
        below = steps[i - 1] if i > 0 else None
        frozen_rows = torch.zeros(n, dtype=torch.bool, device=plan.device)
        if isinstance(below, ActivationStep):
            sat = _saturated(below, anchor_vals[i])
            frozen_rows = sat.any(dim=1) & ok
            if frozen_rows.any():
                r = frozen_rows.nonzero().flatten()
                h_p[r] = anchor_vals[i][r] + _masked_solve(step.weight, delta[r], ~sat[r])
        if pinv.null_dim == 0:
            vals = h_p
            continue
        if i == 0:
            vals = h_p
            r = ok.nonzero().flatten()
            vals[r] = h_p[r] + input_std * (sample_null_space(h_p[r], pinv.null_basis, 1.0, gen)
                                            - h_p[r])
            continue
        scale = torch.where(frozen_rows, 0.0, hidden_std.to(h_p))[:, None]
        vals = h_p + scale * (sample_null_space(h_p, pinv.null_basis, 1.0, gen) - h_p)
    return vals, ok, reasons


# --------------------------------------------------------------------------- LM polish


def _lm_polish(model: nn.Module, plan: BackPassPlan, x0: torch.Tensor, t: torch.Tensor,
               input_shape: tuple, max_iter: int, atol: float, gen: torch.Generator
               ) -> tuple[torch.Tensor, dict]:
    """Levenberg–Marquardt from ``x0`` ``(n, in)`` to ``t``, on a float64 copy of ``model``.

    When the first linear layer keeps its full row rank (``W₁W₁⁺ = I``), LM runs
    on the rest of the network with the first layer's output ``u₁ = W₁x + b₁``
    as unknown (a Jacobian about 3x cheaper on FCNN-6), and the input follows
    exactly: ``x = x0 + W₁⁺(u₁ - u₁⁰)``, which keeps ``x0``'s component in the
    null space of ``W₁``. Otherwise LM runs on the input itself.
    """
    from .forward import levenberg_marquardt

    if len(x0) == 0:
        return x0, {}
    first = plan.steps[0]
    modules = [m for _, m in flatten_sequential(model)
               if not isinstance(m, (nn.Flatten, *DROPOUTS))]
    after = 1                       # the first Linear and the BatchNorm folded into it
    while after < len(modules) and isinstance(modules[after], nn.BatchNorm1d):
        after += 1
    tail_ok = (isinstance(first, LinearStep) and len(modules) > after
               and first.inverse.rank == first.weight.shape[0])
    if tail_ok:
        tail = copy.deepcopy(nn.Sequential(*modules[after:])).to(torch.float64).eval()
        u0 = first.forward(x0)
        res = levenberg_marquardt(tail, u0, t, max_iter=max_iter, atol=atol, generator=gen)
        u1 = res.inputs.to(torch.float64).reshape(len(x0), -1)
        return x0 + first.inverse.solve(u1 - u0), res.info
    model64 = copy.deepcopy(model).to(torch.float64).eval()
    res = levenberg_marquardt(model64, x0.reshape(len(x0), *input_shape), t,
                              max_iter=max_iter, atol=atol, generator=gen)
    return res.inputs.reshape(len(x0), -1).to(torch.float64), res.info


class _Finisher:
    """The ``"anchored"`` strategy's repair of the samples the literal pass missed."""

    def __init__(self, model, plan, t, target_index, shape, dtype, std, atol, max_retries,
                 lm_max_iter, gen, lookahead: int = 0, lookahead_range: bool = False,
                 progress: bool = False, walk_seconds: float | None = None):
        self.model, self.plan, self.t, self.target_index = model, plan, t, target_index
        # the samples of each target row, in order, found once (not one scan per row)
        order = torch.argsort(target_index, stable=True)
        keys, sizes = torch.unique_consecutive(target_index[order], return_counts=True)
        self.rows_of = dict(zip(keys.tolist(), order.split(sizes.tolist())))
        self.shape, self.dtype, self.std, self.atol = shape, dtype, std, atol
        self.max_retries, self.lm_max_iter, self.gen = max_retries, lm_max_iter, gen
        self.lookahead, self.lookahead_range = lookahead, lookahead_range
        self.progress = bool(progress)
        self.walk_seconds = walk_seconds
        self.redraws = 0
        self.walked = self.walk_verified = 0
        #: per target row whose walk did not verify: why (see :meth:`walk`)
        self.walk_notes: dict[int, str] = {}
        #: target rows whose walk missed after running out of ``walk_seconds``
        self.walks_stopped: list[int] = []
        #: target rows whose walk verified but whose other samples were not all
        #: drawn around it within ``walk_seconds``
        self.draws_stopped: list[int] = []
        #: target rows with a sample that still missed when the final rounding
        #: ran out of ``walk_seconds``
        self.roundings_stopped: list[int] = []
        self.seconds_round = 0.0
        self.seconds_walk = 0.0
        n = len(t)
        self.hidden_std = torch.full((n,), float(std), dtype=torch.float64)
        self.anchored_retries = torch.zeros(n, dtype=torch.long)
        self.lm_info: list[dict] = []
        self.lm_restarts = 0
        self.seconds_lm = self.seconds_anchored = 0.0

    def rounded_probs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``(n, in)`` rounded to the model's dtype (as float64) and its
        softmax ``(n, K)`` from the plan's float64 forward pass."""
        xr = x.to(self.dtype).to(torch.float64)
        return xr, torch.softmax(self.plan.forward_values(xr)[-1], dim=1)

    def verified(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What :func:`verify` will say, from the plan: float64 forward of ``x``
        rounded to the model's dtype."""
        xr, probs = self.rounded_probs(x)
        return (torch.isfinite(xr).all(dim=1) & torch.isfinite(probs).all(dim=1)
                & ((probs - t).abs() <= self.atol).all(dim=1))

    def lm(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LM from ``x0``; samples it does not verify get one restart from a
        uniform random input in ``[0, 1)`` (ForwardPassInv's start)."""
        t0 = time.perf_counter()
        x, info = _lm_polish(self.model, self.plan, x0, t, self.shape, self.lm_max_iter,
                             self.atol, self.gen)
        self.lm_info.append(info)
        ok = self.verified(x, t)
        if not ok.all():
            bad = (~ok).nonzero().flatten()
            start = torch.rand(len(bad), x0.shape[1], generator=self.gen,
                               dtype=torch.float64).to(x0.device)
            x2, info = _lm_polish(self.model, self.plan, start, t[bad], self.shape,
                                  self.lm_max_iter, self.atol, self.gen)
            self.lm_info.append(info)
            self.lm_restarts += len(bad)
            ok2 = self.verified(x2, t[bad])
            x[bad[ok2]] = x2[ok2]
            ok[bad[ok2]] = True
        self.seconds_lm += time.perf_counter() - t0
        return x, ok

    def _draw(self, x: torch.Tensor, failed: torch.Tensor, good: dict[int, list[int]],
              stage: list[str], draws: dict[int, int]) -> None:
        """``draws[r]`` fresh backward samples of target ``r``; each that verifies
        replaces one of the target's failed samples in ``x`` (stage
        ``"backward"``; ``failed`` and ``good`` are updated)."""
        need = list(draws)
        first = torch.stack([self.rows_of[r][0] for r in need])
        counts = torch.tensor([draws[r] for r in need])
        rows_t = self.t[first.repeat_interleave(counts)]
        xb, *_ = _paper_pass(self.plan, rows_t, self.std, self.gen, self.max_retries,
                             lookahead=self.lookahead, lookahead_range=self.lookahead_range)
        self.redraws += len(rows_t)
        ok = self.verified(xb, rows_t).cpu()
        start = 0
        for r, k in zip(need, counts.tolist()):
            rows = self.rows_of[r]
            slots = rows[failed[rows]].tolist()
            hits = (ok[start:start + k].nonzero().flatten() + start).tolist()
            for j, d in zip(slots, hits):
                x[j] = xb[d]
                stage[j] = "backward"
                failed[j] = False
                good[r].append(j)
            start += k

    def redraw(self, x: torch.Tensor, failed: torch.Tensor, good: dict[int, list[int]],
               stage: list[str]) -> None:
        """Fresh backward draws where they are likely to pay (one backward pass
        each, cheap next to LM): a target with no verified sample gets
        ``ANCHOR_DRAWS`` per round for up to ``ANCHOR_ROUNDS`` rounds, until one
        verifies; then a target whose samples verify at a rate of at least
        ``REDRAW_MIN_RATE`` gets ``1 / rate`` draws per failed sample (at most
        ``REDRAW_FACTOR``), once. On a network where backward samples almost
        never verify (the trained FCNN-6) this costs ``ANCHOR_ROUNDS ·
        ANCHOR_DRAWS`` draws per target and anchored sampling does the rest."""
        for _ in range(ANCHOR_ROUNDS):
            need = [r for r, g in good.items() if not g]
            if not need:
                break
            self._draw(x, failed, good, stage, {r: ANCHOR_DRAWS for r in need})
        draws = {}
        for r, g in good.items():
            n_failed = int(failed[self.rows_of[r]].sum())
            rate = len(g) / max(len(g) + n_failed, 1)
            if n_failed and rate >= REDRAW_MIN_RATE:
                draws[r] = n_failed * min(REDRAW_FACTOR, math.ceil(1 / rate))
        if draws:
            self._draw(x, failed, good, stage, draws)

    def walk(self, x: torch.Tensor, failed: torch.Tensor, good: dict[int, list[int]],
             stage: list[str]) -> None:
        """On a Linear/LeakyReLU network, one preimage per target still without a
        verified sample by :func:`~nninvert_lib.pattern_walk.backward_walk` (the
        backward pass with every hidden vector shrunk by a walk over activation
        regions). Where it verifies, the target's samples are drawn around it by
        :func:`~nninvert_lib.pattern_walk.region_samples` (random preimages in the
        walked preimage's activation region whose rounding bound stays near its
        own; within ``walk_seconds`` again, if given, after which the samples
        not yet drawn are left to the stages after the walk); those that verify
        take the target's slots (stage ``"walk"``).
        Where it does not verify, ``walk_notes`` records why (:meth:`walk_note`)."""
        need = [r for r, g in good.items() if not g]
        if not need:
            return
        layers = pattern_walk.piecewise_layers(self.plan.steps)
        if not pattern_walk.walkable(layers):
            return
        t0 = time.perf_counter()
        first = torch.stack([self.rows_of[r][0] for r in need])
        stopped: set[int] = set()
        xw, _, exact = pattern_walk.walk_preimages(layers, self.t[first], self.dtype,
                                                   std=self.std, atol=self.atol, gen=self.gen,
                                                   progress=self.progress,
                                                   seconds=self.walk_seconds, stopped=stopped)
        xw = xw.to(x)
        ok = self.verified(xw, self.t[first]).cpu()
        self.walked += len(need)
        for k, r in enumerate(need):
            if not ok[k]:
                self.walk_notes[r] = self.walk_note(layers, xw[k], exact[k], self.t[first[k]])
                if k in stopped:
                    self.walks_stopped.append(r)
                    self.walk_notes[r] += (f"; the walk stopped at walk_seconds="
                                           f"{self.walk_seconds:g} s: more time may find "
                                           "a better preimage")
                continue
            rows = self.rows_of[r]
            z = torch.log(self.t[rows[0]].double().cpu()).numpy()
            draw = (pattern_walk.region_samples if pattern_walk.fits(layers)
                    else partial(pattern_walk.null_samples, std=self.std))
            deadline = (None if self.walk_seconds is None
                        else time.monotonic() + self.walk_seconds)
            xs, drawn = draw(layers, exact[k].numpy(), z, len(rows) - 1, self.gen,
                             dtype=self.dtype, atol=self.atol, deadline=deadline)
            if not drawn.all() and pattern_walk.past_deadline(deadline):
                self.draws_stopped.append(r)
            xs = torch.cat([xw[k:k + 1], torch.from_numpy(xs).to(x)])
            hit = torch.cat([ok[k:k + 1], torch.from_numpy(drawn)])   # the walked one verified
            hit[1:] &= self.verified(xs[1:], self.t[rows[1:]]).cpu()
            for j, xj, h in zip(rows.tolist(), xs, hit.tolist()):
                if h:
                    x[j], stage[j], failed[j] = xj, "walk", False
                    good[r].append(j)
            self.walk_verified += 1
        self.seconds_walk += time.perf_counter() - t0

    def walk_note(self, layers: list, rounded: torch.Tensor, exact: torch.Tensor,
                  t: torch.Tensor) -> str:
        """Why the walked preimage ``exact`` ``(in,)`` (float64) of the target row
        ``t`` ``(K,)`` failed: how far ``rounded`` (it, rounded to the model's
        dtype) misses, and how far ``exact`` itself misses in float64 arithmetic
        (:func:`~nninvert_lib.pattern_walk.evaluation_error`): from inputs of
        ~1e17 on, float64 no longer evaluates the network to the tolerance.
        Where float64 misses, also how far ``exact`` misses in exact arithmetic
        (:func:`~nninvert_lib.pattern_walk.exact_error`): the walk's programs,
        solved in float64, may not have held a preimage that large at all."""
        miss = float((self.rounded_probs(rounded[None])[1][0] - t).abs().max())
        exact_np = exact.cpu().numpy()
        z = torch.log(t.double().cpu()).numpy()
        in_float64 = pattern_walk.evaluation_error(layers, exact_np, z)
        note = (f"pattern walk: its best preimage (largest input entry "
                f"{float(abs(exact_np).max()):.2g}) misses by {miss:.3g} once rounded to "
                f"{str(self.dtype).removeprefix('torch.')}")
        if in_float64 <= self.atol:
            return note + (f", though in float64 it reaches the target (error "
                           f"{in_float64:.2g}): the rounding spoils it")
        note += f", and by {in_float64:.3g} in float64 arithmetic before any rounding"
        in_exact = pattern_walk.exact_error(layers, exact_np, z)
        if in_exact <= self.atol:
            return note + (f"; in exact arithmetic it reaches the target (error "
                           f"{in_exact:.2g}): an input this large is beyond what float64 "
                           "evaluates")
        return note + (f", and by {in_exact:.3g} in exact arithmetic: the walk, solving "
                       "its programs in float64, did not hold a preimage this large")

    def anchored(self, x: torch.Tensor, todo_t: torch.Tensor, anchors_t: torch.Tensor,
                 stage: list[str]) -> list[int]:
        """Anchored null-space sampling of the samples ``todo_t`` around the
        verified samples ``anchors_t`` (row by row), written into ``x``, with
        the noise halved on each retry; returns the samples still failing."""
        plan, t = self.plan, self.t
        anchor_vals = plan.forward_values(x[anchors_t])
        scale = torch.full((len(todo_t),), float(self.std), dtype=torch.float64,
                           device=plan.device)
        pending = torch.ones(len(todo_t), dtype=torch.bool, device=plan.device)
        for _ in range(self.max_retries + 1):
            p_idx = pending.nonzero().flatten()
            rows = todo_t[p_idx.cpu()]
            xa, ok, _ = _anchored_pass(plan, [v[p_idx] for v in anchor_vals], t[rows],
                                       scale[p_idx], self.std, self.gen)
            ok[ok.clone()] = self.verified(xa[ok], t[rows][ok])
            x[rows[ok.cpu()]] = xa[ok]
            self.hidden_std[rows[ok.cpu()]] = scale[p_idx[ok]].cpu()
            pending[p_idx[ok]] = False
            if not pending.any():
                break
            self.anchored_retries[todo_t[pending.cpu()]] += 1
            scale[pending] /= 2
        for j in todo_t[(~pending).cpu()].tolist():
            stage[j] = "anchored"
        return todo_t[pending.cpu()].tolist()

    def run(self, x: torch.Tensor, failed: torch.Tensor, stage: list[str],
            seeds_per_target: int) -> None:
        """Fill ``x`` (in place) for the ``failed`` samples; update ``stage``.

        Anchors of a target are its verified backward samples (a target with
        none first gets fresh backward draws, :meth:`redraw`, then on a
        Linear/LeakyReLU network a pattern walk, :meth:`walk`); when it has fewer
        than ``seeds_per_target``, failed samples are finished by LM to make up
        the number, and a seed LM cannot finish is sampled around the target's
        anchors like the rest, if it has any."""
        t = self.t
        failed = failed.clone()
        good = {r: rows[~failed[rows]].tolist() for r, rows in self.rows_of.items()}
        self.redraw(x, failed, good, stage)
        self.walk(x, failed, good, stage)
        seeds: list[int] = []
        rest: dict[int, list[int]] = {}
        for r, rows in self.rows_of.items():
            idx = rows[failed[rows]].tolist()
            k = max(0, seeds_per_target - len(good[r]))
            seeds += idx[:k]
            if idx[k:]:
                rest[r] = idx[k:]
        # 1. seeds: LM from the repaired backward sample
        if seeds:
            sel = torch.tensor(seeds, dtype=torch.long)
            x[sel], seed_ok = self.lm(x[sel], t[sel])
            missed = []
            for j, ok in zip(seeds, seed_ok.tolist()):
                stage[j] = "lm"
                if ok:
                    good[int(self.target_index[j])].append(j)
                else:
                    missed.append(j)
            for j in missed:    # anchored sampling, where the target now has anchors
                r = int(self.target_index[j])
                if good[r]:
                    rest.setdefault(r, []).append(j)
        # 2. the rest: anchored null-space sampling around the verified seeds
        todo, anchors, fallback = [], [], []
        for r, idx in rest.items():
            if not good.get(r):
                fallback += idx
                continue
            for k, j in enumerate(idx):
                todo.append(j)
                anchors.append(good[r][k % len(good[r])])
        t0 = time.perf_counter()
        for s in range(0, len(todo), ANCHORED_CHUNK):
            fallback += self.anchored(x, torch.tensor(todo[s:s + ANCHORED_CHUNK]),
                                      torch.tensor(anchors[s:s + ANCHORED_CHUNK]), stage)
        self.seconds_anchored = time.perf_counter() - t0
        # 3. whatever is left: LM from its own repaired backward sample
        if fallback:
            fb = torch.tensor(sorted(fallback), dtype=torch.long)
            x[fb], _ = self.lm(x[fb], t[fb])
            for j in fb.tolist():
                stage[j] = "lm"
        # 4. what still misses, on a Linear/LeakyReLU network: rounded entry by entry
        self.round_missed(x, stage)

    def round_missed(self, x: torch.Tensor, stage: list[str]) -> None:
        """On a Linear/LeakyReLU network, each sample that still does not verify
        (a float64 preimage, or near one, that float32 rounding spoils) is
        rounded by :func:`~nninvert_lib.pattern_walk.round_preimage`; those that
        then verify take stage ``"rounded"``. With ``walk_seconds``, the
        rounding of a target's samples gets that time too: past it, no further
        search starts and no further sample of the target is rounded (its
        row goes to ``roundings_stopped``)."""
        layers = pattern_walk.piecewise_layers(self.plan.steps)
        if layers is None:
            return
        t0 = time.perf_counter()
        missed = (~self.verified(x, self.t)).nonzero().flatten().tolist()
        deadlines: dict[int, float] = {}
        for j in missed:
            r = int(self.target_index[j])
            xj = x[j].double().cpu().numpy()
            if not np.isfinite(xj).all():
                continue
            deadline = (None if self.walk_seconds is None
                        else deadlines.setdefault(r, time.monotonic() + self.walk_seconds))
            if pattern_walk.past_deadline(deadline):
                self._rounding_stopped(r)
                continue
            z = torch.log(self.t[j].double().cpu()).numpy()
            xr, err = pattern_walk.round_preimage(layers, xj, z, self.dtype, good=self.atol / 4,
                                                  deadline=deadline)
            xr = torch.from_numpy(xr).to(x)
            if err <= 0.9 * self.atol and bool(self.verified(xr[None], self.t[j:j + 1])[0]):
                x[j], stage[j] = xr, "rounded"
            elif pattern_walk.past_deadline(deadline):
                self._rounding_stopped(r)
        self.seconds_round += time.perf_counter() - t0

    def _rounding_stopped(self, r: int) -> None:
        if r not in self.roundings_stopped:
            self.roundings_stopped.append(r)


# --------------------------------------------------------------------------- the API


def _resolve_input_shape(plan: BackPassPlan, input_shape: Sequence[int] | None) -> tuple:
    if input_shape is None:
        if plan.flatten_first and plan.in_features == 784:
            return (1, 28, 28)
        return (plan.in_features,)
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape) or math.prod(shape) != plan.in_features:
        raise InversionError(f"input_shape {tuple(input_shape)} does not hold the "
                             f"{plan.in_features} features the first linear layer takes")
    if not plan.flatten_first and shape != (plan.in_features,):
        raise InversionError(f"the model has no leading nn.Flatten, so inputs have shape "
                             f"({plan.in_features},); got input_shape {shape}")
    return shape


def back_pass_inv(model: nn.Module, target: torch.Tensor | Sequence, n_samples: int = 1,
                  std: float = 0.1, max_cond: float = 100.0, seed: int | None = None,
                  input_shape: Sequence[int] | None = None, *, strategy: str = "anchored",
                  atol: float = DEFAULT_ATOL, max_retries: int = 8, seeds_per_target: int = 4,
                  lookahead: int = 20, lookahead_range: bool = False,
                  lm_max_iter: int = 30, generator: torch.Generator | None = None,
                  plan: BackPassPlan | None = None, progress: bool = False,
                  walk_seconds: float | None = None) -> InversionResult:
    """The paper's BackPassInv: inputs whose softmax output is ``target``.

    Inverts softmax, activations and linear layers from the top down, sampling
    the null space of every linear layer (see the module docstring for the
    equations and the two strategies). Batched over samples, float64 inside.

    Args:
        model: ``nn.Sequential`` (nesting allowed) of ``nn.Flatten`` (first only),
            ``nn.Linear`` and invertible activations, with or without an
            activation after the last Linear; it returns logits. Dropout layers
            are skipped and a BatchNorm1d right after a Linear is folded into it
            (both as in eval mode, in which the model is verified).
        target: ``(K,)``: ``n_samples`` inputs for it; ``(B, K)``: ``n_samples``
            inputs for each row, row by row (``B · n_samples`` in all).
        n_samples: inputs per target row.
        std: relative size of each null-space step (the paper: 0.1).
        max_cond: pseudoinverse condition-number limit (the paper: 100).
        seed: seeds the ``torch.Generator`` behind all randomness; the same seed
            gives bit-identical inputs on the same machine and device. ``None``
            draws one (kept in ``info["seed"]``).
        input_shape: shape of one input; default ``(1, 28, 28)`` when the model
            starts with ``nn.Flatten`` and takes 784 features, else ``(in,)``.
        strategy: ``"anchored"`` (default; reaches the target on deep SELU
            networks) or ``"paper"`` (the literal algorithm).
        atol: verification tolerance on ``|softmax(model(x)) - target|``.
        max_retries: noise redraws per layer (paper) or per sample (anchored)
            before a sample is reported or handed to LM.
        seeds_per_target: ``"anchored"``: failed samples finished by LM per
            target row; the others are sampled around them.
        lookahead: ``"anchored"``: alternating projections per hidden layer
            that move the backward sample towards where a LeakyReLU below is
            well conditioned (``h >= 0``); 0: the literal pass.
        lookahead_range: ``"anchored"``: do the same for activations with a
            bounded range (SELU: ``h >= -0.8·λα``). On the trained FCNN-6 this
            makes 41% of the backward samples exact, but their norms triple and
            they make poorer anchors, so it is off by default.
        lm_max_iter: LM iterations for those seeds and for the fallback.
        generator: use this generator instead of one built from ``seed``.
        plan: a :class:`BackPassPlan` for ``model`` (default: the cached one).
        progress: show a ``tqdm.auto`` progress bar over the targets the pattern
            walk runs on (step 3; seconds to minutes each on deep LeakyReLU networks).
        walk_seconds: the time the pattern walk may spend on one target, after
            which it starts no further linear program, walk or rounding search
            (one under way finishes first, so a target can overrun it), and
            again the time the drawing of that target's other samples around a
            verified walked preimage may take (those not drawn by then go on to
            the stages after the walk), and again the time the final rounding
            of that target's samples that still miss may take (step 6; past
            it no further sample is rounded); ``None``: no limit. On a random
            LeakyReLU(0.01) network 12 layers deep a target's walks can take
            more than half an hour; a target whose walk ran out of time and
            missed says so in ``reasons`` and is listed in
            ``info["walks_stopped"]``, and one whose rounding ran out of time
            with a sample still missing likewise (``info["roundings_stopped"]``).

    Returns:
        :class:`~nninvert_lib.result.InversionResult`: ``inputs``
        ``(B·n_samples, *input_shape)`` in the model's dtype, verified by
        :func:`~nninvert_lib.result.verify`; ``info`` has ``strategy``,
        ``stage``, ``reasons``, ``paper_reasons``, ``retries``, ``target_index``
        (row of ``target`` per sample), ``layers`` (rank and κ per linear
        layer), ``seed``, ``seconds``, ``backward_redraws``, ``pattern_walks``,
        ``pattern_walks_verified``, ``walks_stopped``, ``draws_stopped`` and
        ``roundings_stopped`` (the rows of ``target`` whose walk missed after
        running out of ``walk_seconds``, those whose walk verified but whose
        other samples were not all drawn within it, and those with a sample
        still missing when the final rounding ran out of it) and counts per
        stage.

    Raises:
        InversionError: invalid target (non-finite, ``<= 0``, rows not summing
            to 1, wrong length for the model), unsupported layers (named),
            bad ``input_shape``, ``n_samples < 1``, ``std < 0``, ``max_cond < 1``,
            ``walk_seconds <= 0``,
            or an unknown ``strategy``.
    """
    t_start = time.perf_counter()
    if strategy not in STRATEGIES:
        raise InversionError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 1:
        raise InversionError(f"n_samples must be an int >= 1, got {n_samples!r}")
    if not (isinstance(std, (int, float)) and math.isfinite(std) and std >= 0):
        raise InversionError(f"std must be a finite number >= 0, got {std!r}")
    if not (isinstance(max_retries, int) and max_retries >= 0):
        raise InversionError(f"max_retries must be an int >= 0, got {max_retries!r}")
    if not (isinstance(lookahead, int) and lookahead >= 0):
        raise InversionError(f"lookahead must be an int >= 0, got {lookahead!r}")
    if not (isinstance(seeds_per_target, int) and seeds_per_target >= 1):
        raise InversionError(f"seeds_per_target must be an int >= 1, got {seeds_per_target!r}")
    if not atol > 0:
        raise InversionError(f"atol must be > 0, got {atol!r}")
    if walk_seconds is not None and not (
            isinstance(walk_seconds, (int, float)) and not isinstance(walk_seconds, bool)
            and math.isfinite(walk_seconds) and walk_seconds > 0):
        raise InversionError(f"walk_seconds must be None or a finite number of seconds > 0, "
                             f"got {walk_seconds!r}")
    if plan is None:
        plan = plan_back_pass(model, max_cond)
    elif plan.max_cond != float(max_cond):
        raise InversionError(f"the plan was built with max_cond={plan.max_cond}, "
                             f"not {max_cond}")
    shape = _resolve_input_shape(plan, input_shape)
    rows = check_target(target, num_classes=plan.num_classes)
    t = rows.repeat_interleave(n_samples, dim=0).to(plan.device)
    target_index = torch.arange(len(rows)).repeat_interleave(n_samples)
    n = len(t)
    if generator is None:
        if seed is None:
            seed = torch.Generator().seed()
        generator = torch.Generator().manual_seed(int(seed))
    gen = generator
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    hidden_std = torch.full((n,), float(std), dtype=torch.float64)
    anchored_retries = torch.zeros(n, dtype=torch.long)
    lm_restarts = redraws = walked = walk_verified = 0
    walk_notes: dict[int, str] = {}
    walks_stopped: list[int] = []
    draws_stopped: list[int] = []
    roundings_stopped: list[int] = []
    t_walk = t_round = 0.0

    x, in_range, paper_reasons, retries = _paper_pass(
        plan, t, std, gen, max_retries, lookahead=lookahead if strategy == "anchored" else 0,
        lookahead_range=lookahead_range)
    stage = ["backward"] * n
    t_paper = time.perf_counter() - t_start
    _, conv = verify(model, x.reshape(n, *shape).to(dtype), t, atol)
    lm_info: list[dict] = []
    t_lm = t_anchor = 0.0

    if strategy == "anchored" and not bool(conv.all()):
        fin = _Finisher(model, plan, t, target_index, shape, dtype, std, atol, max_retries,
                        lm_max_iter, gen, lookahead, lookahead_range, progress, walk_seconds)
        fin.run(x, ~conv.cpu(), stage, seeds_per_target)
        hidden_std, anchored_retries, lm_info = fin.hidden_std, fin.anchored_retries, fin.lm_info
        lm_restarts, redraws = fin.lm_restarts, fin.redraws
        walked, walk_verified, t_walk = fin.walked, fin.walk_verified, fin.seconds_walk
        walk_notes = fin.walk_notes
        walks_stopped, draws_stopped = fin.walks_stopped, fin.draws_stopped
        roundings_stopped = fin.roundings_stopped
        t_round = fin.seconds_round
        t_lm, t_anchor = fin.seconds_lm, fin.seconds_anchored

    inputs = x.reshape(n, *shape).to(dtype)
    probs, conv = verify(model, inputs, t, atol)
    err = (probs - t).abs().amax(dim=1).tolist()
    norms = x.norm(dim=1).tolist()
    reasons = []
    for j in range(n):
        if conv[j]:
            reasons.append("")
        elif stage[j] == "backward" and paper_reasons[j]:
            reasons.append(paper_reasons[j])
        elif stage[j] == "backward":
            reasons.append(f"the backward sample missed the target by {err[j]:.3g} > "
                           f"atol={atol:g} although every hidden vector stayed in range: "
                           "least squares at an expanding or thresholded layer, or an input "
                           f"too large (norm {norms[j]:.3g}) for the model's dtype")
        else:
            reasons.append(f"{stage[j]}: missed the target by {err[j]:.3g} > atol={atol:g} "
                           f"(backward pass: {paper_reasons[j] or 'in range'})")
        note = walk_notes.get(int(target_index[j])) if not conv[j] else None
        if note:
            reasons[j] += "; " + note
        if not conv[j] and int(target_index[j]) in roundings_stopped:
            reasons[j] += (f"; the final rounding of this target's samples stopped at "
                           f"walk_seconds={walk_seconds:g} s")
    counts = {k: sum(1 for j in range(n) if stage[j] == k and conv[j])
              for k in ("backward", "walk", "lm", "anchored", "rounded")}
    info = {
        "strategy": strategy, "seed": seed, "std": std, "max_cond": max_cond, "atol": atol,
        "stage": stage, "reasons": reasons, "paper_reasons": paper_reasons,
        "retries": retries, "anchored_retries": anchored_retries, "hidden_std": hidden_std,
        "backward_in_range": in_range.cpu(),
        "target_index": target_index, "verified_by_stage": counts,
        "layers": plan.describe(), "input_shape": shape,
        "lm_iterations": [i.get("iterations") for i in lm_info], "lm_restarts": lm_restarts,
        "backward_redraws": redraws, "pattern_walks": walked,
        "pattern_walks_verified": walk_verified, "walks_stopped": walks_stopped,
        "draws_stopped": draws_stopped, "roundings_stopped": roundings_stopped,
        "seconds_walk": t_walk,
        "seconds_round": t_round,
        "seconds_backward": t_paper, "seconds_lm": t_lm, "seconds_anchored": t_anchor,
        "seconds": time.perf_counter() - t_start,
    }
    return InversionResult(inputs=inputs, probs=probs, target=t.to(probs), converged=conv,
                           info=info)
