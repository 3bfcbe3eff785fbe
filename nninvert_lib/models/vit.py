"""Vision transformers from timm, adapted to 28×28 single-channel MNIST.

Both models are built by :func:`timm.create_model` with ``img_size=28``,
``in_chans=1``, ``num_classes=10`` and a small patch (4 in the ``paper``
profile: a 7×7 grid of tokens; 7 in ``quick`` and ``smoke``: a 4×4 grid).

* ViT-tiny: ``vit_tiny_patch16_224`` (dim 192, depth 12, 3 heads).
* DINOv3-Base: ``vit_base_patch16_dinov3`` (dim 768, depth 12, 12 heads,
  rotary position embeddings, 4 register tokens).

When pretrained weights are requested and reachable, timm loads them and
resamples the 16×16 patch-embedding kernel to the small patch FlexiViT-style
(:func:`timm.layers.resample_patch_embed`, a pseudo-inverse resize that keeps
the patch tokens' responses), and sums the RGB kernels into one input channel.
When they are not reachable (no network, or ``HF_HUB_OFFLINE=1``), the model
starts from random initialisation and the returned record says so.
"""
from __future__ import annotations

import warnings

import timm
from torch import nn

VIT_ARCHS: dict[str, str] = {
    "vit_tiny": "vit_tiny_patch16_224",
    "dinov3_base": "vit_base_patch16_dinov3",
}


def make_vit(name: str, patch_size: int = 4, pretrained: bool = True,
             pretrained_file: str | None = None) -> tuple[nn.Module, dict]:
    """Build a timm ViT for MNIST.

    Args:
        name: ``"vit_tiny"`` or ``"dinov3_base"`` (keys of :data:`VIT_ARCHS`).
        patch_size: side of the square patch, a divisor of 28 (4, 7, 14 or 28).
        pretrained: try to load the hub's pretrained weights.
        pretrained_file: a local checkpoint of the timm architecture at its
            native size to load instead of the hub (same FlexiViT resampling).

    Returns:
        ``(model, record)``: the model (logits ``(B, 10)`` from ``(B, 1, 28, 28)``)
        and a JSON-ready record with ``arch``, ``patch_size``, ``pretrained``
        (bool: whether pretrained weights were actually loaded) and ``init``.
    """
    if name not in VIT_ARCHS:
        raise ValueError(f"ViT name must be one of {sorted(VIT_ARCHS)}, got {name!r}")
    if 28 % patch_size:
        raise ValueError(f"patch_size must divide 28 (4, 7, 14 or 28), got {patch_size}")
    arch = VIT_ARCHS[name]
    kwargs = dict(img_size=28, patch_size=patch_size, in_chans=1, num_classes=10)
    record = {"arch": arch, "patch_size": patch_size, "img_size": 28, "in_chans": 1}
    if pretrained or pretrained_file:
        overlay = {"file": str(pretrained_file)} if pretrained_file else None
        # Without network, a hub lookup stalls ~45 s unless HF_HUB_OFFLINE=1 is set.
        try:
            model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=overlay,
                                      **kwargs)
            source = pretrained_file or "hub"
            record.update(pretrained=True, init=f"pretrained weights from {source}, "
                          f"patch embedding resampled 16→{patch_size} (FlexiViT)")
            return model, record
        except Exception as exc:  # no network, no file, offline mode: fall back honestly
            warnings.warn(f"pretrained weights for {arch} are not reachable "
                          f"({exc.__class__.__name__}: {str(exc)[:200]}); "
                          "training starts from random initialisation", stacklevel=2)
            record["pretrained_error"] = f"{exc.__class__.__name__}: {str(exc)[:300]}"
    model = timm.create_model(arch, pretrained=False, **kwargs)
    record.update(pretrained=False, init="random initialisation (pretrained weights not loaded)")
    return model, record
