"""ForwardPassInv: Levenberg–Marquardt root finding on the input (paper §III-A).

Start from random inputs ``x`` (``n`` samples of ``d`` pixels) and solve
``r(x) = 0`` where ``r`` compares the model's output with the target
distribution ``p`` (``K`` classes). With ``K << d`` the system is
underdetermined, so the step is the *minimum-norm* Levenberg–Marquardt step

    δ = -Jᵀ (J Jᵀ + μ I)⁻¹ r,            J = ∂r/∂x  (m × d, m ≈ K)

which equals ``-(JᵀJ + μI)⁻¹ Jᵀ r`` but needs only an ``m × m`` solve per
sample. ``μ`` adapts per sample by the gain ratio ``ρ`` of actual to predicted
reduction of ``½‖r‖²`` (Nocedal & Wright, *Numerical Optimization*, §10.3;
update rule of Madsen, Nielsen & Tingleff, *Methods for non-linear least
squares problems*, 2004): a step is accepted when ``ρ > 0`` and then
``μ ← μ·max(1/3, 1-(2ρ-1)³)``; otherwise ``μ ← μν``, ``ν ← 2ν``.

The Jacobian comes from one forward pass with :func:`torch.func.vjp` and ``m``
vector–Jacobian products batched by :func:`torch.func.vmap`. When the trial
point of an iteration is accepted, its forward pass is reused for the next
Jacobian, so one iteration costs one forward pass, one ``m``-row batched VJP
and a few ``m × m`` solves. ``JJᵀ`` is kept while ``J`` is (chord steps and
rejected steps reuse it), and the predicted reduction needs no product with
``J``: ``r + Jδ = μ(JJᵀ + μI)⁻¹r``.

**Row space of the first layer.** For a model that starts with
``nn.Linear(d → o)``, ``o < d`` (an FCNN), the output depends on ``x`` only
through ``V x``, where the ``o`` orthonormal rows of ``V`` span the layer's row
space (a QR of ``W₁ᵀ``). Then ``J = J_w V``, ``JJᵀ = J_w J_wᵀ`` and the
minimum-norm step is ``δx = Vᵀδw``: LM runs on ``w = V x`` with an
``o``-column Jacobian and the same iterates (``row_space=True``, the default;
the part of the start outside the row space is kept). On FCNN-6 (512 < 784)
this makes an image about 15% cheaper.

**Which residual.** The softmax is invariant to adding a constant to all
logits, so three residuals share the same roots:

* ``"logit"`` (default): ``r = Qᵀ(z - log p)``, where the ``K × (K-1)``
  orthonormal ``Q`` spans the vectors orthogonal to ``1``; the free constant
  is projected out and the softmax's nonlinearity is gone from ``r``.
* ``"prob"``: ``r = softmax(z) - p``; its Jacobian vanishes where the softmax
  saturates (a random start is often 99.9% one class).
* ``"logprob"``: ``r = log softmax(z) - log p``; a class at 1% weighs as much
  as the class at 90%, and the free constant stays in ``r``.
* ``"wlogit"``: ``r = (diag(p) - ppᵀ)(z - log p)``, the probability residual
  linearised at the target: weighted like ``"prob"`` but without saturation.

Measured on the trained FCNN-6 (``paper`` profile, 97.1% validation
accuracy), target ``target_distribution(c, 0.9)`` for c = 0..9, 20 random
starts each (seed 0), at most 30 iterations, float64, no restarts, verified
with ``atol=1e-3`` (2-core CPU, one thread)::

    forward_pass_inv(model, target_distribution(range(10), 0.9), n_samples=20,
                     seed=0, restarts=0, dtype=torch.float64, chord=0, residual=...)

=========  ===========  ================  =============
residual   verified     mean iterations   solver time
=========  ===========  ================  =============
logit      200 / 200    16.2              1.2 s
prob         0 / 200    25.7 (stalled)    1.7 s
logprob    200 / 200    16.7              1.2 s
wlogit     141 / 200    25.0              1.7 s
=========  ===========  ================  =============

(The same counts and iterations with ``row_space=False``, at 1.4, 2.2, 1.6 and
2.1 s.)

``"prob"`` stalls where the softmax saturates; ``"wlogit"`` under-weights the
nine small classes, whose relative tolerance (``1e-3 / 0.011``) is what the
verification actually tests; ``"logit"`` and ``"logprob"`` tie and ``"logit"``
has one equation fewer (``K-1`` VJP rows instead of ``K``): it is the default.
With ``chord=2`` (two more steps per Jacobian) the same run needs 12.8
Jacobians on average instead of 16.2 (0.8 s instead of 1.2 s).

**Broyden's update** (``broyden=True``; off by default). A chord step reuses a
Jacobian computed before the step just taken. With ``broyden=True`` the reused
``J`` is corrected after every accepted step ``s`` by Broyden's rank-one update
``J ← J + (Δr − J s) sᵀ / (sᵀ s)``, the smallest change of ``J`` (Frobenius)
that maps ``s`` to the change ``Δr`` of the residual it caused: a few
``m × d`` products, no forward pass or VJP. Measured by
``python benchmarks/lm_variants.py --repeats 5`` (``quick`` models, 10 classes
× 2 samples, one thread; ``benchmarks/results/2026-12-06-vm-lm-variants.md``),
every image verified in every setting:

===========================  ========================  ==========================
ViT-tiny, p = 0.9            Jacobians per image       s per verified image
===========================  ========================  ==========================
``chord=2`` (default)        4.05                      0.155
``chord=2, broyden=True``    3.60                      0.143
``chord=5``                  3.55                      0.159
``chord=5, broyden=True``    2.95                      0.138
===========================  ========================  ==========================

On the model-produced targets ``chord=2, broyden=True`` takes 5.0 Jacobians
instead of 6.0 and 0.194 instead of 0.225 s. On DINOv3-Base, where a Jacobian
costs about 0.49 s per image, it takes 1.7 instead of 2.4 Jacobians and 1.16
instead of 1.49 s per verified image (model-produced targets, 10 × 1, 3
repeats: ``--models dinov3_base --n 1 --kinds model-produced``,
``…-lm-variants-dinov3_base.md``). On FCNN-6, where a Jacobian costs little
more than a forward pass, it saves Jacobians (8.35 → 7.2; 5.5 with
``chord=5``) but no time. In the generalized method on ViT-tiny (32-row
Jacobians; ``--models vit_tiny --method generalized``,
``…-lm-variants-vit_tiny-generalized.md``) ``chord=2, broyden=True`` takes 7.1
instead of 9.0 Jacobians per image (p = 0.9) and 7.45 instead of 11.1
(model-produced), 0.79 instead of 0.95 s and 0.87 instead of 1.19 s per
verified image. Every image verified in every setting measured. It is still
off by default: the numbers quoted for the defaults (here, in
:mod:`~nninvert_lib.generalized`, in the book's benchmark pages) were measured
without it, and it is not yet measured on a GPU.

**Low-precision Jacobians** (``jacobian_dtype=torch.bfloat16``; off by
default). A step needs a good direction, not an exact Jacobian: with
``jacobian_dtype`` every Jacobian is computed under :func:`torch.autocast` to
that dtype (its matrix products in bfloat16), while the residuals, the steps,
the gain ratio and the stopping test stay in float32, so ``converged`` means
what it always does. On ViT-tiny the Jacobian is then off by ~0.5% (relative)
and LM takes as many iterations and Jacobians as in float32. Measured by
``python benchmarks/lm_variants.py --models vit_tiny --jacobian-dtype bfloat16
--repeats 5`` (this CPU multiplies in bfloat16: AVX-512 BF16;
``…-lm-variants-vit_tiny-bfloat16.md``), every image verified in every setting:

=======================================  ===================  ==================
ViT-tiny, s per verified image           p = 0.9              model-produced
=======================================  ===================  ==================
``chord=2`` (default)                    0.168                0.245
``broyden=True``                         0.150                0.216
``jacobian_dtype=torch.bfloat16``        0.123                0.178
both                                     0.112 (5.1× SciPy)   0.160 (4.2×)
=======================================  ===================  ==================

One Jacobian costs 18.0 instead of 30.5 ms per image (batch 20), which raises
the ceiling of the ratio to SciPy (one Jacobian per image and nothing else)
from about 20× to about 35×. On DINOv3-Base (``--models dinov3_base --n 1
--repeats 3 --kinds model-produced --jacobian-dtype bfloat16``) a Jacobian
costs 242 instead of 460 ms per image, and the time per verified image falls
from 1.46 s (default) to 0.975 s, and to 0.769 s with ``broyden=True`` too
(7.9× SciPy instead of 4.0×). In the generalized method on ViT-tiny
(``--models vit_tiny --method generalized --jacobian-dtype bfloat16``) the two
together take 0.54 instead of 0.96 s per verified image (p = 0.9) and 0.56
instead of 1.17 s (model-produced). On FCNN-6, whose Jacobian costs little more
than a forward pass, it gains nothing: 6.6 instead of 5.6 ms per verified
image on p = 0.9, 3.4 instead of 3.7 ms on model-produced targets
(``--models fcnn6 --jacobian-dtype bfloat16 --repeats 5``).
It stays off by default: on hardware without bfloat16 arithmetic autocast
emulates it and can be slower, and float64 work is left alone by autocast (so
the option is refused there).

**Damping.** From a random start the first two or three steps on FCNN-6 are
rejected (``μ₀ = 10⁻³ · max diag(JJᵀ)`` is too small there); a rejected step
costs a forward pass, not a Jacobian. Measured alternatives (same run,
float32, defaults otherwise): ``tau=0.1`` takes 10.1 iterations instead of
12.8 on FCNN-6 (about 15% less time) but verifies 14 instead of 26 of 100
``0.9`` targets on the ``quick`` ViT-tiny, so ``tau`` stays ``1e-3``; choosing
``μ₀`` per sample from ``τ ∈ {10⁻³, 10⁻², 10⁻¹, 1}`` by a trial forward pass
each saves the same iterations on FCNN-6 and its extra forward passes eat the
gain; taking at every step the best of a grid of ``μ`` (4–9 values), or
decreasing ``μ`` faster than the rule above (÷3, ÷10, ÷100 after a good
step), or adding geodesic acceleration (Transtrum & Sethna, 2012) all need
*more* Jacobians (13.6–23 per image). The iteration count is set by the
path from a random start, not by the damping rule.

On the ``quick`` ViT-tiny (patch 7, every training digit once at batch 64,
93.4% validation accuracy) the defaults verify 200 / 200 of the same targets
within 30 iterations (10 × 20, seed 0, float32, 28 s on two CPU threads, all
distinct; ``benchmarks/vit_budget.py --quick``). An earlier ``quick`` recipe (750 steps
of batch 32 on 24,000 digits, 84% validation accuracy) left that target
mostly out of reach: 47 / 200 verified within 30 iterations with the
defaults (float32, ``chord=2``; classes 1, 5, 6 and 9 only; 25 / 200 with
``chord=0``), the failures stalling with the target class
at 0.86–0.88 and the residual along the direction the network moves least
(smallest singular value of ``J`` ~1e-3 of the largest); SciPy's ``trf`` and
Adam (1,500 steps) stall at the same level, and
:func:`~nninvert_lib.generalized.head_reachability` proves class 8
unreachable through the LayerNorm before the head. It is the target's shape
that is out of reach, not its top probability: Adam on ``log p_c`` alone
(600 steps, 6 random starts per class) drives ``p_c`` above 0.9 for every
class (0.92–0.99), class 8 included, with the other nine classes unequal.
Nor is it the iteration budget: with ``max_iter=200`` and no restarts (10 × 2,
seed 0), 8 / 20 verify (classes 1, 5, 6, 9; 6 / 20 at 30 iterations) and the
other 12 stall at errors of 0.015–0.098 (median 0.026).
Targets this model does
produce (its softmax on its most confident digit of each class) are reached
from random starts: 10 / 10, 6–26 iterations. The same architecture trained
9,000 steps on all digits (95.8%, ``benchmarks/vit_budget.py`` on a GPU)
verifies 186 / 200 of the 0.9 targets with the defaults (180 / 200 with
``chord=0``): the weak head stopped that model more than the solver did.

Where LM starts matters too. That recipe is not bit-reproducible
across CPUs: trained on another machine it gave 84.8% and a model on which the
defaults verify 26 / 200 (classes 0, 1 and 5), class 8 passing the sphere test.
Started after 200 Adam steps that turn the class token towards the direction
the target needs (``warm_start=200``, :mod:`~nninvert_lib.alignment`), LM
verifies 72 / 200 on it (classes 0, 1, 4, 5, 6), at 2.4 s instead of 3.5 s per
verified image (two threads). The same ascent, from 8 starts of 300 steps,
finds no image aligned enough for classes 3 and 7
(:func:`~nninvert_lib.alignment.backbone_alignment`: 0.85 and 0.82 reached,
0.91 and 0.88 needed); for classes 2, 8 and 9 neither test decides.

Convergence is always judged in probability space: a sample stops when
``max |softmax(z) - p| <= tol`` (default ``atol / 2``, a margin for the cast to
the model's dtype), and the result's ``converged`` comes from
:func:`~nninvert_lib.result.verify` on the caller's model.

**Models.** Any differentiable ``nn.Module`` returning logits, on CPU or CUDA.
The inversion runs on a deep copy in eval mode, in the model's dtype by
default, with
``fused_attn = False`` on every module that has that attribute (timm's fused
attention has no ``vmap`` batching rule), and its ``nn.SELU``/``nn.ELU`` modules
replaced by :class:`~nninvert_lib.modelcopy.FastELU` (one ``exp`` per value and
derivative where torch's CPU kernel spends ten times that on ``expm1``; counted
in ``info["fast_activations"]``); the caller's model is never touched.
Models that ``vmap`` cannot batch fall back to ``m`` separate backward passes
(``jacobian="auto"``).

**Reference path.** ``method="scipy"`` solves each sample with
:func:`scipy.optimize.least_squares` (``method="trf"``, exact trust-region
solver, the same residual and a torch Jacobian), stopping on the same
probability-space criterion. MINPACK's ``method="lm"`` refuses ``m < n``; it
could be used by padding the residual with ``d - m`` zeros, at the price of a
``d × d`` problem per iteration.
"""
from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from .errors import InversionError
from .modelcopy import (DROPOUTS, flatten_sequential, inversion_copy, model_dtype_device,
                        with_fast_activations)
from .result import (DEFAULT_ATOL, InversionResult, call_model, check_logits, check_target,
                     verify)

RESIDUALS: tuple[str, ...] = ("logit", "prob", "logprob", "wlogit")
METHODS: tuple[str, ...] = ("lm", "scipy")
JACOBIANS: tuple[str, ...] = ("auto", "vmap", "loop")
#: ``jacobian_dtype`` values: the working dtype (None) or an autocast dtype
JACOBIAN_DTYPES: tuple = (None, torch.bfloat16, torch.float16)
#: restarts per stalled sample in :func:`forward_pass_inv` (within the same max_iter budget)
DEFAULT_RESTARTS = 2
#: extra steps per Jacobian by default (the modified LM of Fan, 2012; see :class:`LMOptions`).
#: Measured (one CPU thread, 10 classes, target 0.9, seed 0): FCNN-6 12.8 instead of 16.2
#: Jacobians per image, 3.2 instead of 4.1 ms per verified image (float32, 200/200 either
#: way); quick ViT-tiny 6/20 verified instead of 3/20, 2.5 instead of 7.0 s per verified image.
DEFAULT_CHORD = 2

__all__ = ["RESIDUALS", "forward_pass_inv", "levenberg_marquardt", "inversion_copy",
           "lm_solve", "LMOptions"]


# --------------------------------------------------------------------------- model


# --------------------------------------------------------------------------- residuals


def _orthogonal_complement_of_ones(k: int, dtype: torch.dtype,
                                   device: torch.device) -> torch.Tensor:
    """``(k, k-1)`` orthonormal basis of the vectors whose entries sum to zero."""
    a = torch.eye(k, dtype=torch.float64)
    a[:, 0] = 1.0
    q, _ = torch.linalg.qr(a)
    return q[:, 1:].to(dtype=dtype, device=device)


class Residual(Protocol):
    """What :func:`lm_solve` asks of a residual (:class:`ProbabilityResidual`, the
    generalized method's embedding residual)."""

    def __call__(self, z: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(r (b, m), G = ∂r/∂z (b, m, K))`` for outputs ``z`` ``(b, K)`` of the
        samples ``idx`` ``(b,)``."""

    def error(self, z: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``(b,)``: the stopping measure (largest probability error)."""


class ProbabilityResidual:
    """Residuals comparing logits ``z`` with target probabilities ``p``.

    Calling it with ``(z, idx)`` (``z``: ``(b, K)``, ``idx``: rows of the target)
    returns ``(r, G)``: the residual ``(b, m)`` and ``G = ∂r/∂z`` ``(b, m, K)``,
    so that ``J = G · ∂z/∂x`` is obtained by VJPs with the rows of ``G``.
    """

    def __init__(self, kind: str, target: torch.Tensor):
        if kind not in RESIDUALS:
            raise InversionError(f"residual must be one of {RESIDUALS}, got {kind!r}")
        self.kind = kind
        self.target = target
        self.log_target = target.log()
        k = target.shape[1]
        self.q = _orthogonal_complement_of_ones(k, target.dtype, target.device)
        self.m = k - 1 if kind == "logit" else k
        # softmax Jacobian at the target: diag(p) - p pᵀ, (n, K, K)
        self.s_target = torch.diag_embed(target) - target[:, :, None] * target[:, None, :]

    def __call__(self, z: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, k = z.shape
        if self.kind == "logit":
            r = (z - self.log_target[idx]) @ self.q
            g = self.q.mT.expand(b, k - 1, k)
        elif self.kind == "wlogit":
            st = self.s_target[idx]
            r = (st @ (z - self.log_target[idx])[:, :, None])[:, :, 0]
            g = st
        elif self.kind == "prob":
            s = torch.softmax(z, dim=1)
            r = s - self.target[idx]
            g = torch.diag_embed(s) - s[:, :, None] * s[:, None, :]
        else:
            s = torch.softmax(z, dim=1)
            r = torch.log_softmax(z, dim=1) - self.log_target[idx]
            g = torch.eye(k, dtype=z.dtype, device=z.device) - s[:, None, :]
        return r, g

    def error(self, z: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``(b,)`` largest ``|softmax(z) - p|`` (the stopping criterion)."""
        err = (torch.softmax(z, dim=1) - self.target[idx]).abs().amax(dim=1)
        return torch.where(torch.isfinite(err), err, torch.full_like(err, math.inf))


# --------------------------------------------------------------------------- Jacobians


class _Evaluator:
    """Forward passes that keep what the next Jacobian needs, and the Jacobian rows.

    ``fn`` maps ``(b, d)`` to ``(b, K)`` with samples independent of each other.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], mode: str,
                 chunk_size: int | None, jacobian_dtype: torch.dtype | None = None):
        self.fn = fn
        self.mode = mode
        self.chunk_size = chunk_size
        self.jacobian_dtype = jacobian_dtype
        self.n_forward = 0
        self.n_vjp = 0          # batched VJPs (each of m rows)
        self.fallback: str | None = None

    def __call__(self, x: torch.Tensor):
        """Forward pass; returns ``(z, handle)`` for :meth:`rows`. With a
        ``jacobian_dtype``, ``z`` comes from a forward pass of its own in the
        working dtype and the handle from :meth:`handle` (two forward passes)."""
        if self.jacobian_dtype is not None:
            return self.value(x), self.handle(x)
        return self._forward(x)

    def handle(self, x: torch.Tensor):
        """The forward pass that keeps what :meth:`rows` needs, its output unused;
        under autocast to ``jacobian_dtype`` when one is set."""
        if self.jacobian_dtype is None:
            return self._forward(x)[1]
        with torch.autocast(x.device.type, dtype=self.jacobian_dtype):
            return self._forward(x)[1]

    def _forward(self, x: torch.Tensor):
        self.n_forward += 1
        if self.mode == "loop":
            xg = x.detach().requires_grad_(True)
            with torch.enable_grad():
                z = self.fn(xg)
            return z.detach(), (xg, z)
        z, vjp_fn = torch.func.vjp(self.fn, x)
        return z, vjp_fn

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """Forward pass without anything kept for derivatives."""
        self.n_forward += 1
        with torch.no_grad():
            return self.fn(x)

    def rows(self, handle, g: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """``J = G ∂z/∂x``: ``(b, m, d)`` from cotangents ``g`` ``(b, m, K)``, in
        ``g``'s dtype (computed under autocast when ``jacobian_dtype`` is set)."""
        if self.jacobian_dtype is None:
            return self._rows(handle, g, x)
        with torch.autocast(g.device.type, dtype=self.jacobian_dtype):
            return self._rows(handle, g, x).to(g.dtype)

    def _rows(self, handle, g: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        self.n_vjp += 1
        if self.mode == "loop":
            xg, z = handle
            out = []
            for j in range(g.shape[1]):
                (row,) = torch.autograd.grad(z, xg, g[:, j].to(z.dtype),
                                             retain_graph=j < g.shape[1] - 1)
                out.append(row)
            return torch.stack(out, dim=1)
        try:
            (jac,) = torch.func.vmap(handle, in_dims=1, out_dims=1,
                                     chunk_size=self.chunk_size)(g.contiguous())
            return jac
        except (RuntimeError, NotImplementedError) as exc:
            if self.mode != "auto" or x is None:
                raise
            self.mode = "loop"
            self.fallback = f"{exc.__class__.__name__}: {str(exc)[:200]}"
            self.n_forward -= 1
            self.n_vjp -= 1
            return self._rows(self.handle(x), g)


# --------------------------------------------------------------------------- LM core


@dataclass
class LMOptions:
    """Settings of the Levenberg–Marquardt iteration (all recorded in ``info``).

    Attributes:
        max_iter: LM steps per sample, restarts included.
        tol: stop a sample when its error (``residual.error``) is ``<= tol``.
        tau: initial damping ``μ₀ = τ · max diag(JJᵀ)``.
        max_step: largest change of any input entry in one step (ℓ∞); longer
            steps are scaled down (same direction). None: unbounded.
        bounds: ``(lo, hi)``: inputs are kept in the box. Entries at a bound
            whose step points outwards are frozen for that step (their Jacobian
            columns are zeroed and the step recomputed), then the step is
            clipped to the box. None: unbounded.
        restarts: how many times a stalled sample may start again from a new
            random input (drawn like the first one).
        chord: extra steps per iteration that reuse the iteration's Jacobian
            (each costs one forward pass, no VJP): the modified LM method of
            Fan (2012). 0: plain LM.
        broyden: correct the reused Jacobian after every accepted step ``s``
            (the iteration's own and each chord step) by Broyden's rank-one
            update ``J ← J + (Δr − J s) sᵀ / (sᵀ s)``, so that the chord steps
            use a Jacobian that maps the last step to the change of the
            residual it caused. The update evaluates no model (the chord steps
            still cost a forward pass each); the next iteration starts from a
            freshly computed Jacobian.
        jacobian_dtype: ``torch.bfloat16`` or ``torch.float16``: compute every
            Jacobian under :func:`torch.autocast` to that dtype (matrix
            products in low precision), while the residuals, the steps and the
            stopping test stay in the working dtype, which must be float32
            (autocast leaves float64 alone). The Jacobian is then off by ~0.5%
            (relative; ViT-tiny), as a reused one is anyway. Only worth it
            where the hardware multiplies in that dtype (a CPU with AVX-512
            BF16 or AMX, a GPU); elsewhere it can be slower. None (default): the
            working dtype.
        patience: a sample has stalled after this many rejected steps in a row,
            or when ``‖r‖`` fell by less than ``min_progress`` (relative) over its
            last ``patience`` steps.
        min_progress: see ``patience``.
        history: keep per-iteration ``‖r‖`` and error histories.
        record_inputs: also keep the input after every step (``input_history``,
            float64 ``(n, max_iter + 1, d)`` on the CPU: memory grows as
            ``n · max_iter · d``), for figures that step through the iteration.
        progress: show a ``tqdm.auto`` progress bar.
    """

    max_iter: int = 30
    tol: float = DEFAULT_ATOL / 2
    tau: float = 1e-3
    max_step: float | None = None
    bounds: tuple[float, float] | None = None
    restarts: int = 0
    chord: int = 0
    broyden: bool = False
    jacobian_dtype: torch.dtype | None = None
    patience: int = 8
    min_progress: float = 0.01
    history: bool = True
    record_inputs: bool = False
    progress: bool = False


def _lm_step(jac: torch.Tensor, r: torch.Tensor, mu: torch.Tensor, x: torch.Tensor,
             opts: LMOptions, gram: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Minimum-norm damped step ``-Jᵀ(JJᵀ + μI)⁻¹ r``, bounded and kept in the box.

    ``gram`` is ``JJᵀ`` ``(b, m, m)`` when known (it is reused while ``J`` is).
    Returns ``(s, lin, ok)``: the step ``(b, d)`` (zero rows where the solve
    failed), the linearised residual ``r + J s`` ``(b, m)``, which for the plain
    step is ``μ (JJᵀ + μI)⁻¹ r`` (no product with ``J`` needed), and the bool
    ``(b,)`` of rows whose solve succeeded with a finite step."""

    def solve(j: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a = a + torch.diag_embed(mu[:, None].expand(-1, a.shape[-1]))
        y, info = torch.linalg.solve_ex(a, r[:, :, None])
        s = -(y.mT @ j)[:, 0, :]              # yᵀJ: a batched gemv over J's rows
        ok = (info == 0) & torch.isfinite(s).all(dim=1)
        if not bool(ok.all()):
            s = torch.where(ok[:, None], s, torch.zeros_like(s))
        return s, y[:, :, 0], ok

    s, y, ok = solve(jac, jac @ jac.mT if gram is None else gram)
    plain = opts.bounds is None and opts.max_step is None
    if opts.bounds is not None:
        lo, hi = opts.bounds
        blocked = ((x <= lo) & (s < 0)) | ((x >= hi) & (s > 0))
        if blocked.any():
            jb = jac * (~blocked)[:, None, :].to(jac.dtype)
            s, y, ok = solve(jb, jb @ jb.mT)
    if opts.max_step is not None:
        size = s.abs().amax(dim=1, keepdim=True)
        s = s * torch.clamp(opts.max_step / size, max=1.0)
    if opts.bounds is not None:
        s = torch.clamp(x + s, *opts.bounds) - x
    lin = mu[:, None] * y if plain else r + (jac @ s[:, :, None])[:, :, 0]
    return s, lin, ok


def _broyden(jac: torch.Tensor, gram: torch.Tensor, rows: torch.Tensor, s: torch.Tensor,
             dr: torch.Tensor) -> None:
    """Broyden's rank-one update of ``jac[rows]`` ``(b, m, d)`` in place, after the
    step ``s`` ``(b, d)`` changed the residual by ``dr`` ``(b, m)``:
    ``J ← J + (Δr − J s) sᵀ / (sᵀ s)``, the smallest change (Frobenius) of ``J``
    that maps ``s`` to ``Δr``; ``gram[rows]`` becomes the new ``JJᵀ``."""
    j = jac.index_select(0, rows)
    ss = (s * s).sum(dim=1)
    if not bool((ss > 0).any()):
        return
    # a zero step leaves its row as it is: u s^T = 0 (u kept finite by dividing by 1)
    u = (dr - (j @ s[:, :, None])[:, :, 0]) / torch.where(ss > 0, ss, torch.ones_like(ss))[:, None]
    j = j + u[:, :, None] * s[:, None, :]
    jac[rows] = j
    gram[rows] = j @ j.mT


def _chord_steps(ev, residual, opts: LMOptions, idx, need, jac, gram, x, z, r, cost, err, mu):
    """Up to ``opts.chord`` more steps for ``idx[need]`` with the Jacobian ``jac``
    (``(len(idx), m, d)``, computed before the step just accepted; ``gram`` its
    ``JJᵀ``), in place.

    The step of the modified LM method (Fan, *Math. Comp.* 81, 2012) repeated:
    ``δ = -Jᵀ(JJᵀ + μI)⁻¹ r(y)`` at the new point ``y`` with the old ``J``. A
    step is kept when it lowers ``‖r‖``; the first that does not ends the
    sample's chord steps. Returns the bool ``(len(idx),)`` of samples that met
    the tolerance.
    """
    done = torch.zeros(len(idx), dtype=torch.bool, device=idx.device)
    going = need.clone()
    for _ in range(opts.chord):
        if not bool(going.any()):
            break
        sub = idx[going]
        pos = torch.nonzero(going).flatten()
        x_sub = x.index_select(0, sub)
        s, _, ok = _lm_step(jac.index_select(0, pos), r[sub], mu[sub], x_sub, opts,
                            gram.index_select(0, pos))
        x_try = x_sub + s
        z_try = ev.value(x_try)
        r_try, _ = residual(z_try, sub)
        c_try = 0.5 * (r_try ** 2).sum(dim=1)
        better = ok & torch.isfinite(c_try) & (c_try < cost[sub])
        keep = sub[better]
        if opts.broyden and bool(better.any()):
            _broyden(jac, gram, pos[better], s[better], r_try[better] - r[keep])
        x[keep], z[keep], r[keep], cost[keep] = x_try[better], z_try[better], \
            r_try[better], c_try[better]
        e_try = residual.error(z_try, sub)
        err[keep] = e_try[better]
        hit = better & (e_try <= opts.tol)
        done[pos[hit]] = True
        still = torch.zeros_like(going)
        still[pos[better & ~hit]] = True
        going = still
    return done


def lm_solve(fn: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, residual: Residual,
             opts: LMOptions, draw: Callable[[int], torch.Tensor] | None = None,
             jacobian: str = "auto", chunk_size: int | None = None,
             desc: str = "LM", subspace: torch.Tensor | None = None) -> dict:
    """Batched Levenberg–Marquardt for ``residual(fn(x)) = 0`` (the engine under
    :func:`levenberg_marquardt`; also used by the generalized method).

    Args:
        fn: maps ``(b, d)`` to outputs ``(b, K)``; samples must not interact.
        x0: ``(n, d)`` starting points, in the working dtype and device.
        residual: callable ``(z, idx) -> (r (b, m), G (b, m, K))`` with an
            ``error(z, idx) -> (b,)`` method (the stopping measure).
        opts: :class:`LMOptions`.
        draw: ``k -> (k, d)`` fresh random starts for restarts.
        jacobian: ``"vmap"`` (batched VJPs), ``"loop"`` (one backward pass per
            row) or ``"auto"`` (vmap, falling back to loop).
        chunk_size: rows per vmap chunk (memory); None: all at once.
        subspace: ``(r, d)`` orthonormal rows ``V``: LM runs on the coordinates
            ``w = V x`` ``(n, r)`` and ``fn`` takes ``w``; the rest of the input,
            ``x - Vᵀ w``, stays where it started (or restarted), and the
            returned ``x`` is the full input. When ``fn(x)`` depends on ``x``
            through ``V x`` only, this is the same iteration as on ``x`` (see
            :func:`levenberg_marquardt`) with an ``r``-column Jacobian.

    Returns:
        dict with ``x`` ``(n, d)``, ``z`` ``(n, K)``, ``error`` ``(n,)``,
        ``iterations``, ``restarts``, ``jacobians`` (Jacobians computed per
        sample, the start's included), ``reasons`` (list of str), ``mu`` and the
        histories (``(n, max_iter + 1)``, NaN after a sample stopped).
    """
    ev = _Evaluator(fn, jacobian, chunk_size, opts.jacobian_dtype)
    n = x0.shape[0]
    dev, dt = x0.device, x0.dtype
    every = torch.arange(n, device=dev)
    x_start = w_start = None
    if subspace is not None:     # x = x_start + Vᵀ(w - w_start): exact while w is unmoved
        x_start, w_start = x0.clone(), x0 @ subspace.mT
        x = w_start.clone()
    else:
        x = x0.clone()

    def full(rows: torch.Tensor) -> torch.Tensor:
        """The inputs ``(b, d)`` of samples ``rows``."""
        if x_start is None:
            return x[rows]
        return x_start[rows] + (x[rows] - w_start[rows]) @ subspace

    z, handle = ev(x)
    r, g = residual(z, every)
    jac = ev.rows(handle, g, x)
    del handle
    gram = jac @ jac.mT                                   # JJᵀ, reused while J is
    scale = torch.clamp(gram.diagonal(dim1=1, dim2=2).amax(dim=1), min=1e-30)  # max diag
    cost = 0.5 * (r ** 2).sum(dim=1)
    err = residual.error(z, every)

    n_jac = torch.ones(n, dtype=torch.long, device=dev)    # Jacobians computed per sample

    def set_jacobian(rows: torch.Tensor, j: torch.Tensor) -> None:
        n_jac[rows] += 1
        jac[rows] = j
        gram[rows] = a = j @ j.mT
        scale[rows] = torch.clamp(a.diagonal(dim1=1, dim2=2).amax(dim=1), min=1e-30)

    mu = opts.tau * scale
    nu = torch.full((n,), 2.0, dtype=dt, device=dev)
    iters = torch.zeros(n, dtype=torch.long, device=dev)
    restarts = torch.zeros(n, dtype=torch.long, device=dev)
    rejected = torch.zeros(n, dtype=torch.long, device=dev)
    since = torch.zeros(n, dtype=torch.long, device=dev)   # steps since the last (re)start
    # ‖r‖ of the last patience + 1 steps (a ring buffer), for the progress test
    window = torch.full((n, opts.patience + 1), math.inf, dtype=dt, device=dev)
    window[:, 0] = r.norm(dim=1)
    reasons = [""] * n
    hist_r = torch.full((n, opts.max_iter + 1), math.nan, dtype=torch.float64)
    hist_e = torch.full((n, opts.max_iter + 1), math.nan, dtype=torch.float64)
    hist_mu = torch.full((n, opts.max_iter + 1), math.nan, dtype=torch.float64)
    hist_rho = torch.full((n, opts.max_iter + 1), math.nan, dtype=torch.float64)
    if opts.history:
        hist_r[:, 0] = r.norm(dim=1).double().cpu()
        hist_mu[:, 0] = mu.double().cpu()
        hist_e[:, 0] = err.double().cpu()
    hist_x = None
    if opts.record_inputs:
        hist_x = torch.full((n, opts.max_iter + 1, x0.shape[1]), math.nan, dtype=torch.float64)
        hist_x[:, 0] = x0.double().cpu()

    finite0 = torch.isfinite(cost) & torch.isfinite(jac).flatten(1).all(dim=1)
    active = ~(err <= opts.tol) & finite0
    for i in torch.nonzero(err <= opts.tol).flatten().tolist():
        reasons[i] = "converged"
    for i in torch.nonzero(~finite0 & ~(err <= opts.tol)).flatten().tolist():
        reasons[i] = "non-finite output or Jacobian at the starting point"
    if opts.max_iter == 0:
        for i in torch.nonzero(active).flatten().tolist():
            reasons[i] = "max_iter reached"
        active[:] = False

    bar = None
    if opts.progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=opts.max_iter, desc=desc, unit="it")
    it = 0
    while bool(active.any()):
        idx = torch.nonzero(active).flatten()
        # index_select: a gather along dim 0, several times faster than x[idx] on CPU
        xi, ri, ji, gi, mui = (t.index_select(0, idx) for t in (x, r, jac, gram, mu))
        s, lin, ok_step = _lm_step(ji, ri, mui, xi, opts, gi)
        x_new = xi + s
        pred = cost[idx] - 0.5 * (lin ** 2).sum(dim=1)
        if opts.chord:
            z_new, handle = ev.value(x_new), None
        else:
            z_new, handle = ev(x_new)
        r_new, g_new = residual(z_new, idx)
        cost_new = 0.5 * (r_new ** 2).sum(dim=1)
        rho = (cost[idx] - cost_new) / pred
        good = ok_step & torch.isfinite(cost_new) & (pred > 0) & torch.isfinite(rho)
        acc = good & (rho > 0)
        rho_seen = torch.where(good, rho, torch.full_like(rho, -math.inf))
        rho = torch.where(acc, rho, torch.zeros_like(rho))
        factor = torch.clamp(1 - (2 * rho - 1) ** 3, min=1 / 3)
        mu_new = torch.where(acc, mui * factor, mui * nu[idx])
        mu[idx] = torch.clamp(mu_new, min=1e-12 * scale[idx])
        nu[idx] = torch.where(acc, torch.full_like(mui, 2.0), nu[idx] * 2)
        rejected[idx] = torch.where(acc, torch.zeros_like(idx), rejected[idx] + 1)
        iters[idx] += 1
        since[idx] += 1

        ia = idx[acc]
        x[ia], z[ia], r[ia], cost[ia] = x_new[acc], z_new[acc], r_new[acc], cost_new[acc]
        err_new = residual.error(z_new, idx)
        err[ia] = err_new[acc]
        done = acc & (err_new <= opts.tol)
        out_of_budget = iters[idx] >= opts.max_iter
        need = acc & ~done & ~out_of_budget
        if opts.chord and bool(need.any()):
            # extra steps with the same Jacobian: a forward pass each, no new VJP
            if opts.broyden:
                pn = torch.nonzero(need).flatten()
                _broyden(ji, gi, pn, s.index_select(0, pn), r_new[need] - ri[need])
            done = done | _chord_steps(ev, residual, opts, idx, need, ji, gi, x, z, r, cost,
                                       err, mu)
            need = need & ~done
            if bool(need.any()):
                sub = idx[need]
                x_sub = x.index_select(0, sub)
                # the output at x_sub is known: only the pass the VJPs need
                z_sub, h_sub = z.index_select(0, sub), ev.handle(x_sub)
                r_sub, g_sub = residual(z_sub, sub)
                set_jacobian(sub, ev.rows(h_sub, g_sub, x_sub))
                del h_sub
        elif bool(need.any()):
            rows = ev.rows(handle, g_new, x_new)
            set_jacobian(idx[need], rows.index_select(0, torch.nonzero(need).flatten()))
        del handle

        norm_now = r[idx].norm(dim=1)
        window[idx, since[idx] % (opts.patience + 1)] = norm_now
        old = window[idx, (since[idx] + 1) % (opts.patience + 1)]
        slow = (since[idx] >= opts.patience) & (norm_now > (1 - opts.min_progress) * old)
        stalled = ~done & ~out_of_budget & ((rejected[idx] >= opts.patience) | slow)
        again = stalled & (restarts[idx] < opts.restarts)
        if draw is not None and bool(again.any()):
            ir = idx[again]
            xr = draw(len(ir)).to(device=dev, dtype=dt)
            if x_start is not None:
                x_start[ir], w_start[ir] = xr, xr @ subspace.mT
                xr = w_start[ir]
            zr, hr = ev(xr)
            rr, gr = residual(zr, ir)
            jr = ev.rows(hr, gr, xr)
            del hr
            x[ir], z[ir], r[ir] = xr, zr, rr
            set_jacobian(ir, jr)
            cost[ir] = 0.5 * (rr ** 2).sum(dim=1)
            err[ir] = residual.error(zr, ir)
            mu[ir] = opts.tau * scale[ir]
            nu[ir] = 2.0
            rejected[ir] = 0
            since[ir] = 0
            window[ir] = math.inf
            window[ir, 0] = rr.norm(dim=1)
            restarts[ir] += 1
            done = done | (again & (err[idx] <= opts.tol))
            stalled = stalled & ~again
        if opts.history:
            cpu_idx = idx.cpu()
            col = iters[idx].cpu()
            hist_r[cpu_idx, col] = r[idx].norm(dim=1).double().cpu()
            hist_e[cpu_idx, col] = err[idx].double().cpu()
            hist_mu[cpu_idx, col] = mu[idx].double().cpu()
            hist_rho[cpu_idx, col] = rho_seen.double().cpu()
        if hist_x is not None:
            hist_x[idx.cpu(), iters[idx].cpu()] = full(idx).double().cpu()
        stop = done | out_of_budget | stalled
        flags = zip(idx[stop].tolist(), done[stop].tolist(), stalled[stop].tolist())
        for i, done_i, stalled_i in flags:
            if done_i:
                reasons[i] = "converged"
            elif stalled_i:
                many = int(rejected[i]) >= opts.patience
                why = (f"{opts.patience} rejected steps in a row" if many
                       else f"|r| fell by < {opts.min_progress:.0%} in {opts.patience} steps")
                reasons[i] = (f"stalled: {why} (error {float(err[i]):.2e}, damping "
                              f"mu={float(mu[i]):.2e}) after {int(restarts[i])} restarts")
            else:
                reasons[i] = f"max_iter={opts.max_iter} reached (error {float(err[i]):.2e})"
        active[idx[stop]] = False
        it += 1
        if bar is not None:
            bar.set_postfix(active=int(active.sum()), converged=reasons.count("converged"),
                            refresh=False)      # shown by update, at most every 0.1 s
            bar.update(1)
    if bar is not None:
        bar.close()
    x_final = full(every)
    if hist_x is not None:
        # the same rows as the returned inputs, bit for bit: a product over a different
        # number of rows may round differently in the last place
        hist_x[every.cpu(), iters.cpu()] = x_final.double().cpu()
    return {"x": x_final, "z": z, "error": err, "iterations": iters.cpu(), "restarts": restarts.cpu(),
            "jacobians": n_jac.cpu(),
            "reasons": reasons, "mu": mu.cpu(), "residual_history": hist_r,
            "error_history": hist_e, "mu_history": hist_mu, "gain_ratio_history": hist_rho,
            "n_forward": ev.n_forward, "n_vjp": ev.n_vjp,
            "jacobian": ev.mode, "jacobian_fallback": ev.fallback,
            **({} if hist_x is None else {"input_history": hist_x})}


_ROW_SPACE_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _row_space_split(net: nn.Module, input_shape: tuple[int, ...],
                     owner: nn.Module | None = None) -> tuple[nn.Module, torch.Tensor] | None:
    """For ``net = Sequential(Flatten?, Linear(d → o), rest...)`` with ``o < d``:
    ``(net_w, V)`` where the orthonormal rows of ``V`` ``(o, d)`` span the row
    space of ``W₁`` (``W₁ᵀ = QR``, ``V = Qᵀ``, so ``W₁ = Rᵀ V`` at any rank) and
    ``net_w(w) = rest(Rᵀ w + b₁)``, so that ``net(x) = net_w(V x)``. None for
    any other model. The QR is cached per ``owner`` (the caller's model, held
    weakly) until one of its parameters changes."""
    if not isinstance(net, nn.Sequential):
        return None
    mods = [m for _, m in flatten_sequential(net) if not isinstance(m, DROPOUTS)]
    d = math.prod(input_shape)
    i = 0
    if mods and isinstance(mods[0], nn.Flatten):
        if (mods[0].start_dim, mods[0].end_dim) != (1, -1):
            return None
        i = 1
    elif len(input_shape) != 1:
        return None
    if len(mods) <= i or not isinstance(mods[i], nn.Linear) or mods[i].in_features != d:
        return None
    first = mods[i]
    o = first.out_features
    if o >= d:
        return None
    key = None if owner is None else (
        tuple((p.data_ptr(), p._version) for p in owner.parameters()),
        first.weight.dtype, str(first.weight.device), d)
    cached = None if owner is None else _ROW_SPACE_CACHE.get(owner)
    if cached is not None and cached[0] == key:
        q, rr = cached[1]
    else:
        q, rr = torch.linalg.qr(first.weight.detach().to(torch.float64).mT)  # (d, o), (o, o)
        if owner is not None:
            _ROW_SPACE_CACHE[owner] = (key, (q, rr))
    lin = torch.nn.utils.skip_init(nn.Linear, o, o, bias=first.bias is not None,  # no RNG use
                                   device=first.weight.device, dtype=first.weight.dtype)
    with torch.no_grad():
        lin.weight.copy_(rr.mT)
        if first.bias is not None:
            lin.bias.copy_(first.bias)
    lin.requires_grad_(False)
    net_w = nn.Sequential(lin, *mods[i + 1:]).eval()
    return net_w, q.mT.contiguous().to(device=first.weight.device, dtype=first.weight.dtype)


# --------------------------------------------------------------------------- SciPy path


def _scipy_solve(fn, x0: torch.Tensor, residual, opts: LMOptions, jacobian: str,
                 chunk_size: int | None) -> dict:
    """Each sample by ``scipy.optimize.least_squares(method="trf")`` with a torch Jacobian."""
    import numpy as np
    from scipy.optimize import least_squares

    ev = _Evaluator(fn, jacobian, chunk_size)
    n, d = x0.shape
    dev, dt = x0.device, x0.dtype
    x_out, z_out = x0.clone(), None
    iters = torch.zeros(n, dtype=torch.long)
    reasons, statuses, njev = [""] * n, [0] * n, [0] * n
    hist_e = torch.full((n, opts.max_iter + 1), math.nan, dtype=torch.float64)
    zs, errs = [], []
    lb, ub = (-np.inf, np.inf) if opts.bounds is None else opts.bounds
    for i in range(n):
        idx = torch.tensor([i], device=dev)
        cache: dict = {}

        def evaluate(xv, need_jac=False):
            key = xv.tobytes()
            if cache.get("key") != key or (need_jac and "jac" not in cache):
                xt = torch.as_tensor(xv, dtype=dt, device=dev)[None]
                if need_jac:
                    z, h = ev(xt)
                    r, g = residual(z, idx)
                    cache.update(key=key, z=z, r=r, jac=ev.rows(h, g, xt)[0])
                else:
                    z = ev.value(xt)
                    r, _ = residual(z, idx)
                    cache.clear()
                    cache.update(key=key, z=z, r=r)
            return cache

        def fun(xv):
            return evaluate(xv)["r"][0].double().cpu().numpy()

        def jac(xv):
            njev[i] += 1
            return evaluate(xv, True)["jac"].double().cpu().numpy()

        count = [0]

        def callback(intermediate_result):
            count[0] += 1
            e = float(residual.error(evaluate(intermediate_result.x)["z"], idx)[0])
            if opts.history and count[0] <= opts.max_iter:
                hist_e[i, count[0]] = e
            if e <= opts.tol:
                raise StopIteration

        start = x0[i].double().cpu().numpy()
        e0 = float(residual.error(evaluate(start)["z"], idx)[0])
        hist_e[i, 0] = e0
        if e0 <= opts.tol or opts.max_iter == 0:
            sol_x, status, nit = start, 0, 0
        else:
            sol = least_squares(fun, start, jac=jac, method="trf", tr_solver="exact",
                                bounds=(lb, ub), max_nfev=opts.max_iter + 1,
                                callback=callback)
            sol_x, status, nit = sol.x, sol.status, count[0]
        xt = torch.as_tensor(sol_x, dtype=dt, device=dev)
        x_out[i] = xt
        z = ev.value(xt[None])
        e = float(residual.error(z, idx)[0])
        zs.append(z[0])
        errs.append(e)
        iters[i] = nit
        statuses[i] = int(status)
        reasons[i] = ("converged" if e <= opts.tol else
                      f"scipy status {status} after {nit} iterations (error {e:.2e})")
    z_out = torch.stack(zs) if zs else torch.empty(0)
    return {"x": x_out, "z": z_out, "error": torch.tensor(errs, dtype=torch.float64),
            "iterations": iters, "restarts": torch.zeros(n, dtype=torch.long),
            "reasons": reasons, "scipy_status": statuses, "njev": njev,
            "error_history": hist_e, "n_forward": ev.n_forward, "n_vjp": ev.n_vjp,
            "jacobian": ev.mode, "jacobian_fallback": ev.fallback}


# --------------------------------------------------------------------------- public API


def _check_options(max_iter, atol, tol, tau, max_step, bounds, restarts, chord, patience,
                   min_progress, residual, method, jacobian, dtype, broyden=False,
                   jacobian_dtype=None) -> None:
    if not isinstance(max_iter, int) or isinstance(max_iter, bool) or max_iter < 0:
        raise InversionError(f"max_iter must be an int >= 0, got {max_iter!r}")
    for name, v in (("atol", atol), ("tau", tau)):
        if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
            raise InversionError(f"{name} must be a positive finite number, got {v!r}")
    if tol is not None and not (isinstance(tol, (int, float)) and 0 < tol <= atol):
        raise InversionError(f"tol must lie in (0, atol={atol}], got {tol!r}")
    if max_step is not None and not (isinstance(max_step, (int, float)) and max_step > 0):
        raise InversionError(f"max_step must be a positive number or None, got {max_step!r}")
    if bounds is not None:
        ok = isinstance(bounds, Sequence) and len(bounds) == 2
        if not ok or not all(isinstance(b, (int, float)) for b in bounds) \
                or not bounds[0] < bounds[1]:
            raise InversionError(f"bounds must be None or (lo, hi) with lo < hi, "
                                 f"e.g. (0.0, 1.0), got {bounds!r}")
    if not isinstance(restarts, int) or restarts < 0:
        raise InversionError(f"restarts must be an int >= 0, got {restarts!r}")
    if not isinstance(chord, int) or chord < 0:
        raise InversionError(f"chord must be an int >= 0, got {chord!r}")
    if not isinstance(broyden, bool):
        raise InversionError(f"broyden must be True or False, got {broyden!r}")
    if broyden and chord == 0:
        raise InversionError("broyden=True updates the Jacobian between chord steps, so it "
                             "needs chord >= 1 (got chord=0)")
    if not isinstance(patience, int) or patience < 1:
        raise InversionError(f"patience must be an int >= 1, got {patience!r}")
    if not (isinstance(min_progress, (int, float)) and 0 <= min_progress < 1):
        raise InversionError(f"min_progress must lie in [0, 1), got {min_progress!r}")
    if residual not in RESIDUALS:
        raise InversionError(f"residual must be one of {RESIDUALS}, got {residual!r}")
    if method not in METHODS:
        raise InversionError(f"method must be one of {METHODS}, got {method!r}")
    if jacobian not in JACOBIANS:
        raise InversionError(f"jacobian must be one of {JACOBIANS}, got {jacobian!r}")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise InversionError(f"dtype must be a floating torch.dtype or None, got {dtype!r}")
    if jacobian_dtype not in JACOBIAN_DTYPES:
        raise InversionError(f"jacobian_dtype must be one of {JACOBIAN_DTYPES}, got "
                             f"{jacobian_dtype!r}")
    if jacobian_dtype is not None and method != "lm":
        raise InversionError(f"jacobian_dtype is an option of the batched LM (method='lm'); "
                             f"the {method!r} reference computes its Jacobian in the working "
                             f"dtype")


def _check_jacobian_dtype(jacobian_dtype: torch.dtype | None, work: torch.dtype) -> None:
    """Autocast lowers float32 operations only: refuse a low-precision Jacobian of a
    model worked on in another dtype rather than silently computing it in that one."""
    if jacobian_dtype is not None and work != torch.float32:
        raise InversionError(f"jacobian_dtype={jacobian_dtype} computes the Jacobian under "
                             f"autocast, which lowers float32 operations only, but the "
                             f"working dtype is {work}; pass dtype=torch.float32 or drop "
                             f"jacobian_dtype")


def _uniform_draw(generator: torch.Generator, shape: tuple[int, ...],
                  box: tuple[float, float]) -> Callable[[int], torch.Tensor]:
    lo, hi = box

    def draw(k: int) -> torch.Tensor:
        u = torch.rand((k, *shape), generator=generator, dtype=torch.float64)
        return lo + (hi - lo) * u

    return draw


def levenberg_marquardt(model: nn.Module, x0: torch.Tensor, target: torch.Tensor | Sequence,
                        max_iter: int = 30, atol: float = DEFAULT_ATOL, *,
                        residual: str = "logit", method: str = "lm", tol: float | None = None,
                        tau: float = 1e-3, max_step: float | None = None,
                        bounds: tuple[float, float] | None = None, restarts: int = 0,
                        chord: int = DEFAULT_CHORD, broyden: bool = False,
                        jacobian_dtype: torch.dtype | None = None, patience: int = 8,
                        min_progress: float = 0.01, seed: int | None = None,
                        generator: torch.Generator | None = None,
                        init_range: tuple[float, float] = (0.0, 1.0),
                        dtype: torch.dtype | None = None, jacobian: str = "auto",
                        chunk_size: int | None = None, batch_size: int | None = None,
                        history: bool = True, record_inputs: bool = False,
                        progress: bool = False, row_space: bool = True) -> InversionResult:
    """Levenberg–Marquardt on the input, from given starting points, to reach ``target``.

    Solves ``r(x) = 0`` (see the module docstring for the residuals and the step)
    for every sample at once; each sample has its own damping and stops on its
    own when ``max |softmax(model(x)) - p| <= tol``.

    Args:
        model: any differentiable module mapping ``(n, *input_shape)`` to logits
            ``(n, K)``. Not modified (a copy is inverted).
        x0: ``(n, *input_shape)`` starting inputs (any float dtype; on any device:
            the computation runs on the model's device).
        target: ``(K,)`` (used for every sample) or ``(n, K)`` probabilities.
        max_iter: LM steps per sample, restarts included.
        atol: tolerance of the final verification (probability space).
        residual: ``"logit"`` (default), ``"prob"`` or ``"logprob"``.
        method: ``"lm"`` (this batched solver) or ``"scipy"`` (the reference:
            ``scipy.optimize.least_squares(method="trf")`` per sample).
        tol: internal stopping tolerance, default ``atol / 2``.
        tau: initial damping factor, ``μ₀ = τ · max diag(JJᵀ)``.
        max_step: largest change of one input entry per step (ℓ∞); None: no bound.
        bounds: ``(lo, hi)`` box for the inputs (e.g. ``(0, 1)``); steps are
            projected onto it (see :class:`LMOptions`). None: unbounded.
        restarts: new random starts allowed per stalled sample.
        chord: extra steps per iteration with the same Jacobian (one forward
            pass each; see :class:`LMOptions`); default ``DEFAULT_CHORD = 2``,
            so an iteration is one Jacobian and up to three steps. 0: plain LM.
        broyden: before each chord step, correct the Jacobian by Broyden's
            rank-one update from the step just taken (see :class:`LMOptions`);
            needs ``chord >= 1``. Default False.
        jacobian_dtype: ``torch.bfloat16`` or ``torch.float16``: compute the
            Jacobians under autocast to that dtype (see :class:`LMOptions`);
            the working dtype must be float32. ``method="lm"`` only. None
            (default): in the working dtype.
        patience, min_progress: a sample has stalled after ``patience``
            rejected steps in a row, or when ``‖r‖`` fell by less than the
            fraction ``min_progress`` over its last ``patience`` steps.
        seed, generator: randomness for restarts (uniform in ``bounds`` or
            ``init_range``); ``generator`` wins over ``seed``.
        init_range: range of the uniform restarts when there are no bounds.
        dtype: working dtype of the model copy (both methods). None
            (default): the model's own dtype (float32 for a float32 model:
            about twice as fast as float64 on a CPU, with the same verified
            results on FCNN-6 and ViT-tiny; the result is cast to the model's
            dtype anyway, and verified in float64).
        jacobian: ``"auto"``, ``"vmap"`` or ``"loop"``.
        chunk_size: Jacobian rows per vmap chunk (lower memory); None: all.
        batch_size: samples solved together (memory); None: all.
        history: keep per-iteration residual and error histories in ``info``.
        record_inputs: also keep every iterate: ``info["input_history"]``,
            float64 ``(n, max_iter + 1, *input_shape)`` on the CPU, slice ``k``
            the input after step ``k`` (slice 0: ``x0``; after a restart, the
            new start), NaN after a sample stopped, so that its ``‖r‖`` is
            ``residual_history[:, k]``. ``method="lm"`` only.
        progress: show a ``tqdm.auto`` progress bar.
        row_space: for a model that starts with ``nn.Linear(d → o)``, ``o < d``
            (after an optional ``nn.Flatten``; FCNN-6: 512 < 784), run LM on the
            input's coordinates ``w = V x`` in that layer's row space (``V``:
            orthonormal rows, from a QR of ``W₁ᵀ`` cached per model, ``W₁ = Rᵀ V``).
            The output depends on ``x`` only through ``V x``, so ``J = J_w V``:
            ``JJᵀ = J_w J_wᵀ`` and the minimum-norm step is ``δx = Vᵀ δw``, the
            same iteration with an ``o``-column Jacobian (and a first layer
            ``o × o`` instead of ``o × d``). ``method="lm"`` without ``bounds``
            or ``max_step`` only (those act on ``x`` entry by entry); recorded
            in ``info["row_space_dim"]`` (None when not used).

    Returns:
        :class:`~nninvert_lib.result.InversionResult` whose ``inputs`` have the
        model's dtype and device, ``converged`` from
        :func:`~nninvert_lib.result.verify`, and ``info`` holding ``iterations``
        ``(n,)``, ``restarts`` ``(n,)``, ``reasons`` (one str per sample),
        ``residual_history`` (``‖r‖``), ``error_history`` (largest
        ``|softmax - p|``), ``mu_history`` (damping after each step) and
        ``gain_ratio_history`` (``ρ``; ``-inf`` for a non-finite trial), each
        ``(n, max_iter + 1)`` with column ``k`` after step ``k`` (NaN after a
        sample stopped), ``seconds``, ``n_forward``, ``n_vjp`` (batched calls),
        ``jacobians`` ``(n,)`` (Jacobians computed per sample, ``method="lm"``)
        and every option used.

    Raises:
        InversionError: invalid target (see :func:`~nninvert_lib.result.check_target`),
            a target whose length differs from the model's output, a shape
            mismatch between ``x0`` and ``target``, an invalid option, a model
            that fails on one input (most often: inputs of the wrong shape) or
            that returns probabilities (:func:`~nninvert_lib.result.check_logits`).
    """
    _check_options(max_iter, atol, tol, tau, max_step, bounds, restarts, chord, patience,
                   min_progress, residual, method, jacobian, dtype, broyden, jacobian_dtype)
    if record_inputs and method != "lm":
        raise InversionError(f"record_inputs=True needs method='lm' (the SciPy path does not "
                             f"expose its iterates), got method={method!r}")
    tol = atol / 2 if tol is None else tol
    tgt = check_target(target)
    x0 = torch.as_tensor(x0)
    if x0.ndim < 1 or not x0.is_floating_point():
        raise InversionError(f"x0 must be a float tensor (n, *input_shape), got "
                             f"{x0.dtype} of shape {tuple(x0.shape)}")
    n = x0.shape[0]
    if tgt.shape[0] == 1:
        tgt = tgt.expand(n, -1)
    elif tgt.shape[0] != n:
        raise InversionError(f"target has {tgt.shape[0]} rows but x0 has {n} samples; "
                             f"pass one target (K,) or one row per sample (n, K)")
    input_shape = tuple(x0.shape[1:])
    m_dtype, device = model_dtype_device(model)
    work = m_dtype if dtype is None else dtype
    _check_jacobian_dtype(jacobian_dtype, work)
    net, n_fused = inversion_copy(model, work, device)
    n_fast = with_fast_activations(net)
    k = tgt.shape[1]
    if n:
        with torch.no_grad():
            probe = call_model(net, x0[:1].to(device=device, dtype=work),
                               f"one input of shape {input_shape}",
                               "; if that shape is wrong, pass the shape of one input, without "
                               "the batch dimension (forward_pass_inv's input_shape=, e.g. "
                               "(784,))")
        check_logits(probe)
        k = probe.shape[-1]
    target64 = check_target(tgt, num_classes=k)
    tgt = target64.to(device=device, dtype=work)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return net(x.reshape(x.shape[0], *input_shape))

    opts = LMOptions(max_iter=max_iter, tol=tol, tau=tau, max_step=max_step,
                     bounds=None if bounds is None else (float(bounds[0]), float(bounds[1])),
                     restarts=restarts, chord=chord, broyden=broyden,
                     jacobian_dtype=jacobian_dtype,
                     patience=patience, min_progress=float(min_progress),
                     history=history, record_inputs=bool(record_inputs), progress=progress)
    if generator is None:
        generator = torch.Generator()
        if seed is None:
            generator.seed()  # non-deterministic, leaves the global RNG alone
        else:
            generator.manual_seed(int(seed))
    box = opts.bounds if opts.bounds is not None else init_range
    draw = _uniform_draw(generator, (math.prod(input_shape),), box)

    xf = x0.reshape(n, -1).to(device=device, dtype=work)
    if opts.bounds is not None:
        xf = xf.clamp(*opts.bounds)
    t0 = time.perf_counter()
    split = None
    if row_space and method == "lm" and opts.bounds is None and max_step is None:
        split = _row_space_split(net, input_shape, owner=model)
    lm_fn, basis = (fn, None) if split is None else split
    size = max(n, 1) if batch_size is None else max(1, int(batch_size))
    parts = []
    for start in range(0, n, size):
        sl = slice(start, min(n, start + size))
        res = ProbabilityResidual(residual, tgt[sl])
        if method == "lm":
            parts.append(lm_solve(lm_fn, xf[sl], res, opts, draw, jacobian, chunk_size,
                                  subspace=basis))
        else:
            parts.append(_scipy_solve(fn, xf[sl], res, opts, jacobian, chunk_size))
    seconds = time.perf_counter() - t0
    info = _merge(parts, n, max_iter)
    x = info.pop("x") if n else xf
    info.pop("z", None)
    if "input_history" in info:
        info["input_history"] = info["input_history"].reshape(n, max_iter + 1, *input_shape)
    inputs = x.reshape(n, *input_shape).to(m_dtype)
    probs, converged = verify(model, inputs, target64, atol)
    info.update(method=method, residual=residual, max_iter=max_iter, atol=atol, tol=tol,
                tau=tau, max_step=max_step, bounds=opts.bounds, restarts_allowed=restarts,
                chord=chord, broyden=broyden,
                jacobian_dtype=None if jacobian_dtype is None else str(jacobian_dtype),
                patience=patience, min_progress=min_progress, dtype=str(work),
                row_space_dim=None if basis is None else int(basis.shape[0]),
                device=str(device), seconds=seconds,
                fused_attn_disabled=n_fused, fast_activations=n_fast,
                input_shape=input_shape)
    return InversionResult(inputs=inputs, probs=probs, target=target64.to(probs),
                           converged=converged, info=info)


def _merge(parts: list[dict], n: int, max_iter: int) -> dict:
    """Concatenate the per-batch solver outputs."""
    if not parts:
        return {"iterations": torch.zeros(0, dtype=torch.long), "reasons": []}
    out: dict = {}
    for key, val in parts[0].items():
        vals = [p[key] for p in parts]
        if torch.is_tensor(val):
            out[key] = torch.cat(vals)
        elif isinstance(val, list):
            out[key] = [v for p in vals for v in p]
        elif isinstance(val, int) and not isinstance(val, bool):
            out[key] = sum(vals)
        else:
            out[key] = vals[-1]
    return out


_FORWARD_OPTIONS = ("atol", "residual", "method", "tol", "tau", "max_step", "bounds", "restarts",
                    "chord", "broyden", "jacobian_dtype", "patience", "min_progress",
                    "generator", "init_range", "dtype", "jacobian", "chunk_size", "batch_size",
                    "history", "record_inputs", "progress", "row_space", "warm_start")


def forward_pass_inv(model: nn.Module, target: torch.Tensor | Sequence, n_samples: int = 1,
                     max_iter: int = 30, seed: int | None = None,
                     input_shape: tuple[int, ...] = (1, 28, 28), **options) -> InversionResult:
    """The paper's ForwardPassInv: LM root finding from random inputs, for any model.

    Starting inputs are uniform in ``[0, 1)`` (MNIST's pixel range; in
    ``bounds`` when given, or ``init_range``), drawn on the CPU in float64 from a
    ``torch.Generator`` seeded with ``seed``, so the same seed gives the same
    starts (and, on the same machine and device, bit-identical results).

    Args:
        model: any differentiable module returning logits ``(n, K)``; not modified.
        target: ``(K,)``: ``n_samples`` inputs for it; ``(B, K)``: ``n_samples``
            inputs for each row, in row order (``B · n_samples`` in all).
        n_samples: inputs per target row.
        max_iter: LM steps per sample, restarts included (the paper: 30).
        seed: seeds the starts and restarts; None draws a seed (kept in ``info``).
        input_shape: shape of one input.
        **options: passed to :func:`levenberg_marquardt` (``atol``, ``residual``,
            ``method``, ``max_step``, ``bounds``, ``restarts`` (default
            ``DEFAULT_RESTARTS = 2`` here), ``progress``, ...), and
            ``warm_start`` (default 0): for a ViT whose head sits behind a
            norm, Adam steps that first align the class token with the
            direction the target needs (:func:`~nninvert_lib.alignment.align_to_head`;
            restarts draw plain random starts); ``info`` then adds
            ``alignment``, ``alignment_needed`` and ``warm_start_seconds``
            (included in ``seconds``).

    Returns:
        :class:`~nninvert_lib.result.InversionResult`; ``info["seed"]`` and
        ``info["x0"]`` (the starting inputs) are added.

    Raises:
        InversionError: invalid target, ``n_samples < 1``, bad ``input_shape``
            (or one the model cannot take), a model that returns probabilities,
            unknown option names, or invalid option values.
    """
    unknown = sorted(set(options) - set(_FORWARD_OPTIONS))
    if unknown:
        raise InversionError(f"unknown option(s) {unknown}; valid options: {_FORWARD_OPTIONS}")
    if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 1:
        raise InversionError(f"n_samples must be an int >= 1, got {n_samples!r}")
    if not (isinstance(input_shape, Sequence) and len(input_shape) > 0
            and all(isinstance(s, int) and s > 0 for s in input_shape)):
        raise InversionError(f"input_shape must be a tuple of positive ints such as "
                             f"(1, 28, 28), got {input_shape!r}")
    tgt = check_target(target).repeat_interleave(n_samples, dim=0)
    options.setdefault("restarts", DEFAULT_RESTARTS)
    if seed is None:
        seed = torch.Generator().seed()  # non-deterministic; recorded in info
    gen = options.pop("generator", None) or torch.Generator().manual_seed(int(seed))
    box = options.get("bounds") or options.get("init_range", (0.0, 1.0))
    if not (isinstance(box, Sequence) and len(box) == 2 and box[0] < box[1]):
        raise InversionError(f"bounds / init_range must be (lo, hi) with lo < hi, got {box!r}")
    warm = options.pop("warm_start", 0)
    x0 = _uniform_draw(gen, tuple(input_shape), (float(box[0]), float(box[1])))(len(tgt))
    start, warm_info = x0, {"warm_start": 0}
    if warm != 0:
        from .alignment import warm_start_inputs

        start, warm_info = warm_start_inputs(model, x0, tgt, warm, options.get("bounds"))
    out = levenberg_marquardt(model, start, tgt, max_iter=max_iter, generator=gen, **options)
    out.info["seconds"] += warm_info.get("warm_start_seconds", 0.0)
    out.info.update(seed=seed, x0=x0, n_samples=n_samples, **warm_info)
    return out
