"""Working copies: shared storage until a cast, and float64 forwards without a float64 copy."""
from __future__ import annotations

import timm
import torch
from torch import nn

from nninvert_lib import modelcopy
from nninvert_lib.modelcopy import StreamedFloat64, float64_forward, inversion_copy
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
