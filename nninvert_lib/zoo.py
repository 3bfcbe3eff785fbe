"""Trained models on demand: load from the checkpoint cache, or train and cache.

A checkpoint lives in ``<cache>/models/<name>-<key>.pt`` beside its model card
``<...>.json``. The key is a hash of the model name, the training
configuration, the architecture and the data source, so changing any of them
trains a new model instead of loading a stale one, and two profiles with the
same recipe (the FCNNs under ``paper`` and ``quick``) share one checkpoint. Checkpoints are read with
``torch.load(weights_only=True)``; a corrupted, truncated or mismatched file
is reported with a :class:`~nninvert_lib.errors.CheckpointWarning` and the
model is retrained, never a traceback. A model whose training cannot fit in this
machine's memory is refused before training starts; :func:`load_models` loads
several and leaves such a model out, with the reason.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import paths
from .data import original_files_present, MnistData, load_mnist
from .errors import CheckpointWarning, InsufficientMemoryError
from .models import DISPLAY_NAMES, FCNN_WIDTHS, MODEL_NAMES, PAPER_ACCURACY, VIT_ARCHS, build_model
from .profiles import PROFILES, TrainConfig, train_config
from .training import memory_limit, memory_needed, train_model

CHECKPOINT_FORMAT = 1


def model_key(name: str, config: TrainConfig, data_source: str) -> str:
    """16 hex digits identifying a trained model: name, config, architecture, data source."""
    arch = list(FCNN_WIDTHS[name]) if name in FCNN_WIDTHS else VIT_ARCHS[name]
    # only settings that differ from their defaults: adding an option keeps old keys valid
    defaults = TrainConfig(optimizer="", lr=0.0, epochs=0, batch_size=0).to_dict()
    settings = {k: v for k, v in config.to_dict().items() if v != defaults[k]
                or k in ("optimizer", "lr", "epochs", "batch_size")}
    payload = {"name": name, "config": settings, "arch": arch,
               "data": data_source, "format": CHECKPOINT_FORMAT}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def weights_fingerprint(model: nn.Module) -> str:
    """16 hex digits identifying ``model``'s weights (a SHA-256 of every parameter and
    buffer, in ``state_dict`` order, names and bytes): equal for the same trained
    model, different after any retraining, even under the same :func:`model_key`."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
                      .numpy().tobytes())
    return digest.hexdigest()[:16]


def checkpoint_path(name: str, key: str) -> Path:
    """Path of the ``.pt`` checkpoint; the model card is the same path with ``.json``."""
    return paths.models_dir() / f"{name}-{key}.pt"


def _versions() -> dict:
    import timm

    from . import __version__

    return {"nninvert": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def _save(model: nn.Module, card: dict, path: Path) -> None:
    """Write checkpoint and card atomically (temporary file, then rename)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".pt.tmp")
    torch.save({"key": card["key"], "format": CHECKPOINT_FORMAT, "state_dict": state}, tmp)
    os.replace(tmp, path)
    tmp_card = path.with_suffix(".json.tmp")
    tmp_card.write_text(json.dumps(card, indent=2))
    os.replace(tmp_card, path.with_suffix(".json"))


def _load(model: nn.Module, path: Path, key: str) -> dict:
    """Load weights into ``model`` and return the card; raises ValueError on any problem."""
    try:
        # memory-mapped (copy-on-write), and assigned below rather than copied: the
        # weights are read from the page cache without a second copy in memory
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise ValueError(f"cannot read checkpoint: {exc.__class__.__name__}: {exc}") from exc
    if not isinstance(blob, dict) or blob.get("key") != key or "state_dict" not in blob:
        raise ValueError("checkpoint does not match this model's configuration")
    try:
        model.load_state_dict(blob["state_dict"], strict=True, assign=True)
    except Exception as exc:
        raise ValueError(f"weights do not fit the architecture: {exc}") from exc
    try:
        card = json.loads(path.with_suffix(".json").read_text())
    except Exception as exc:
        raise ValueError(f"model card missing or unreadable: {exc}") from exc
    if card.get("key") != key:
        raise ValueError("model card does not match the checkpoint")
    return card


def load_model(name: str, profile: str = "quick", device: str | torch.device = "cpu",
               train: bool = True, force: bool = False, progress: bool = True,
               data_root: str | os.PathLike | None = None,
               config: TrainConfig | None = None) -> tuple[nn.Module, dict]:
    """A trained model and its model card, from the cache or by training it now.

    Args:
        name: one of ``fcnn1``, ``fcnn2``, ``fcnn6``, ``vit_tiny``, ``dinov3_base``.
        profile: ``paper``, ``quick`` or ``smoke`` (see :mod:`.profiles`).
        device: where to train and where the returned model lives.
        train: train on a cache miss; when False a miss raises FileNotFoundError.
        force: retrain even when a valid checkpoint exists.
        progress: show progress bars while training.
        data_root: a folder holding ``MNIST/raw`` (else :func:`load_mnist`'s chain).
        config: override the profile's training configuration (for experiments
            and tests); it becomes part of the cache key.

    Returns:
        ``(model, card)``: the model in eval mode, and its card (a dict with
        ``val_accuracy``, ``paper_val_accuracy``, ``data``, ``profile``,
        ``config``, ``arch``, ``train_seconds``, ``versions``...).

    Raises:
        ValueError: unknown name or profile.
        FileNotFoundError: ``train=False`` and no valid checkpoint is cached.
        InsufficientMemoryError: (a ``MemoryError``) the model would have to be
            trained on the CPU and even the lower bound of
            :func:`~.training.memory_needed` exceeds the machine's memory
            (:func:`~.training.memory_limit`; DINOv3-Base on Binder's 2 GB):
            raised before training starts. :func:`load_models` skips such a
            model instead.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"model must be one of {MODEL_NAMES}, got {name!r}")
    config = config or train_config(name, profile)
    train_data = None
    if original_files_present("train", data_root):
        source = "mnist"  # skip decoding 60,000 images when the checkpoint is cached
    else:
        train_data = load_mnist("train", root=data_root)
        source = train_data.source
    key = model_key(name, config, source)
    path = checkpoint_path(name, key)
    cached = None if force else _load_cached(name, profile, config, key, path)
    if cached is not None:
        return cached[0].to(device).eval(), cached[1]
    if train_data is None:
        train_data = load_mnist("train", root=data_root)
        if train_data.source != source:  # the files were there but unreadable: fell back
            key = model_key(name, config, train_data.source)
            path = checkpoint_path(name, key)
            cached = None if force else _load_cached(name, profile, config, key, path)
            if cached is not None:
                return cached[0].to(device).eval(), cached[1]
    if not train:
        raise FileNotFoundError(f"no trained {name} ({profile}) in {paths.models_dir()}; "
                                f"run `nninvert train {name} --profile {profile}`")
    return _train_and_save(name, profile, config, key, path, train_data,
                           load_mnist("val", root=data_root), device, progress)


def _load_cached(name: str, profile: str, config: TrainConfig, key: str,
                 path: Path) -> tuple[nn.Module, dict] | None:
    """The checkpointed model and its card, or None (missing, or unusable with a warning)."""
    if not path.exists():
        return None
    # weights come from the checkpoint: skip any pretrained-weight lookup
    model, _ = build_model(name, config.replace(pretrained=False))
    try:
        card = _load(model, path, key)
    except ValueError as exc:
        warnings.warn(f"checkpoint {path} is unusable ({exc}); retraining {name}",
                      CheckpointWarning, stacklevel=3)
        return None
    # the recipe may be shared: report the profile asked for, keep the original
    return model, {**card, "profile": profile, "trained_under": card["profile"]}


def _train_and_save(name: str, profile: str, config: TrainConfig, key: str, path: Path,
                    train_data: MnistData, val_data: MnistData, device, progress: bool):
    model, arch = build_model(name, config)
    if torch.device(device).type == "cpu":
        _check_memory(name, profile, model, config)
    trained, report = train_model(model, config, train_data, val_data, device=device,
                                  progress=progress, desc=f"{name} ({profile})")
    card = {
        "name": name, "profile": profile, "key": key,
        "val_accuracy": report.val_accuracy, "val_accuracy_raw": report.val_accuracy_raw,
        "paper_val_accuracy": PAPER_ACCURACY[name] / 100.0,
        "n_val": report.n_val, "n_train": report.n_train, "steps": report.steps,
        "train_seconds": report.seconds, "loss_history": report.loss_history,
        "device": str(device), "data": {"train": train_data.record, "val": val_data.record},
        "config": config.to_dict(), "arch": arch, "versions": _versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    _save(trained, card, path)
    return trained.eval(), card


def _check_memory(name: str, profile: str, model: nn.Module, config: TrainConfig) -> None:
    """Raise :class:`~.errors.InsufficientMemoryError` before training when even
    :func:`~.training.memory_needed`'s lower bound exceeds
    :func:`~.training.memory_limit` (on Binder's 2 GB, DINOv3-Base would otherwise
    train for minutes and then have its process killed)."""
    need, limit = memory_needed(model, config), memory_limit()
    if limit is None or need <= limit:
        return
    raise InsufficientMemoryError(
        f"training {name} ({profile!r} profile) needs at least {need / 2**30:.1f} GiB "
        f"(this process's memory now, plus gradients, optimizer state"
        f"{' and the EMA copy' if config.ema else ''} of "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters) but this "
        f"machine allows {limit / 2**30:.1f} GiB. Train it on a machine with more memory "
        f"(`nninvert train {name} --profile {profile}`) and copy {paths.models_dir()} here, "
        f"or use a smaller profile.")


@dataclass
class LoadedModels:
    """What :func:`load_models` loaded, and what it left out.

    Attributes:
        models: name -> trained model (eval mode), in the order asked for.
        cards: name -> model card (see :func:`load_model`).
        skipped: name -> why the model is left out (the message of the
            :class:`~.errors.InsufficientMemoryError`: this machine cannot train it).
    """

    models: dict[str, nn.Module] = field(default_factory=dict)
    cards: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def __contains__(self, name: str) -> bool:
        return name in self.models

    def skip_note(self, name: str) -> str:
        """One paragraph for a reader: why ``name`` is missing here, or ``""``."""
        if name not in self.skipped:
            return ""
        return (f"{DISPLAY_NAMES[name]} is left out on this machine, so the cells that use it "
                f"show nothing: {self.skipped[name]} The published book shows its results.")


def load_models(names: Sequence[str] = MODEL_NAMES, profile: str = "quick", *,
                device: str | torch.device = "cpu", progress: bool = False,
                skip_unfit: bool = True) -> LoadedModels:
    """Several models by :func:`load_model`, leaving out those this machine cannot train.

    On a machine with little memory (Binder's 2 GB) a model that is not cached
    and whose training would not fit (DINOv3-Base) is reported with a
    ``UserWarning`` and recorded in ``skipped``, so that a notebook can go on with
    the other models instead of stopping.

    Args:
        names: model names (see :data:`~.models.MODEL_NAMES`).
        profile, device, progress: as for :func:`load_model`.
        skip_unfit: False: raise the :class:`~.errors.InsufficientMemoryError` instead.

    Returns:
        :class:`LoadedModels`.

    Raises:
        ValueError: unknown name or profile (before anything is loaded).
    """
    unknown = [n for n in names if n not in MODEL_NAMES]
    if unknown:
        raise ValueError(f"models must be among {MODEL_NAMES}, got {unknown}")
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    out = LoadedModels()
    for name in names:
        try:
            out.models[name], out.cards[name] = load_model(name, profile, device=device,
                                                           progress=progress)
        except InsufficientMemoryError as exc:
            if not skip_unfit:
                raise
            out.skipped[name] = str(exc)
            warnings.warn(f"{name} left out: {exc}", UserWarning, stacklevel=2)
    return out


def cached_cards(profile: str | None = None) -> list[dict]:
    """Model cards of every cached checkpoint (optionally of one profile), newest
    first. A card that cannot be read is left out with a :class:`CheckpointWarning`
    (loading its model retrains it)."""
    cards = []
    for card_path in paths.models_dir().glob("*.json"):
        try:
            card = json.loads(card_path.read_text())
            if not isinstance(card, dict):
                raise ValueError(f"a JSON {type(card).__name__}, not a model card")
        except (OSError, ValueError) as exc:
            warnings.warn(CheckpointWarning(f"model card {card_path} is unreadable ({exc}); "
                                            "loading that model trains it again"), stacklevel=2)
            continue
        if profile is None or card.get("profile") == profile:
            card["path"] = str(card_path.with_suffix(".pt"))
            cards.append(card)
    return sorted(cards, key=lambda c: c.get("created", ""), reverse=True)
