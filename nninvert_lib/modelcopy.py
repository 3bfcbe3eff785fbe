"""Private working copies of a model, shared by every method that runs one, and the
leaves of a nested ``nn.Sequential`` (:func:`flatten_sequential`).

A method never changes the caller's model: it runs a deep copy, in eval mode,
with frozen parameters, in the dtype the method computes in.
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn


def model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    """dtype and device of the model's first floating parameter (or buffer)."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return torch.get_default_dtype(), torch.device("cpu")


#: layers that are the identity in eval mode, the mode in which every method runs and
#: verifies the model: the backward pass and the FCNN shortcuts skip them.
DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def flatten_sequential(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The leaves of nested ``nn.Sequential`` containers in forward order, each with its
    dotted name (``[("0", Flatten), ("1", Linear), ...]``); any other module is a leaf."""
    if isinstance(module, nn.Sequential):
        out = []
        for name, child in module.named_children():
            out.extend(flatten_sequential(child, f"{prefix}{name}."))
        return out
    return [(prefix.rstrip("."), module)]


def inversion_copy(model: nn.Module, dtype: torch.dtype | None = None,
                   device: torch.device | str | None = None) -> tuple[nn.Module, int]:
    """A deep copy of ``model`` ready to be differentiated with ``torch.func``.

    The copy is in eval mode (no dropout, frozen normalisation statistics), its
    parameters do not require gradients, it is cast to ``dtype`` and moved to
    ``device`` (when given; until then it shares the model's parameter and buffer
    storage, which no method writes to), and every module with a boolean ``fused_attn``
    attribute (timm's attention layers) has it set to False, because fused
    scaled-dot-product attention has no ``vmap`` batching rule and no
    forward-mode AD. ``model`` itself is not modified.

    Returns:
        ``(copy, n)``: the copy and how many modules had fused attention switched off.
    """
    # Copy the modules but not the tensors: each parameter of the copy is a new,
    # frozen Parameter on the caller's storage (its requires_grad stays the
    # caller's), so a copy in the model's own dtype and device costs no memory and
    # a cast allocates the new tensors once.
    shared = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    m = copy.deepcopy(model, memo=shared)
    for mod in m.modules():
        for name, p in list(mod._parameters.items()):
            if p is not None:
                mod._parameters[name] = nn.Parameter(p.detach(), requires_grad=False)
    n_fused = 0
    for mod in m.modules():
        if isinstance(getattr(mod, "fused_attn", None), bool):
            if mod.fused_attn:
                n_fused += 1
            mod.fused_attn = False
    m.eval().requires_grad_(False)
    if dtype is not None or device is not None:
        m.to(device=device, dtype=dtype)
    return m, n_fused


class FastELU(nn.Module):
    """ELU or SELU for solvers that differentiate a working copy many times.

    ``y = scale · (relu(u) + α (exp(min(u, 0)) − 1))`` elementwise, any shape; the
    derivative is ``scale`` for ``u > 0`` and ``scale · α · exp(u)`` otherwise,
    as for :class:`torch.nn.ELU` (``scale = 1``) and :class:`torch.nn.SELU`
    (``α ≈ 1.6733``, ``scale ≈ 1.0507``). The values agree with torch's to a few
    units in the last place (``exp(u) − 1`` in place of ``expm1(u)``: an absolute
    error of about one ulp of 1, e.g. 1.2e-7 in float32).

    Why: torch's CPU ELU kernel evaluates ``expm1``, about ten times the cost of
    ``exp`` (0.9 ms against 0.09 ms for 200 × 512 float32 values on one core),
    and its backward pass recomputes it. Here the value and the derivative come
    from one ``exp`` with autograd kept out, and the graph is ``y + d · (u − u₀)``
    with ``u₀ = u`` detached: first derivatives (reverse mode, forward mode,
    ``torch.func``) are exact, second derivatives are not (``d`` is a constant
    to autograd), so use it where only Jacobians are needed.
    """

    def __init__(self, alpha: float, scale: float = 1.0):
        super().__init__()
        self.alpha, self.scale = float(alpha), float(scale)

    @classmethod
    def of(cls, act: nn.Module) -> "FastELU":
        """The equivalent of an ``nn.SELU`` or ``nn.ELU`` module."""
        if isinstance(act, nn.SELU):
            return cls(1.6732632423543772848170429916717, 1.0507009873554804934193349852946)
        if isinstance(act, nn.ELU):
            return cls(act.alpha)
        raise TypeError(f"FastELU replaces nn.SELU or nn.ELU, not {type(act).__name__}")

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        v = u.detach()
        derivatives = torch.is_grad_enabled() or _forward_ad_active()
        with torch.no_grad():
            e = torch.exp(torch.clamp(v, max=0))                 # 1 where u > 0
            pos = torch.relu(v)
            y = torch.add(pos, e.sub(1.0), alpha=self.alpha).mul_(self.scale)
            if not derivatives:
                return y
            step = pos.sign_()                                   # 1 where u > 0, else 0
            d = e.mul_(self.alpha).add_(step.mul_(1.0 - self.alpha)).mul_(self.scale)
        return y + d * (u - v)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:.6g}, scale={self.scale:.6g}"


def _forward_ad_active() -> bool:
    """Whether a forward-mode AD level is open (tangents flow under no_grad)."""
    return torch.autograd.forward_ad._current_level >= 0


def with_fast_activations(module: nn.Module) -> int:
    """Replace, in place, every ``nn.SELU`` and ``nn.ELU`` submodule of a working
    copy with its :class:`FastELU`; returns how many were replaced."""
    n = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in (nn.SELU, nn.ELU):
                setattr(parent, name, FastELU.of(child))
                n += 1
    return n


#: float64 verification streams the parameters above this size (bytes in float64)
STREAM_FLOAT64_BYTES = 256 * 2**20


class StreamedFloat64:
    """Run a model forward in float64 without a float64 copy of all its weights.

    A weight-sharing :func:`inversion_copy` in the model's own dtype, with hooks
    that cast each module's own parameters and buffers to float64 just before its
    ``forward`` and drop them right after: the float64 weights of one module exist
    at a time (for DINOv3-Base: 680 MB less than a float64 copy). A tensor that a
    module reads from another module without calling it (none in the FCNNs; in
    timm's ViTs only small embedding tables) enters in its own dtype and is
    promoted, so the logits agree with a full float64 copy to about 1e-10, not
    bit for bit. Forward only: no autograd.
    """

    def __init__(self, model: nn.Module):
        self.module = inversion_copy(model)[0]
        for mod in self.module.modules():
            if mod._parameters or mod._buffers:
                mod.register_forward_pre_hook(self._cast)
                mod.register_forward_hook(self._restore)

    @staticmethod
    def _cast(mod: nn.Module, args) -> None:
        saved = {}
        for store in (mod._parameters, mod._buffers):
            for name, t in list(store.items()):
                if t is not None and t.is_floating_point() and t.dtype != torch.float64:
                    saved[name] = (store, t)
                    cast = t.detach().double()
                    store[name] = nn.Parameter(cast, requires_grad=False) if store is \
                        mod._parameters else cast
        mod.__dict__["_float64_saved"] = saved

    @staticmethod
    def _restore(mod: nn.Module, args, out) -> None:
        for name, (store, t) in mod.__dict__.pop("_float64_saved", {}).items():
            store[name] = t

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.to(torch.float64))


def float64_forward(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable ``x -> model(x)`` computed in float64, for checking results.

    A float64 :func:`inversion_copy` for models up to
    :data:`STREAM_FLOAT64_BYTES` of float64 weights, a :class:`StreamedFloat64`
    above (memory: one module's weights in float64 at a time).
    """
    n_bytes = 8 * sum(t.numel() for t in list(model.parameters()) + list(model.buffers())
                      if t.is_floating_point())
    if n_bytes > STREAM_FLOAT64_BYTES:
        return StreamedFloat64(model)
    m64 = inversion_copy(model, dtype=torch.float64)[0]
    return lambda x: m64(x.to(torch.float64))
