"""Private working copies of a model, shared by every method that runs one.

A method never changes the caller's model: it runs a deep copy, in eval mode,
with frozen parameters, in the dtype the method computes in.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    """dtype and device of the model's first floating parameter (or buffer)."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return torch.get_default_dtype(), torch.device("cpu")


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
