"""What the hardware needs at the least: the matrix products alone.

BackPassInv's roofline on a plan is the float64 matrix products one backward
pass and its verification need, on the same batch, with nothing else:
per linear layer ``(B, out) @ W⁺ᵀ`` (particular solution),
``(B, null) @ Nᵀ`` (null-space direction) and ``(B, in) @ Wᵀ`` (the
verifying forward pass). ForwardPassInv's reference is one forward pass plus
one ``m``-row vector-Jacobian product (``torch.func.vjp`` + ``vmap``), which is
what one Levenberg–Marquardt iteration must compute.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch

from timing import sync


def per_call(fn: Callable[[], object], device: str | torch.device = "cpu",
             min_seconds: float = 0.02, max_calls: int = 10_000) -> float:
    """Seconds per call of a fast ``fn``, looping until ``min_seconds`` have passed."""
    fn()
    sync(device)
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        if calls >= max_calls or (calls & (calls - 1)) == 0:   # check the clock at powers of 2
            sync(device)
            if time.perf_counter() - t0 >= min_seconds or calls >= max_calls:
                break
    sync(device)
    return (time.perf_counter() - t0) / calls


def backward_matmuls(layer_shapes: list[tuple[int, int, int]], batch: int,
                     device: str | torch.device = "cpu") -> Callable[[], None]:
    """A function doing the float64 products of one backward pass and its check.

    Args:
        layer_shapes: ``(out, in, null_dim)`` per linear layer.
        batch: samples B.
    """
    gen = torch.Generator().manual_seed(0)
    mats = []
    for out_f, in_f, null in layer_shapes:
        def r(*s):
            return torch.randn(*s, generator=gen, dtype=torch.float64).to(device)
        mats.append((r(batch, out_f), r(out_f, in_f),          # rhs @ pinvᵀ
                     r(batch, null), r(null, in_f),            # c @ Nᵀ
                     r(batch, in_f), r(in_f, out_f)))          # h @ Wᵀ
    def run() -> None:
        for rhs, pinv_t, c, n_t, h, w_t in mats:
            rhs @ pinv_t
            if c.shape[1]:
                c @ n_t
            h @ w_t
    return run


def plan_shapes(plan) -> list[tuple[int, int, int]]:
    """``(out, in, null_dim)`` of each linear step of a :class:`BackPassPlan`."""
    return [(s.weight.shape[0], s.weight.shape[1], s.inverse.null_dim)
            for s in plan.linear_steps]


def forward_and_vjp(net: torch.nn.Module, x: torch.Tensor, rows: int,
                    input_shape: tuple[int, ...]) -> dict[str, Callable[[], object]]:
    """Callables for ``net`` at ``x`` ``(B, d)``: ``"forward"`` (``torch.func.vjp``'s
    forward pass, keeping what the VJP needs, as LM's forward passes do),
    ``"vjp"`` (one ``rows``-row batched VJP from a kept forward pass) and
    ``"both"`` (one forward pass + one VJP)."""
    def fn(v: torch.Tensor) -> torch.Tensor:
        return net(v.reshape(v.shape[0], *input_shape))

    with torch.no_grad():
        k = fn(x[:1]).shape[-1]
    g = torch.randn(x.shape[0], rows, k, dtype=x.dtype, device=x.device)
    _, kept = torch.func.vjp(fn, x)

    def forward() -> object:
        return torch.func.vjp(fn, x)

    def vjp(vjp_fn=kept) -> torch.Tensor:
        return torch.func.vmap(vjp_fn, in_dims=1, out_dims=1)(g)[0]

    def both() -> torch.Tensor:
        return vjp(forward()[1])

    return {"forward": forward, "vjp": vjp, "both": both}


def under_autocast(fn: Callable[[], object], dtype: torch.dtype,
                   device: str = "cpu") -> Callable[[], object]:
    """``fn`` run under :func:`torch.autocast` to ``dtype`` (as LM computes its
    Jacobians with ``jacobian_dtype``)."""
    def run() -> object:
        with torch.autocast(device, dtype=dtype):
            return fn()
    return run
