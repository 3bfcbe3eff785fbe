"""Fully connected SELU networks (the paper's FCNN-1, FCNN-2 and FCNN-6).

Each network is ``Flatten -> [Linear -> SELU] * L``: as the paper states, *every*
Linear layer is followed by SELU, the last one included, and the softmax is
implied (the model returns logits). The widths narrow from 784 to 10 so that
every layer has a null space for BackPassInv to sample from:

=========  ====================================
FCNN-1     784 → 10
FCNN-2     784 → 128 → 10
FCNN-6     784 → 512 → 256 → 128 → 64 → 32 → 10
=========  ====================================
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

FCNN_WIDTHS: dict[str, tuple[int, ...]] = {
    "fcnn1": (784, 10),
    "fcnn2": (784, 128, 10),
    "fcnn6": (784, 512, 256, 128, 64, 32, 10),
}

_ACTIVATIONS = {"selu": nn.SELU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU,
                "tanh": nn.Tanh, "relu": nn.ReLU, "identity": nn.Identity}


def make_fcnn(widths: Sequence[int], activation: str = "selu",
              final_activation: bool = True, negative_slope: float = 0.01) -> nn.Sequential:
    """Build ``Flatten -> [Linear(w_i, w_{i+1}) -> act] ...``.

    Args:
        widths: layer widths, input first (e.g. ``(784, 128, 10)``); at least two.
        activation: one of ``selu``, ``leaky_relu``, ``elu``, ``tanh``, ``relu``, ``identity``.
        final_activation: whether the last Linear is followed by the activation
            too (the paper's FCNNs: yes).
        negative_slope: LeakyReLU's slope (``activation="leaky_relu"`` only).

    Returns:
        ``nn.Sequential`` mapping ``(B, 1, 28, 28)`` (or ``(B, widths[0])``) to
        logits ``(B, widths[-1])``.
    """
    if len(widths) < 2 or any(int(w) < 1 for w in widths):
        raise ValueError(f"widths must hold at least two positive ints, got {tuple(widths)}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(int(w_in), int(w_out)))
        if final_activation or i < len(widths) - 2:
            layers.append(nn.LeakyReLU(negative_slope) if activation == "leaky_relu"
                          else _ACTIVATIONS[activation]())
    return nn.Sequential(*layers)
