"""The five architectures: shapes, widths, and FlexiViT resampling of pretrained weights."""
from __future__ import annotations

import pytest
import timm
import torch
from timm.layers import resample_patch_embed
from torch import nn

import nninvert_lib as nni
from nninvert_lib.models import FCNN_WIDTHS


@pytest.mark.parametrize("name", ["fcnn1", "fcnn2", "fcnn6"])
def test_fcnn_narrows_and_ends_in_selu(name):
    model, arch = nni.build_model(name, nni.train_config(name, "smoke"))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    widths = [linears[0].in_features] + [m.out_features for m in linears]
    assert tuple(widths) == FCNN_WIDTHS[name] == tuple(arch["widths"])
    assert all(b < a for a, b in zip(widths, widths[1:]))  # every layer has a null space
    assert isinstance(model[0], nn.Flatten) and isinstance(model[-1], nn.SELU)
    assert sum(isinstance(m, nn.SELU) for m in model) == len(linears)
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_make_fcnn_options_and_errors():
    m = nni.make_fcnn([20, 8, 4], activation="leaky_relu", final_activation=False)
    assert isinstance(m[-1], nn.Linear) and isinstance(m[2], nn.LeakyReLU)
    assert m[2].negative_slope == 0.01
    steep = nni.make_fcnn([20, 8, 4], activation="leaky_relu", negative_slope=0.1)
    assert [a.negative_slope for a in steep if isinstance(a, nn.LeakyReLU)] == [0.1, 0.1]
    with pytest.raises(ValueError, match="at least two"):
        nni.make_fcnn([784])
    with pytest.raises(ValueError, match="activation must be one of"):
        nni.make_fcnn([784, 10], activation="swish")


def test_build_model_is_seeded_and_leaves_global_rng_alone():
    cfg = nni.train_config("fcnn2", "smoke")
    state = torch.random.get_rng_state()
    a, _ = nni.build_model("fcnn2", cfg)
    assert torch.equal(state, torch.random.get_rng_state())
    b, _ = nni.build_model("fcnn2", cfg)
    c, _ = nni.build_model("fcnn2", cfg.replace(seed=1))
    assert torch.equal(a[1].weight, b[1].weight) and not torch.equal(a[1].weight, c[1].weight)


@pytest.mark.parametrize("name,patch,dim", [("vit_tiny", 7, 192), ("dinov3_base", 7, 768)])
def test_vit_takes_mnist_images(name, patch, dim):
    model, arch = nni.make_vit(name, patch_size=patch, pretrained=False)
    assert arch["pretrained"] is False and "random" in arch["init"]
    assert model.patch_embed.proj.weight.shape == (dim, 1, patch, patch)
    assert len(model.blocks) == 12
    with torch.no_grad():
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_vit_pretrained_weights_are_resampled_flexivit_style(tmp_path):
    native = timm.create_model("vit_tiny_patch16_224", pretrained=False)  # 3×224×224, patch 16
    path = tmp_path / "vit_tiny_native.pth"
    torch.save(native.state_dict(), path)
    model, arch = nni.make_vit("vit_tiny", patch_size=4, pretrained_file=str(path))
    assert arch["pretrained"] is True and "FlexiViT" in arch["init"]
    w = native.state_dict()["patch_embed.proj.weight"]
    expected = resample_patch_embed(w, [4, 4]).sum(dim=1, keepdim=True)  # RGB kernels summed
    torch.testing.assert_close(model.patch_embed.proj.weight.detach(), expected)
    torch.testing.assert_close(model.blocks[3].mlp.fc1.weight, native.blocks[3].mlp.fc1.weight)


def test_unreachable_pretrained_weights_fall_back_to_random_init():
    with pytest.warns(UserWarning, match="not reachable"):
        _, arch = nni.make_vit("vit_tiny", patch_size=7, pretrained=True)
    assert arch["pretrained"] is False and "pretrained_error" in arch


def test_make_vit_rejects_bad_arguments():
    with pytest.raises(ValueError, match="divide 28"):
        nni.make_vit("vit_tiny", patch_size=5, pretrained=False)
    with pytest.raises(ValueError, match="ViT name must be one of"):
        nni.make_vit("vit_huge", pretrained=False)
    with pytest.raises(ValueError, match="model must be one of"):
        nni.build_model("resnet", nni.train_config("fcnn1", "smoke"))
