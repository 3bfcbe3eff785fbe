"""Measures: distance to the training set, random-likeness, diversity, validity, agreement."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from nninvert_lib.errors import InversionError
from nninvert_lib.measures import (WHITE_NOISE_FLATNESS, class_diversity, correlation_length,
                                   cross_model_agreement, distance_percentile, effective_rank,
                                   fraction_out_of_range, mean_pairwise_distance,
                                   nearest_training_image, radial_autocorrelation,
                                   random_likeness, randomness_reference,
                                   reference_nearest_distances, spectral_flatness)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _smooth(n: int, sigma: float, seed: int = 0, size: int = 28) -> torch.Tensor:
    """Gaussian-blurred white noise ``(n, 1, size, size)``: correlated like strokes."""
    pad = 8
    x = torch.randn(n, 1, size + 2 * pad, size + 2 * pad, generator=_gen(seed), dtype=torch.float64)
    k = torch.arange(-pad, pad + 1, dtype=torch.float64)
    k = torch.exp(-k ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    x = nn.functional.conv2d(x, k.view(1, 1, 1, -1))
    x = nn.functional.conv2d(x, k.view(1, 1, -1, 1))
    return x


# ----------------------------------------------------------------------------- distance
def test_nearest_training_image_finds_the_perturbed_original():
    train = torch.rand(50, 1, 6, 6, generator=_gen(1))
    idx = torch.tensor([7, 0, 49, 7])
    noise = 0.01 * torch.randn(4, 1, 6, 6, generator=_gen(2))
    noise[1] = 0.0  # an exact duplicate
    res = nearest_training_image(train[idx] + noise, train, chunk_size=8, query_chunk=3)
    assert res.index.tolist() == idx.tolist()
    expected = noise.reshape(4, -1).double().norm(dim=1)
    torch.testing.assert_close(res.distance, expected, rtol=1e-6, atol=1e-9)
    assert res.distance[1].item() == 0.0


def test_nearest_training_image_matches_brute_force():
    train = torch.rand(300, 1, 5, 5, generator=_gen(3))
    queries = torch.rand(40, 1, 5, 5, generator=_gen(4))
    d = np.linalg.norm(queries.reshape(40, 1, -1).double().numpy()
                       - train.reshape(1, 300, -1).double().numpy(), axis=2)
    res = nearest_training_image(queries, train, chunk_size=64, query_chunk=16, candidates=3)
    assert res.index.tolist() == d.argmin(axis=1).tolist()
    np.testing.assert_allclose(res.distance.numpy(), d.min(axis=1), rtol=1e-12)


def test_nearest_training_image_is_on_the_pixel_scale_and_flags_non_finite_queries():
    train = torch.zeros(2, 1, 28, 28)
    train[1] = 1.0
    q = torch.stack([torch.ones(1, 28, 28) * 0.9, torch.full((1, 28, 28), float("nan"))])
    res = nearest_training_image(q, train)
    assert res.index.tolist() == [1, -1]
    assert res.distance[0].item() == pytest.approx(0.1 * 28, rel=1e-6)
    assert math.isnan(res.distance[1].item())
    assert nearest_training_image(torch.ones(1, 1, 28, 28), train[:1]).distance.item() == 28.0
    with pytest.raises(InversionError, match="same shape"):
        nearest_training_image(torch.zeros(1, 10), train)


def test_distance_percentile_ranks_against_the_reference():
    ref = torch.tensor([4.0, 1.0, 3.0, 2.0])
    out = distance_percentile(torch.tensor([0.5, 2.0, 2.5, 9.0, float("nan")]), ref)
    assert out[:4].tolist() == [0.0, 50.0, 50.0, 100.0] and math.isnan(out[4].item())
    with pytest.raises(InversionError, match="at least one finite"):
        distance_percentile(torch.tensor([1.0]), torch.tensor([]))


def test_reference_nearest_distances_is_a_sorted_seeded_subset():
    train = torch.rand(30, 1, 4, 4, generator=_gen(5))
    val = torch.rand(20, 1, 4, 4, generator=_gen(6))
    a = reference_nearest_distances(val, train, n=8, seed=1)
    b = reference_nearest_distances(val, train, n=8, seed=1)
    full = reference_nearest_distances(val, train, n=None)
    assert len(a) == 8 and torch.equal(a, b) and (a.diff() >= 0).all() and len(full) == 20
    assert set(a.tolist()) <= set(full.tolist())


# ----------------------------------------------------------------------------- randomness
def test_spectral_flatness_matches_an_independent_numpy_computation():
    x = torch.rand(3, 1, 9, 7, generator=_gen(7), dtype=torch.float64)
    for i in range(3):
        a = x[i, 0].numpy()
        p = np.abs(np.fft.fft2(a - a.mean())) ** 2
        p = p.ravel()[1:]
        expected = np.exp(np.log(p).mean()) / p.mean()
        assert spectral_flatness(x)[i].item() == pytest.approx(expected, rel=1e-10)
    # (n, H, W) is accepted too
    torch.testing.assert_close(spectral_flatness(x[:, 0]), spectral_flatness(x))


def test_white_noise_is_flat_constant_and_smooth_images_are_not():
    noise = torch.rand(300, 1, 28, 28, generator=_gen(8))
    sf_noise = spectral_flatness(noise)
    assert sf_noise.mean().item() == pytest.approx(WHITE_NOISE_FLATNESS, abs=0.02)
    assert spectral_flatness(torch.full((2, 1, 28, 28), 0.3)).tolist() == [0.0, 0.0]
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    cosine = torch.cos(2 * math.pi * 3 * xx / 28).reshape(1, 1, 28, 28)
    assert spectral_flatness(cosine).item() < 1e-6
    assert spectral_flatness(_smooth(20, 2.0)).max().item() < 0.1
    # brightness and contrast do not change it
    x = noise[:5].double()
    torch.testing.assert_close(spectral_flatness(3.0 * x - 1.0), spectral_flatness(x),
                               rtol=1e-10, atol=1e-12)


def test_correlation_length_grows_with_smoothness():
    noise = torch.rand(200, 1, 28, 28, generator=_gen(9))
    assert correlation_length(noise).median().item() == pytest.approx(1 - math.exp(-1), abs=0.05)
    lengths = [correlation_length(_smooth(50, s)).median().item() for s in (1.0, 1.5, 2.0)]
    assert lengths[0] > 1.2 and lengths[0] < lengths[1] < lengths[2]
    assert math.isnan(correlation_length(torch.ones(1, 1, 28, 28)).item())
    rho = radial_autocorrelation(noise[:3])
    assert torch.allclose(rho[:, 0], torch.ones(3, dtype=torch.float64))


def test_random_likeness_is_zero_for_the_reference_and_one_for_white_noise():
    digits = _smooth(201, 1.5, seed=10)  # stand-in for real digits: smooth strokes
    ref = randomness_reference(digits, n=None, seed=0)  # odd count: the median is one image
    assert ref.flatness_digits < 0.1 < ref.flatness_noise
    assert ref.flatness_noise == pytest.approx(WHITE_NOISE_FLATNESS, abs=0.02)
    assert ref.corr_length_noise < 1.0 < ref.corr_length_digits
    noise = torch.rand(200, 1, 28, 28, generator=_gen(11))
    for measure in ("flatness", "correlation_length"):
        assert random_likeness(digits, ref, measure).median().item() == pytest.approx(0, abs=1e-9)
        assert random_likeness(noise, ref, measure).median().item() == pytest.approx(1, abs=0.05)
        between = random_likeness(_smooth(50, 0.7, seed=12), ref, measure).median().item()
        assert 0 < between < 1
    const = random_likeness(torch.zeros(1, 1, 28, 28), ref).item()
    assert const == pytest.approx(-ref.flatness_digits / (ref.flatness_noise - ref.flatness_digits))
    with pytest.raises(InversionError, match="measure must be one of"):
        random_likeness(noise, ref, "entropy")


# ----------------------------------------------------------------------------- diversity
def test_mean_pairwise_distance_of_a_3_4_5_triangle():
    pts = torch.tensor([[0.0, 0.0], [3.0, 0.0], [3.0, 4.0]])  # sides 3, 4, 5
    assert mean_pairwise_distance(pts) == pytest.approx(4.0)
    assert mean_pairwise_distance(torch.ones(5, 1, 3, 3)) == 0.0
    with pytest.raises(InversionError, match="at least 2"):
        mean_pairwise_distance(torch.ones(1, 4))


def test_effective_rank_of_orthogonal_samples_is_their_number():
    q, _ = torch.linalg.qr(torch.randn(50, 6, generator=_gen(12), dtype=torch.float64))
    rows = 2.5 * q.T  # 6 orthogonal rows of equal norm
    assert effective_rank(rows, center=False) == pytest.approx(6.0)
    plus_minus = torch.cat([torch.eye(4), -torch.eye(4)])  # mean 0: centring changes nothing
    assert effective_rank(plus_minus) == pytest.approx(4.0)
    assert effective_rank(torch.ones(7, 3), center=False) == pytest.approx(1.0)
    assert effective_rank(torch.ones(7, 3)) == 0.0


def test_effective_rank_matches_the_entropy_formula():
    x = torch.randn(9, 20, generator=_gen(13), dtype=torch.float64)
    s = np.linalg.svd(x.numpy() - x.numpy().mean(axis=0), compute_uv=False)
    q = s / s.sum()
    q = q[q > 1e-15]
    assert effective_rank(x) == pytest.approx(float(np.exp(-(q * np.log(q)).sum())), rel=1e-6)


def test_class_diversity_is_one_row_per_class():
    images = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0], [1.0, 1.0], [2.0, 2.0]])
    df = class_diversity(images, [0, 0, 1, 1, 2])
    assert list(df["class"]) == [0, 1, 2] and list(df["n"]) == [2, 2, 1]
    assert df["mean_pairwise_distance"].iloc[0] == pytest.approx(5.0)
    assert df["mean_pairwise_distance"].iloc[1] == 0.0
    assert math.isnan(df["mean_pairwise_distance"].iloc[2])


# ----------------------------------------------------------------------------- validity
def test_fraction_out_of_range_counts_pixels_outside_the_unit_interval():
    x = torch.tensor([[-0.1, 0.0, 0.5, 1.0, 1.2, float("nan"), 0.3, 0.7],
                      [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0]]).reshape(2, 1, 2, 4)
    assert fraction_out_of_range(x).tolist() == [3 / 8, 0.0]
    assert fraction_out_of_range(x, low=-1, high=2).tolist() == [1 / 8, 0.0]


# ----------------------------------------------------------------------------- agreement
def test_cross_model_agreement_tabulates_each_models_prediction():
    def linear(sign: float) -> nn.Module:
        m = nn.Sequential(nn.Flatten(), nn.Linear(3, 3, bias=False))
        with torch.no_grad():
            m[1].weight.copy_(sign * torch.eye(3))
        return m

    images = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 2.0]]).reshape(2, 1, 1, 3)
    target = torch.tensor([0, 2])
    df = cross_model_agreement(images, {"same": linear(1.0), "flipped": linear(-1.0)}, target)
    assert isinstance(df, pd.DataFrame) and len(df) == 4
    same = df[df.model == "same"]
    assert same.predicted_class.tolist() == [0, 2] and same.agrees.all()
    flipped = df[df.model == "flipped"]
    assert not flipped.agrees.any()
    p = math.exp(2) / (math.exp(2) + 2)
    assert same.p_target_class.tolist() == pytest.approx([p, p])
    assert "max_error" not in df

    dist = torch.tensor([[p, (1 - p) / 2, (1 - p) / 2], [(1 - p) / 2, (1 - p) / 2, p]],
                        dtype=torch.float64)
    df2 = cross_model_agreement(images, {"same": linear(1.0), "flipped": linear(-1.0)}, dist)
    assert df2[df2.model == "same"].meets_target.all()
    assert not df2[df2.model == "flipped"].meets_target.any()
    assert df2.target_class.tolist() == [0, 2, 0, 2]
    with pytest.raises(InversionError, match="rows but images"):
        cross_model_agreement(images, {"same": linear(1.0)}, torch.tensor([0]))
