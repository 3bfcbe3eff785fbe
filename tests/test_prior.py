"""The prior methods of [6]: training-set search, percentile average, trained image."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nninvert_lib.errors import InversionError
from nninvert_lib.prior import (gradient_image, max_class_image, percentile_average_image,
                                training_set_probs)
from nninvert_lib.result import target_distribution

K = 4


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def logit_model() -> nn.Module:
    """Logits = the image's K pixels: ``softmax(f(x)) = softmax(x)``, float32."""
    lin = nn.Linear(K, K)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(K))
        lin.bias.zero_()
    return nn.Sequential(nn.Flatten(), lin).eval()


@pytest.fixture
def tiny_train() -> torch.Tensor:
    """Twelve seeded ``(1, 1, K)`` images with spread-out logits."""
    gen = torch.Generator().manual_seed(3)
    return (3.0 * torch.randn(12, 1, 1, K, generator=gen)).float()


def test_max_class_image_picks_the_training_image_with_the_highest_class_probability(
        logit_model, tiny_train):
    probs = _softmax(tiny_train.reshape(12, K).double().numpy())
    res = max_class_image(logit_model, tiny_train, [0, 1, 2, 3, 2])
    expected = probs.argmax(axis=0)[[0, 1, 2, 3, 2]]
    assert res.info["index"].tolist() == expected.tolist()
    assert torch.equal(res.inputs, tiny_train[torch.as_tensor(expected)])
    assert res.inputs.dtype == torch.float32 and res.inputs.shape == (5, 1, 1, K)
    np.testing.assert_allclose(res.info["class_prob"].numpy(),
                               probs[expected, [0, 1, 2, 3, 2]], rtol=1e-6)
    assert torch.equal(res.target, target_distribution([0, 1, 2, 3, 2], num_classes=K))
    np.testing.assert_allclose(res.probs.numpy(), probs[expected], rtol=1e-6)
    err = np.abs(probs[expected] - res.target.numpy()).max(axis=1)
    np.testing.assert_allclose(res.info["max_error"].numpy(), err, rtol=1e-6)
    assert res.converged.tolist() == (err <= 1e-3).tolist()


def test_max_class_image_with_a_scalar_class_and_a_linear_model_with_a_known_winner():
    # logits = W x with W = [[1, 0], [0, 1]]: class 0 prefers the largest x0 - x1
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(2))
    train = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, -2.0], [3.0, 1.0]]).reshape(4, 1, 1, 2)
    res = max_class_image(model, train, 0)  # margins 0, 1, 2.5, 2 -> image 2
    assert res.info["index"].tolist() == [2]
    assert res.inputs.shape == (1, 1, 1, 2)


def test_max_class_image_ties_go_to_the_first_image(logit_model):
    train = torch.zeros(3, 1, 1, K)
    assert max_class_image(logit_model, train, 1).info["index"].tolist() == [0]


def test_verification_is_honest_when_a_training_image_meets_the_target(logit_model):
    target = target_distribution(2, p=0.9, num_classes=K)
    exact = target.log().reshape(1, 1, 1, K).float()
    train = torch.cat([torch.zeros(2, 1, 1, K), exact])
    res = max_class_image(logit_model, train, 2)
    assert res.info["index"].tolist() == [2] and res.converged.tolist() == [True]
    assert res.info["max_error"].item() < 1e-6


def test_percentile_average_image_averages_the_closest_quarter_of_outputs(logit_model, tiny_train):
    target = target_distribution([0, 3], num_classes=K)
    probs = _softmax(tiny_train.reshape(12, K).double().numpy())
    res = percentile_average_image(logit_model, tiny_train, target, percentile=25)
    flat = tiny_train.reshape(12, K).double().numpy()
    for b, t in enumerate(target.numpy()):
        d = np.sqrt(((probs - t) ** 2).sum(axis=1))
        keep = d <= np.quantile(d, 0.25)
        assert res.info["n_averaged"][b] == keep.sum()
        np.testing.assert_allclose(res.inputs[b].reshape(K).double().numpy(),
                                   flat[keep].mean(axis=0), rtol=1e-6)
        np.testing.assert_allclose(res.info["threshold"][b].item(), np.quantile(d, 0.25))
    assert res.inputs.dtype == torch.float32 and res.inputs.shape == (2, 1, 1, K)
    assert torch.equal(res.target, target)


def test_percentile_average_image_per_class_ranks_only_that_class(logit_model, tiny_train):
    labels = torch.arange(12) % K
    target = target_distribution(1, num_classes=K)
    res = percentile_average_image(logit_model, tiny_train, target, percentile=50, labels=labels)
    idx = np.flatnonzero(labels.numpy() == 1)
    flat = tiny_train.reshape(12, K).double().numpy()[idx]
    d = np.sqrt(((_softmax(flat) - target.numpy()) ** 2).sum(axis=1))
    keep = d <= np.quantile(d, 0.5)
    np.testing.assert_allclose(res.inputs[0].reshape(K).double().numpy(),
                               flat[keep].mean(axis=0), rtol=1e-6)
    assert res.info["per_class"] is True


def test_percentile_100_is_the_mean_of_the_whole_set(logit_model, tiny_train):
    res = percentile_average_image(logit_model, tiny_train, target_distribution(0, num_classes=K),
                                   percentile=100)
    torch.testing.assert_close(res.inputs[0], tiny_train.double().mean(0).float())


def test_training_set_probs_is_batched_and_float64(logit_model, tiny_train):
    full = training_set_probs(logit_model, tiny_train, batch_size=100)
    small = training_set_probs(logit_model, tiny_train, batch_size=5)
    assert full.dtype == torch.float64 and full.shape == (12, K)
    torch.testing.assert_close(full, small, rtol=0, atol=1e-15)
    np.testing.assert_allclose(full.numpy(), _softmax(tiny_train.reshape(12, K).double().numpy()))


def test_gradient_image_reaches_a_reachable_target(logit_model):
    target = target_distribution([0, 3], p=0.9, num_classes=K)
    res = gradient_image(logit_model, target, init=torch.zeros(1, 1, K), steps=400, lr=0.05)
    assert res.converged.all(), res.info["max_error"]
    assert res.inputs.dtype == torch.float32 and res.inputs.shape == (2, 1, 1, K)
    assert (res.info["max_error"] < res.info["initial_max_error"]).all()


def test_gradient_image_from_max_class_starts_at_method_one(logit_model, tiny_train):
    target = target_distribution([1, 2], num_classes=K)
    start = gradient_image(logit_model, target, train_images=tiny_train, steps=0)
    assert torch.equal(start.inputs, max_class_image(logit_model, tiny_train, [1, 2]).inputs)
    trained = gradient_image(logit_model, target, train_images=tiny_train, steps=50, lr=0.05)
    assert (trained.info["max_error"] <= start.info["max_error"]).all()
    assert trained.info["init"] == "max_class"


def test_gradient_image_batch_matches_separate_runs(logit_model):
    target = target_distribution([0, 2, 3], num_classes=K)
    batch = gradient_image(logit_model, target, init="random", seed=5, steps=30, lr=0.05,
                           input_shape=(1, 1, K))
    x0 = torch.rand((3, 1, 1, K), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for b in range(3):
        one = gradient_image(logit_model, target[b], init=x0[b:b + 1], steps=30, lr=0.05)
        torch.testing.assert_close(one.inputs[0], batch.inputs[b], rtol=0, atol=1e-6)


def test_gradient_image_same_seed_same_bits(logit_model):
    target = target_distribution([0, 1], num_classes=K)
    kw = dict(init="random", steps=10, input_shape=(1, 1, K))
    a = gradient_image(logit_model, target, seed=1, **kw)
    b = gradient_image(logit_model, target, seed=1, **kw)
    c = gradient_image(logit_model, target, seed=2, **kw)
    assert torch.equal(a.inputs, b.inputs) and not torch.equal(a.inputs, c.inputs)


def test_gradient_image_sgd_and_clamp(logit_model):
    target = target_distribution(0, num_classes=K)
    res = gradient_image(logit_model, target, init=torch.full((1, 1, K), 0.5), steps=20,
                         lr=100.0, optimizer="sgd", clamp=True)
    assert res.inputs.min() >= 0 and res.inputs.max() <= 1
    assert res.info["optimizer"] == "sgd"


def test_prior_methods_raise_on_invalid_input(logit_model, tiny_train):
    t = target_distribution(0, num_classes=K)
    with pytest.raises(InversionError, match="classes must lie"):
        max_class_image(logit_model, tiny_train, 7)
    with pytest.raises(InversionError, match="N >= 1"):
        max_class_image(logit_model, tiny_train[:0], 0)
    with pytest.raises(InversionError, match="NaN or inf"):
        max_class_image(logit_model, tiny_train * float("nan"), 0)
    with pytest.raises(InversionError, match="percentile"):
        percentile_average_image(logit_model, tiny_train, t, percentile=0)
    with pytest.raises(InversionError, match="classes but the model outputs"):
        percentile_average_image(logit_model, tiny_train, target_distribution(0))
    with pytest.raises(InversionError, match="no training image is labelled"):
        percentile_average_image(logit_model, tiny_train, t, labels=torch.ones(12))
    with pytest.raises(InversionError, match="pass train_images"):
        gradient_image(logit_model, t)
    with pytest.raises(InversionError, match="init must be one of"):
        gradient_image(logit_model, t, init="zeros", train_images=tiny_train)
    with pytest.raises(InversionError, match="optimizer"):
        gradient_image(logit_model, t, optimizer="lbfgs", train_images=tiny_train)
    with pytest.raises(InversionError, match="init tensor must be"):
        gradient_image(logit_model, target_distribution([0, 1], num_classes=K),
                       init=torch.zeros(3, 1, 1, K))
    with pytest.raises(InversionError, match="entries <= 0"):
        gradient_image(logit_model, torch.tensor([1.0, 0, 0, 0]), train_images=tiny_train)


def test_a_model_returning_probabilities_is_refused(logit_model, tiny_train):
    probs_model = nn.Sequential(logit_model, nn.Softmax(dim=1))
    target = target_distribution(1, 0.6, num_classes=K)
    for call in (lambda: training_set_probs(probs_model, tiny_train),
                 lambda: max_class_image(probs_model, tiny_train, 1),
                 lambda: gradient_image(probs_model, target, init="random",
                                        input_shape=(1, 1, K))):
        with pytest.raises(InversionError, match="outputs are probabilities"):
            call()
