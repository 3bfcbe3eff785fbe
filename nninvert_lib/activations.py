"""Inverting invertible activation functions, and how well conditioned that is.

An activation ``σ`` is *invertible* when it is one-to-one, so that every ``y`` in
its range has exactly one ``u`` with ``σ(u) = y``. The inverses used here:

==============  ==============================  ===================================
activation      range                           inverse ``u = σ⁻¹(y)``
==============  ==============================  ===================================
SELU            ``y > -λα`` (≈ -1.7581)         ``y/λ`` (``y > 0``),
                                                ``log1p(y/(λα))`` (``y <= 0``)
LeakyReLU(a)    all reals (``a > 0``)           ``y`` (``y >= 0``), ``y/a`` (``y < 0``)
ELU(α)          ``y > -α`` (``α > 0``)          ``y`` (``y > 0``), ``log1p(y/α)``
Tanh            ``-1 < y < 1``                  ``atanh(y)``
Sigmoid         ``0 < y < 1``                   ``log(y) - log1p(-y)``
Identity        all reals                       ``y``
==============  ==============================  ===================================

ReLU and GELU are not one-to-one (ReLU sends every negative input to 0; GELU
takes every value in ``(≈-0.17, 0)`` twice), so they are refused with an
:class:`~nninvert_lib.errors.InversionError` that names the alternative: the
forward-pass inversion (``nni.forward_pass_inv``), which only needs gradients.

Conditioning. The inverse acts entry by entry, so its Jacobian is
``D = diag(g'(y))`` with ``g = σ⁻¹``. Following Trefethen & Bau (the paper's
reference [9]), the relative condition number of ``g`` at a vector ``y`` is::

    κ(y) = ‖D‖₂ · ‖y‖₂ / ‖g(y)‖₂ ,   ‖D‖₂ = max_i |g'(y_i)| .

It grows without bound as any ``y_i -> -λα`` (SELU: ``g'(y) = 1/(λα + y)``),
and for LeakyReLU with slope ``a < 1`` it is 1 for single-signed vectors and
rises towards ``1/a`` for mixed-sign vectors (``1/a`` is also the condition
number ``max|g'|/min|g'|`` of ``D`` itself whenever the signs are mixed).

SELU's constants live in one place: :data:`SELU_LAMBDA`, :data:`SELU_ALPHA` and
:data:`SELU_LOWER` ``= -λα``; everything else in the library imports them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .errors import InversionError

#: SELU's scale λ (Klambauer et al. 2017; the value ``torch.nn.SELU`` uses).
SELU_LAMBDA: float = 1.0507009873554804934193349852946
#: SELU's α (Klambauer et al. 2017; the value ``torch.nn.SELU`` uses).
SELU_ALPHA: float = 1.6732632423543772848170429916717
#: SELU's infimum ``-λα ≈ -1.7581``: SELU outputs lie strictly above it.
SELU_LOWER: float = -SELU_LAMBDA * SELU_ALPHA

#: default bound on the relative condition number of an activation inverse.
DEFAULT_MAX_ACTIVATION_COND: float = 1e8

_FORWARD_ALTERNATIVE = ("invert this network with the forward-pass method instead "
                        "(ForwardPassInv, `nni.forward_pass_inv`, Levenberg-Marquardt on the "
                        "input), or build it with an invertible activation such as "
                        "nn.LeakyReLU or nn.SELU")

_NOT_INVERTIBLE = {
    nn.ReLU: "nn.ReLU is not invertible: it maps every negative input to 0",
    nn.ReLU6: "nn.ReLU6 is not invertible: it clips to [0, 6]",
    nn.GELU: "nn.GELU is not invertible: it is not one-to-one (every value in "
             "(-0.17, 0) has two preimages)",
    nn.SiLU: "nn.SiLU is not invertible: it is not one-to-one (every value in "
             "(-0.28, 0) has two preimages)",
    nn.Hardtanh: "nn.Hardtanh is not invertible: it clips to [min_val, max_val]",
}


@dataclass(frozen=True)
class ActivationInverse:
    """An invertible activation, described by what its inverse needs.

    Attributes:
        name: ``selu``, ``leaky_relu``, ``elu``, ``tanh``, ``sigmoid`` or ``identity``.
        lower: infimum of the range (outputs must be ``> lower``), ``-inf`` if none.
        upper: supremum of the range (outputs must be ``< upper``), ``inf`` if none.
        param: the activation's parameter (LeakyReLU slope, ELU α), else ``None``.
    """

    name: str
    lower: float = float("-inf")
    upper: float = float("inf")
    param: float | None = None

    # -- the maps -----------------------------------------------------------------
    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """``σ(u)``, elementwise (any shape, any floating dtype)."""
        if self.name == "selu":
            return torch.nn.functional.selu(u)
        if self.name == "leaky_relu":
            return torch.where(u >= 0, u, u * self.param)
        if self.name == "elu":
            return torch.where(u > 0, u, self.param * torch.expm1(u.clamp(max=0)))
        if self.name == "tanh":
            return torch.tanh(u)
        if self.name == "sigmoid":
            return torch.sigmoid(u)
        return u

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``σ⁻¹(y)`` elementwise, without range checks (out of range gives NaN/-inf)."""
        if self.name == "selu":
            neg = torch.log1p(y.clamp(max=0) / (SELU_LAMBDA * SELU_ALPHA))
            return torch.where(y > 0, y / SELU_LAMBDA, neg)
        if self.name == "leaky_relu":
            return torch.where(y >= 0, y, y / self.param)
        if self.name == "elu":
            return torch.where(y > 0, y, torch.log1p(y.clamp(max=0) / self.param))
        if self.name == "tanh":
            return torch.atanh(y)
        if self.name == "sigmoid":
            return torch.log(y) - torch.log1p(-y)
        return y

    def inverse_derivative(self, y: torch.Tensor) -> torch.Tensor:
        """``g'(y)`` for ``g = σ⁻¹``, elementwise (``inf`` at the range's edge)."""
        one = torch.ones_like(y)
        if self.name == "selu":
            return torch.where(y > 0, one / SELU_LAMBDA,
                               1.0 / (SELU_LAMBDA * SELU_ALPHA + y.clamp(max=0)))
        if self.name == "leaky_relu":
            return torch.where(y >= 0, one, one / self.param)
        if self.name == "elu":
            return torch.where(y > 0, one, 1.0 / (self.param + y.clamp(max=0)))
        if self.name == "tanh":
            return 1.0 / (1.0 - y * y)
        if self.name == "sigmoid":
            return 1.0 / (y * (1.0 - y))
        return one

    def in_range(self, y: torch.Tensor) -> torch.Tensor:
        """Bool mask, same shape as ``y``: finite and strictly inside the range."""
        return torch.isfinite(y) & (y > self.lower) & (y < self.upper)

    def range_text(self) -> str:
        """The valid range in words, for error messages."""
        lo = "-inf" if self.lower == float("-inf") else f"{self.lower:.6g}"
        hi = "inf" if self.upper == float("inf") else f"{self.upper:.6g}"
        return f"({lo}, {hi})"


def as_activation_inverse(act: nn.Module | str | ActivationInverse) -> ActivationInverse:
    """Describe ``act`` (a module, a name, or an :class:`ActivationInverse`).

    Names: ``selu``, ``leaky_relu`` (slope 0.01), ``elu`` (α 1), ``tanh``,
    ``sigmoid``, ``identity``; case and ``_`` are ignored (``LeakyReLU`` works).

    Raises:
        InversionError: the activation is not invertible (ReLU, GELU, ...; the
            message names the forward-pass alternative), has a parameter that
            makes it non-invertible (LeakyReLU slope ``<= 0``, ELU ``α <= 0``),
            or is unknown.
    """
    if isinstance(act, ActivationInverse):
        return act
    if isinstance(act, str):
        key = act.lower().replace("_", "").replace("nn.", "")
        by_name = {"selu": nn.SELU(), "leakyrelu": nn.LeakyReLU(), "elu": nn.ELU(),
                   "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(), "identity": nn.Identity(),
                   "relu": nn.ReLU(), "gelu": nn.GELU(), "silu": nn.SiLU(), "relu6": nn.ReLU6()}
        if key not in by_name:
            raise InversionError(f"unknown activation {act!r}; invertible activations are "
                                 "'selu', 'leaky_relu', 'elu', 'tanh', 'sigmoid', 'identity'")
        act = by_name[key]
    for cls, why in _NOT_INVERTIBLE.items():
        if type(act) is cls:
            raise InversionError(f"{why}, so the backward-pass inversion cannot undo it; "
                                 f"{_FORWARD_ALTERNATIVE}")
    if isinstance(act, nn.SELU):
        return ActivationInverse("selu", lower=SELU_LOWER)
    if isinstance(act, nn.LeakyReLU):
        a = float(act.negative_slope)
        if not a > 0:
            raise InversionError(f"nn.LeakyReLU(negative_slope={a}) is not invertible; the "
                                 f"slope must be > 0; otherwise "
                                 f"{_FORWARD_ALTERNATIVE}")
        return ActivationInverse("leaky_relu", param=a)
    if isinstance(act, nn.ELU):
        a = float(act.alpha)
        if not a > 0:
            raise InversionError(f"nn.ELU(alpha={a}) is not invertible; alpha must be > 0")
        return ActivationInverse("elu", lower=-a, param=a)
    if isinstance(act, nn.Tanh):
        return ActivationInverse("tanh", lower=-1.0, upper=1.0)
    if isinstance(act, nn.Sigmoid):
        return ActivationInverse("sigmoid", lower=0.0, upper=1.0)
    if isinstance(act, nn.Identity):
        return ActivationInverse("identity")
    raise InversionError(f"{type(act).__name__} is not an activation the backward pass can "
                         "invert; supported: nn.SELU, nn.LeakyReLU (slope > 0), nn.ELU, "
                         f"nn.Tanh, nn.Sigmoid, nn.Identity. Otherwise {_FORWARD_ALTERNATIVE}")


def is_invertible_activation(module: nn.Module) -> bool:
    """Whether ``module`` is one of the activations :func:`invert_activation` accepts."""
    try:
        as_activation_inverse(module)
    except InversionError:
        return False
    return True


def _relative_condition(inv: ActivationInverse, y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``‖D‖₂‖y‖₂/‖u‖₂`` over the last dim (``u = g(y)``); ``‖D‖₂`` when ``u = y = 0``."""
    d = inv.inverse_derivative(y).abs().amax(dim=-1)
    ny, nu = torch.linalg.vector_norm(y, dim=-1), torch.linalg.vector_norm(u, dim=-1)
    kappa = d * ny / nu
    kappa = torch.where((nu == 0) & (ny == 0), d, kappa)
    return torch.where(torch.isnan(kappa), torch.full_like(kappa, float("inf")), kappa)


def activation_condition(act: nn.Module | str, y: torch.Tensor) -> torch.Tensor:
    """Relative condition number of ``σ⁻¹`` at each vector of ``y``.

    ``κ(y) = max_i |g'(y_i)| · ‖y‖₂ / ‖g(y)‖₂`` with ``g = σ⁻¹`` (see the module
    docstring). ``inf`` for vectors with an entry outside the range.

    Args:
        act: an invertible activation (module or name).
        y: ``(n,)`` one vector, or ``(B, n)`` a batch (float; computed in float64).

    Returns:
        float64: a 0-d tensor for ``(n,)``, ``(B,)`` for ``(B, n)``.
    """
    inv = as_activation_inverse(act)
    y64 = torch.as_tensor(y).to(torch.float64)
    u = inv.inverse(y64)
    kappa = _relative_condition(inv, y64, u)
    bad = ~inv.in_range(y64)
    if bad.ndim:
        kappa = torch.where(bad.any(dim=-1), torch.full_like(kappa, float("inf")), kappa)
    return kappa


def invert_activation(act: nn.Module | str, y: torch.Tensor, *, return_cond: bool = False,
                      max_cond: float | None = DEFAULT_MAX_ACTIVATION_COND
                      ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Pre-activations ``u`` with ``σ(u) = y`` for an invertible activation ``σ``.

    Equations (elementwise): SELU ``u = y/λ`` for ``y > 0`` and
    ``u = log1p(y/(λα))`` for ``-λα < y <= 0``; LeakyReLU(a) ``u = y`` or
    ``y/a``; ELU(α) ``u = y`` or ``log1p(y/α)``; Tanh ``atanh(y)``; Sigmoid
    ``log(y/(1-y))``; Identity ``y``.

    Args:
        act: ``nn.SELU``, ``nn.LeakyReLU`` (slope > 0), ``nn.ELU`` (α > 0),
            ``nn.Tanh``, ``nn.Sigmoid``, ``nn.Identity``, or one of their names.
        y: activations, any shape; the last dimension is the vector over which
            the condition number is taken (``(n,)`` or ``(B, n)``).
        return_cond: also return :func:`activation_condition` per vector.
        max_cond: refuse (raise) when any vector's relative condition number
            exceeds it; ``None`` disables the check.

    Returns:
        ``u`` with the dtype of ``y`` (float64 when ``y`` is not floating),
        and with ``return_cond`` the float64 condition numbers (``()`` or ``(B,)``).

    Raises:
        InversionError: ``σ`` is not invertible (ReLU, GELU: the message names the
            forward-pass inversion), ``y`` holds NaN/inf or values outside the
            range (SELU: ``y <= -λα``), the result is unbounded (non-finite), or
            its condition number exceeds ``max_cond``.
    """
    inv = as_activation_inverse(act)
    y = torch.as_tensor(y)
    if not y.is_floating_point():
        y = y.to(torch.float64)
    y64 = y.to(torch.float64)
    if not torch.isfinite(y64).all():
        raise InversionError(f"activations hold NaN or inf; {inv.name} needs finite values "
                             f"in {inv.range_text()}")
    outside = ~inv.in_range(y64)
    if outside.any():
        worst = y64[outside]
        raise InversionError(
            f"{int(outside.sum())} value(s) lie outside the range of {inv.name}, which is "
            f"{inv.range_text()} (e.g. {worst[:3].tolist()}); no pre-activation maps there")
    u = inv.inverse(y64)
    if not torch.isfinite(u).all():
        raise InversionError(f"inverting {inv.name} gave an unbounded result (values too close "
                             f"to the edge of its range {inv.range_text()})")
    kappa = _relative_condition(inv, y64, u)
    if max_cond is not None and (kappa > max_cond).any():
        raise InversionError(f"inverting {inv.name} is ill-conditioned: relative condition "
                             f"number {float(kappa.max()):.3g} exceeds max_cond={max_cond:g} "
                             f"(values too close to the edge of the range {inv.range_text()}); "
                             "pass max_cond=None to accept it")
    u = u.to(y.dtype)
    return (u, kappa) if return_cond else u
