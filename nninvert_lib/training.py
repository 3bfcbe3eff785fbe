"""Training and evaluation loops (the paper's recipes, see :mod:`.profiles`)."""
from __future__ import annotations

import math
import os
import re
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .data import MnistData
from .profiles import TrainConfig


@dataclass
class TrainReport:
    """What a training run produced.

    Attributes:
        val_accuracy: accuracy (0–1) of the returned model (the EMA when used).
        val_accuracy_raw: accuracy of the raw weights (equal when no EMA).
        n_val: validation images used.
        n_train: training images used.
        steps: optimiser steps taken.
        seconds: wall-clock training time (evaluation excluded).
        loss_history: mean training loss of each epoch.
    """

    val_accuracy: float
    val_accuracy_raw: float
    n_val: int
    n_train: int
    steps: int
    seconds: float
    loss_history: list[float] = field(default_factory=list)


@torch.no_grad()
def evaluate(model: nn.Module, data: MnistData, max_samples: int | None = None,
             batch_size: int = 500, device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy (0–1) of ``model`` on the first ``max_samples`` images of ``data``."""
    n = len(data) if max_samples is None else min(max_samples, len(data))
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, n, batch_size):
        x = data.images[start:min(start + batch_size, n)].to(device)
        y = data.labels[start:min(start + batch_size, n)].to(device)
        correct += (model(x).argmax(dim=1) == y).sum().item()
    model.train(was_training)
    return correct / max(n, 1)


def memory_needed(model: nn.Module, config: TrainConfig) -> int:
    """A lower bound, in bytes, on this process's peak resident memory while
    ``model`` (already built) trains on the CPU with ``config``.

    ``RSS now + 4 B × (P_train × (1 + S) + P_all × E)``: one gradient per
    trainable parameter (``P_train``), ``S`` optimizer states each (AdamW 2, SGD
    with momentum 1, plain SGD 0), and, with EMA, a copy of every parameter
    (``P_all``). Activations and the allocator's slack come on top (DINOv3-Base
    under ``quick``: bound 2.6 GiB, measured peak 3.8 GiB).
    """
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    every = sum(p.numel() * p.element_size() for p in model.parameters())
    states = 2 if config.optimizer == "adamw" else int(config.momentum > 0)
    return _resident_bytes() + trainable * (1 + states) + (every if config.ema else 0)


def _resident_bytes() -> int:
    """This process's resident memory now (Linux ``/proc/self/statm``; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return 0


#: environment variable that sets :func:`memory_limit` by hand ("2G", "1500M" or bytes)
MEMORY_LIMIT_ENV = "NNINVERT_MEMORY_LIMIT"
_UNITS = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


def parse_bytes(text: str) -> int:
    """``"2G"``, ``"1500M"``, ``"2GiB"``, ``"2 GB"`` or ``"2147483648"`` in bytes (powers of 1024).

    Raises:
        ValueError: not a positive size (the message shows the accepted forms).
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if m is None or float(m.group(1)) <= 0:
        raise ValueError(f"a memory size must look like '2G', '1500M' or a number of bytes, "
                         f"got {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def memory_limit() -> int | None:
    """The memory this process may use, in bytes: the smallest of the cgroup limit
    (v2 ``memory.max`` or v1 ``memory.limit_in_bytes``, as set by Binder's and
    other containers) and the physical memory; ``None`` where none is readable.

    ``$NNINVERT_MEMORY_LIMIT`` (``"2G"``, ``"1500M"`` or bytes), when set, replaces
    them: to try what a smaller machine (Binder's 2 GB) would do.

    Raises:
        ValueError: ``$NNINVERT_MEMORY_LIMIT`` is not a size.
    """
    env = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if env:
        try:
            return parse_bytes(env)
        except ValueError as exc:
            raise ValueError(f"${MEMORY_LIMIT_ENV}: {exc}") from None
    limits = []
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2 ** 60:      # "max" or a huge number: no limit
            limits.append(int(text))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    return min(limits) if limits else None


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {config.optimizer!r}")


def train_model(model: nn.Module, config: TrainConfig, train: MnistData, val: MnistData,
                device: str | torch.device = "cpu", progress: bool = True,
                desc: str = "train") -> tuple[nn.Module, TrainReport]:
    """Train ``model`` with cross-entropy on its logits.

    Shuffling uses a ``torch.Generator`` seeded with ``config.seed``, so the same
    seed on the same machine gives the same weights.

    Args:
        model: maps ``(B, 1, 28, 28)`` images to ``(B, 10)`` logits; trained in place.
        config: the recipe (optimizer, epochs, EMA, budgets).
        train, val: data splits from :func:`~nninvert_lib.data.load_mnist`.
        device: ``"cpu"`` or ``"cuda"``.
        progress: show a progress bar.

    Returns:
        ``(trained, report)``: the EMA copy when ``config.ema`` else ``model``
        itself, in eval mode on ``device``.
    """
    device = torch.device(device)
    gen = torch.Generator().manual_seed(config.seed)
    n_train = len(train) if config.max_train_samples is None else min(config.max_train_samples,
                                                                       len(train))
    subset = torch.randperm(len(train), generator=gen)[:n_train]
    images, labels = train.images[subset].to(device), train.labels[subset].to(device)
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    total = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total = min(total, config.max_steps)

    model.to(device).train()
    opt = _optimizer(model, config)
    if config.schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {config.schedule!r}")
    warm = int(config.warmup * total)

    def lr_factor(s: int) -> float:
        if s < warm:
            return (s + 1) / warm
        if config.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * (min(s, total) - warm) / max(total - warm, 1)))
        return 1.0

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor) if warm or \
        config.schedule == "cosine" else None
    ema = None
    if config.ema:
        from timm.utils import ModelEmaV3

        # decay 0 (a plain copy) for the first ema_warmup steps, then ema_decay
        ema = ModelEmaV3(model, decay=config.ema_decay, update_after_step=config.ema_warmup)

    history: list[float] = []
    step = 0
    start = time.perf_counter()
    interactive = sys.stderr.isatty()
    bar = tqdm(total=total, desc=desc, disable=not progress, unit="step", leave=False,
               mininterval=0.5 if interactive else 30.0)
    for _epoch in range(config.epochs):
        order = torch.randperm(n_train, generator=gen).to(device)
        running, count = 0.0, 0
        for b in range(steps_per_epoch):
            if step >= total:
                break
            idx = order[b * config.batch_size:(b + 1) * config.batch_size]
            loss = F.cross_entropy(model(images[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            step += 1
            if ema is not None:
                ema.update(model, step=step)
            running += loss.item() * len(idx)
            count += len(idx)
            bar.set_postfix(loss=f"{running / count:.4f}", refresh=False)
            bar.update(1)                   # redraws at most every mininterval
        if count:
            history.append(running / count)
        if step >= total:
            break
    bar.close()
    seconds = time.perf_counter() - start

    model.eval()
    raw = evaluate(model, val, config.max_val_samples, device=device)
    trained = model if ema is None else ema.module.eval()
    acc = raw if ema is None else evaluate(trained, val, config.max_val_samples, device=device)
    n_val = len(val) if config.max_val_samples is None else min(config.max_val_samples, len(val))
    return trained, TrainReport(val_accuracy=acc, val_accuracy_raw=raw, n_val=n_val,
                                n_train=n_train, steps=step, seconds=seconds,
                                loss_history=history)
