"""The prior methods of reference [6], the baselines the paper compares against.

The paper's Section II describes two earlier ways of finding an input image for
a prescribed output, both tied to the training set:

1. **Search the training set** (:func:`max_class_image`): the training image
   that maximises the target class probability,
   ``x* = argmax_{x_i in train} softmax(f(x_i))_c``.
   Its companion (:func:`percentile_average_image`) averages every training
   image whose output lies in the lowest 25th percentile of distance to the
   desired (ideal) output ``p``:
   ``x* = mean{x_i : ||softmax(f(x_i)) - p||_2 <= q_25}``.
2. **Train the image** (:func:`gradient_image`, after Simonyan et al. [8]):
   gradient descent on the input to minimise the mean squared error
   ``L(x) = (1/K) ||softmax(f(x)) - p||_2^2``, started from method 1.

All three return an :class:`~nninvert_lib.result.InversionResult` verified like
every other method (float64 forward pass, ``|probs - target| <= atol``). They
usually do **not** meet ``atol = 1e-3``: a training image's output is whatever
the network says about it, not the prescribed distribution. That is the point
of the comparison; the achieved error is in ``info["max_error"]``.

Models return logits; inputs are ``(n, *input_shape)`` with batch first; the
training images are a tensor ``(N, *input_shape)`` (e.g. ``MnistData.images``,
or any subset of it).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .errors import InversionError
from .modelcopy import float64_forward, inversion_copy, model_dtype_device
from .result import (DEFAULT_ATOL, InversionResult, check_logits, check_target,
                     target_distribution, verify)

DEFAULT_BATCH = 2048
INITS = ("max_class", "percentile_average", "random")
OPTIMIZERS = ("adam", "sgd")


# ----------------------------------------------------------------------------- helpers
def _float64_copy(model: nn.Module) -> nn.Module:
    return inversion_copy(model, dtype=torch.float64)[0]


def _check_images(images: torch.Tensor, name: str = "train_images") -> torch.Tensor:
    if not torch.is_tensor(images):
        raise InversionError(f"{name} must be a tensor (N, *input_shape), e.g. "
                             f"load_mnist('train').images; got {type(images).__name__}")
    if images.ndim < 2 or len(images) == 0:
        raise InversionError(f"{name} must have shape (N, *input_shape) with N >= 1, "
                             f"got {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise InversionError(f"{name} holds NaN or inf; pass finite images")
    return images


def _check_batch_size(batch_size: int) -> int:
    if int(batch_size) < 1:
        raise InversionError(f"batch_size must be a positive int, got {batch_size}")
    return int(batch_size)


def _num_classes(model64: nn.Module, example: torch.Tensor) -> int:
    with torch.no_grad():
        out = model64(example[:1].to(torch.float64))
    check_logits(out)
    return int(out.shape[-1])


@torch.no_grad()
def training_set_probs(model: nn.Module, train_images: torch.Tensor,
                       batch_size: int = DEFAULT_BATCH) -> torch.Tensor:
    """``softmax(model(x_i))`` for every training image, in batches.

    Args:
        model: returns logits ``(B, K)``; it runs in float64
            (:func:`~nninvert_lib.modelcopy.float64_forward`; the model is not
            modified).
        train_images: ``(N, *input_shape)``, any dtype and device (moved to the
            model's device one batch at a time, so memory stays at one batch).
        batch_size: images per forward pass.

    Returns:
        float64 ``(N, K)`` on the model's device.
    """
    train_images = _check_images(train_images)
    batch_size = _check_batch_size(batch_size)
    device = model_dtype_device(model)[1]
    f64 = float64_forward(model)
    out = []
    for s in range(0, len(train_images), batch_size):
        logits = f64(train_images[s:s + batch_size].to(device))
        if s == 0:
            check_logits(logits)
        out.append(torch.softmax(logits, dim=-1))
    return torch.cat(out)


def _as_classes(classes: int | Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, bool]:
    scalar = isinstance(classes, int) or (torch.is_tensor(classes) and classes.ndim == 0)
    cls = torch.as_tensor([int(classes)] if scalar else [int(c) for c in classes],
                          dtype=torch.long)
    if len(cls) == 0:
        raise InversionError("classes is empty; pass an int or a sequence of class indices")
    return cls, scalar


def _finish(model: nn.Module, x64: torch.Tensor, target: torch.Tensor, atol: float,
            info: dict) -> InversionResult:
    """Cast to the model's dtype, verify, and record the achieved error."""
    inputs = x64.detach().to(model_dtype_device(model)[0])
    target = target.to(torch.float64)
    probs, ok = verify(model, inputs, target.to(inputs.device), atol=atol)
    err = (probs - target.to(probs)).abs().amax(dim=1)
    info = {**info, "atol": atol, "max_error": err.cpu()}
    return InversionResult(inputs=inputs, probs=probs, target=target.to(probs.device),
                           converged=ok, info=info)


# ----------------------------------------------------------------------------- method 1a
def max_class_image(model: nn.Module, train_images: torch.Tensor,
                    classes: int | Sequence[int] | torch.Tensor, p: float = 0.9,
                    atol: float = DEFAULT_ATOL, batch_size: int = DEFAULT_BATCH,
                    probs: torch.Tensor | None = None) -> InversionResult:
    """The training image that maximises the target class probability ([6], method 1).

    ``x*_c = argmax_{x_i in train} softmax(f(x_i))_c``: a search, not an
    optimisation, so it can only return images that are already in the
    training set. Ties go to the lowest index.

    Args:
        model: returns logits ``(B, K)``.
        train_images: ``(N, *input_shape)`` to search (the full training set or
            any subset).
        classes: an int or a sequence of ``n`` class indices (repeats allowed).
        p: target-class probability of the target the result is verified
            against, :func:`~nninvert_lib.result.target_distribution` ``(c, p)``.
        atol: verification tolerance.
        batch_size: images per forward pass over the training set.
        probs: optional precomputed :func:`training_set_probs` ``(N, K)`` for
            these images, to search several times without re-evaluating.

    Returns:
        :class:`InversionResult` with ``inputs`` ``(n, *input_shape)`` in the
        model's dtype and ``target`` ``(n, K)``; ``info`` holds ``index``
        (``(n,)`` position in ``train_images``), ``class_prob`` (``(n,)`` the
        maximised probability), ``max_error`` and ``method``.

    Raises:
        InversionError: empty or non-finite ``train_images``, classes outside
            ``0..K-1``, ``p`` outside ``(0, 1)``, a model that returns
            probabilities (:func:`~nninvert_lib.result.check_logits`).
    """
    train_images = _check_images(train_images)
    cls, _ = _as_classes(classes)
    if probs is None:
        probs = training_set_probs(model, train_images, batch_size)
    elif probs.shape[0] != len(train_images):
        raise InversionError(f"probs has {probs.shape[0]} rows but train_images has "
                             f"{len(train_images)}; pass training_set_probs(model, train_images)")
    target = target_distribution(cls.tolist(), p=p, num_classes=probs.shape[1])
    col = probs[:, cls.to(probs.device)]                     # (N, n)
    best, index = col.max(dim=0)                             # first maximum on ties
    index = index.cpu()
    x = train_images[index].to(model_dtype_device(model)[1], torch.float64)
    info = {"method": "max_class_image", "index": index, "class_prob": best.cpu(),
            "classes": cls, "n_searched": len(train_images)}
    return _finish(model, x, target, atol, info)


# ----------------------------------------------------------------------------- method 1b
def percentile_average_image(model: nn.Module, train_images: torch.Tensor,
                             target: torch.Tensor | Sequence, percentile: float = 25.0,
                             labels: torch.Tensor | None = None,
                             atol: float = DEFAULT_ATOL, batch_size: int = DEFAULT_BATCH,
                             probs: torch.Tensor | None = None) -> InversionResult:
    """The average of the training images whose output is closest to the target ([6], method 1).

    With ``d_i = ||softmax(f(x_i)) - p||_2`` the distance of image ``i``'s
    output to the desired (ideal) output ``p``, and ``q`` the ``percentile``-th
    percentile of ``{d_i}`` (linear interpolation, as ``torch.quantile``):
    ``x* = mean{x_i : d_i <= q}``.

    As the paper words it the percentile runs over the whole training set. A
    class holds about a tenth of MNIST, so the lowest 25% then mixes in other
    digits; pass ``labels`` to rank only the images labelled with the target's
    class (``argmax p``), the per-class reading.

    Args:
        model: returns logits ``(B, K)``.
        train_images: ``(N, *input_shape)``.
        target: ``(K,)`` or ``(n, K)`` probabilities (e.g.
            ``target_distribution([0, 1, ...])``).
        percentile: in ``(0, 100]``; 25 in [6].
        labels: optional int ``(N,)`` labels of ``train_images`` (per-class reading).
        atol, batch_size, probs: as in :func:`max_class_image`.

    Returns:
        :class:`InversionResult`; ``info`` holds ``n_averaged`` ``(n,)``,
        ``threshold`` ``(n,)`` (``q``), ``mean_output_distance`` ``(n,)`` (mean
        ``d_i`` of the averaged images), ``max_error`` and ``method``.

    Raises:
        InversionError: invalid target, percentile, labels or images; a class
            with no labelled images; a model that returns probabilities.
    """
    train_images = _check_images(train_images)
    if not 0.0 < float(percentile) <= 100.0:
        raise InversionError(f"percentile must lie in (0, 100], got {percentile}")
    if probs is None:
        probs = training_set_probs(model, train_images, batch_size)
    elif probs.shape[0] != len(train_images):
        raise InversionError(f"probs has {probs.shape[0]} rows but train_images has "
                             f"{len(train_images)}; pass training_set_probs(model, train_images)")
    t = check_target(target, num_classes=probs.shape[1])
    if labels is not None:
        labels = torch.as_tensor(labels).reshape(-1)
        if len(labels) != len(train_images):
            raise InversionError(f"labels has {len(labels)} entries but train_images has "
                                 f"{len(train_images)}; pass one label per image")
    dist = torch.cdist(t.to(probs), probs)                   # (n, N)
    xs, n_avg, thr, mean_d = [], [], [], []
    for b in range(len(t)):
        mask = torch.ones(len(train_images), dtype=torch.bool)
        if labels is not None:
            cls = int(t[b].argmax())
            mask = (labels == cls).cpu()
            if not mask.any():
                raise InversionError(f"no training image is labelled {cls}; pass labels "
                                     f"covering the target classes, or labels=None")
        d = dist[b].cpu()[mask]
        q = torch.quantile(d, float(percentile) / 100.0)
        keep = torch.nonzero(mask).squeeze(1)[d <= q]
        xs.append(train_images[keep].to(torch.float64).mean(dim=0))
        n_avg.append(len(keep))
        thr.append(float(q))
        mean_d.append(float(d[d <= q].mean()))
    x = torch.stack(xs).to(model_dtype_device(model)[1])
    info = {"method": "percentile_average_image", "percentile": float(percentile),
            "per_class": labels is not None, "n_averaged": torch.tensor(n_avg),
            "threshold": torch.tensor(thr, dtype=torch.float64),
            "mean_output_distance": torch.tensor(mean_d, dtype=torch.float64)}
    return _finish(model, x, t, atol, info)


# ----------------------------------------------------------------------------- method 2
def gradient_image(model: nn.Module, target: torch.Tensor | Sequence,
                   init: str | torch.Tensor = "max_class",
                   train_images: torch.Tensor | None = None, steps: int = 300,
                   lr: float = 0.01, optimizer: str = "adam", clamp: bool = False,
                   seed: int | None = None, input_shape: Sequence[int] = (1, 28, 28),
                   atol: float = DEFAULT_ATOL, batch_size: int = DEFAULT_BATCH
                   ) -> InversionResult:
    """Train the input image to produce the target ([6], method 2, after Simonyan et al. [8]).

    Minimises, for each of the ``n`` targets independently,
    ``L(x) = (1/K) ||softmax(f(x)) - p||_2^2`` over the pixels ``x`` by
    gradient descent in float64, starting from ``init``. The loss of the batch
    is the sum of the per-sample losses and both optimisers act element-wise,
    so samples do not interact: a batch gives what ``n`` separate runs give.
    The iterate with the lowest ``max |softmax(f(x)) - p|`` seen is returned.

    Args:
        model: any differentiable model returning logits ``(B, K)``.
        target: ``(K,)`` or ``(n, K)`` probabilities.
        init: ``"max_class"`` (the paper's choice: :func:`max_class_image` for
            ``argmax p``; needs ``train_images``), ``"percentile_average"``
            (:func:`percentile_average_image`; needs ``train_images``),
            ``"random"`` (uniform ``[0, 1]`` pixels from ``seed``), or a tensor
            ``(n, *input_shape)`` or ``(*input_shape)`` (broadcast).
        train_images: ``(N, *input_shape)`` for the data-based inits.
        steps: gradient steps (0 returns the initial image, verified).
        lr: step size, in pixel units per step for ``"adam"``.
        optimizer: ``"adam"`` (default: the softmax-MSE gradient is tiny, so
            plain descent barely moves) or ``"sgd"`` (plain gradient descent,
            as in [8]).
        clamp: project the pixels onto ``[0, 1]`` after each step (default
            False: the prior method did not constrain the image; see
            :func:`~nninvert_lib.measures.fraction_out_of_range`).
        seed: seeds the ``"random"`` init (a ``torch.Generator``; no global state).
        input_shape: image shape for ``"random"`` init without ``train_images``.
        atol: verification tolerance.
        batch_size: batch size of the training-set search for the data-based inits.

    Returns:
        :class:`InversionResult`; ``info`` holds ``init``, ``steps``,
        ``best_step`` ``(n,)``, ``loss_history`` (mean loss per step),
        ``initial_max_error`` ``(n,)``, ``max_error`` and ``method``.

    Raises:
        InversionError: invalid target, ``init``, ``steps``, ``lr``,
            ``optimizer``; data-based init without ``train_images``; an init
            tensor of the wrong shape; a model that returns probabilities.
    """
    if int(steps) < 0:
        raise InversionError(f"steps must be a non-negative int, got {steps}")
    if not float(lr) > 0:
        raise InversionError(f"lr must be positive, got {lr}")
    if optimizer not in OPTIMIZERS:
        raise InversionError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    device = model_dtype_device(model)[1]
    m64 = _float64_copy(model)

    init_name = init if isinstance(init, str) else "tensor"
    if isinstance(init, str):
        if init not in INITS:
            raise InversionError(f"init must be one of {INITS} or a tensor, got {init!r}")
        if init in ("max_class", "percentile_average") and train_images is None:
            raise InversionError(f"init={init!r} searches the training set: pass "
                                 f"train_images (e.g. load_mnist('train').images)")
    # the target's K comes from the model
    if train_images is not None:
        example = _check_images(train_images)[:1]
    elif init_name == "tensor":
        init = torch.as_tensor(init)
        example = init[:1] if init.ndim > len(input_shape) else init.unsqueeze(0)
    else:
        example = torch.zeros(1, *input_shape)
    t = check_target(target, num_classes=_num_classes(m64, example.to(device)))
    n = len(t)

    if init_name == "max_class":
        x0 = max_class_image(model, train_images, t.argmax(dim=1), batch_size=batch_size).inputs
    elif init_name == "percentile_average":
        x0 = percentile_average_image(model, train_images, t, batch_size=batch_size).inputs
    elif init_name == "random":
        shape = tuple(train_images.shape[1:]) if train_images is not None else tuple(input_shape)
        gen = torch.Generator().manual_seed(int(seed)) if seed is not None else torch.Generator()
        if seed is None:
            gen.seed()
        x0 = torch.rand((n, *shape), generator=gen, dtype=torch.float64)
    else:
        x0 = torch.as_tensor(init)
        if x0.ndim == example.ndim - 1:
            x0 = x0.unsqueeze(0).expand(n, *x0.shape)
        if x0.ndim != example.ndim or len(x0) != n or not torch.isfinite(x0).all():
            raise InversionError(f"init tensor must be finite with shape (n, *input_shape) "
                                 f"= ({n}, {', '.join(map(str, example.shape[1:]))}) or "
                                 f"{tuple(example.shape[1:])}, got {tuple(x0.shape)}")
    x = x0.to(device, torch.float64).clone().requires_grad_(True)
    tt = t.to(device)
    opt = (torch.optim.Adam([x], lr=float(lr)) if optimizer == "adam"
           else torch.optim.SGD([x], lr=float(lr)))

    best_x = x.detach().clone()
    best_err = torch.full((n,), float("inf"), dtype=torch.float64, device=device)
    best_step = torch.zeros(n, dtype=torch.long)
    initial_err = best_err
    history = []
    for step in range(int(steps) + 1):             # one forward pass per iterate
        probs = torch.softmax(m64(x), dim=-1)
        with torch.no_grad():
            err = (probs - tt).abs().amax(dim=1)
            if step == 0:
                initial_err = err.clone()
            better = err < best_err
            best_x[better] = x.detach()[better]
            best_err = torch.where(better, err, best_err)
            best_step[better.cpu()] = step
        if step == int(steps):
            break
        per_sample = ((probs - tt) ** 2).mean(dim=1)
        history.append(float(per_sample.detach().mean()))
        opt.zero_grad(set_to_none=True)
        per_sample.sum().backward()
        opt.step()
        if clamp:
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
    info = {"method": "gradient_image", "init": init_name, "steps": int(steps),
            "lr": float(lr), "optimizer": optimizer, "clamp": bool(clamp), "seed": seed,
            "best_step": best_step, "loss_history": history,
            "initial_max_error": initial_err.cpu()}
    return _finish(model, best_x, t, atol, info)
