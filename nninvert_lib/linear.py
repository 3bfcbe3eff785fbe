"""Inverting a linear layer: thresholded SVD pseudoinverse and null-space sampling.

A linear layer ``z = W h + b`` with ``W = U Σ Vᵀ`` (``out × in``). The paper keeps
the singular values ``σ_i >= σ_max / max_cond`` (default ``max_cond = 100``),
inverts those and zeroes the rest, so the condition number of what is inverted
is at most ``max_cond``::

    h_p = V_r Σ_r⁻¹ U_rᵀ (z - b)                       (the particular solution)

Every ``h_p + N c`` with ``N`` the remaining right singular vectors (the null
space of the thresholded ``W``, including the ``in - out`` directions a
narrowing layer always has) maps to the same ``W_r h``. The paper samples one of
them (lines 24–25 of its algorithm)::

    h = h_p + std · ‖h_p‖ · N c / ‖N c‖ ,   c ~ N(0, I) .

:func:`thresholded_pinv` computes the SVD once; keep its
:class:`PseudoInverse` and reuse it for every sample (the backward pass caches
one per layer, see :func:`nninvert_lib.backward.plan_back_pass`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import InversionError


@dataclass(frozen=True)
class PseudoInverse:
    """The condition-number-limited pseudoinverse of one weight matrix (float64).

    Attributes:
        pinv: ``(in, out)``, ``V_r Σ_r⁻¹ U_rᵀ``.
        null_basis: ``(in, in - rank)``, orthonormal columns spanning the null
            space of the thresholded weight (dropped right singular vectors and,
            for ``in > out``, the ones ``W`` never sees).
        row_basis: ``(in, rank)``, the kept right singular vectors ``V_r``.
        col_basis: ``(out, rank)``, the kept left singular vectors ``U_r``.
        singular_values: ``(min(out, in),)``, all of them, descending.
        rank: number of singular values kept.
        cond_before: ``σ_max / σ_min`` over the non-zero singular values.
        cond_after: ``σ_max / σ_r`` over the kept ones (``<= max_cond``).
        max_cond: the threshold used.
    """

    pinv: torch.Tensor
    null_basis: torch.Tensor
    row_basis: torch.Tensor
    col_basis: torch.Tensor
    singular_values: torch.Tensor
    rank: int
    cond_before: float
    cond_after: float
    max_cond: float

    @property
    def in_features(self) -> int:
        return self.pinv.shape[0]

    @property
    def out_features(self) -> int:
        return self.pinv.shape[1]

    @property
    def null_dim(self) -> int:
        """Dimension of the null space sampled from (``in - rank``)."""
        return self.null_basis.shape[1]

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """Particular solution ``h_p = W_r⁺ rhs`` for ``rhs = z - b``: ``(..., out) -> (..., in)``."""
        return rhs.to(self.pinv) @ self.pinv.T


def thresholded_pinv(weight: torch.Tensor, max_cond: float = 100.0) -> PseudoInverse:
    """The SVD pseudoinverse of ``weight`` with its condition number limited to ``max_cond``.

    Keeps ``σ_i >= σ_max / max_cond``, inverts those, zeroes the rest (the paper's
    line 22–23): ``W⁺ = V_r Σ_r⁻¹ U_rᵀ``. Computed once in float64.

    Args:
        weight: ``(out, in)``, as stored by ``nn.Linear``.
        max_cond: the largest condition number kept, ``>= 1``.

    Returns:
        :class:`PseudoInverse` (all tensors float64, on ``weight``'s device).

    Raises:
        InversionError: ``weight`` is not 2-D, holds NaN/inf, is all zeros, or
            ``max_cond < 1``.
    """
    if not max_cond >= 1:
        raise InversionError(f"max_cond must be >= 1 (a condition number), got {max_cond}")
    w = torch.as_tensor(weight).detach().to(torch.float64)
    if w.ndim != 2:
        raise InversionError(f"weight must be a 2-D (out, in) matrix, got shape {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise InversionError("weight holds NaN or inf; it cannot be inverted")
    out_f, in_f = w.shape
    u, s, vh = torch.linalg.svd(w, full_matrices=True)
    if s.numel() == 0 or s[0] == 0:
        raise InversionError("weight is all zeros: it has no pseudoinverse worth sampling from")
    nonzero = s > s[0] * max(out_f, in_f) * torch.finfo(torch.float64).eps
    keep = s >= s[0] / max_cond
    r = int(keep.sum())
    v = vh.T
    pinv = (v[:, :r] / s[:r]) @ u[:, :r].T
    return PseudoInverse(pinv=pinv, null_basis=v[:, r:].contiguous(),
                         row_basis=v[:, :r].contiguous(), col_basis=u[:, :r].contiguous(),
                         singular_values=s, rank=r,
                         cond_before=float(s[0] / s[nonzero][-1]),
                         cond_after=float(s[0] / s[r - 1]), max_cond=float(max_cond))


def sample_null_space(x_p: torch.Tensor, null_basis: torch.Tensor, std: float = 0.1,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """``x = x_p + std · ‖x_p‖ · N c / ‖N c‖`` with ``c ~ N(0, I)`` (one ``c`` per row).

    The paper's lines 24–25: a random direction in the null space, scaled to
    ``std`` times the particular solution's norm, so ``W x = W x_p``.

    Args:
        x_p: ``(in,)`` or ``(n, in)`` particular solutions.
        null_basis: ``(in, k)`` orthonormal null-space basis
            (:attr:`PseudoInverse.null_basis`); ``k = 0`` returns ``x_p``.
        std: relative size of the null-space step, ``>= 0``.
        generator: drives ``c``; the same generator state gives the same samples.

    Returns:
        the samples, with the shape and dtype of ``x_p``.
    """
    if std < 0:
        raise InversionError(f"std must be >= 0, got {std}")
    squeeze = x_p.ndim == 1
    xp = x_p.reshape(1, -1) if squeeze else x_p
    if null_basis.shape[0] != xp.shape[1]:
        raise InversionError(f"null_basis has {null_basis.shape[0]} rows but x_p has "
                             f"{xp.shape[1]} entries per sample")
    k = null_basis.shape[1]
    if k == 0 or std == 0:
        return x_p.clone()
    basis = null_basis.to(torch.float64)
    device = generator.device if generator is not None else basis.device
    c = torch.randn(len(xp), k, generator=generator, dtype=torch.float64,
                    device=device).to(basis.device)
    x = c @ basis.T                               # N c, (n, in); in place from here on
    del c
    xp64 = xp.to(torch.float64)
    scale = std * torch.linalg.vector_norm(xp64, dim=1, keepdim=True)
    x.mul_(scale / torch.linalg.vector_norm(x, dim=1, keepdim=True)).add_(xp64)
    x = x.to(x_p.dtype)
    return x[0] if squeeze else x
