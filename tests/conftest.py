"""Shared fixtures: an isolated cache, offline hub lookups, the full MNIST when present,
and the tiny timm ViT the inversion tests run on."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Before anything imports huggingface_hub: a lookup without network stalls ~45 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NNINVERT_DOWNLOAD", "0")
_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if "NNINVERT_DATA" not in os.environ and (_SHARED / "MNIST" / "raw").is_dir():
    os.environ["NNINVERT_DATA"] = str(_SHARED)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """All checkpoints written by the tests go to one temporary cache."""
    os.environ["NNINVERT_CACHE"] = str(tmp_path_factory.mktemp("nninvert-cache"))
    yield


@pytest.fixture(autouse=True)
def _fresh_data_state(monkeypatch):
    """Each test starts as a new process would: no failed download remembered,
    no fallback to the MNIST subset warned of yet."""
    from nninvert_lib import data

    monkeypatch.setattr(data, "_download_failure", None)
    monkeypatch.setattr(data, "_subset_warned", set())


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty cache for one test."""
    monkeypatch.setenv("NNINVERT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


#: a 2-block ViT-tiny on 28 x 28 one-channel images, 10 classes
TINY_VIT = dict(img_size=28, patch_size=7, in_chans=1, num_classes=10, depth=2)


def peaked_vit(head_gain: float = 20.0, **overrides) -> torch.nn.Module:
    """The tiny ViT (seed 0; ``overrides`` go to ``timm.create_model``) with its head
    scaled by ``head_gain``: a random head is nearly uniform, this makes its outputs peaked."""
    import timm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = timm.create_model("vit_tiny_patch16_224", **{**TINY_VIT, **overrides})
        with torch.no_grad():
            m.get_classifier().weight.mul_(head_gain)
        return m.eval()


@pytest.fixture
def make_vit():
    """:func:`peaked_vit`, for tests that need a variant."""
    return peaked_vit


@pytest.fixture
def tiny_vit():
    return peaked_vit()
