"""The algorithms on a CUDA device: same contract as on the CPU (skipped without a GPU).

Each test runs the method on the GPU and on the CPU from the same seed and checks
that the GPU result lives on the GPU in the model's dtype, verifies, is
bit-identical when repeated with the same seed (the API's promise on one device),
and reaches the target as often as the CPU run does.
"""
from __future__ import annotations

import copy

import pytest
import timm
import torch
from torch import nn

import nninvert_lib as nni

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _selu_fcnn(widths=(784, 128, 64, 10), seed: int = 0) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                layers.append(nn.SELU())
        return nn.Sequential(*layers).eval()


def _tiny_vit() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = timm.create_model("vit_tiny_patch16_224", img_size=28, patch_size=7, in_chans=1,
                              num_classes=10, depth=2)
        with torch.no_grad():
            m.get_classifier().weight.mul_(20.0)
        return m.eval()


def _twice(fn):
    a, b = fn(), fn()
    assert torch.equal(a.inputs, b.inputs), "same seed, different inputs on CUDA"
    return a


def test_back_pass_inv_on_cuda_matches_the_cpu_contract():
    model = _selu_fcnn()
    target = nni.target_distribution(list(range(10)) * 3, 0.9)
    gpu = _twice(lambda: nni.back_pass_inv(model.cuda(), target, n_samples=1, seed=3))
    cpu = nni.back_pass_inv(copy.deepcopy(model).cpu(), target, n_samples=1, seed=3)
    assert gpu.inputs.is_cuda and gpu.inputs.dtype == torch.float32
    assert gpu.inputs.shape == (30, 1, 28, 28)
    assert gpu.converged.all() and cpu.converged.all()
    with torch.no_grad():  # what was verified is what the GPU model outputs
        probs = torch.softmax(model.cuda()(gpu.inputs).double(), dim=-1)
    assert (probs - target.cuda()).abs().max() <= 1e-3


def test_forward_pass_inv_on_cuda_matches_the_cpu_contract():
    model = _selu_fcnn()
    target = nni.target_distribution([0, 3, 7], 0.9)
    gpu = _twice(lambda: nni.forward_pass_inv(model.cuda(), target, n_samples=2, seed=1))
    cpu = nni.forward_pass_inv(copy.deepcopy(model).cpu(), target, n_samples=2, seed=1)
    assert gpu.inputs.is_cuda and gpu.converged.all() and cpu.converged.all()
    assert gpu.info["iterations"].float().mean() <= cpu.info["iterations"].float().mean() + 3


def test_forward_pass_inv_on_a_cuda_vit():
    model = _tiny_vit().cuda()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1)).cuda()
    with torch.no_grad():
        target = torch.softmax(model(x).double(), dim=-1).cpu()
    res = _twice(lambda: nni.forward_pass_inv(model, target, n_samples=1, seed=0,
                                               dtype=torch.float32))
    assert res.inputs.is_cuda and res.converged.all()
    assert model.blocks[0].attn.fused_attn == timm.layers.use_fused_attn()  # model untouched


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_forward_pass_inv_with_low_precision_jacobians_on_a_cuda_vit(low):
    model = _tiny_vit().cuda()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1)).cuda()
    with torch.no_grad():
        target = torch.softmax(model(x).double(), dim=-1).cpu()
    res = _twice(lambda: nni.forward_pass_inv(model, target, n_samples=1, seed=0,
                                               jacobian_dtype=low, broyden=True))
    assert res.inputs.is_cuda and res.inputs.dtype == torch.float32 and res.converged.all()
    assert res.info["jacobian_dtype"] == str(low)


def test_generalized_inv_on_a_cuda_vit():
    model = _tiny_vit()
    target = nni.target_distribution([1, 5], 0.3)
    gpu = _twice(lambda: nni.generalized_inv(model.cuda(), target, n_samples=2, seed=0))
    cpu = nni.generalized_inv(copy.deepcopy(model).cpu(), target, n_samples=2, seed=0)
    assert gpu.inputs.is_cuda
    assert gpu.converged.float().mean() >= cpu.converged.float().mean() - 0.5


def test_prior_methods_and_measures_on_cuda():
    model = _selu_fcnn().cuda()
    train = torch.rand(200, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    res = nni.max_class_image(model, train.cuda(), [0, 1, 2])
    cpu = nni.max_class_image(model.cpu(), train, [0, 1, 2])
    assert torch.equal(res.inputs.cpu(), cpu.inputs)
    model.cuda()
    grad = nni.gradient_image(model, nni.target_distribution([4], 0.9),
                              train_images=train.cuda(), steps=20)
    assert grad.inputs.is_cuda and torch.isfinite(grad.inputs).all()
    d = nni.measures.nearest_training_image(res.inputs, train.cuda())
    assert d.distance.max().item() < 1e-5  # they are training images
