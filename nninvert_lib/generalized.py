"""The generalized method (paper §III-C): invert the head backward, the backbone forward.

A vision transformer passes one pooled embedding ``e`` (the class token, or
the average of the tokens) to its head, ``logits = W e + b``. The head is
inverted *backward* — softmax, then the linear layer with the thresholded
pseudo-inverse and null-space sampling (:mod:`.softmax`, :mod:`.linear`) — to
give a *distribution* of embeddings ``e*`` that all produce the target; then
the backbone ``x ↦ e(x)`` (``forward_head(forward_features(x),
pre_logits=True)``) is inverted *forward* with Levenberg–Marquardt
(:func:`~nninvert_lib.forward.lm_solve`) from a random image towards each
``e*``, with the residual in embedding space::

    r = Bᵀ (e(x) - e*),   B = [Wᵀ Q,  λ N]                    (D × m)

The first ``K - 1`` rows are the centred logit differences ``Qᵀ W (e - e*)``
(what the softmax sees); the others are ``embedding_rank - K + 1`` random
orthonormal directions ``N`` of ``null(W)`` (all ``D - K`` for
``embedding_rank=None``) weighted by ``λ = null_weight``: they pull the image
towards the sampled embedding where the head cannot see it. A sample stops
when the *whole model's* probabilities are within ``tol`` of the target, and
``converged`` comes from :func:`~nninvert_lib.result.verify` on the caller's
model. Samples the backbone inversion leaves short are, with ``polish=True``
(default), finished by LM in logit space from where they stopped
(``info["polished"]``); ``info["embedding_distance"]`` reports
``‖e(x) - e*‖ / ‖e*‖`` either way.

**The norm before the head.** In timm's ViTs ``e`` is a LayerNorm output:
``e = γ ⊙ u + β`` with ``u = (h - mean h) / std h``. LayerNorm forgets the mean
and the scale of ``h``, so it is not invertible, but its image is known
exactly: ``u`` has zero mean and ``‖u‖² = D`` (D the width; up to the norm's
``eps``). The head is therefore inverted onto that image::

    A = W diag(γ) P,   P = I - 11ᵀ/D            (K × D)
    u_p = A⁺ (log p + c·1 - W β - b)             (thresholded pseudo-inverse)
    u   = u_p + t · n / ‖n‖,   t = √(D - ‖u_p‖²), n in null(A) ∩ 1⊥
    e*  = γ ⊙ u + β

with the free softmax constant ``c`` chosen to minimise ``‖u_p‖``. The
*length* of the null-space part is fixed by the sphere, so ``std`` does not
scale it as in the paper's line 25; the *direction* ``n`` is sampled (see
``anchor``). An RMSNorm is handled the same way without the centring; a head
fed by the average of normalised tokens (DINOv3 in timm) gets the ball
``‖u‖² <= D``; a head with no norm before it is sampled exactly as in the
paper, ``e = e_p + std ‖e_p‖ N c / ‖N c‖``.

Because ``‖u‖² <= D``, the logits of such a model are bounded whatever the
input: :func:`head_reachability` solves a small quadratic programme that
*proves* a target unreachable (no input verifies) when the norm's image
cannot produce it. Measured with it (``atol = 1e-3``): the ``quick``
DINOv3-Base (28% validation accuracy) cannot reach
``target_distribution(c, p)`` for any class at ``p = 0.5`` or ``0.9``; a
ViT-tiny of an earlier ``quick`` recipe (750 steps on 24,000 digits, 84%)
could not reach class 8 at ``p = 0.9`` (the other classes passed this
necessary test).

On the ``quick`` ViT-tiny (every training digit once at batch 64, 93.4%)
the defaults verify 200 / 200 of ``target_distribution(c, 0.9)``, 20 distinct
images per class (10 × 20, seed 0, float32, 205 s on two CPU threads;
``benchmarks/vit_budget.py --quick``), and :func:`~nninvert_lib.peak_frontier`
carries every class past ``p = 0.97``. The measurements below were taken on
the earlier recipe's model.

Measured on that earlier ViT-tiny, with as target per class the model's own
softmax on its most confident correct validation digit (0.87–0.99 on the
class), 20 samples per class, seed 0, float32: 198 / 200 verified with the
defaults (``chord=2``; class 4: 18 of 20), all distinct (smallest pairwise L2
distance within a class 14.3), 2.4 s per verified image on one CPU thread;
with ``chord=0``, 199 / 200 (157 by the backbone inversion alone, 42 after
polishing), 3.3 s per verified image. The images end at a median relative
embedding distance of
0.35 from their sampled ``e*``: the backbone gets the head's ``K - 1``
directions right, not the whole sampled embedding.

At the paper's ``target_distribution(c, 0.9)`` the same model verifies 70 / 200
(classes 1, 5, 6 and 9; 15.8 s per verified image on one CPU thread; 10 × 20,
seed 0, defaults: float32, ``chord=2``); ForwardPassInv alone 47 / 200. Its
head is the obstacle: the same architecture trained 9,000 steps on all digits
(95.8%, ``benchmarks/vit_budget.py``) has reachability ratios 0.16–0.24
instead of 0.37–1.12, and there the generalized method verifies 194 / 200
(191 with ``chord=0``) and ForwardPassInv 186 / 200.

That recipe is not bit-reproducible across CPUs. Trained on another
machine it gave 84.8% and a model whose head passes the sphere test for every
class at 0.9; there the generalized method verifies 61 / 200 (classes 0, 1, 4,
5, 6) and, started after 200 Adam steps that align the class token with the
direction the target needs (``warm_start=200``, :mod:`~nninvert_lib.alignment`),
92 / 200: 19 or 20 of each of classes 0, 1, 4 and 5, 15 of class 6, at 6.1
instead of 8.6 s per verified image (two threads). Classes 3 and 7 are out of
reach of that ascent from 8 starts (:func:`~nninvert_lib.alignment.backbone_alignment`),
evidence but not proof that the backbone cannot produce them.

**Anchor.** ``anchor="start"`` (default) takes the direction ``n`` from the
backbone's own embedding of the random starting image (its null-space part),
plus ``std`` times its length of random null-space noise, so ``e*`` is near
what the backbone produces; ``anchor="none"`` draws ``n`` uniformly.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .errors import InversionError
from .forward import (DEFAULT_CHORD, LMOptions, ProbabilityResidual, _check_jacobian_dtype,
                      _check_options, _merge, _uniform_draw, inversion_copy, lm_solve,
                      model_dtype_device)
from .linear import thresholded_pinv
from .modelcopy import with_fast_activations
from .result import DEFAULT_ATOL, InversionResult, check_target, verify
from .softmax import invert_softmax

__all__ = ["HeadInverse", "invert_head", "sample_embeddings", "head_reachability",
           "head_min_norm_points",
           "embedding_residual_basis", "generalized_inv", "backbone_fn"]

ANCHORS = ("start", "none")
#: rows of the embedding residual by default (the head's K plus random null directions)
DEFAULT_EMBEDDING_RANK: int | None = 32
#: weight of the null-space rows of the embedding residual (the logit rows have weight 1)
DEFAULT_NULL_WEIGHT: float = 0.1


@dataclass
class HeadInverse:
    """What :func:`invert_head` found about a ViT's head (float64 tensors).

    Attributes:
        norm: ``"layernorm"`` (sphere, centred), ``"rmsnorm"`` (sphere),
            ``"layernorm-avg"`` (ball, centred: average of normalised tokens) or
            ``"none"`` (no norm between the pooled embedding and the head).
        weight, bias: the head's ``W`` ``(K, D)`` and ``b`` ``(K,)``.
        gamma, beta: the norm's affine ``(D,)`` (ones and zeros for ``"none"``).
        pinv: the thresholded pseudo-inverse of ``A = W diag(γ) P``
            (:class:`~nninvert_lib.linear.PseudoInverse`).
        null_basis: ``(D, k)`` orthonormal basis of ``null(A)`` (∩ ``1⊥`` when centred).
        eps: the norm's epsilon.
    """

    norm: str
    weight: torch.Tensor
    bias: torch.Tensor
    gamma: torch.Tensor
    beta: torch.Tensor
    pinv: object
    null_basis: torch.Tensor
    eps: float

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    @property
    def centred(self) -> bool:
        return self.norm in ("layernorm", "layernorm-avg")

    def normalized(self, e: torch.Tensor) -> torch.Tensor:
        """``u = (e - β) / γ`` (the norm's output before its affine)."""
        return (e.to(self.gamma) - self.beta) / self.gamma

    def logits(self, e: torch.Tensor) -> torch.Tensor:
        return e.to(self.weight) @ self.weight.T + self.bias


def _is_layernorm(m: nn.Module) -> bool:
    return isinstance(m, nn.LayerNorm) or type(m).__name__ in ("LayerNorm", "LayerNorm2d")


def _is_rmsnorm(m: nn.Module) -> bool:
    return isinstance(m, getattr(nn, "RMSNorm", ())) or "rmsnorm" in type(m).__name__.lower()


def _norm_before_head(model: nn.Module) -> tuple[str, nn.Module | None]:
    """Which norm sits between the pooled embedding and the head."""
    fc = getattr(model, "fc_norm", None)
    final = getattr(model, "norm", None)
    pool = getattr(model, "global_pool", "token")
    attn_pool = getattr(model, "attn_pool", None)
    for m in (fc,):
        if m is not None and not isinstance(m, nn.Identity):
            if _is_layernorm(m):
                return "layernorm", m
            if _is_rmsnorm(m):
                return "rmsnorm", m
            return "unknown", m
    if attn_pool is not None or final is None or isinstance(final, nn.Identity):
        return "none", None
    if pool == "token":
        if _is_layernorm(final):
            return "layernorm", final
        if _is_rmsnorm(final):
            return "rmsnorm", final
        return "unknown", final
    if pool == "avg" and _is_layernorm(final):
        return "layernorm-avg", final
    return "unknown", final


def invert_head(model: nn.Module, max_cond: float = 100.0) -> HeadInverse:
    """Analyse a timm ViT's head and precompute its inverse (once per model).

    Args:
        model: a timm vision transformer (``forward_features``, ``forward_head``,
            a ``head`` that is an ``nn.Linear``).
        max_cond: condition-number limit of the pseudo-inverse.

    Raises:
        InversionError: no ``forward_features``/``forward_head``, a head that
            is not ``nn.Linear``, or a norm before the head that is neither a
            LayerNorm nor an RMSNorm.
    """
    if not (hasattr(model, "forward_features") and hasattr(model, "forward_head")):
        raise InversionError(f"the generalized method needs a timm vision transformer "
                             f"(forward_features and forward_head); got {type(model).__name__}")
    head = model.get_classifier() if hasattr(model, "get_classifier") else model.head
    if not isinstance(head, nn.Linear):
        raise InversionError(f"the head must be an nn.Linear (build the model with "
                             f"num_classes > 0), got {type(head).__name__}")
    kind, norm = _norm_before_head(model)
    if kind == "unknown":
        raise InversionError(f"the norm before the head ({type(norm).__name__}) is neither a "
                             f"LayerNorm nor an RMSNorm; the head cannot be inverted onto its "
                             f"image. Use forward_pass_inv for this model.")
    w = head.weight.detach().to(torch.float64).cpu()
    b = (head.bias.detach().to(torch.float64).cpu() if head.bias is not None
         else torch.zeros(w.shape[0], dtype=torch.float64))
    d = w.shape[1]
    gamma = torch.ones(d, dtype=torch.float64)
    beta = torch.zeros(d, dtype=torch.float64)
    eps = 0.0
    if norm is not None:
        if getattr(norm, "weight", None) is not None:
            gamma = norm.weight.detach().to(torch.float64).cpu().reshape(d)
        if getattr(norm, "bias", None) is not None:
            beta = norm.bias.detach().to(torch.float64).cpu().reshape(d)
        eps = float(getattr(norm, "eps", 0.0) or 0.0)
    if (gamma == 0).any():
        raise InversionError("the norm before the head has zero gain entries; the embedding "
                             "cannot be normalised back")
    a = w * gamma
    centred = kind in ("layernorm", "layernorm-avg")
    if centred:
        a = a - a.mean(dim=1, keepdim=True)   # A P
    pinv = thresholded_pinv(a, max_cond)
    null = pinv.null_basis
    if centred:  # drop the 1 direction (in null(A P), but not an admissible u)
        null = null - null.mean(dim=0, keepdim=True)
        q, s, _ = torch.linalg.svd(null, full_matrices=False)
        null = q[:, s > 0.5]
    return HeadInverse(norm=kind, weight=w, bias=b, gamma=gamma, beta=beta, pinv=pinv,
                       null_basis=null, eps=eps)


def sample_embeddings(head: HeadInverse, target: torch.Tensor, std: float,
                      generator: torch.Generator,
                      anchors: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings ``e*`` ``(n, D)`` whose logits give ``target`` ``(n, K)`` (see module doc).

    Args:
        anchors: ``(n, D)`` embeddings whose null-space direction is kept
            (``anchor="start"``), or None for uniformly random directions.

    Returns:
        ``(e, feasible)``: float64 embeddings and a bool ``(n,)``: False where
        the target needs ``‖u_p‖² > D`` (outside the norm's image; ``e`` is then
        the nearest point of the image along ``u_p``).
    """
    n = len(target)
    z0 = invert_softmax(target)                                   # centred log p
    rhs = z0 - head.bias
    if head.norm != "none":
        rhs = rhs - head.beta @ head.weight.T
    u0 = head.pinv.solve(rhs)                                     # (n, D)
    v = head.pinv.solve(torch.ones(1, rhs.shape[1], dtype=torch.float64))[0]
    if head.norm != "none" and float(v @ v) > 1e-20:              # free constant: min ‖u_p‖
        c = -(u0 @ v) / (v @ v)
        u0 = u0 + c[:, None] * v
    nb = head.null_basis
    k = nb.shape[1]
    rnd = torch.randn(n, max(k, 1), generator=generator, dtype=torch.float64)[:, :k] @ nb.T
    if anchors is not None:
        a = head.normalized(anchors) if head.norm != "none" else anchors.to(torch.float64)
        base = (a @ nb) @ nb.T                                    # null-space part of anchor
        size = base.norm(dim=1, keepdim=True)
        noise = rnd / rnd.norm(dim=1, keepdim=True).clamp(min=1e-300)
        direction = base + std * size * noise
    else:
        direction = rnd
        base = None
    unit = direction / direction.norm(dim=1, keepdim=True).clamp(min=1e-300)
    d = head.dim
    feasible = torch.ones(n, dtype=torch.bool)
    if head.norm in ("layernorm", "rmsnorm", "layernorm-avg"):
        radius2 = float(d)
        room = radius2 - (u0 ** 2).sum(dim=1)
        feasible = room > 0
        if head.norm == "layernorm-avg" and base is not None:
            length = torch.minimum(base.norm(dim=1) * (1 + std), room.clamp(min=0).sqrt())
        else:
            length = room.clamp(min=0).sqrt()
        u = torch.where(feasible[:, None], u0 + length[:, None] * unit,
                        u0 * math.sqrt(radius2) / u0.norm(dim=1, keepdim=True))
        return head.gamma * u + head.beta, feasible
    # no norm: the paper's sampling around the particular solution
    if anchors is not None:
        e = u0 + direction
    else:
        e = u0 + std * u0.norm(dim=1, keepdim=True) * unit
    return e, feasible


def head_min_norm_points(head: HeadInverse, target: torch.Tensor | Sequence,
                         atol: float = DEFAULT_ATOL) -> torch.Tensor:
    """The smallest normalised embedding ``u_p`` ``(B, D)`` whose logits verify each target.

    Every output within ``atol`` of ``p`` satisfies, for each pair of classes,
    ``log((p_i - atol)/(p_j + atol)) <= z_i - z_j`` (a polytope ``Z``); this
    solves ``min ‖A⁺(z - b')‖²`` over ``z`` in ``Z`` (SLSQP) and returns
    ``u_p = A⁺(z - b')`` (float64), the point nearest the origin of the convex
    set ``{A⁺(z - b') : z ∈ Z}``. Used by :func:`head_reachability` and
    :func:`~nninvert_lib.alignment.head_directions`.
    """
    import numpy as np
    from scipy.optimize import minimize

    tgt = check_target(target, num_classes=head.weight.shape[0])
    pinv = head.pinv.pinv.numpy()                       # (D, K)
    bprime = (head.bias + head.beta @ head.weight.T).numpy()
    quad = pinv.T @ pinv
    k = tgt.shape[1]
    points = []
    for p in tgt.numpy():
        rows, lo = [], []
        for i in range(k):
            for j in range(k):
                if i == j:
                    continue
                a = np.zeros(k)
                a[i], a[j] = 1.0, -1.0
                lo_ij = math.log(max(p[i] - atol, 1e-300) / (p[j] + atol))
                rows.append(a)
                lo.append(lo_ij)        # z_i - z_j >= lo_ij (the upper bounds are j <-> i)
        g = np.array(rows)
        lo = np.array(lo)
        z0 = np.log(p) - np.log(p).mean()
        res = minimize(lambda z: float((z - bprime) @ quad @ (z - bprime)), z0,
                       jac=lambda z: 2 * quad @ (z - bprime), method="SLSQP",
                       constraints=[{"type": "ineq", "fun": lambda z: g @ z - lo,
                                     "jac": lambda z: g}],
                       options={"maxiter": 500, "ftol": 1e-12})
        points.append(pinv @ (res.x - bprime))
    return torch.tensor(np.array(points), dtype=torch.float64).reshape(len(tgt), head.dim)


def head_reachability(model_or_head: nn.Module | HeadInverse, target: torch.Tensor | Sequence,
                      atol: float = DEFAULT_ATOL) -> tuple[torch.Tensor, torch.Tensor]:
    """Can *any* input reach ``target`` (within ``atol``) through this head's norm?

    With a LayerNorm or RMSNorm before the head, the logits are
    ``A u + b'`` with ``‖u‖² <= D``, so they are bounded whatever the backbone
    does. This compares ``‖u_p‖²`` of :func:`head_min_norm_points` (the smallest
    normalised embedding whose logits verify) with ``D``. For a necessary
    condition on the backbone as well, see :mod:`~nninvert_lib.alignment`.

    Args:
        model_or_head: a timm ViT or its :class:`HeadInverse`.
        target: ``(K,)`` or ``(B, K)``.
        atol: the verification tolerance.

    Returns:
        ``(ratio, unreachable)``: float64 ``(B,)`` smallest ``‖u‖² / D`` that
        the head needs (``0`` for a head without norm), and bool ``(B,)``:
        True where ``ratio > 1``, a proof that no input verifies (up to the
        norm's ``eps`` and SLSQP's tolerance, ~1e-6).
    """
    head = model_or_head if isinstance(model_or_head, HeadInverse) else invert_head(model_or_head)
    tgt = check_target(target, num_classes=head.weight.shape[0])
    if head.norm in ("none",):
        return torch.zeros(len(tgt), dtype=torch.float64), torch.zeros(len(tgt), dtype=torch.bool)
    ratio = (head_min_norm_points(head, tgt, atol) ** 2).sum(dim=1) / head.dim
    return ratio, ratio > 1 + 1e-6


def embedding_residual_basis(head: HeadInverse, rank: int | None, null_weight: float,
                             generator: torch.Generator) -> torch.Tensor:
    """``B`` ``(D, m)`` of the residual ``r = Bᵀ(e - e*)``, in the head's own units.

    The first ``K - 1`` columns are ``Wᵀ Q`` (``Q`` orthonormal, ``⊥ 1``): those
    rows of ``r`` are the centred logit differences ``Qᵀ W (e - e*)``, what
    the softmax sees. The other ``m - K + 1`` columns are orthonormal
    directions of ``null(W)`` (all of them for ``rank=None``, else a random
    subset), weighted by ``null_weight``: they pull the embedding towards the
    sampled ``e*`` where the head cannot see it.
    """
    from .forward import _orthogonal_complement_of_ones

    w = head.weight
    k, d = w.shape
    q = _orthogonal_complement_of_ones(k, torch.float64, torch.device("cpu"))
    _, _, vh = torch.linalg.svd(w, full_matrices=True)
    null = vh[k:].T                                               # (D, D - K)
    if rank is not None and rank - (k - 1) < null.shape[1]:
        pick, _ = torch.linalg.qr(torch.randn(null.shape[1], rank - (k - 1),
                                              generator=generator, dtype=torch.float64))
        null = null @ pick
    return torch.cat([w.T @ q, null_weight * null], dim=1)


def backbone_fn(net: nn.Module, input_shape: tuple[int, ...]
                ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``(b, d) -> (b, D)``: the pre-logits embedding of a (copied) timm ViT."""
    def fn(x: torch.Tensor) -> torch.Tensor:
        feats = net.forward_features(x.reshape(x.shape[0], *input_shape))
        return net.forward_head(feats, pre_logits=True)
    return fn


class EmbeddingResidual:
    """``r = Sᵀ(e - e*)`` with stopping judged on the head's probabilities."""

    def __init__(self, e_target: torch.Tensor, basis: torch.Tensor, head_w: torch.Tensor,
                 head_b: torch.Tensor, target: torch.Tensor):
        self.e_target, self.basis = e_target, basis
        self.w, self.b, self.target = head_w, head_b, target
        self.m = basis.shape[1]

    def __call__(self, z: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = (z - self.e_target[idx]) @ self.basis
        return r, self.basis.mT.expand(len(z), *self.basis.mT.shape)

    def error(self, z: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(z @ self.w.T + self.b, dim=1)
        err = (probs - self.target[idx]).abs().amax(dim=1)
        return torch.where(torch.isfinite(err), err, torch.full_like(err, math.inf))


_GEN_OPTIONS = ("atol", "tol", "tau", "max_step", "bounds", "restarts", "chord", "broyden",
                "jacobian_dtype", "patience", "min_progress", "init_range", "dtype", "jacobian",
                "chunk_size", "batch_size", "history", "progress", "anchor", "embedding_rank",
                "null_weight", "polish", "warm_start")


def generalized_inv(model: nn.Module, target: torch.Tensor | Sequence, n_samples: int = 1,
                    std: float = 0.1, max_cond: float = 100.0, seed: int | None = None,
                    max_iter: int = 30, input_shape: tuple[int, ...] = (1, 28, 28),
                    **options) -> InversionResult:
    """The generalized method for a timm ViT: head backward, backbone forward.

    Args:
        model: a timm vision transformer returning logits; not modified.
        target: ``(K,)`` or ``(B, K)``; ``n_samples`` inputs per row, in row order.
        n_samples: inputs (and sampled embeddings) per target row.
        std: relative size of the random null-space noise (see module doc).
        max_cond: condition-number limit of the head's pseudo-inverse.
        seed: seeds the embeddings, the starting images and restarts.
        max_iter: LM steps per sample for the backbone.
        input_shape: shape of one input.
        **options: ``anchor`` (``"start"`` or ``"none"``); ``embedding_rank``
            (rows ``m`` of the residual, default ``DEFAULT_EMBEDDING_RANK = 32``:
            the ``K - 1`` logit rows plus ``m - K + 1`` random null-space
            directions; None: all ``D - 1``); ``null_weight`` (``λ``, default
            ``DEFAULT_NULL_WEIGHT = 0.1``); ``polish`` (default True: finish
            unverified samples in logit space); ``warm_start`` (default 0:
            Adam steps aligning the class token with the direction the target
            needs before the embeddings are sampled, on the method's own
            working copy (its dtype, its head inversion), see
            :func:`~nninvert_lib.alignment.align_to_head`); and the options of
            :func:`~nninvert_lib.forward.levenberg_marquardt` (``atol``,
            ``bounds``, ``max_step``, ``restarts`` (default 0 here), ``dtype``,
            ``progress`` ...).

    Returns:
        :class:`~nninvert_lib.result.InversionResult` verified on the whole model;
        ``info`` adds ``embedding_target`` ``(n, D)``, ``embedding`` (reached),
        ``embedding_distance`` (relative), ``feasible``, ``polished``,
        ``polish_iterations``, ``head_norm``,
        ``head_rank``, ``head_cond_before``/``_after``, ``null_dim`` and the LM
        diagnostics.

    Raises:
        InversionError: invalid target or options, or a model whose head cannot
            be inverted (see :func:`invert_head`).
    """
    unknown = sorted(set(options) - set(_GEN_OPTIONS))
    if unknown:
        raise InversionError(f"unknown option(s) {unknown}; valid options: {_GEN_OPTIONS}")
    if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 1:
        raise InversionError(f"n_samples must be an int >= 1, got {n_samples!r}")
    if not (isinstance(std, (int, float)) and std >= 0 and math.isfinite(std)):
        raise InversionError(f"std must be a finite number >= 0, got {std!r}")
    if not (isinstance(input_shape, Sequence) and len(input_shape) > 0
            and all(isinstance(s, int) and s > 0 for s in input_shape)):
        raise InversionError(f"input_shape must be a tuple of positive ints such as "
                             f"(1, 28, 28), got {input_shape!r}")
    anchor = options.pop("anchor", "start")
    if anchor not in ANCHORS:
        raise InversionError(f"anchor must be one of {ANCHORS}, got {anchor!r}")
    rank = options.pop("embedding_rank", DEFAULT_EMBEDDING_RANK)
    null_weight = options.pop("null_weight", DEFAULT_NULL_WEIGHT)
    if not (isinstance(null_weight, (int, float)) and null_weight >= 0):
        raise InversionError(f"null_weight must be a number >= 0, got {null_weight!r}")
    warm = options.pop("warm_start", 0)
    polish = options.pop("polish", True)
    if not isinstance(polish, bool):
        raise InversionError(f"polish must be True or False, got {polish!r}")
    atol = options.pop("atol", DEFAULT_ATOL)
    tol = options.pop("tol", None)
    tau = options.pop("tau", 1e-3)
    max_step = options.pop("max_step", None)
    bounds = options.pop("bounds", None)
    restarts = options.pop("restarts", 0)
    patience = options.pop("patience", 8)
    min_progress = options.pop("min_progress", 0.01)
    dtype = options.pop("dtype", None)
    jacobian = options.pop("jacobian", "auto")
    chord = options.pop("chord", DEFAULT_CHORD)
    broyden = options.pop("broyden", False)
    jacobian_dtype = options.pop("jacobian_dtype", None)
    _check_options(max_iter, atol, tol, tau, max_step, bounds, restarts, chord, patience,
                   min_progress, "logit", "lm", jacobian, dtype, broyden, jacobian_dtype)
    tol = atol / 2 if tol is None else tol

    head = invert_head(model, max_cond)
    k = head.weight.shape[0]
    if rank is not None and (not isinstance(rank, int) or rank < k - 1):
        raise InversionError(f"embedding_rank must be an int >= K - 1 = {k - 1} (the head's "
                             f"logit differences) or None (all D rows), got {rank!r}")
    tgt = check_target(target, num_classes=k).repeat_interleave(n_samples, dim=0)
    n = len(tgt)
    if seed is None:
        seed = torch.Generator().seed()
    gen = torch.Generator().manual_seed(int(seed))
    box = bounds or options.pop("init_range", (0.0, 1.0))
    options.pop("init_range", None)
    if not (isinstance(box, Sequence) and len(box) == 2 and box[0] < box[1]):
        raise InversionError(f"bounds / init_range must be (lo, hi) with lo < hi, got {box!r}")
    box = (float(box[0]), float(box[1]))
    draw = _uniform_draw(gen, (math.prod(input_shape),), box)
    x0 = draw(n)

    m_dtype, device = model_dtype_device(model)
    work = m_dtype if dtype is None else dtype
    _check_jacobian_dtype(jacobian_dtype, work)
    net, n_fused = inversion_copy(model, work, device)
    n_fast = with_fast_activations(net)
    fn = backbone_fn(net, tuple(input_shape))
    start, warm_info = x0, {"warm_start": 0}
    if warm != 0:
        from .alignment import warm_start_inputs

        start, warm_info = warm_start_inputs(model, x0.reshape(n, *input_shape), tgt, warm,
                                             None if bounds is None else box,
                                             own=(fn, head, work, device))
        start = start.reshape(n, -1)
    xf = start.to(device=device, dtype=work)
    anchors = None
    if anchor == "start":
        with torch.no_grad():
            anchors = torch.cat([fn(xf[i:i + 256]) for i in range(0, n, 256)]).double().cpu()
    e_target, feasible = sample_embeddings(head, tgt, std, gen, anchors)

    basis = embedding_residual_basis(head, rank, null_weight, gen)
    opts = LMOptions(max_iter=max_iter, tol=tol, tau=tau, max_step=max_step,
                     bounds=None if bounds is None else box, restarts=restarts, chord=chord,
                     broyden=broyden, jacobian_dtype=jacobian_dtype,
                     patience=patience, min_progress=float(min_progress),
                     history=options.pop("history", True),
                     progress=options.pop("progress", False))
    chunk_size = options.pop("chunk_size", None)
    size = options.pop("batch_size", None) or max(n, 1)
    to = dict(device=device, dtype=work)
    residual_all = EmbeddingResidual(e_target.to(**to), basis.to(**to), head.weight.to(**to),
                                     head.bias.to(**to), tgt.to(**to))
    t0 = time.perf_counter()
    parts = []
    for start in range(0, n, size):
        sl = slice(start, min(n, start + size))
        res = EmbeddingResidual(residual_all.e_target[sl], residual_all.basis, residual_all.w,
                                residual_all.b, residual_all.target[sl])
        parts.append(lm_solve(fn, xf[sl], res, opts, draw, jacobian, chunk_size,
                              desc="generalized"))
    info = _merge(parts, n, max_iter)
    x = info.pop("x")
    reached = info.pop("z").double().cpu()
    polished = torch.zeros(n, dtype=torch.bool)
    todo = torch.nonzero(~(info["error"].cpu() <= tol)).flatten()
    if polish and len(todo):
        # finish in logit space from where the backbone inversion ended
        full = lambda v: net(v.reshape(v.shape[0], *input_shape))  # noqa: E731
        pres = ProbabilityResidual("logit", tgt.to(**to)[todo.to(device)])
        popts = LMOptions(**{**opts.__dict__, "restarts": 0})
        out = lm_solve(full, x[todo.to(device)], pres, popts, None, jacobian, chunk_size,
                       desc="polish")
        x[todo.to(device)] = out["x"]
        with torch.no_grad():
            reached[todo] = fn(out["x"]).double().cpu()
        polished[todo] = True
        for j, i in enumerate(todo.tolist()):
            info["reasons"][i] = f"polished in logit space: {out['reasons'][j]} " \
                                 f"(backbone inversion: {info['reasons'][i]})"
        info["polish_iterations"] = torch.zeros(n, dtype=torch.long)
        info["polish_iterations"][todo] = out["iterations"]
        info["jacobians"][todo] += out["jacobians"]           # the polish's Jacobians too
    seconds = time.perf_counter() - t0 + warm_info.get("warm_start_seconds", 0.0)
    inputs = x.reshape(n, *input_shape).to(m_dtype)
    probs, converged = verify(model, inputs, tgt.to(device), atol)
    dist = (reached - e_target).norm(dim=1) / e_target.norm(dim=1)
    for i in torch.nonzero(~feasible).flatten().tolist():
        info["reasons"][i] += "; target outside the head norm's image (||u_p||^2 > D)"
    info.update(method="generalized", seed=seed, x0=x0.reshape(n, *input_shape), std=std,
                max_cond=max_cond, anchor=anchor, embedding_rank=basis.shape[1],
                null_weight=null_weight,
                polish=polish, polished=polished,
                embedding_target=e_target, embedding=reached, embedding_distance=dist,
                feasible=feasible, head_norm=head.norm, head_rank=head.pinv.rank,
                head_cond_before=head.pinv.cond_before, head_cond_after=head.pinv.cond_after,
                null_dim=head.null_basis.shape[1], max_iter=max_iter, atol=atol, tol=tol,
                tau=tau, max_step=max_step, bounds=opts.bounds, restarts_allowed=restarts,
                chord=chord, broyden=broyden,
                jacobian_dtype=None if jacobian_dtype is None else str(jacobian_dtype),
                dtype=str(work), device=str(device), seconds=seconds,
                fused_attn_disabled=n_fused, fast_activations=n_fast, n_samples=n_samples,
                input_shape=tuple(input_shape), **warm_info)
    return InversionResult(inputs=inputs, probs=probs, target=tgt.to(probs),
                           converged=converged, info=info)
