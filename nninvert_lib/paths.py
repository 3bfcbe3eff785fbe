"""Where the library keeps its caches.

Everything the library writes (downloaded data, trained checkpoints, model
cards) lives under one cache directory:

* ``$NNINVERT_CACHE`` when set, otherwise
* the user's cache directory (``~/.cache/nninvert`` on Linux).
"""
from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cache_dir() -> Path:
    """The root cache directory, created if missing."""
    env = os.environ.get("NNINVERT_CACHE")
    path = Path(env) if env else Path(platformdirs.user_cache_dir("nninvert"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    """Directory holding trained checkpoints and their model cards."""
    path = cache_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """Writable data root (torchvision layout: ``<root>/MNIST/raw``)."""
    path = cache_dir() / "data"
    path.mkdir(parents=True, exist_ok=True)
    return path
