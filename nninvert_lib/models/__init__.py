"""The paper's five models: three SELU FCNNs and two timm vision transformers."""
from __future__ import annotations

import torch
from torch import nn

from ..profiles import TrainConfig
from .fcnn import FCNN_WIDTHS, make_fcnn
from .vit import VIT_ARCHS, make_vit

MODEL_NAMES: tuple[str, ...] = ("fcnn1", "fcnn2", "fcnn6", "vit_tiny", "dinov3_base")

#: Validation accuracy (%) the paper reports for each model.
PAPER_ACCURACY: dict[str, float] = {
    "fcnn1": 91.5, "fcnn2": 95.4, "fcnn6": 96.9, "vit_tiny": 95.7, "dinov3_base": 99.8,
}

#: Names as the paper prints them.
DISPLAY_NAMES: dict[str, str] = {
    "fcnn1": "FCNN-1", "fcnn2": "FCNN-2", "fcnn6": "FCNN-6",
    "vit_tiny": "ViT-tiny", "dinov3_base": "DINOv3-Base",
}


def build_model(name: str, config: TrainConfig) -> tuple[nn.Module, dict]:
    """Build an untrained model, initialised from ``config.seed``.

    The caller's global RNG state is left untouched.

    Returns:
        ``(model, arch)``: the module and a JSON-ready description of its
        architecture (widths, or the timm record with ``pretrained`` and ``init``).

    Raises:
        ValueError: unknown ``name``.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"model must be one of {MODEL_NAMES}, got {name!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if name in FCNN_WIDTHS:
            model = make_fcnn(FCNN_WIDTHS[name])
            arch = {"kind": "fcnn", "widths": list(FCNN_WIDTHS[name]), "activation": "selu",
                    "final_activation": True, "pretrained": False, "init": "random (PyTorch default)"}
        else:
            model, arch = make_vit(name, patch_size=config.patch_size or 4,
                                   pretrained=config.pretrained)
            arch["kind"] = "vit"
    return model, arch


__all__ = ["MODEL_NAMES", "PAPER_ACCURACY", "DISPLAY_NAMES", "FCNN_WIDTHS", "VIT_ARCHS",
           "build_model", "make_fcnn", "make_vit"]
