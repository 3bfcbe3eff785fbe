"""Section 2: ForwardPassInv (batched Levenberg–Marquardt) against SciPy per image.

Per model (each in its own process, so that its peak memory is its own):

* ``forward_pass_inv`` on a batch of targets, at most ``max_iter`` iterations:
  time per image, per verified image, success rate, Jacobians per image; again
  with ``broyden=True`` (Broyden's update of the reused Jacobian between chord
  steps, off by default), and with ``broyden=True`` and Jacobians under autocast
  to bfloat16 (``jacobian_dtype``, float32 working dtype only), side by side;
* the same targets with ``method="scipy"`` (``least_squares(method="trf")``
  per image) on a subset, its per-image cost extrapolated;
* the cost of one LM iteration on the full batch, from runs of the library's
  LM engine with a fixed number of iterations (``(T(N) - T(0)) / N``, nobody
  allowed to stop early; no model copy or verification inside the timing),
  against one forward pass plus one ``m``-row batched VJP of the same batch
  (``m = K - 1``, the rows LM's default ``"logit"`` residual needs).

Two kinds of target: the paper's ``target_distribution(c, 0.9)``, and
*model-produced* targets, the model's own softmax on the first validation
digit of each class (reachable by construction).
"""
from __future__ import annotations

import torch

import nninvert_lib as nni
from nninvert_lib.forward import LMOptions, ProbabilityResidual, inversion_copy, lm_solve
from roofline import forward_and_vjp, per_call
from timing import log, ratio_summary, summary, timed

INPUT_SHAPE = (1, 28, 28)


def model_targets(model: torch.nn.Module, classes: list[int], device: str) -> torch.Tensor:
    """The model's float64 softmax on the first validation digit of each class."""
    val = nni.load_mnist("val")
    idx = [int((val.labels == c).nonzero()[0]) for c in classes]
    m64 = inversion_copy(model, dtype=torch.float64, device=device)[0]
    with torch.no_grad():
        p = torch.softmax(m64(val.images[idx].to(device, torch.float64)), dim=-1).cpu()
    return p / p.sum(dim=1, keepdim=True)


def _solve(model, rows, n_per, seed, spec, method, device, threads=None, **options):
    """``(seconds, result)`` of one ``forward_pass_inv`` call (``options`` passed
    on); ``threads``: run it with that many torch threads (then restore the
    process's setting)."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return timed(lambda: nni.forward_pass_inv(
            model, rows, n_samples=n_per, seed=seed, max_iter=spec["max_iter"],
            dtype=spec["dtype"], method=method, **options), device)
    finally:
        torch.set_num_threads(before)


def run_forward(cfg: dict, name: str, device: str = "cpu") -> dict:
    spec = cfg["forward"][name]
    repeats = cfg["repeats"]
    model, card = nni.load_model(name, "quick", device=device, train=False, progress=False)
    classes = list(range(spec["classes"]))
    kinds = {"p=0.9": nni.target_distribution(classes, 0.9)}
    if spec.get("model_targets"):
        kinds["model-produced"] = model_targets(model, classes, device)
    model_dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    dtype_name = str(spec["dtype"]).replace("torch.", "") if spec["dtype"] else model_dtype
    out: dict = {"model": name, "device": device, "val_accuracy": card.get("val_accuracy"),
                 "classes": spec["classes"], "n_per_class": spec["n_per_class"],
                 "max_iter": spec["max_iter"], "dtype": dtype_name,
                 "scipy_subset": spec["scipy_subset"], "targets": {}}
    sp_per = spec.get("scipy_per_class", 1)
    # with several threads, SciPy is also timed on one (its one-image products are
    # too small to use two): the speed target is met against its faster setting
    one_thread = torch.get_num_threads() > 1 and device == "cpu"
    for kind, rows in kinds.items():
        n = len(rows) * spec["n_per_class"]
        sub = rows[: spec["scipy_subset"]]
        # lm_broyden: the same LM with Broyden's update of the reused Jacobian;
        # lm_bf16: that, with its Jacobians under autocast to bfloat16
        runs = {"lm": (rows, spec["n_per_class"], "lm", None, {}),
                "lm_broyden": (rows, spec["n_per_class"], "lm", None, {"broyden": True})}
        if dtype_name == "float32":
            runs["lm_bf16"] = (rows, spec["n_per_class"], "lm", None,
                               {"broyden": True, "jacobian_dtype": torch.bfloat16})
        runs["scipy"] = (sub, sp_per, "scipy", None, {})
        if one_thread:
            runs["scipy_1_thread"] = (sub, sp_per, "scipy", 1, {})
        raw = {key: {"seconds": [], "verified": [], "iterations": [], "jacobians": []}
               for key in runs}
        for r in range(repeats):
            for key, (targets, per, method, threads, options) in runs.items():
                sec, res = _solve(model, targets, per, r, spec, method, device, threads,
                                  **options)
                raw[key]["seconds"].append(sec)
                raw[key]["verified"].append(int(res.converged.sum()))
                raw[key]["iterations"].append(float(res.info["iterations"].double().mean()))
                if "jacobians" in res.info:
                    raw[key]["jacobians"].append(float(res.info["jacobians"].double().mean()))
        rec = {}
        for method in runs:
            lm = method.startswith("lm")
            count = n if lm else len(sub) * sp_per
            sec, ver = raw[method]["seconds"], raw[method]["verified"]
            rec[method] = {
                "n": count, "seconds": summary(sec), "verified": ver,
                "success_rate": sum(ver) / (count * len(ver)),
                "seconds_per_image": summary([t / count for t in sec]),
                "seconds_per_verified_image": summary([t / v if v else float("inf")
                                                       for t, v in zip(sec, ver)]),
                "mean_iterations": summary(raw[method]["iterations"]),
                "mean_jacobians": summary(raw[method]["jacobians"]) if lm else None,
                # one image's iteration: the subset's time over all its iterations
                "seconds_per_iteration": summary([t / max(count * it, 1e-9) for t, it in
                                                  zip(sec, raw[method]["iterations"])])
                if not lm else None,
            }
        per_img_lm = [t / n for t in raw["lm"]["seconds"]]
        per_img_sp = [t / rec["scipy"]["n"] for t in raw["scipy"]["seconds"]]
        rec["scipy_over_lm_per_image"] = ratio_summary(per_img_sp, per_img_lm)
        rec["scipy_over_lm_per_verified_image"] = ratio_summary(
            rec["scipy"]["seconds_per_verified_image"]["values"],
            rec["lm"]["seconds_per_verified_image"]["values"])
        variants = [v for v in ("lm_broyden", "lm_bf16") if v in runs]
        for v in variants:
            rec[f"scipy_over_{v}_per_verified_image"] = ratio_summary(
                rec["scipy"]["seconds_per_verified_image"]["values"],
                rec[v]["seconds_per_verified_image"]["values"])
        if one_thread:   # per repeat, SciPy's faster thread setting
            best = [min(a, b) for a, b in zip(rec["scipy"]["seconds_per_verified_image"]["values"],
                                              rec["scipy_1_thread"]["seconds_per_verified_image"]
                                              ["values"])]
            rec["scipy_best_over_lm_per_verified_image"] = ratio_summary(
                best, rec["lm"]["seconds_per_verified_image"]["values"])
            for v in variants:
                rec[f"scipy_best_over_{v}_per_verified_image"] = ratio_summary(
                    best, rec[v]["seconds_per_verified_image"]["values"])
        out["targets"][kind] = rec
        log(f"  forward {name} {kind}: LM {rec['lm']['success_rate']:.0%} verified, "
            f"{rec['lm']['seconds_per_image']['median']:.3g} s/image; SciPy "
            f"{rec['scipy']['success_rate']:.0%}, "
            f"{rec['scipy']['seconds_per_image']['median']:.3g} s/image")
    out["per_iteration"] = per_iteration(model, kinds["p=0.9"], spec, repeats, device)
    return out


def lm_fixed_iterations(net: torch.nn.Module, x: torch.Tensor, target: torch.Tensor,
                        n_iter: int, input_shape: tuple[int, ...] = INPUT_SHAPE) -> int:
    """``n_iter`` iterations of the library's LM engine (``lm_solve``) on the whole batch.

    ``net`` is an :func:`inversion_copy` and ``x`` ``(B, d)``, ``target``
    ``(B, K)`` are in its dtype and device, so no copy or verification is timed.
    The tolerance is out of reach and the stall tests are off, so no sample
    stops early; the default ``"logit"`` residual. Returns how many batched
    Jacobians (VJPs) were computed: a rejected step costs a forward pass only.
    """
    opts = LMOptions(max_iter=n_iter, tol=1e-30, patience=n_iter + 1, min_progress=0.0,
                     restarts=0, history=False)

    def fn(v: torch.Tensor) -> torch.Tensor:
        return net(v.reshape(v.shape[0], *input_shape))

    return int(lm_solve(fn, x, ProbabilityResidual("logit", target), opts)["n_vjp"])


def per_iteration(model, rows, spec: dict, repeats: int, device: str) -> dict:
    """LM's cost per iteration on the full batch against forward + (K-1)-row VJP."""
    n_iter = spec["fixed_iterations"]
    tgt = rows.repeat_interleave(spec["n_per_class"], dim=0)
    dtype = spec["dtype"] or next(model.parameters()).dtype
    net = inversion_copy(model, dtype=dtype, device=device)[0]
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(len(tgt), 784, generator=gen, dtype=torch.float64).to(device, dtype)
    t_dev = tgt.to(device, dtype)
    ref = forward_and_vjp(net, x0, rows=tgt.shape[1] - 1, input_shape=INPUT_SHAPE)
    lm_fixed_iterations(net, x0, t_dev, 1)
    t_n, t_0, jacs = [], [], []
    t_ref = {"both": [], "forward": [], "vjp": []}
    for _ in range(repeats):
        sec, vjp_n = timed(lambda: lm_fixed_iterations(net, x0, t_dev, n_iter), device)
        t_n.append(sec)
        sec, vjp_0 = timed(lambda: lm_fixed_iterations(net, x0, t_dev, 0), device)
        t_0.append(sec)
        jacs.append(vjp_n - vjp_0)
        for k, f in ref.items():
            t_ref[k].append(per_call(f, device, min_seconds=0.05, max_calls=200))
    per_it = [(a - b) / n_iter for a, b in zip(t_n, t_0)]
    # the model work those iterations did: one forward pass each, a VJP when accepted
    work = [n_iter * f + j * v for f, v, j in zip(t_ref["forward"], t_ref["vjp"], jacs)]
    out = {"batch": len(tgt), "iterations": n_iter, "vjp_rows": tgt.shape[1] - 1,
           "lm_seconds_n": summary(t_n), "lm_seconds_0": summary(t_0),
           "jacobians": jacs, "jacobians_per_iteration": summary([j / n_iter for j in jacs]),
           "lm_seconds_per_iteration": summary(per_it),
           "forward_plus_vjp_seconds": summary(t_ref["both"]),
           "forward_seconds": summary(t_ref["forward"]), "vjp_seconds": summary(t_ref["vjp"]),
           "ratio": ratio_summary(per_it, t_ref["both"]),
           "overhead": ratio_summary([a - b for a, b in zip(t_n, t_0)], work)}
    log(f"  LM iteration = {out['ratio']['median']:.2f}x (forward + VJP); LM time = "
        f"{out['overhead']['median']:.2f}x the model work it did, batch {len(tgt)}")
    return out
