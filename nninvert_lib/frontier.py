"""How high each class's probability can be pushed: continuation in the target.

The paper's targets put ``p`` on one class and ``(1 - p)/(K - 1)`` on each of
the others (:func:`~nninvert_lib.result.target_distribution`). Whether a model
can produce that distribution at all depends on ``p``: a weakly trained ViT
gives some validation digits 0.95 for their class, yet no input may give 0.9
with the other nine probabilities equal. :func:`peak_frontier` measures, per
class, the largest ``p`` for which it finds verifying inputs:

1. ForwardPassInv from random starts at ``p_start`` (optionally with the
   class-token warm start of :mod:`.alignment`); a class with no verified
   start tries new random starts one ``step`` below, then one above, and so on
   (``start_tries`` in all): a miss at one ``p`` is not a miss at all ``p``;
2. then, from the inputs verified so far, Levenberg–Marquardt on the next
   target ``p + step``. A target the continuation verifies replaces the
   current one; one it misses halves the step, down to ``min_step``.

Every ``p`` it reports as reached comes with inputs that verify it (within
``atol``, checked in float64): a lower bound on the class's highest reachable
``p``, proved by example. Where it stalls, LM from inputs that verify ``p``
could not reach ``p + min_step``: evidence, not a proof, that the class's
highest reachable ``p`` lies in between. All classes advance together, one
batched LM call per round.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import InversionError
from .forward import forward_pass_inv, levenberg_marquardt
from .result import DEFAULT_ATOL, target_distribution

__all__ = ["PeakFrontier", "peak_frontier"]


@dataclass
class PeakFrontier:
    """What :func:`peak_frontier` found, one entry per class.

    Attributes:
        classes: the classes, in the order of every other field.
        highest: float64 ``(C,)``: the largest ``p`` with verified inputs; NaN
            where no random start verified any of the ``start_tries`` values tried.
        inputs: per class, the verified inputs at ``highest`` (``(m, *input_shape)``,
            the model's dtype; ``m = 0`` where ``highest`` is NaN).
        stalled_at: float64 ``(C,)``: the smallest ``p`` above ``highest`` that
            the continuation tried and missed with the smallest step; NaN where
            it reached ``p_max`` or never started.
        stall_error: float64 ``(C,)``: at ``stalled_at``, the smallest
            ``max |probs - target|`` among the attempts (how close LM came); NaN
            where ``stalled_at`` is.
        history: ``(class, p, verified, attempted)`` for every target tried.
        info: settings and ``seconds``, ``start_rounds`` (random-start solves),
            ``start_p`` (per class, the ``p`` of its first verified start; NaN where
            none) and ``rounds`` (continuation steps).
    """

    classes: list[int]
    highest: torch.Tensor
    inputs: list[torch.Tensor]
    stalled_at: torch.Tensor
    stall_error: torch.Tensor
    history: list[tuple[int, float, int, int]] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def reaches(self, p: float) -> torch.Tensor:
        """bool ``(C,)``: the classes for which inputs verifying ``p`` or more were found."""
        return torch.nan_to_num(self.highest, nan=-1.0) >= p - 1e-12

    def rows(self) -> list[dict]:
        """One dict per class (``class``, ``highest``, ``stalled_at``,
        ``stall_error``, ``verified``), ready for ``pandas.DataFrame``."""
        return [{"class": c, "highest": float(h), "stalled_at": float(s),
                 "stall_error": float(e), "verified": len(x)}
                for c, h, s, e, x in zip(self.classes, self.highest, self.stalled_at,
                                         self.stall_error, self.inputs)]


def _check_fraction(value, name: str) -> float:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and 0.0 < value < 1.0):
        raise InversionError(f"{name} must be a number strictly between 0 and 1, got {value!r}")
    return float(value)


def _start_ladder(p_start: float, step: float, p_max: float, tries: int) -> list[float]:
    """``p_start``, then one ``step`` below, one above, two below, ...: ``tries`` values in
    ``(0, p_max]``."""
    ladder, k = [p_start], 1
    while len(ladder) < tries and (p_start - k * step > 0 or p_start + k * step <= p_max):
        for p in (p_start - k * step, p_start + k * step):
            if 0 < p <= p_max and len(ladder) < tries:
                ladder.append(round(p, 10))
        k += 1
    return ladder


def peak_frontier(model: nn.Module, classes: Sequence[int] | None = None, p_start: float = 0.8,
                  step: float = 0.02, min_step: float = 0.005, p_max: float = 0.99,
                  n_samples: int = 4, max_iter: int = 30, seed: int = 0,
                  num_classes: int = 10, input_shape: tuple[int, ...] = (1, 28, 28),
                  warm_start: int = 0, start_tries: int = 5, atol: float = DEFAULT_ATOL,
                  progress: bool = False, **options) -> PeakFrontier:
    """The largest ``p`` of ``target_distribution(c, p)`` each class reaches, by continuation.

    Args:
        model: any differentiable model returning ``(n, num_classes)`` logits; not modified.
        classes: the classes to measure; None: all ``num_classes``.
        p_start: the first target probability, solved from random starts.
        step: the first increase of ``p`` per round; halved after a miss.
        min_step: the continuation of a class stops when its step falls below this.
        p_max: the largest ``p`` tried.
        n_samples: random starts per class and start round.
        max_iter: LM iterations per target (the paper: 30).
        seed: seeds the random starts (round ``k`` of starts uses ``seed + k``).
        num_classes: K.
        input_shape: shape of one input.
        warm_start: Adam steps of the class-token alignment before the first
            solve (a ViT whose head sits behind a norm; see :mod:`.alignment`).
        start_tries: random-start solves per class at most: at ``p_start``, then
            one ``step`` below, one above, two below, ... (within ``(0, p_max]``).
        atol: verification tolerance (probability space).
        progress: show a progress bar over rounds.
        **options: passed to every LM solve (``bounds``, ``dtype``, ``residual``,
            ...); the continuation itself runs without restarts.

    Returns:
        :class:`PeakFrontier`.

    Raises:
        InversionError: ``p_start``, ``p_max``, ``step`` or ``min_step`` out of
            range, ``p_max <= p_start``, ``min_step > step``, a class outside
            ``0..num_classes-1``, or bad ``n_samples`` or ``start_tries`` (and
            whatever the solvers raise for bad options).
    """
    p_start, p_max = _check_fraction(p_start, "p_start"), _check_fraction(p_max, "p_max")
    step, min_step = _check_fraction(step, "step"), _check_fraction(min_step, "min_step")
    if p_max <= p_start:
        raise InversionError(f"p_max ({p_max}) must be larger than p_start ({p_start})")
    if min_step > step:
        raise InversionError(f"min_step ({min_step}) must not exceed step ({step})")
    if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 1:
        raise InversionError(f"n_samples must be an int >= 1, got {n_samples!r}")
    if not isinstance(start_tries, int) or isinstance(start_tries, bool) or start_tries < 1:
        raise InversionError(f"start_tries must be an int >= 1, got {start_tries!r}")
    classes = list(range(num_classes)) if classes is None else [int(c) for c in classes]
    if not classes:
        raise InversionError("classes must name at least one class")
    target_distribution(classes, p_start, num_classes)  # raises for classes out of range
    if "restarts" in options:
        raise InversionError("peak_frontier runs the continuation without restarts; "
                             "use more n_samples instead")
    t0 = time.perf_counter()
    n = len(classes)
    highest = torch.full((n,), math.nan, dtype=torch.float64)
    stalled = torch.full((n,), math.nan, dtype=torch.float64)
    stall_err = torch.full((n,), math.nan, dtype=torch.float64)
    inputs: list[torch.Tensor] = [torch.empty(0)] * n
    steps = [step] * n
    history: list[tuple[int, float, int, int]] = []
    # starts: random-start solves at p_start, then alternately one step below and above
    starts = _start_ladder(p_start, step, p_max, start_tries)
    pending, tried, start_rounds = list(range(n)), [0] * n, 0
    start_p = [math.nan] * n
    while pending:
        p_try = {i: starts[tried[i]] for i in pending}
        res = forward_pass_inv(
            model, torch.cat([target_distribution([classes[i]], p_try[i], num_classes)
                              for i in pending]),
            n_samples=n_samples, max_iter=max_iter, seed=seed + start_rounds,
            input_shape=tuple(input_shape), warm_start=warm_start, atol=atol, **options)
        start_rounds += 1
        ok = res.converged.reshape(len(pending), n_samples)
        xs = res.inputs.reshape(len(pending), n_samples, *res.inputs.shape[1:])
        still = []
        for j, i in enumerate(pending):
            history.append((classes[i], p_try[i], int(ok[j].sum()), n_samples))
            inputs[i] = xs[j][ok[j]]
            tried[i] += 1
            if ok[j].any():
                highest[i] = start_p[i] = p_try[i]
            elif tried[i] < len(starts):
                still.append(i)
        pending = still
    active = [i for i in range(n) if not math.isnan(highest[i]) and highest[i] < p_max]
    rounds = 0
    bar = tqdm(desc="peak frontier", disable=not progress, leave=False)
    while active:
        rounds += 1
        tries = {i: round(min(float(highest[i]) + steps[i], p_max), 10) for i in active}
        x = torch.cat([inputs[i] for i in active])
        tgt = torch.cat([target_distribution([classes[i]] * len(inputs[i]), tries[i], num_classes)
                         for i in active])
        res = levenberg_marquardt(model, x, tgt, max_iter=max_iter, atol=atol, seed=seed,
                                  restarts=0, **options)
        sizes = [len(inputs[i]) for i in active]
        still = []
        for i, conv, xi, ei in zip(active, res.converged.split(sizes), res.inputs.split(sizes),
                                   res.max_error.split(sizes)):
            history.append((classes[i], tries[i], int(conv.sum()), len(conv)))
            if conv.any():
                highest[i], inputs[i] = tries[i], xi[conv]
                if tries[i] < p_max:
                    still.append(i)
                continue
            steps[i] /= 2
            if steps[i] >= min_step - 1e-12:
                still.append(i)
            else:
                stalled[i], stall_err[i] = tries[i], float(ei.min())
        active = still
        bar.set_postfix(active=len(active), refresh=False)
        bar.update(1)
    bar.close()
    info = {"p_start": p_start, "step": step, "min_step": min_step, "p_max": p_max,
            "n_samples": n_samples, "max_iter": max_iter, "seed": seed, "atol": atol,
            "warm_start": warm_start, "start_tries": start_tries, "start_rounds": start_rounds,
            "start_p": start_p, "rounds": rounds, "seconds": time.perf_counter() - t0}
    return PeakFrontier(classes, highest, inputs, stalled, stall_err, history, info)
