"""Figures shared by the book's chapters."""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch


def image_grid(images: torch.Tensor, titles: list[str] | None = None, ncols: int = 10,
               size: float = 1.1, cmap: str = "gray", vmin: float | None = 0.0,
               vmax: float | None = 1.0) -> plt.Figure:
    """Draw images ``(N, 1, 28, 28)``, ``(N, 28, 28)`` or ``(N, 784)`` (one image:
    ``(28, 28)``) in a grid, ``ncols`` to a row, with one title per image if
    ``titles``; returns the figure.

    Raises:
        ValueError: no images, images that are not 28×28 pixels, or another number
            of titles than images.
    """
    if images.shape in ((28, 28), (784,)):
        images = images.reshape(1, 28, 28)
    if images.ndim < 2 or len(images) == 0 or images[0].numel() != 28 * 28:
        raise ValueError(f"image_grid draws MNIST-sized images (N, 1, 28, 28), (N, 28, 28) or "
                         f"(N, 784) with N >= 1, got shape {tuple(images.shape)}")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"image_grid got {len(images)} images but {len(titles)} titles")
    images = images.detach().cpu().reshape(len(images), 28, 28)
    nrows = (len(images) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.2 * nrows),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i].numpy(), cmap=cmap, vmin=vmin, vmax=vmax)
            if titles:
                ax.set_title(titles[i], fontsize=8)
    fig.tight_layout()
    return fig
