"""Where the head needs the class token, and how close the backbone gets it.

For a ViT whose head sits behind a LayerNorm (or RMSNorm), every logit vector
is ``z = A u + b'`` with ``u`` on the norm's image, ``‖u‖² = D``
(:mod:`.generalized`). The outputs within ``atol`` of a target ``p`` need
``z`` in a convex polytope ``Z`` of logit differences, so the row-space part
of ``u`` must lie in the convex set ``C = {A⁺(z - b') : z ∈ Z}``. Let ``u_p``
be the point of ``C`` nearest the origin (what :func:`head_reachability`
finds; ``‖u_p‖² / D`` is its ratio) and ``d = u_p / ‖u_p‖``. Because ``u_p`` is
the projection of the origin onto ``C``, every ``w`` in ``C`` has
``d · w >= ‖u_p‖``; ``d`` lies in the row space, so for every input that
verifies::

    a(x) = d · u(x) / √D  >=  √ratio                              (1)

— a necessary condition on the *backbone*, where :func:`head_reachability`
only looks at the head. :func:`head_directions` gives ``d`` and ``√ratio``;
:func:`align_to_head` raises ``a(x)`` by gradient ascent (Adam on the input);
:func:`backbone_alignment` runs it from several random starts per target and
reports the best ``a`` it found. A target whose best alignment stays below
``√ratio`` has no verifying input *among the inputs the ascent explores*:
evidence, not a proof (the ascent may miss the maximum), unlike
:func:`head_reachability`'s ratio above 1.

**Warm start.** Raising ``a(x)`` first and running Levenberg–Marquardt on the
logits afterwards turned the stalls of a weakly trained ViT-tiny into
solutions more often than more LM iterations did: ``forward_pass_inv(..., warm_start=200)`` and
``generalized_inv(..., warm_start=200)`` do that (numbers in
:func:`align_to_head`).
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import InversionError
from .forward import _uniform_draw, inversion_copy, model_dtype_device
from .generalized import HeadInverse, backbone_fn, head_min_norm_points, invert_head
from .modelcopy import with_fast_activations
from .result import DEFAULT_ATOL, check_target

__all__ = ["head_directions", "align_to_head", "backbone_alignment"]

#: Adam's step size on the input for :func:`align_to_head` (pixel units)
DEFAULT_ALIGN_LR: float = 0.02


def head_directions(model_or_head: nn.Module | HeadInverse, target: torch.Tensor | Sequence,
                    atol: float = DEFAULT_ATOL) -> tuple[torch.Tensor, torch.Tensor]:
    """The direction ``d`` each target needs the normalised class token along, and how far.

    Args:
        model_or_head: a timm ViT or its :class:`~nninvert_lib.generalized.HeadInverse`;
            its head must sit behind a LayerNorm or RMSNorm.
        target: ``(K,)`` or ``(B, K)`` distributions.
        atol: the verification tolerance.

    Returns:
        ``(d, needed)``: float64 unit vectors ``(B, D)`` and float64 ``(B,)``
        ``√ratio`` of :func:`~nninvert_lib.generalized.head_reachability`;
        every input that verifies has ``d · u(x) / √D >= needed`` (eq. 1).

    Raises:
        InversionError: invalid target, or a head with no norm before it (no
            sphere, no bound).
    """
    head = model_or_head if isinstance(model_or_head, HeadInverse) else invert_head(model_or_head)
    if head.norm == "none":
        raise InversionError("the head has no norm before it: its embeddings are unbounded, so "
                             "no direction is needed; use head_reachability or ForwardPassInv")
    u_p = head_min_norm_points(head, target, atol)                   # (B, D)
    size = u_p.norm(dim=1)
    return u_p / size.clamp(min=1e-300)[:, None], size / math.sqrt(head.dim)


def _check_steps(steps, name: str = "steps") -> int:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise InversionError(f"{name} must be an int >= 0 (Adam steps on the input), got {steps!r}")
    return steps


def align_to_head(model: nn.Module, x0: torch.Tensor, target: torch.Tensor | Sequence,
                  steps: int = 200, lr: float = DEFAULT_ALIGN_LR,
                  bounds: tuple[float, float] | None = None, atol: float = DEFAULT_ATOL,
                  progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Adam ascent of the alignment ``a(x) = d · u(x) / √D`` (eq. 1) from ``x0``.

    Each step is one forward and one backward pass of the backbone on the whole
    batch, on a private copy of the model (fused attention off), in the
    model's dtype.

    Measured on a ViT-tiny of an earlier ``quick`` recipe (750 steps, 84.8%
    validation accuracy; the current one needs no warm start at ``p = 0.9``),
    ``target_distribution(c, 0.9)``, 10 classes × 20, seed 0, two CPU threads:
    ``forward_pass_inv`` verifies 26 / 200 from random starts (90 s) and
    72 / 200 with ``warm_start=200`` (175 s, the ascent included: 2.4 s instead
    of 3.5 s per verified image); :func:`~nninvert_lib.generalized.generalized_inv`
    verifies 61 / 200 from random starts (523 s) and 92 / 200 with
    ``warm_start=200`` (565 s: 8.6 against 6.1 s per verified image; classes
    0, 1, 4, 5 with 19 or 20 each, class 6 with 15). On 10 × 4 targets (seed 1),
    LM for 30 iterations from starts after 50, 200 and 500 steps verified 3, 15
    and 17 of 40 (random starts: 7); 200 Adam steps on the log-probability
    error instead of the alignment: 1 of 40.

    Args:
        model: a timm ViT (not modified).
        x0: ``(n, ...)`` starting inputs (one per target row).
        target: ``(K,)`` or ``(n, K)``.
        steps: Adam steps.
        lr: Adam's step size (input units).
        bounds: ``(lo, hi)``: each step is clipped back into this pixel box.
        atol: tolerance that defines the needed alignment.
        progress: show a progress bar.

    Returns:
        ``(x, alignment, needed)``: inputs shaped like ``x0`` (float64 on the CPU
        when ``x0`` is, else ``x0``'s dtype and device), the alignment each
        reached ``(n,)`` and the alignment each needs ``(n,)`` (float64).

    Raises:
        InversionError: bad ``steps``/``lr``/``bounds``, mismatched shapes, or a
            model whose head cannot be inverted.
    """
    _check_steps(steps)
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise InversionError(f"lr must be a finite number > 0, got {lr!r}")
    if bounds is not None and not (isinstance(bounds, Sequence) and len(bounds) == 2
                                   and bounds[0] < bounds[1]):
        raise InversionError(f"bounds must be (lo, hi) with lo < hi, got {bounds!r}")
    head = invert_head(model)
    m_dtype, device = model_dtype_device(model)
    net, _ = inversion_copy(model, m_dtype, device)
    with_fast_activations(net)
    return _ascend(backbone_fn(net, tuple(x0.shape[1:])), head, x0, target, steps, lr, bounds,
                   atol, progress, m_dtype, device)


def _ascend(fn, head: HeadInverse, x0: torch.Tensor, target: torch.Tensor | Sequence,
            steps: int, lr: float, bounds: tuple[float, float] | None, atol: float,
            progress: bool, dtype: torch.dtype,
            device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`align_to_head` on a backbone function ``fn`` (flat inputs ``(n, d)`` to the
    normalised class token ``(n, D)``) that the caller built, in ``dtype`` on ``device``."""
    tgt = check_target(target, num_classes=head.weight.shape[0])
    n = len(x0)
    if len(tgt) == 1 and n > 1:
        tgt = tgt.expand(n, -1)
    if len(tgt) != n:
        raise InversionError(f"x0 has {n} inputs but target has {len(tgt)} rows")
    d, needed = head_directions(head, tgt, atol)
    shape = tuple(x0.shape[1:])
    to = dict(dtype=dtype, device=device)
    dirs = d.to(**to)
    gamma, beta = head.gamma.to(**to), head.beta.to(**to)
    scale = 1.0 / math.sqrt(head.dim)

    def alignment(x: torch.Tensor) -> torch.Tensor:
        u = (fn(x) - beta) / gamma
        return (u * dirs).sum(dim=1) * scale

    x = x0.detach().to(**to).reshape(n, -1).clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=float(lr))
    for _ in tqdm(range(steps), desc="align to head", disable=not progress, leave=False):
        opt.zero_grad(set_to_none=True)
        (-alignment(x).sum()).backward()
        opt.step()
        if bounds is not None:
            with torch.no_grad():
                x.clamp_(float(bounds[0]), float(bounds[1]))
    with torch.no_grad():
        reached = alignment(x).double().cpu()
    out = x.detach().reshape(n, *shape).to(dtype=x0.dtype, device=x0.device)
    return out, reached, needed


def backbone_alignment(model: nn.Module, target: torch.Tensor | Sequence, n_starts: int = 8,
                       steps: int = 300, lr: float = DEFAULT_ALIGN_LR, seed: int = 0,
                       input_shape: tuple[int, ...] = (1, 28, 28),
                       atol: float = DEFAULT_ATOL,
                       progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The best alignment the backbone reaches for each target, against what it needs.

    Runs :func:`align_to_head` from ``n_starts`` uniform random images in
    ``[0, 1)`` per target row (seeded) and keeps each row's best.

    Args:
        model: a timm ViT (not modified).
        target: ``(K,)`` or ``(B, K)``.
        n_starts: random starts per target row.
        steps, lr: Adam's budget and step size.
        seed: seeds the starts.
        input_shape: shape of one input.
        atol: the verification tolerance.
        progress: show a progress bar.

    Returns:
        ``(reached, needed)``: float64 ``(B,)`` each. ``reached < needed`` means
        no input the ascent found satisfies eq. 1's necessary condition
        (evidence that the target is out of the model's reach); ``reached >=
        needed`` decides nothing.

    Raises:
        InversionError: invalid target or arguments, or a head with no norm.
    """
    if not isinstance(n_starts, int) or isinstance(n_starts, bool) or n_starts < 1:
        raise InversionError(f"n_starts must be an int >= 1, got {n_starts!r}")
    tgt = check_target(target)
    gen = torch.Generator().manual_seed(int(seed))
    x0 = _uniform_draw(gen, tuple(input_shape), (0.0, 1.0))(len(tgt) * n_starts)
    _, reached, needed = align_to_head(model, x0, tgt.repeat_interleave(n_starts, dim=0),
                                       steps=steps, lr=lr, atol=atol, progress=progress)
    return reached.reshape(len(tgt), n_starts).amax(dim=1), needed[::n_starts]


def warm_start_inputs(model: nn.Module, x0: torch.Tensor, target: torch.Tensor, steps: int,
                      bounds: tuple[float, float] | None,
                      own: tuple | None = None) -> tuple[torch.Tensor, dict]:
    """``x0`` after ``steps`` of :func:`align_to_head`, and what to record in ``info``.

    Used by ``forward_pass_inv`` and ``generalized_inv`` (option ``warm_start``).
    ``own = (fn, head, dtype, device)``: a caller that already holds a working copy
    of the model (from :func:`~.modelcopy.inversion_copy`, parameters frozen; ``fn``
    its backbone function, as :func:`~.generalized.backbone_fn` builds it, and
    ``head`` its :class:`~.generalized.HeadInverse`) runs the ascent on that copy,
    in its dtype, instead of on a second copy in the model's dtype.
    """
    _check_steps(steps, "warm_start")
    t0 = time.perf_counter()
    try:
        if own is None:
            x, reached, needed = align_to_head(model, x0, target, steps=steps, bounds=bounds)
        else:
            x, reached, needed = _ascend(own[0], own[1], x0, target, steps, DEFAULT_ALIGN_LR,
                                         bounds, DEFAULT_ATOL, False, own[2], own[3])
    except InversionError as exc:
        raise InversionError(f"warm_start needs a vision transformer whose head sits behind a "
                             f"LayerNorm or RMSNorm: {exc}") from exc
    return x, {"warm_start": steps, "warm_start_seconds": time.perf_counter() - t0,
               "alignment": reached, "alignment_needed": needed}
