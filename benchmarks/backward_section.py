"""Section 1: BackPassInv on the trained FCNNs against a per-sample baseline and the roofline.

For each model and batch size, repeated and interleaved so that every ratio
compares measurements taken side by side:

* ours, ``strategy="anchored"`` (the default) and ``strategy="paper"``, with
  the model's plan (its SVDs) already cached, as every call after the first
  finds it; the one-off plan cost is timed separately;
* the per-sample NumPy baseline (``per_sample.py``, SVDs recomputed per call)
  on a few samples, its per-sample cost extrapolated to the batch;
* the roofline: the float64 matrix products alone (``roofline.py``).

Also, in its own process (``run_threads``), FCNN-6 at batch 100 with one and
two threads, interleaved.
"""
from __future__ import annotations

import torch

import nninvert_lib as nni
from per_sample import per_sample_back_pass
from roofline import backward_matmuls, per_call, plan_shapes
from timing import log, peak_rss_mb, ratio_summary, summary, timed

STRATEGIES = ("anchored", "paper")


def batch_targets(batch: int) -> tuple[torch.Tensor, int]:
    """``(rows, n_samples)``: 10 classes × ``batch/10`` samples, or ``batch`` classes
    with one sample each when ``batch < 10``."""
    if batch < 10:
        return nni.target_distribution(list(range(batch)), 0.9), 1
    if batch % 10:
        raise ValueError(f"batch must be < 10 or a multiple of 10, got {batch}")
    return nni.target_distribution(list(range(10)), 0.9), batch // 10


def run_backward(cfg: dict, device: str = "cpu") -> dict:
    repeats = cfg["repeats"]
    out: dict = {"device": device, "batches": cfg["backward_batches"], "models": {}}
    for name in cfg["backward_models"]:
        model, card = nni.load_model(name, "quick", device=device, train=False, progress=False)
        plan_s = [timed(lambda: nni.plan_back_pass(model, use_cache=False), device)[0]
                  for _ in range(repeats)]
        plan = nni.plan_back_pass(model)
        shapes = plan_shapes(plan)
        base_k = cfg["per_sample_count"][name]
        for strategy in STRATEGIES:            # warm-up: caches, allocator, first-call costs
            nni.back_pass_inv(model, nni.target_distribution(list(range(10))), n_samples=2,
                              seed=0, strategy=strategy)
        rec: dict = {"val_accuracy": card.get("val_accuracy"), "layers": shapes,
                     "plan_seconds": summary(plan_s), "per_sample_count": base_k,
                     "batches": {}}
        for batch in cfg["backward_batches"]:
            rows, n_per = batch_targets(batch)
            roof = backward_matmuls(shapes, batch, device)
            raw = {s: {"seconds": [], "verified": []} for s in STRATEGIES}
            raw["per_sample"] = {"seconds": [], "verified": [], "n": base_k}
            raw["roofline"] = {"seconds": []}
            for r in range(repeats):
                for s in STRATEGIES:
                    sec, res = timed(lambda: nni.back_pass_inv(
                        model, rows, n_samples=n_per, seed=r, strategy=s), device)
                    raw[s]["seconds"].append(sec)
                    raw[s]["verified"].append(int(res.converged.sum()))
                base_rows = nni.target_distribution([c % 10 for c in range(base_k)], 0.9)
                sec, (ver, _) = timed(lambda: per_sample_back_pass(model, base_rows, seed=r))
                raw["per_sample"]["seconds"].append(sec)
                raw["per_sample"]["verified"].append(ver)
                raw["roofline"]["seconds"].append(per_call(roof, device))
            rec["batches"][str(batch)] = _batch_summary(raw, batch, base_k)
            # the process's peak so far: where it rises, this batch set it
            rec["batches"][str(batch)]["peak_rss_mb_so_far"] = peak_rss_mb()
            b = rec["batches"][str(batch)]
            log(f"  backward {name} batch {batch}: default "
                f"{b['anchored']['verified_per_s']['median']:.0f} verified/s "
                f"({b['anchored']['success_rate']:.0%}), paper "
                f"{b['paper']['verified_per_s']['median']:.0f}/s "
                f"({b['paper']['success_rate']:.0%}), per-sample "
                f"{b['per_sample']['samples_per_s']['median']:.1f}/s")
        out["models"][name] = rec
    return out


def _batch_summary(raw: dict, batch: int, base_k: int) -> dict:
    res: dict = {"n": batch}
    base_per_sample = [s / base_k for s in raw["per_sample"]["seconds"]]
    base_batch = [p * batch for p in base_per_sample]          # extrapolated to the batch
    for s in STRATEGIES:
        sec, ver = raw[s]["seconds"], raw[s]["verified"]
        res[s] = {
            "seconds": summary(sec), "verified": ver,
            "success_rate": sum(ver) / (batch * len(ver)),
            "verified_per_s": summary([v / t for v, t in zip(ver, sec)]),
            "samples_per_s": summary([batch / t for t in sec]),
            # ours' verified samples/s over the baseline's attempted samples/s
            "speedup_vs_per_sample": ratio_summary(
                [v / t for v, t in zip(ver, sec)], [1 / p for p in base_per_sample]),
            # attempted samples: the same work, whatever verified
            "speedup_vs_per_sample_attempted": ratio_summary(base_batch, sec),
            "times_roofline": ratio_summary(sec, raw["roofline"]["seconds"]),
        }
    res["per_sample"] = {
        "seconds": summary(raw["per_sample"]["seconds"]), "n": base_k,
        "seconds_per_sample": summary(base_per_sample),
        "samples_per_s": summary([1 / p for p in base_per_sample]),
        "verified": raw["per_sample"]["verified"],
        "success_rate": sum(raw["per_sample"]["verified"]) / (base_k * len(base_per_sample)),
        "extrapolated_batch_seconds": summary(base_batch)}
    res["roofline"] = {"seconds": summary(raw["roofline"]["seconds"])}
    return res


def run_threads(cfg: dict, device: str = "cpu") -> dict:
    """FCNN-6, batch 100, default and paper strategy: one thread against two."""
    model, _ = nni.load_model("fcnn6", "quick", device=device, train=False, progress=False)
    rows, n_per = batch_targets(100)
    out: dict = {"batch": 100, "model": "fcnn6"}
    for s in STRATEGIES:
        nni.back_pass_inv(model, rows, n_samples=n_per, seed=0, strategy=s)
        sec = {1: [], 2: []}
        ver = {1: [], 2: []}
        for r in range(cfg["repeats"]):
            for th in (1, 2):
                torch.set_num_threads(th)
                t, res = timed(lambda: nni.back_pass_inv(model, rows, n_samples=n_per, seed=r,
                                                         strategy=s), device)
                sec[th].append(t)
                ver[th].append(int(res.converged.sum()))
        torch.set_num_threads(1)
        out[s] = {f"threads_{th}": {"seconds": summary(sec[th]), "verified": ver[th],
                                    "verified_per_s": summary([v / t for v, t in
                                                               zip(ver[th], sec[th])])}
                  for th in (1, 2)}
        out[s]["two_over_one_seconds"] = ratio_summary(sec[2], sec[1])
        log(f"  threads {s}: 2 threads take "
            f"{out[s]['two_over_one_seconds']['median']:.2f}x the time of 1")
    return out
