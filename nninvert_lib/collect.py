"""Collect a prescribed number of distinct verified inputs per target.

Every inversion method returns ``n_samples`` attempts per target row, each with an
honest ``converged`` flag; some attempts fail (a stalled LM run, a null-space
sample that left a range). A user who needs, say, 20 verified images per class
calls the method again for the rows still short, with a new seed, and keeps the
new verified inputs that differ from those already kept. :func:`collect_verified`
does that for any of the library's methods (``back_pass_inv``,
``forward_pass_inv``, ``generalized_inv``, or anything with their signature),
within a bounded number of rounds, and says per row how far it got.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .errors import InversionError
from .result import InversionResult, check_target

__all__ = ["collect_verified"]


def collect_verified(method: Callable[..., InversionResult], model: nn.Module,
                     target: torch.Tensor, n_verified: int, *, seed: int = 0,
                     max_rounds: int = 4, oversample: float = 1.25,
                     min_distance: float = 1e-6, **options) -> InversionResult:
    """Call ``method`` round after round until each target row has ``n_verified``
    distinct verified inputs, or ``max_rounds`` rounds have run.

    Round ``r`` (0, 1, ...) calls ``method(model, rows, n_samples=k, seed=seed + r,
    **options)`` for the rows still short, with ``k = ceil(oversample × largest
    shortfall)`` (round 0: ``ceil(oversample × n_verified)``). A verified input
    is kept when its L2 distance to every input already kept for its row exceeds
    ``min_distance``.

    Args:
        method: an inversion function such as :func:`~nninvert_lib.generalized.generalized_inv`.
        model: passed to ``method``.
        target: ``(K,)`` or ``(B, K)`` probabilities.
        n_verified: distinct verified inputs wanted per row (``>= 1``).
        seed: seed of round 0; round ``r`` uses ``seed + r``.
        max_rounds: calls at most (``>= 1``).
        oversample: attempts per missing input (``>= 1``).
        min_distance: two inputs closer than this (L2) count as one.
        **options: passed to ``method`` (``max_iter``, ``input_shape``, ...).

    Returns:
        :class:`~nninvert_lib.result.InversionResult` with ``n_verified`` rows per
        target row, in row order: the distinct verified inputs first; a row that
        fell short is filled with its other attempts (verified near-duplicates
        first, then unverified ones by increasing error), each with its own
        ``converged`` flag. ``info`` holds ``verified_per_row`` (distinct
        verified inputs per row, at most ``n_verified``), ``attempts_per_row``,
        ``rounds``, ``seeds``, ``n_verified``, ``min_distance``, ``method`` (its
        name) and ``reasons`` (per returned input: ``""`` where verified, else the
        reason ``method`` gave for that attempt, so that
        :meth:`~nninvert_lib.result.InversionResult.failure_summary` works).

    Raises:
        InversionError: invalid target, ``n_verified``, ``max_rounds``,
            ``oversample`` or ``min_distance``, or ``options`` holding
            ``n_samples`` or ``seed``.
    """
    if not isinstance(n_verified, int) or isinstance(n_verified, bool) or n_verified < 1:
        raise InversionError(f"n_verified must be an int >= 1, got {n_verified!r}")
    if not isinstance(max_rounds, int) or isinstance(max_rounds, bool) or max_rounds < 1:
        raise InversionError(f"max_rounds must be an int >= 1, got {max_rounds!r}")
    if not (isinstance(oversample, (int, float)) and math.isfinite(oversample)
            and oversample >= 1):
        raise InversionError(f"oversample must be a number >= 1, got {oversample!r}")
    if not (isinstance(min_distance, (int, float)) and math.isfinite(min_distance)
            and min_distance >= 0):
        raise InversionError(f"min_distance must be a number >= 0, got {min_distance!r}")
    clash = sorted({"n_samples", "seed"} & set(options))
    if clash:
        raise InversionError(f"collect_verified sets {clash} itself; pass n_verified and "
                             f"seed instead")
    rows = check_target(target)
    b = len(rows)
    kept: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in range(b)]
    # attempts not kept: (not verified, error, input, probs, reason), for filling short rows
    spare: list[list[tuple[bool, float, torch.Tensor, torch.Tensor, str]]] = [
        [] for _ in range(b)]
    attempts = [0] * b
    seeds: list[int] = []
    for r in range(max_rounds):
        short = [i for i in range(b) if len(kept[i]) < n_verified]
        if not short:
            break
        need = max(n_verified - len(kept[i]) for i in short)
        k = max(1, math.ceil(oversample * need))
        seeds.append(seed + r)
        res = method(model, rows[short], n_samples=k, seed=seed + r, **options)
        err = res.max_error
        reasons = res.info.get("reasons")
        if not reasons or len(reasons) != len(res.converged):
            reasons = [""] * len(res.converged)
        for j, i in enumerate(short):
            attempts[i] += k
            for s in range(j * k, (j + 1) * k):
                x = res.inputs[s]
                ok = bool(res.converged[s])
                flat = x.reshape(-1).double()
                if ok and len(kept[i]) < n_verified and all(
                        float((flat - y.reshape(-1).double()).norm()) > min_distance
                        for y, _ in kept[i]):
                    kept[i].append((x, res.probs[s]))
                else:
                    spare[i].append((not ok, float(err[s]), x, res.probs[s], str(reasons[s])))
    inputs, probs, conv, why = [], [], [], []
    for i in range(b):
        got = kept[i][:n_verified]
        fill = sorted(spare[i], key=lambda t: (t[0], t[1]))[: n_verified - len(got)]
        inputs += [x for x, _ in got] + [t[2] for t in fill]
        probs += [p for _, p in got] + [t[3] for t in fill]
        conv += [True] * len(got) + [not t[0] for t in fill]
        why += [""] * len(got) + [t[4] if t[0] else "" for t in fill]
    info = {"verified_per_row": [min(len(g), n_verified) for g in kept],
            "attempts_per_row": attempts, "rounds": len(seeds), "seeds": seeds,
            "n_verified": n_verified, "min_distance": min_distance,
            "method": getattr(method, "__name__", repr(method)), "reasons": why}
    return InversionResult(inputs=torch.stack(inputs), probs=torch.stack(probs),
                           target=rows.repeat_interleave(n_verified, dim=0).to(probs[0]),
                           converged=torch.tensor(conv), info=info)
