"""Targets, results and verification, shared by every inversion method.

A *target* is a probability vector over the K classes; the model returns logits
and the softmax is implied. Every method ends with :func:`verify`: the model is
run forward on the inputs it produced (in float64) and ``converged`` is set
from ``|softmax(model(x)) - target| <= atol``, entry by entry.
"""
from __future__ import annotations

import numbers
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import InversionError
from .modelcopy import float64_forward

DEFAULT_ATOL = 1e-3


def _probability(p: object, what: str) -> float:
    """``p`` (a real number or a 0-d tensor) as a float in ``(0, 1)``; raises
    :class:`InversionError` starting with ``what`` otherwise."""
    if torch.is_tensor(p) and p.ndim == 0:
        p = p.item()
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 < p < 1.0:
        raise InversionError(f"{what} must be a number strictly between 0 and 1 (every class "
                             f"needs positive probability for the softmax to be invertible), "
                             f"got {p!r}")
    return float(p)


def target_distribution(cls: int | Sequence[int] | torch.Tensor, p: float = 0.9,
                        num_classes: int = 10) -> torch.Tensor:
    """The paper's target: ``p`` on class ``cls`` and ``(1-p)/(K-1)`` on the others.

    Args:
        cls: an int (returns shape ``(K,)``) or a sequence of ints (``(B, K)``).
        p: probability of the target class, strictly between 0 and 1.
        num_classes: K.

    Returns:
        float64 tensor whose rows sum to 1 and are strictly positive.

    Raises:
        InversionError: ``p`` not a number in ``(0, 1)``, ``num_classes < 2``, a
            class outside ``0..K-1``, or ``cls`` not made of ints (a string, a float).
    """
    if num_classes < 2:
        raise InversionError(f"num_classes must be at least 2, got {num_classes}")
    p = _probability(p, "p")
    scalar = isinstance(cls, numbers.Integral) or (torch.is_tensor(cls) and cls.ndim == 0)
    try:
        classes = torch.as_tensor([operator.index(cls)] if scalar else
                                  [operator.index(c) for c in cls], dtype=torch.long)
    except TypeError:
        raise InversionError(f"cls must be a class index or a sequence of them (ints), got "
                             f"{cls!r}") from None
    if classes.numel() and (classes.min() < 0 or classes.max() >= num_classes):
        raise InversionError(f"classes must lie in 0..{num_classes - 1}, got {classes.tolist()}")
    out = torch.full((len(classes), num_classes), (1.0 - p) / (num_classes - 1),
                     dtype=torch.float64)
    out[torch.arange(len(classes)), classes] = p
    return out[0] if scalar else out


def prescribed_distribution(probs: Mapping[int, float], num_classes: int = 10) -> torch.Tensor:
    """Any prescribed output: ``probs[c]`` on each named class ``c``, the rest of the
    probability spread evenly over the classes not named.

    ``prescribed_distribution({3: 0.45, 8: 0.45})`` asks for an input the model
    finds as likely a 3 as an 8 (0.0125 on each other digit);
    ``prescribed_distribution({c: p})`` equals ``target_distribution(c, p)``
    (:func:`target_distribution`).

    Args:
        probs: ``{class: probability}``, at least one class, each probability in
            ``(0, 1)``. Naming every class, they must sum to 1 (within ``1e-6``);
            otherwise to less than 1, so that each class not named gets
            ``(1 - sum) / (K - len(probs)) > 0``.
        num_classes: K.

    Returns:
        float64 tensor ``(K,)``, strictly positive, summing to 1.

    Raises:
        InversionError: no class named, a class outside ``0..K-1`` or not an int,
            a probability not in ``(0, 1)``, or a sum that leaves no positive
            probability for the classes not named (or, naming all, is not 1).
    """
    if num_classes < 2:
        raise InversionError(f"num_classes must be at least 2, got {num_classes}")
    if not isinstance(probs, Mapping) or not probs:
        raise InversionError(f"probs must be a non-empty mapping {{class: probability}}, "
                             f"got {probs!r}")
    out = torch.empty(num_classes, dtype=torch.float64)
    named = torch.zeros(num_classes, dtype=torch.bool)
    for c, p in probs.items():
        try:
            c = operator.index(c)
        except TypeError:
            raise InversionError(f"classes must be ints, got {c!r}") from None
        if not 0 <= c < num_classes:
            raise InversionError(f"classes must lie in 0..{num_classes - 1}, got {c}")
        out[c], named[c] = _probability(p, f"the probability of class {c}"), True
    total = float(out[named].sum())
    rest = num_classes - int(named.sum())
    if rest == 0:
        if abs(total - 1.0) > 1e-6:
            raise InversionError(f"naming all {num_classes} classes, the probabilities must "
                                 f"sum to 1, got {total:.6g}")
    elif total >= 1.0:
        raise InversionError(f"the probabilities named sum to {total:.6g}, leaving nothing for "
                             f"the {rest} classes not named; they must sum to less than 1 "
                             f"(softmax gives every class a positive probability)")
    else:
        out[~named] = (1.0 - total) / rest
    return out


def check_target(target: torch.Tensor | Sequence, num_classes: int | None = None,
                 tol: float = 1e-6) -> torch.Tensor:
    """Validate a target and return it as float64 ``(B, K)``.

    Raises:
        InversionError: naming the problem: non-finite entries, entries ``<= 0``,
            rows not summing to 1 within ``tol``, wrong length, wrong rank.
    """
    t = torch.as_tensor(target, dtype=torch.float64)
    if t.ndim == 1:
        t = t.unsqueeze(0)
    if t.ndim != 2 or t.shape[1] < 2:
        raise InversionError(f"target must have shape (K,) or (B, K) with K >= 2, "
                             f"got {tuple(torch.as_tensor(target).shape)}")
    if num_classes is not None and t.shape[1] != num_classes:
        raise InversionError(f"target has {t.shape[1]} classes but the model outputs "
                             f"{num_classes}; pass a probability vector of length {num_classes}")
    if not torch.isfinite(t).all():
        raise InversionError("target holds NaN or inf; every entry must be a finite "
                             "probability in (0, 1)")
    if (t <= 0).any():
        raise InversionError("target holds entries <= 0; softmax outputs are strictly "
                             "positive, so every entry must lie in (0, 1) "
                             "(e.g. nni.target_distribution(cls, p=0.9))")
    sums = t.sum(dim=1)
    if ((sums - 1).abs() > tol).any():
        raise InversionError(f"target rows must sum to 1 within {tol}; got sums "
                             f"{sums[(sums - 1).abs() > tol][:5].tolist()}")
    return t


#: why a model that returns probabilities is refused (:func:`check_logits`).
PROBABILITIES_REFUSED = (
    "the methods take a model that returns logits (they apply the softmax themselves and "
    "invert it), so a final softmax would be applied twice; pass the model without it "
    "(for an nn.Sequential ending in nn.Softmax: model[:-1]). A final nn.LogSoftmax is "
    "fine: it only shifts the logits")


def check_logits(out: torch.Tensor) -> None:
    """Refuse model outputs ``out`` ``(n, K)`` that are probabilities (every entry
    ``>= 0`` and every row summing to 1 within ``1e-4``): the model ends in a
    softmax, and the methods would apply theirs on top of it.

    Raises:
        InversionError: naming the problem and the remedy.
    """
    out = out.detach()
    if len(out) and bool((out >= 0).all()) and bool(
            ((out.double().sum(dim=-1) - 1).abs() <= 1e-4).all()):
        raise InversionError("the model's outputs are probabilities (each row is >= 0 and "
                             f"sums to 1): {PROBABILITIES_REFUSED}")


def call_model(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, what: str,
               remedy: str = "") -> torch.Tensor:
    """``model(x)``, with a failure of the model (a ``RuntimeError`` other than
    running out of memory: most often inputs of the wrong shape) raised as an
    ``InversionError``: ``the model fails on <what> (<torch's message>)<remedy>``."""
    try:
        return model(x)
    except RuntimeError as err:
        if isinstance(err, torch.OutOfMemoryError):
            raise
        raise InversionError(f"the model fails on {what} ({err}){remedy}") from err


@dataclass
class InversionResult:
    """What an inversion produced (modelled on ``scipy.optimize.OptimizeResult``).

    Attributes:
        inputs: ``(n, *input_shape)`` in the model's dtype; ``model(inputs)`` is
            what was verified.
        probs: ``(n, K)`` float64, ``softmax(model(inputs))`` after inversion.
        target: ``(n, K)`` float64, the target each sample was inverted for.
        converged: bool ``(n,)``: every ``|probs - target| <= atol`` and the input
            is finite.
        info: diagnostics (iterations, residuals, retries, reasons for failure).
    """

    inputs: torch.Tensor
    probs: torch.Tensor
    target: torch.Tensor
    converged: torch.Tensor
    info: dict = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        """Fraction of samples verified (0–1)."""
        return float(self.converged.double().mean()) if len(self.converged) else 0.0

    @property
    def max_error(self) -> torch.Tensor:
        """``(n,)`` largest ``|probs - target|`` per sample (inf for non-finite inputs)."""
        err = (self.probs - self.target).abs().amax(dim=1)
        return torch.where(torch.isfinite(err), err, torch.full_like(err, float("inf")))

    def failure_summary(self, kinds: int = 3, width: int = 300) -> list[str]:
        """Why the unverified samples failed: a line per kind of reason in
        ``info["reasons"]``, most frequent first, at most ``kinds`` of them
        (``"<count> not verified, the first of them: <its reason>"``, the reason
        cut to ``width`` characters), then one line counting the rest. Two reasons
        are of one kind when their first clauses (up to a ``;``) agree up to the
        first ``:`` (``the 64-wide input of layer '8' (selu) left its range
        (-1.7581, inf): <how far>``) or, where there is no ``:``, in all but their
        numbers (``max_iter=30 reached (error 4.1e-01)``). Empty when every sample
        verified or the method recorded no reason per sample."""
        converged, reasons = self.converged.tolist(), self.info.get("reasons")
        if not reasons or len(reasons) != len(converged):
            return []
        groups: dict[str, list[str]] = {}
        for ok, why in zip(converged, reasons):
            if not ok:
                why = str(why) or "no reason recorded"
                head = why.split(";")[0]
                kind = head.split(":")[0] if ":" in head else re.sub(r"\d[\d.e+\-]*", "#", head)
                groups.setdefault(kind, []).append(why)
        ranked = sorted(groups.values(), key=len, reverse=True)
        lines = [f"{len(g)} not verified{': ' if len(g) == 1 else ', the first of them: '}"
                 f"{g[0] if len(g[0]) <= width else g[0][:width - 1] + '…'}"
                 for g in ranked[:kinds]]
        if len(ranked) > kinds:
            lines.append(f"{sum(map(len, ranked[kinds:]))} not verified for "
                         f"{len(ranked) - kinds} other reason(s)")
        return lines

    @property
    def message(self) -> str:
        """One line, as ``scipy.optimize.OptimizeResult.message``: how many samples
        verified and, where some did not, the most frequent reason
        (:meth:`failure_summary`)."""
        head = f"{int(self.converged.sum())} of {len(self.converged)} samples verified"
        return "; ".join([head, *self.failure_summary(kinds=1, width=200)])

    def __repr__(self) -> str:
        return (f"InversionResult(n={len(self.converged)}, success_rate={self.success_rate:.3f}, "
                f"inputs={tuple(self.inputs.shape)}, info keys={sorted(self.info)})")


@torch.no_grad()
def verify(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor,
           atol: float = DEFAULT_ATOL) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` forward in float64 and check ``|softmax - target| <= atol``.

    Args:
        model: returns logits ``(n, K)``; it is not modified (a float64
            :func:`~nninvert_lib.modelcopy.inversion_copy` runs, or for large
            models a :class:`~nninvert_lib.modelcopy.StreamedFloat64`).
        inputs: ``(n, *input_shape)``.
        target: ``(n, K)`` probabilities, or one row ``(K,)`` or ``(1, K)`` for
            every input.

    Returns:
        ``(probs, converged)``: float64 ``(n, K)`` and bool ``(n,)``.

    Raises:
        InversionError: ``inputs`` not a tensor with a batch dimension, ``target``
            with another number of rows than ``inputs``, a model that fails on
            ``inputs`` (most often: their shape) or returns another K.
    """
    if not torch.is_tensor(inputs) or inputs.ndim < 2:
        raise InversionError(
            "verify's inputs must be a tensor (n, *input_shape) with the batch dimension "
            f"first, got {tuple(inputs.shape) if torch.is_tensor(inputs) else type(inputs).__name__}"
            "; for one input x, pass x[None]")
    target = torch.as_tensor(target)
    if target.ndim == 1:
        target = target[None]
    if target.ndim != 2 or len(target) not in (1, len(inputs)):
        raise InversionError(f"verify got {len(inputs)} inputs but a target of shape "
                             f"{tuple(target.shape)}; pass one row (K,) for all of them or "
                             f"one row per input ({len(inputs)}, K)")
    x = inputs.to(torch.float64)
    logits = call_model(float64_forward(model), x, f"inputs of shape {tuple(inputs.shape)}")
    if logits.shape[-1] != target.shape[-1]:
        raise InversionError(f"the model returns {logits.shape[-1]} logits per input but the "
                             f"target has {target.shape[-1]} classes")
    probs = torch.softmax(logits, dim=-1)
    finite = torch.isfinite(x.reshape(len(x), -1)).all(dim=1) & torch.isfinite(probs).all(dim=1)
    ok = finite & ((probs - target.to(probs)).abs() <= atol).all(dim=1)
    return probs, ok
