"""Shared fixtures: an isolated cache, offline hub lookups, the full MNIST when present."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

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


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty cache for one test."""
    monkeypatch.setenv("NNINVERT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
