"""Figures shared by the chapters (``nninvert_lib.plotting``)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch

from nninvert_lib.plotting import image_grid


@pytest.mark.parametrize("shape, shown", [
    ((12, 1, 28, 28), 12), ((12, 28, 28), 12), ((12, 784), 12), ((28, 28), 1), ((784,), 1),
])
def test_image_grid_draws_each_image_once(shape, shown):
    images = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    titles = [f"#{i}" for i in range(shown)]
    fig = image_grid(images, titles if shown > 1 else None, ncols=5)
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(fig.axes) == 5 * -(-shown // 5) and len(drawn) == shown
    first = drawn[0].images[0].get_array()
    assert first.shape == (28, 28)
    assert torch.allclose(torch.as_tensor(first), images.reshape(shown, 28, 28)[0])
    if shown > 1:
        assert [ax.get_title() for ax in drawn] == titles
    plt.close(fig)


@pytest.mark.parametrize("images, titles, message", [
    (torch.rand(0, 1, 28, 28), None, r"N >= 1, got shape \(0, 1, 28, 28\)"),
    (torch.rand(3, 1, 32, 32), None, r"got shape \(3, 1, 32, 32\)"),
    (torch.rand(5), None, r"got shape \(5,\)"),
    (torch.rand(3, 784), ["a", "b"], "3 images but 2 titles"),
])
def test_image_grid_names_what_it_cannot_draw(images, titles, message):
    with pytest.raises(ValueError, match=message):
        image_grid(images, titles)
