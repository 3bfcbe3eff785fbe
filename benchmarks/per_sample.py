"""The straightforward per-sample baseline for BackPassInv, in NumPy.

The paper's backward pass (§III-B) written the obvious way: one sample at a
time, and every linear layer's SVD recomputed on every call
(``np.linalg.svd`` with the full ``V`` for the null-space basis). It keeps the
paper's settings: pseudoinverse thresholded at ``max_cond`` (singular values
``>= σ_max / max_cond``), null-space noise ``std · ‖x_p‖ · N c / ‖N c‖``,
a hidden vector that leaves SELU's range (``<= -λα``) redraws the noise up to
``max_retries`` times and is then clamped into the range (the pass goes on,
the sample is marked failed), and the result is verified by a float64 forward
pass of the input rounded to the model's dtype (``|softmax - p| <= atol``).

Only used to time the per-sample cost; nothing here is shared with
``nninvert_lib``, on purpose.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

SELU_LAMBDA = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_LOWER = -SELU_LAMBDA * SELU_ALPHA


def numpy_layers(model: nn.Sequential) -> tuple[list[tuple[np.ndarray, np.ndarray]], bool]:
    """``([(W, b), ...], final_selu)``: float64 weights of a Flatten/Linear/SELU FCNN."""
    mods = [m for m in model.modules() if not isinstance(m, (nn.Sequential, nn.Flatten))]
    layers, acts = [], []
    for m in mods:
        if isinstance(m, nn.Linear):
            layers.append((m.weight.detach().cpu().double().numpy(),
                           m.bias.detach().cpu().double().numpy()))
            acts.append(False)
        elif isinstance(m, nn.SELU):
            acts[-1] = True
        else:
            raise ValueError(f"per-sample baseline handles Linear and SELU only, got {m}")
    if not all(acts[:-1]):
        raise ValueError("every hidden Linear must be followed by SELU")
    return layers, acts[-1]


def _selu(u: np.ndarray) -> np.ndarray:
    return SELU_LAMBDA * np.where(u > 0, u, SELU_ALPHA * np.expm1(np.minimum(u, 0)))


def _selu_inverse(y: np.ndarray) -> np.ndarray:
    return np.where(y > 0, y / SELU_LAMBDA,
                    np.log1p(np.minimum(y, 0) / (SELU_LAMBDA * SELU_ALPHA)))


def invert_one(layers: list[tuple[np.ndarray, np.ndarray]], final_selu: bool, p: np.ndarray,
               rng: np.random.Generator, std: float = 0.1, max_cond: float = 100.0,
               max_retries: int = 8, margin: float = 0.5) -> tuple[np.ndarray, bool]:
    """One input ``x`` (784,) with ``softmax(f(x)) ≈ p``, and whether every hidden
    vector stayed in SELU's range. SVDs are computed here, every call."""
    logp = np.log(p)
    z = logp - logp.mean()
    if final_selu:
        z = z + max(0.0, SELU_LOWER + margin - z.min())
    y, ok = z, True
    for i in range(len(layers) - 1, -1, -1):
        w, b = layers[i]
        if i < len(layers) - 1 or final_selu:
            if np.any(y <= SELU_LOWER):
                ok = False
                y = np.maximum(y, 0.8 * SELU_LOWER)
            y = _selu_inverse(y)
        u, s, vt = np.linalg.svd(w)                     # recomputed on every call
        r = int(np.sum(s >= s[0] / max_cond))
        pinv = (vt[:r].T / s[:r]) @ u[:, :r].T
        xp = pinv @ (y - b)
        null = vt[r:].T
        x = xp
        for _ in range(max_retries + 1):
            if null.shape[1] == 0 or std == 0:
                break
            d = null @ rng.standard_normal(null.shape[1])
            x = xp + std * np.linalg.norm(xp) * d / np.linalg.norm(d)
            if i == 0 or np.all(x > SELU_LOWER):
                break
        y = x
    return y, ok


def verify_one(layers, final_selu: bool, x: np.ndarray, p: np.ndarray,
               atol: float = 1e-3) -> bool:
    """Float64 forward of ``x`` rounded to float32; ``max |softmax - p| <= atol``."""
    h = x.astype(np.float32).astype(np.float64)
    for i, (w, b) in enumerate(layers):
        h = w @ h + b
        if i < len(layers) - 1 or final_selu:
            h = _selu(h)
    e = np.exp(h - h.max())
    return bool(np.all(np.isfinite(h)) and np.max(np.abs(e / e.sum() - p)) <= atol)


def per_sample_back_pass(model: nn.Sequential, targets: torch.Tensor, seed: int = 0,
                         std: float = 0.1, max_cond: float = 100.0) -> tuple[int, int]:
    """Invert ``targets`` ``(n, K)`` one row at a time; ``(verified, n)``."""
    layers, final_selu = numpy_layers(model)
    rng = np.random.default_rng(seed)
    verified = 0
    for p in targets.double().cpu().numpy():
        x, _ = invert_one(layers, final_selu, p, rng, std, max_cond)
        verified += verify_one(layers, final_selu, x, p)
    return verified, len(targets)
