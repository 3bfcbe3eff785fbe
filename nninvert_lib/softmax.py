"""Inverting the softmax: logits ``z`` with ``softmax(z) = p``.

``softmax(z + c·1) = softmax(z)`` for every constant ``c``, so the inverse is a
line, ``z = log p + c·1``. The constant is a free parameter and it matters for
what comes next in a backward pass:

* before an activation, every ``z_i`` must lie in that activation's range
  (SELU: ``z_i > -λα ≈ -1.7581``). Pass ``lower=`` and ``c`` is raised just
  enough that ``min_i z_i >= lower + margin`` (choice (b) of the design notes);
* before a linear layer, ``c`` can be folded into the least-squares solve,
  ``[W, -1][h; c] = z - b``; :func:`softmax_constant_fit` gives the ``c`` that
  brings ``log p + c`` closest to given logits (how
  :func:`~nninvert_lib.backward.back_pass_inv` uses it).

Without either, the constant is fixed so that the logits sum to zero,
``c = -mean(log p)`` (the *centred* logits).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .errors import InversionError
from .result import check_target


def invert_softmax(p: torch.Tensor | Sequence, num_classes: int | None = None, *,
                   lower: float | None = None, upper: float | None = None, margin: float = 0.5,
                   shift: float | torch.Tensor | None = None, tol: float = 1e-6) -> torch.Tensor:
    """Logits ``z = log p + c`` with ``softmax(z) = p``, the constant ``c`` chosen.

    The constant, per row:

    * start from ``shift`` when given (a float or a ``(B,)`` tensor), else from
      ``c = -mean_i log p_i`` (centred logits, ``Σ_i z_i = 0``), or, when both
      ``lower`` and ``upper`` are given, from the ``c`` that centres the logits
      in ``(lower, upper)``;
    * then, when ``lower`` is given, raise ``c`` to ``lower + m - min_i log p_i``
      if that is larger, so that every ``z_i >= lower + m`` (e.g.
      ``lower=SELU_LOWER`` when a SELU follows: its inverse needs ``z_i > -λα``);
      when ``upper`` is given, lower ``c`` likewise to keep ``z_i <= upper - m``.
      ``m = margin``, or ``min(margin, 1e-3·(upper - lower))`` for a bounded range.

    A target whose logits span more than ``upper - lower`` (e.g. 0.9/0.011
    needs a span of 4.4, more than a Sigmoid's 1) cannot fit: the result then
    violates ``upper``, and the caller's range check reports it.

    Args:
        p: ``(K,)`` or ``(B, K)`` probabilities, strictly positive, rows summing
            to 1 within ``tol``.
        num_classes: the model's K, checked when given.
        lower: infimum of the next activation's range, or ``None``.
        upper: supremum of the next activation's range, or ``None``.
        margin: distance kept above ``lower`` (the inverse of SELU is
            ill-conditioned near ``-λα``).
        shift: the starting constant, then kept inside ``lower``/``upper``.
        tol: tolerance on the row sums.

    Returns:
        float64 logits with the shape of ``p``.

    Raises:
        InversionError: entries ``<= 0``, NaN/inf, rows not summing to 1, wrong
            shape or length (see :func:`~nninvert_lib.result.check_target`), or a
            negative ``margin``.
    """
    squeeze = torch.as_tensor(p).ndim == 1
    t = check_target(p, num_classes=num_classes, tol=tol)
    if margin < 0:
        raise InversionError(f"margin must be >= 0, got {margin}")
    logp = torch.log(t)
    if shift is not None:
        c = torch.as_tensor(shift, dtype=torch.float64).reshape(-1)
        if c.numel() not in (1, len(t)):
            raise InversionError(f"shift must be a float or hold one value per row ({len(t)}), "
                                 f"got {c.numel()} values")
        if not torch.isfinite(c).all():
            raise InversionError("shift must be finite")
        c = c.to(t.device).expand(len(t))
    elif lower is not None and upper is not None:
        c = (lower + upper) / 2 - (logp.amax(dim=1) + logp.amin(dim=1)) / 2
    else:
        c = -logp.mean(dim=1)
    m = margin if lower is None or upper is None else min(margin, 1e-3 * (upper - lower))
    if lower is not None:
        c = torch.maximum(c, lower + m - logp.amin(dim=1))
    if upper is not None:
        c = torch.minimum(c, upper - m - logp.amax(dim=1))
    z = logp + c[:, None]
    return z[0] if squeeze else z


def softmax_constant_fit(p: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``c`` minimising ``‖log p + c·1 - logits‖₂`` per row: ``mean(logits - log p)``.

    This is the free constant folded into a least-squares solve: with it,
    ``log p + c`` is the point of the softmax's preimage line nearest to
    ``logits``.

    Args:
        p: ``(B, K)`` valid probabilities (float64).
        logits: ``(B, K)``.

    Returns:
        ``(B,)`` float64.
    """
    return (logits.to(torch.float64) - torch.log(p.to(torch.float64))).mean(dim=-1)
