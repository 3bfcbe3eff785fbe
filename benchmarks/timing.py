"""Timers, summaries of repeated measurements, ratios and peak memory.

Every measurement is repeated; a summary keeps the raw values beside their
median, min and max. Ratios are formed per repeat from measurements taken
side by side (interleaved), then summarised the same way.
"""
from __future__ import annotations

import math
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import torch


def sync(device: str | torch.device) -> None:
    """Wait for queued CUDA work, so that a timer sees it (no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str | torch.device = "cpu") -> tuple[float, object]:
    """``(seconds, fn())`` with the device synchronised before and after."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def summary(values: Sequence[float]) -> dict:
    """``{"median", "min", "max", "values"}`` of finite-or-inf values (NaN dropped)."""
    vals = [float(v) for v in values if not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "values": []}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals),
            "values": vals}


def ratio_summary(num: Sequence[float], den: Sequence[float]) -> dict:
    """Per-repeat ratios ``num[i] / den[i]`` (pairs measured side by side), summarised.

    When the lists differ in length (one side measured once per several of the
    other), each ``num`` value is divided by the median of ``den``.
    """
    if len(num) == len(den):
        pairs = zip(num, den)
    else:
        d = statistics.median(den)
        pairs = ((n, d) for n in num)
    out = []
    for a, b in pairs:
        out.append(a / b if b else math.inf if a else math.nan)
    return summary(out)


def prime_allocator(mb: int = 16) -> None:
    """Put glibc's allocator in the state any sizeable workload leaves it in.

    glibc serves large blocks with ``mmap`` until a freed one raises its
    (dynamic) threshold; until then every temporary of a few MB (the
    per-sample baseline's SVD factors) costs fresh page faults, and that
    baseline ran up to 3x slower in a fresh process than after any large
    computation. Allocating and freeing one ``mb`` MB block (below glibc's
    32 MB cap on the threshold) settles it, for every section alike.
    (Setting ``MALLOC_*_`` environment variables instead would switch the
    dynamic threshold off and slow torch down.)
    """
    import numpy as np

    block = np.ones(mb * 2**20 // 8)
    del block


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (10^6 bytes)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb * (1 if sys.platform == "darwin" else 1024) / 1e6


def log(msg: str) -> None:
    """Progress line on stderr (stdout stays free), flushed at once."""
    print(msg, file=sys.stderr, flush=True)
