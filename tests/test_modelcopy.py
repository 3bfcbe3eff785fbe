"""Working copies: shared storage until a cast, and float64 forwards without a float64 copy."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from nninvert_lib import modelcopy
from nninvert_lib.modelcopy import (FastELU, StreamedFloat64, float64_forward, inversion_copy,
                                    with_fast_activations)
from nninvert_lib.result import target_distribution, verify


def _vit():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return timm.create_model("vit_tiny_patch16_224", img_size=28, patch_size=7, in_chans=1,
                                 num_classes=10, depth=2).eval()


def _fcnn():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.SELU(), nn.Linear(32, 10)).eval()


def test_copy_in_the_same_dtype_shares_storage_and_leaves_the_model_alone():
    model = _vit()
    copy, n_fused = inversion_copy(model)
    p, q = next(model.parameters()), next(copy.parameters())
    assert q.data_ptr() == p.data_ptr() and p is not q
    assert p.requires_grad and not q.requires_grad
    assert n_fused == 2 and all(not getattr(m, "fused_attn", False) for m in copy.modules())
    assert model.blocks[0].attn.fused_attn == timm.layers.use_fused_attn()
    cast = inversion_copy(model, dtype=torch.float64)[0]
    assert next(cast.parameters()).dtype == torch.float64 and p.dtype == torch.float32


def test_streamed_float64_matches_a_float64_copy():
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    for model in (_fcnn(), _vit()):
        full = inversion_copy(model, dtype=torch.float64)[0](x.double())
        streamed = StreamedFloat64(model)(x)
        assert streamed.dtype == torch.float64
        assert torch.allclose(streamed, full, rtol=0, atol=1e-9)
        assert next(model.parameters()).dtype == torch.float32   # the model is untouched
    # the FCNN's weights all pass through their own modules: bit for bit
    assert torch.equal(StreamedFloat64(_fcnn())(x), inversion_copy(_fcnn(), torch.float64)[0](x.double()))


def test_verify_streams_large_models_with_the_same_verdict(monkeypatch):
    model = _vit()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        target = torch.softmax(model(x).double(), dim=-1)
    target[1] = target_distribution(3, 0.9)       # one target these inputs miss
    probs_copy, ok_copy = verify(model, x, target)
    monkeypatch.setattr(modelcopy, "STREAM_FLOAT64_BYTES", 0)
    assert isinstance(float64_forward(model), StreamedFloat64)
    probs_stream, ok_stream = verify(model, x, target)
    assert torch.equal(ok_copy, ok_stream) and ok_copy.tolist() == [True, False, True, True]
    assert torch.allclose(probs_copy, probs_stream, rtol=0, atol=1e-12)


@pytest.mark.parametrize("act", [nn.SELU(), nn.ELU(), nn.ELU(alpha=0.5)], ids=["SELU", "ELU", "ELU0.5"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_elu_matches_torch_in_value_and_first_derivatives(act, dtype):
    fast = FastELU.of(act)
    u = torch.randn(64, 30, generator=torch.Generator().manual_seed(0), dtype=dtype) * 4
    u[0, :4] = torch.tensor([0.0, -1e-9, 1e-9, -30.0])
    eps = torch.finfo(dtype).eps
    tol = dict(atol=8 * eps, rtol=8 * eps)
    torch.testing.assert_close(fast(u), act(u), **tol)
    cot = torch.randn(64, 5, 30, dtype=dtype)
    vjps = [torch.func.vmap(torch.func.vjp(f, u)[1], in_dims=1, out_dims=1)(cot)[0]
            for f in (act, fast)]
    torch.testing.assert_close(vjps[1], vjps[0], **tol)
    tangent = torch.randn_like(u)
    jvps = [torch.func.jvp(f, (u,), (tangent,))[1] for f in (act, fast)]
    torch.testing.assert_close(jvps[1], jvps[0], **tol)
    with fwAD.dual_level(), torch.no_grad():      # forward-mode tangents flow under no_grad
        dual = fwAD.make_dual(u, tangent)
        torch.testing.assert_close(fwAD.unpack_dual(fast(dual)).tangent, jvps[0], **tol)
    grads = []
    for f in (act, fast):
        leaf = u.clone().requires_grad_(True)
        (f(leaf) * cot[:, 0]).sum().backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[1], grads[0], **tol)


def test_fast_elu_refuses_other_activations():
    with pytest.raises(TypeError, match="nn.SELU or nn.ELU"):
        FastELU.of(nn.ReLU())


def test_with_fast_activations_swaps_only_the_copy():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.SELU(),
                          nn.Sequential(nn.Linear(8, 6), nn.ELU(0.7)), nn.Linear(6, 3), nn.Tanh())
    x = torch.randn(5, 3, 4)
    net, _ = inversion_copy(model)
    assert with_fast_activations(net) == 2
    assert [type(m).__name__ for m in net.modules()].count("FastELU") == 2
    assert isinstance(model[2], nn.SELU) and isinstance(model[3][1], nn.ELU)
    assert net[3][1].alpha == 0.7 and net[3][1].scale == 1.0
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x))
