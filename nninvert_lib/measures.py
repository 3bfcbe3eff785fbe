"""Measures for the paper's claims about the images an inversion produces.

The paper says its images are "random-like", "far from the training set", and
more random as the network deepens, while the prior methods of [6] stay "very
close to the training dataset". Each claim gets a number here:

=====================================  =============================================
claim                                  measure
=====================================  =============================================
far from the training set              :func:`nearest_training_image` (L2 distance,
                                       pixel scale [0, 1]) and its percentile among
                                       the test digits' own distances
                                       (:func:`reference_nearest_distances`,
                                       :func:`distance_percentile`)
random-like                            :func:`spectral_flatness`,
                                       :func:`correlation_length`, normalised by
                                       :func:`random_likeness` (0 = like digits,
                                       1 = like white noise)
a distribution, not one image          :func:`mean_pairwise_distance`,
                                       :func:`effective_rank`, :func:`class_diversity`
a valid image                          :func:`fraction_out_of_range`
a property of the network, not data    :func:`cross_model_agreement`
=====================================  =============================================

Images are batch first: ``(n, C, H, W)`` (or ``(n, H, W)`` for the image
measures, ``(n, ...)`` for the distance measures, which flatten). Distances
are Euclidean on the pixel values as given (MNIST here: ``[0, 1]``), so the
distance between an all-black and an all-white 28×28 image is 28.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from .errors import InversionError
from .modelcopy import float64_forward, model_dtype_device

EULER_GAMMA = 0.5772156649015329
#: expected spectral flatness of one white-noise image's periodogram, exp(-γ)
WHITE_NOISE_FLATNESS = math.exp(-EULER_GAMMA)


def _flat(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    if not torch.is_tensor(images):
        raise InversionError(f"{name} must be a tensor (n, ...), got {type(images).__name__}")
    if images.ndim < 2:
        raise InversionError(f"{name} must have shape (n, ...) with a batch dimension, "
                             f"got {tuple(images.shape)}")
    return images.reshape(len(images), -1)


def _planes(images: torch.Tensor) -> torch.Tensor:
    """``(n, C, H, W)`` or ``(n, H, W)`` -> float64 ``(n, C, H, W)``."""
    if not torch.is_tensor(images) or images.ndim not in (3, 4):
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise InversionError(f"images must be a tensor (n, C, H, W) or (n, H, W), got {shape}")
    x = images.detach().to(torch.float64)
    return x.unsqueeze(1) if x.ndim == 3 else x


# ----------------------------------------------------------------------------- distance
@dataclass
class NearestTraining:
    """Nearest training image of each query.

    Attributes:
        distance: float64 ``(n,)``, ``min_i ||x - t_i||_2`` on the pixel scale
            (NaN for a non-finite query).
        index: int64 ``(n,)``, the minimising row of the training images (-1 for
            a non-finite query).
    """

    distance: torch.Tensor
    index: torch.Tensor


@torch.no_grad()
def nearest_training_image(images: torch.Tensor, train_images: torch.Tensor,
                           chunk_size: int = 4096, query_chunk: int = 512,
                           candidates: int = 8) -> NearestTraining:
    """The Euclidean distance from each image to its nearest training image.

    ``d(x) = min_i ||x - t_i||_2`` over flattened pixels. The search runs in
    float32 through the expansion ``||x||² + ||t||² - 2 xᵀt`` (chunked: memory
    ``query_chunk × chunk_size`` floats), keeps the ``candidates`` closest
    training images per query, and recomputes those distances exactly in
    float64; the exact minimum is returned. An exact duplicate of a training
    image therefore gets distance 0.

    Args:
        images: ``(n, ...)`` queries.
        train_images: ``(N, ...)`` with the same number of values per image.
        chunk_size: training images per block.
        query_chunk: queries per block.
        candidates: approximate nearest neighbours re-ranked in float64.

    Returns:
        :class:`NearestTraining` with ``distance`` and ``index``, both ``(n,)``, on
        the CPU (the search runs on ``train_images``' device).
    """
    q_all = _flat(images).detach()
    t_all = _flat(train_images, "train_images").detach()
    if q_all.shape[1] != t_all.shape[1]:
        raise InversionError(f"images have {q_all.shape[1]} values each but train_images "
                             f"have {t_all.shape[1]}; pass images of the same shape")
    if len(t_all) == 0:
        raise InversionError("train_images is empty")
    k = max(1, min(int(candidates), len(t_all)))
    device = t_all.device
    t32 = t_all.to(torch.float32)
    tn = (t32 ** 2).sum(dim=1)
    dist = torch.full((len(q_all),), float("nan"), dtype=torch.float64)
    index = torch.full((len(q_all),), -1, dtype=torch.long)
    for qs in range(0, len(q_all), query_chunk):
        q = q_all[qs:qs + query_chunk].to(device)
        finite = torch.isfinite(q).all(dim=1)
        q32 = torch.where(finite[:, None], q.to(torch.float32),
                          torch.zeros((), dtype=torch.float32))
        qn = (q32 ** 2).sum(dim=1, keepdim=True)
        best_d = torch.zeros((len(q), 0), device=device)
        best_i = torch.zeros((len(q), 0), dtype=torch.long, device=device)
        for ts in range(0, len(t32), chunk_size):
            d2 = qn + tn[None, ts:ts + chunk_size] - 2.0 * q32 @ t32[ts:ts + chunk_size].T
            kk = min(k, d2.shape[1])
            v, i = torch.topk(d2, kk, dim=1, largest=False)
            best_d = torch.cat([best_d, v], dim=1)
            best_i = torch.cat([best_i, i + ts], dim=1)
            if best_d.shape[1] > k:
                v, j = torch.topk(best_d, k, dim=1, largest=False)
                best_d, best_i = v, torch.gather(best_i, 1, j)
        exact = (q.to(torch.float64)[:, None, :] - t_all[best_i].to(torch.float64)).norm(dim=2)
        e, j = exact.min(dim=1)
        idx = torch.gather(best_i, 1, j[:, None]).squeeze(1)
        dist[qs:qs + len(q)] = torch.where(finite, e, torch.full_like(e, float("nan"))).cpu()
        index[qs:qs + len(q)] = torch.where(finite, idx, torch.full_like(idx, -1)).cpu()
    return NearestTraining(distance=dist, index=index)


def reference_nearest_distances(reference_images: torch.Tensor, train_images: torch.Tensor,
                                n: int | None = 1000, seed: int = 0,
                                **search) -> torch.Tensor:
    """Nearest-training distances of real held-out digits (the yardstick for "far").

    Args:
        reference_images: ``(M, ...)`` e.g. ``load_mnist("val").images``.
        train_images: ``(N, ...)``.
        n: how many reference images to use, drawn without replacement with
            ``seed`` (None: all; 10,000 against 60,000 takes a CPU minute).
        seed: seeds the draw (a ``torch.Generator``).
        **search: passed to :func:`nearest_training_image`.

    Returns:
        float64 ``(n,)`` sorted ascending.
    """
    ref = reference_images
    if n is not None and n < len(ref):
        gen = torch.Generator().manual_seed(int(seed))
        ref = ref[torch.randperm(len(ref), generator=gen)[:int(n)]]
    return nearest_training_image(ref, train_images, **search).distance.sort().values


def distance_percentile(distances: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Where each distance ranks among the reference distances, in percent.

    ``100 · #{r in reference : r <= d} / #reference``: 0 means closer to the
    training set than every held-out digit, 50 as close as a typical one, 100
    farther than all of them.

    Args:
        distances: ``(n,)`` (e.g. ``nearest_training_image(x, train).distance``).
        reference: ``(M,)`` from :func:`reference_nearest_distances`.

    Returns:
        float64 ``(n,)`` in ``[0, 100]`` (NaN where the distance is NaN).
    """
    ref = torch.as_tensor(reference, dtype=torch.float64).reshape(-1)
    if len(ref) == 0 or not torch.isfinite(ref).all():
        raise InversionError("reference must hold at least one finite distance")
    d = torch.as_tensor(distances, dtype=torch.float64).reshape(-1)
    rank = torch.searchsorted(ref.sort().values, d.contiguous(), right=True)
    out = 100.0 * rank.to(torch.float64) / len(ref)
    return torch.where(torch.isnan(d), d, out)


# ----------------------------------------------------------------------------- randomness
def spectral_flatness(images: torch.Tensor) -> torch.Tensor:
    """Spectral flatness (Wiener entropy) of each image's 2-D power spectrum.

    With ``P(k) = |FFT2(x - mean x)|²`` over the ``H·W - 1`` non-zero
    frequencies: ``SF = exp(mean_k log P(k)) / mean_k P(k)``, the geometric over
    the arithmetic mean, in ``[0, 1]``. It is invariant to brightness and
    contrast (``a·x + b``). A smooth image (a digit) puts its power in a few low
    frequencies: SF near 0. White noise spreads it evenly, but one image's
    periodogram fluctuates (exponentially distributed), so its expected SF is
    ``exp(-γ) ≈ 0.56`` (:data:`WHITE_NOISE_FLATNESS`), not 1. A constant image
    has no power at all and gets 0 (no structure, nothing random). Channels are
    averaged.

    Args:
        images: ``(n, C, H, W)`` or ``(n, H, W)``.

    Returns:
        float64 ``(n,)`` in ``[0, 1]``; NaN for non-finite images.
    """
    x = _planes(images)
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(x).abs().pow(2).flatten(-2)[..., 1:]   # drop the DC term
    arith = power.mean(dim=-1)
    geo = torch.exp(torch.log(power).mean(dim=-1))
    sf = torch.where(arith > 0, geo / torch.where(arith > 0, arith, 1.0), torch.zeros_like(arith))
    return sf.mean(dim=1)


def radial_autocorrelation(images: torch.Tensor) -> torch.Tensor:
    """Normalised pixel autocorrelation, averaged over rings of integer radius.

    ``ρ(r) = mean_{|δ| rounds to r} Σ_p x̃(p) x̃(p+δ) / Σ_p x̃(p)²`` with
    ``x̃ = x - mean x``, zero-padded (no wrap-around), for ``r = 0 .. ⌊√(H²+W²)⌋``.
    ``ρ(0) = 1``. Channels are averaged. A constant image gives NaN.

    Returns:
        float64 ``(n, R)``.
    """
    x = _planes(images)
    h, w = x.shape[-2:]
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    f = torch.fft.fft2(x, s=(2 * h, 2 * w))
    acf = torch.fft.ifft2(f.abs().pow(2)).real               # (n, C, 2H, 2W)
    acf = acf / acf[..., :1, :1]
    dy = torch.fft.fftfreq(2 * h, 1.0 / (2 * h), dtype=torch.float64, device=x.device)
    dx = torch.fft.fftfreq(2 * w, 1.0 / (2 * w), dtype=torch.float64, device=x.device)
    r = torch.sqrt(dy[:, None] ** 2 + dx[None, :] ** 2)
    valid = (dy.abs()[:, None] < h) & (dx.abs()[None, :] < w)
    ring = torch.round(r).long()
    n_rings = int(ring[valid].max()) + 1
    ring = torch.where(valid, ring, torch.full_like(ring, n_rings))   # dump bin
    counts = torch.bincount(ring.flatten(), minlength=n_rings + 1)[:n_rings].to(torch.float64)
    flat = acf.flatten(-2)                                   # (n, C, 4HW)
    sums = torch.zeros(*flat.shape[:-1], n_rings + 1, dtype=torch.float64, device=x.device)
    sums.index_add_(-1, ring.flatten(), flat)
    return (sums[..., :n_rings] / counts).mean(dim=1)


def correlation_length(images: torch.Tensor, level: float = math.exp(-1)) -> torch.Tensor:
    """Radius (pixels) at which the pixel autocorrelation first falls below ``level``.

    From :func:`radial_autocorrelation` ``ρ(r)``: the first ring ``r`` with
    ``ρ(r) < level``, linearly interpolated between rings ``r-1`` and ``r``.
    White noise decorrelates within one pixel (``≈ 1 - 1/e ≈ 0.63`` with the
    default ``level = 1/e``); an MNIST digit, whose strokes are a few pixels
    wide, stays correlated for about two to three. Larger is smoother.

    Returns:
        float64 ``(n,)`` in pixels; NaN for constant or non-finite images; the
        largest radius if ``ρ`` never falls below ``level``.
    """
    rho = radial_autocorrelation(images)
    below = rho < level
    first = torch.where(below.any(dim=1), below.to(torch.int8).argmax(dim=1),
                        torch.full((len(rho),), rho.shape[1] - 1, device=rho.device))
    first = first.clamp(min=1)
    hi = torch.gather(rho, 1, first[:, None]).squeeze(1)
    lo = torch.gather(rho, 1, (first - 1)[:, None]).squeeze(1)
    frac = (lo - level) / (lo - hi)
    out = (first - 1).to(torch.float64) + frac.clamp(0.0, 1.0)
    out = torch.where(below.any(dim=1), out, torch.full_like(out, rho.shape[1] - 1.0))
    return torch.where(torch.isfinite(rho).all(dim=1), out, torch.full_like(out, float("nan")))


@dataclass(frozen=True)
class RandomnessReference:
    """Reference values that pin :func:`random_likeness` to 0 (digits) and 1 (noise).

    Attributes:
        flatness_digits, flatness_noise: median :func:`spectral_flatness` of the
            real digits and of uniform white noise of the same shape.
        corr_length_digits, corr_length_noise: median :func:`correlation_length`.
        n_digits, n_noise: how many images each median is over.
    """

    flatness_digits: float
    flatness_noise: float
    corr_length_digits: float
    corr_length_noise: float
    n_digits: int
    n_noise: int


def randomness_reference(digit_images: torch.Tensor, n: int | None = 1000,
                         seed: int = 0) -> RandomnessReference:
    """Measure real digits and white noise once, to normalise :func:`random_likeness`.

    Args:
        digit_images: ``(M, C, H, W)`` real images (e.g. ``load_mnist("train").images``).
        n: images to use from each (digits drawn with ``seed``; None: all digits).
        seed: seeds the digit draw and the noise (``U[0, 1]`` pixels).

    Returns:
        :class:`RandomnessReference`.
    """
    x = _planes(digit_images)
    gen = torch.Generator().manual_seed(int(seed))
    if n is not None and n < len(x):
        x = x[torch.randperm(len(x), generator=gen)[:int(n)]]
    noise = torch.rand(x.shape, generator=gen, dtype=torch.float64)
    return RandomnessReference(
        flatness_digits=float(spectral_flatness(x).nanmedian()),
        flatness_noise=float(spectral_flatness(noise).nanmedian()),
        corr_length_digits=float(correlation_length(x).nanmedian()),
        corr_length_noise=float(correlation_length(noise).nanmedian()),
        n_digits=len(x), n_noise=len(noise))


MEASURES = ("flatness", "correlation_length")


def random_likeness(images: torch.Tensor, reference: RandomnessReference,
                    measure: str = "flatness") -> torch.Tensor:
    """How random-like each image is: 0 = like a real digit, 1 = like white noise.

    A linear rescaling of a raw measure between the two reference medians:

    - ``"flatness"``: ``(SF(x) - SF_digits) / (SF_noise - SF_digits)``;
    - ``"correlation_length"``: ``(L_digits - L(x)) / (L_digits - L_noise)``.

    Values outside ``[0, 1]`` are meaningful: below 0 is smoother than a typical
    digit (a constant image: ``-SF_digits / (SF_noise - SF_digits)``), above 1
    is flatter than a typical white-noise image.

    Args:
        images: ``(n, C, H, W)`` or ``(n, H, W)``.
        reference: from :func:`randomness_reference`.
        measure: ``"flatness"`` or ``"correlation_length"``.

    Returns:
        float64 ``(n,)`` (NaN where the raw measure is undefined).
    """
    if measure == "flatness":
        lo, hi = reference.flatness_digits, reference.flatness_noise
        return (spectral_flatness(images) - lo) / (hi - lo)
    if measure == "correlation_length":
        lo, hi = reference.corr_length_digits, reference.corr_length_noise
        return (lo - correlation_length(images)) / (lo - hi)
    raise InversionError(f"measure must be one of {MEASURES}, got {measure!r}")


# ----------------------------------------------------------------------------- diversity
def mean_pairwise_distance(images: torch.Tensor) -> float:
    """Mean Euclidean distance over all ``n(n-1)/2`` pairs of images (pixel scale).

    Args:
        images: ``(n, ...)`` with ``n >= 2``.

    Returns:
        float (0 when all images are equal).
    """
    x = _flat(images).detach().to(torch.float64)
    if len(x) < 2:
        raise InversionError(f"mean_pairwise_distance needs at least 2 images, got {len(x)}")
    return float(torch.pdist(x).mean())


def effective_rank(images: torch.Tensor, center: bool = True) -> float:
    """Effective rank (Roy & Vetterli, 2007) of the images as rows of a matrix.

    With ``σ_i`` the singular values of the ``(n, D)`` matrix (rows centred on
    their mean when ``center``) and ``q_i = σ_i / Σσ``:
    ``erank = exp(-Σ q_i log q_i)``, between 1 and ``min(n, D)``. ``m``
    orthogonal rows of equal norm give exactly ``m``; copies of one image give
    1 (uncentred) — centred, identical images have no spread and give 0.

    Args:
        images: ``(n, ...)``.
        center: subtract the mean image first (diversity *around* the class
            mean; default) or not (the span of the raw images).

    Returns:
        float.
    """
    x = _flat(images).detach().to(torch.float64)
    if center:
        x = x - x.mean(dim=0, keepdim=True)
    s = torch.linalg.svdvals(x)
    total = s.sum()
    if total <= 0:
        return 0.0
    q = s / total
    q = q[q > 0]
    return float(torch.exp(-(q * q.log()).sum()))


def class_diversity(images: torch.Tensor, labels: torch.Tensor | Sequence[int],
                    center: bool = True) -> pd.DataFrame:
    """Diversity of the images of each class.

    Args:
        images: ``(n, ...)``.
        labels: ``(n,)`` class of each image (e.g. ``result.target.argmax(1)``).
        center: passed to :func:`effective_rank`.

    Returns:
        DataFrame: one row per class: ``class``, ``n``,
        ``mean_pairwise_distance`` (NaN for a single image) and ``effective_rank``.
    """
    labels = torch.as_tensor(labels).reshape(-1).cpu()
    if len(labels) != len(images):
        raise InversionError(f"labels has {len(labels)} entries but images has {len(images)}")
    rows = []
    for c in labels.unique().tolist():
        xs = images[(labels == c).to(images.device)]
        rows.append({"class": int(c), "n": len(xs),
                     "mean_pairwise_distance": (mean_pairwise_distance(xs) if len(xs) > 1
                                                else float("nan")),
                     "effective_rank": effective_rank(xs, center=center)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- validity
def fraction_out_of_range(images: torch.Tensor, low: float = 0.0,
                          high: float = 1.0) -> torch.Tensor:
    """Fraction of each image's pixels outside ``[low, high]`` (non-finite counts as outside).

    Args:
        images: ``(n, ...)``.
        low, high: the valid pixel range (MNIST: ``[0, 1]``).

    Returns:
        float64 ``(n,)`` in ``[0, 1]``.
    """
    x = _flat(images).detach()
    inside = torch.isfinite(x) & (x >= low) & (x <= high)
    return 1.0 - inside.to(torch.float64).mean(dim=1)


# ----------------------------------------------------------------------------- agreement
@torch.no_grad()
def cross_model_agreement(images: torch.Tensor, models: Mapping[str, nn.Module],
                          target: torch.Tensor | Sequence[int], atol: float = 1e-3,
                          batch_size: int = 256) -> pd.DataFrame:
    """What each of several models says about the same images (a tidy table).

    Images inverted from one model are fed to the others: if those agree, the
    images carry the class; if not, they exploit one network's quirks.

    Args:
        images: ``(n, *input_shape)``.
        models: name -> model returning logits; each runs in float64 in eval
            mode on its own device (:func:`~nninvert_lib.modelcopy.float64_forward`).
        target: ``(n, K)`` target probabilities (e.g. ``result.target``) or
            ``(n,)`` target classes.
        atol: tolerance for ``meets_target`` (distributions only).
        batch_size: images per forward pass.

    Returns:
        DataFrame: one row per (model, sample): ``model``, ``sample``,
        ``target_class``, ``predicted_class``, ``p_target_class``,
        ``p_predicted``, ``agrees`` (predicted == target class) and, when
        ``target`` is a distribution, ``max_error`` (``max |probs - target|``)
        and ``meets_target`` (``max_error <= atol``).
    """
    t = torch.as_tensor(target).detach().cpu()
    dist = t.is_floating_point() and t.ndim == 2
    classes = t.argmax(dim=1) if dist else t.reshape(-1).long()
    if len(classes) != len(images):
        raise InversionError(f"target has {len(classes)} rows but images has {len(images)}")
    frames = []
    for name, model in models.items():
        device = model_dtype_device(model)[1]
        f64 = float64_forward(model)
        probs = torch.cat([torch.softmax(f64(images[s:s + batch_size].to(device)), dim=-1).cpu()
                           for s in range(0, len(images), batch_size)])
        pred = probs.argmax(dim=1)
        rows = {"model": name, "sample": np.arange(len(images)),
                "target_class": classes.numpy(), "predicted_class": pred.numpy(),
                "p_target_class": probs.gather(1, classes[:, None]).squeeze(1).numpy(),
                "p_predicted": probs.max(dim=1).values.numpy(),
                "agrees": (pred == classes).numpy()}
        if dist:
            err = (probs - t.to(probs)).abs().amax(dim=1)
            rows["max_error"] = err.numpy()
            rows["meets_target"] = (err <= atol).numpy()
        frames.append(pd.DataFrame(rows))
    return pd.concat(frames, ignore_index=True)
