"""Section 3: the prior methods of [6] on FCNN-6, beside BackPassInv and ForwardPassInv.

One image per class (10 targets ``target_distribution(c, 0.9)``), each
method called as a user would call it, so the training-set search (60,000
float64 forward passes) is inside the data-based methods' time. The ratios
are each method's time per image over BackPassInv's (default strategy) on the
same ten targets, measured side by side.
"""
from __future__ import annotations

import nninvert_lib as nni
from timing import log, ratio_summary, summary, timed


def run_prior(cfg: dict, device: str = "cpu") -> dict:
    model, _ = nni.load_model("fcnn6", "quick", device=device, train=False, progress=False)
    train = nni.load_mnist("train").images
    if cfg.get("prior_train_images"):
        train = train[: cfg["prior_train_images"]]
    classes = list(range(10))
    rows = nni.target_distribution(classes, 0.9)
    steps = cfg["gradient_steps"]
    methods = {
        "max_class_image": lambda r: nni.max_class_image(model, train, classes),
        "percentile_average_image": lambda r: nni.percentile_average_image(model, train, rows),
        "gradient_image": lambda r: nni.gradient_image(model, rows, train_images=train,
                                                       steps=steps),
        "back_pass_inv": lambda r: nni.back_pass_inv(model, rows, seed=r),
        "forward_pass_inv": lambda r: nni.forward_pass_inv(model, rows, seed=r),
    }
    raw = {k: {"seconds": [], "verified": [], "max_error": []} for k in methods}
    nni.back_pass_inv(model, rows, seed=0)          # warm-up (plan cache)
    for r in range(cfg["repeats"]):
        for k, fn in methods.items():
            sec, res = timed(lambda: fn(r), device)
            raw[k]["seconds"].append(sec)
            raw[k]["verified"].append(int(res.converged.sum()))
            raw[k]["max_error"].append(float(res.max_error.median()))
    per_img = {k: [t / len(rows) for t in v["seconds"]] for k, v in raw.items()}
    out: dict = {"model": "fcnn6", "n": len(rows), "gradient_steps": steps,
                 "train_images": len(train), "methods": {}}
    for k in methods:
        out["methods"][k] = {
            "seconds": summary(raw[k]["seconds"]),
            "seconds_per_image": summary(per_img[k]),
            "success_rate": sum(raw[k]["verified"]) / (len(rows) * len(raw[k]["verified"])),
            "median_max_error": summary(raw[k]["max_error"]),
            "over_back_pass_inv": ratio_summary(per_img[k], per_img["back_pass_inv"]),
        }
        log(f"  prior {k}: {out['methods'][k]['seconds_per_image']['median']:.3g} s/image, "
            f"{out['methods'][k]['success_rate']:.0%} verified")
    return out
