"""How close ForwardPassInv's Jacobians run to this machine's matrix-product peak, and
the ratio to SciPy that LM could reach if all its matrix products ran at that peak.

On a ViT nearly all of LM's time is its Jacobians (a forward pass and ``K - 1``
batched VJPs each; :mod:`lm_variants`), and nearly all of a Jacobian's time is
matrix products. This counts the products' floating-point operations of one
Jacobian per image, ``F`` (:class:`MatmulFlops`, with the counts of
``torch.utils.flop_counter``; the same in bfloat16), times the products of the shapes the model
multiplies (and a 2048-cube) to find the machine's peak rate ``P`` in float32
and in bfloat16 (one thread, the best rate of those shapes; on a CPU without
bfloat16 instructions, where a bfloat16 2048-cube takes minutes, with their
rows cut to about a second's work: :func:`peak_rate`), and times one
Jacobian per image as LM computes it (batch ``10 · n``) beside them:
*efficiency* is ``F / P`` over that time (for SciPy: over its time per Jacobian
evaluated, everything else it does included). ``Jacobians at 20×`` is how few
Jacobians per image the 20× target would allow with each at the peak.

Then it counts every matrix product of one LM call (seed 0), per verified image:
its Jacobians, its other forward passes, its steps and the float64 verification,
``G``. LM's time per verified image is at least ``G / P``, with ``P`` the peak
of its Jacobians' dtype (optimistic for its float32 and float64 products), and
SciPy's time per verified image (``method="scipy"``, one image at a time) over
that bound is the *ratio at peak*: the most that LM setting could gain over
SciPy on this machine, with all its products at the peak and nothing else
costing time. The settings: LM's default (float32 Jacobians), ``broyden=True,
jacobian_dtype=torch.bfloat16`` and the same with ``chord=5``, on the same
targets in the same run, ``--repeats`` times (median [min–max]).

    python benchmarks/jacobian_peak.py                      # ViT-tiny, p = 0.9, ~2 min
    python benchmarks/jacobian_peak.py --models dinov3_base --n 1 --kind model-produced

Writes ``benchmarks/results/<date>-<host>-jacobian-peak[-<models>].{json,md}``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

import nninvert_lib as nni
from forward_section import model_targets
from nninvert_lib.forward import inversion_copy
from nninvert_lib.modelcopy import with_fast_activations
from report import DISPLAY, num, rng, run_header, table, write_experiment
from lm_variants import timed_inversion
from roofline import forward_and_vjp, per_call, under_autocast
from timing import ratio_summary, summary

HERE = Path(__file__).resolve().parent
INPUT_SHAPE = (1, 28, 28)
#: LM's settings compared: name -> (forward_pass_inv options, dtype of its Jacobians)
SETTINGS: dict[str, tuple[dict, torch.dtype]] = {
    "default": ({}, torch.float32),
    "Broyden, bfloat16 Jacobians": ({"broyden": True, "jacobian_dtype": torch.bfloat16},
                                    torch.bfloat16),
    "chord 5, Broyden, bfloat16 Jacobians": (
        {"chord": 5, "broyden": True, "jacobian_dtype": torch.bfloat16}, torch.bfloat16),
}
TARGET_RATIO = 20.0


class MatmulFlops(TorchDispatchMode):
    """Counts the FLOPs of the operations PyTorch's flop counter knows (matrix
    products, convolutions, attention) in ``self.flops``. ``FlopCounterMode`` itself
    also tracks modules with backward hooks, which ``torch.autograd.grad`` (LM's
    Jacobians on the FCNNs) refuses."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.flops += count(*args, **kwargs, out_val=out)
        return out


def jacobian_flops(jacobian, images: int) -> float:
    """Matrix-product FLOPs of one call of ``jacobian`` per image (``images`` in it)."""
    with MatmulFlops() as counter:
        jacobian()
    return counter.flops / images


#: about the longest one product of :func:`peak_rate` may take, in seconds
PRODUCT_SECONDS = 1.0


def peak_rate(shapes: list[tuple[int, int, int]], dtype: torch.dtype,
              product_seconds: float | None = None) -> float:
    """FLOP/s of the fastest of ``(m, k) @ (k, n)`` products in ``dtype`` (one thread).

    Where ``dtype`` is slow on this machine (bfloat16 on a CPU without bfloat16
    instructions: a 2048-cube takes minutes), a product's rows ``m`` are cut so
    that it takes about ``product_seconds`` (default :data:`PRODUCT_SECONDS`),
    judged from the rate of a 256-cube; the rate of a product hardly depends
    on its rows once it has a few dozen."""
    if product_seconds is None:
        product_seconds = PRODUCT_SECONDS
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(256, 256, generator=gen).to(dtype)
    probe = 2 * 256 ** 3 / per_call(lambda: a @ a, min_seconds=0.05)
    best = 0.0
    for m, k, n in shapes:
        m = max(1, min(m, int(product_seconds * probe / (2 * k * n))))
        a = torch.randn(m, k, generator=gen).to(dtype)
        b = torch.randn(k, n, generator=gen).to(dtype)
        best = max(best, 2 * m * k * n / per_call(lambda: a @ b, min_seconds=0.3))
    return best


def model_shapes(net: torch.nn.Module, x: torch.Tensor, rows: int
                 ) -> list[tuple[int, int, int]]:
    """The shapes of the VJPs' largest products at ``x`` ``(B, 784)``: the rows that
    reach the largest ``nn.Linear`` of ``net`` (B · tokens) times ``rows``, by its
    weight both ways, and a 2048-cube."""
    big = max((m for m in net.modules() if isinstance(m, torch.nn.Linear)),
              key=lambda m: m.weight.numel())
    seen = []
    hook = big.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape))
    with torch.no_grad():
        net(x.reshape(len(x), *INPUT_SHAPE))
    hook.remove()
    m = rows * seen[0][:-1].numel()
    out_f, in_f = big.weight.shape
    return [(m, out_f, in_f), (m, in_f, out_f), (2048, 2048, 2048)]


def lm_flops(model, targets, n: int, options: dict) -> float:
    """Matrix-product FLOPs of one ``forward_pass_inv`` call (seed 0), everything it
    computes included (Jacobians, forward passes, steps, the float64 verification),
    per verified image."""
    with MatmulFlops() as counter:
        res = nni.forward_pass_inv(model, targets, n_samples=n, seed=0, **options)
    verified = int(res.converged.sum())
    return counter.flops / verified if verified else float("inf")


def measure(name: str, n: int, repeats: int, scipy_subset: int, kind: str) -> dict:
    model, card = nni.load_model(name, "quick", train=True, progress=False)
    classes = list(range(10))
    targets = (nni.target_distribution(classes, 0.9) if kind == "p=0.9"
               else model_targets(model, classes, "cpu"))
    nni.forward_pass_inv(model, targets[:1], seed=0, max_iter=2)          # warm up
    net = inversion_copy(model)[0]
    with_fast_activations(net)
    batch = 10 * n
    x = torch.rand(batch, 784, generator=torch.Generator().manual_seed(0))
    rows = targets.shape[1] - 1
    jacobian = forward_and_vjp(net, x, rows=rows, input_shape=INPUT_SHAPE)["both"]
    low_jacobian = under_autocast(jacobian, torch.bfloat16)
    flops = jacobian_flops(jacobian, batch)
    shapes = model_shapes(net, x, rows)
    rec: dict = {"val_accuracy": card.get("val_accuracy"), "batch": batch, "kind": kind,
                 "flops_per_jacobian": flops, "peak": {}, "jacobian_seconds": {},
                 "lm": {s: [] for s in SETTINGS}, "scipy": []}
    peaks = {torch.float32: [], torch.bfloat16: []}
    jac_s = {torch.float32: [], torch.bfloat16: []}
    for rep in range(repeats):
        for dtype, fn in ((torch.float32, jacobian), (torch.bfloat16, low_jacobian)):
            peaks[dtype].append(peak_rate(shapes, dtype))
            jac_s[dtype].append(per_call(fn, min_seconds=0.3, max_calls=50) / batch)
        for setting, (options, _) in SETTINGS.items():
            rec["lm"][setting].append(timed_inversion(model, targets, n, rep, **options))
        sp = timed_inversion(model, targets[:scipy_subset], 1, rep, method="scipy")
        rec["scipy"].append({**sp, "jacobians": sp["njev"] / sp["images"],
                             "seconds_per_jacobian": sp["seconds"] / sp["njev"]})
        print(name, rep, {s: round(r[-1]["seconds_per_verified"], 4)
                          for s, r in rec["lm"].items()},
              "scipy", round(rec["scipy"][-1]["seconds_per_verified"], 3), flush=True)
    scipy = [r["seconds_per_verified"] for r in rec["scipy"]]
    for dtype, key in ((torch.float32, "float32"), (torch.bfloat16, "bfloat16")):
        rec["peak"][key] = summary(peaks[dtype])
        rec["jacobian_seconds"][key] = summary(jac_s[dtype])
        rec.setdefault("efficiency", {})[key] = summary(
            [flops / p / s for p, s in zip(peaks[dtype], jac_s[dtype])])
        rec.setdefault("jacobians_at_target", {})[key] = summary(
            [sp / TARGET_RATIO / (flops / p) for sp, p in zip(scipy, peaks[dtype])])
    rec["scipy_efficiency"] = summary([flops / p / r["seconds_per_jacobian"] for p, r in
                                       zip(peaks[torch.float32], rec["scipy"])])
    rec["summary"] = {}
    rec["lm_flops_per_verified"] = {}
    for setting, (options, dtype) in SETTINGS.items():
        runs = rec["lm"][setting]
        total = rec["lm_flops_per_verified"][setting] = lm_flops(model, targets, n, options)
        at_peak = [total / p for p in peaks[dtype]]
        rec["summary"][setting] = {
            "verified": [r["verified"] for r in runs], "images": runs[0]["images"],
            "jacobians": summary([r["jacobians"] for r in runs]),
            "seconds_per_verified": summary([r["seconds_per_verified"] for r in runs]),
            "scipy_over_lm": ratio_summary(scipy, [r["seconds_per_verified"] for r in runs]),
            "scipy_over_peak": ratio_summary(scipy, at_peak)}
    rec["scipy_summary"] = {
        "verified": [r["verified"] for r in rec["scipy"]], "images": scipy_subset,
        "seconds_per_verified": summary(scipy),
        "jacobians": summary([r["jacobians"] for r in rec["scipy"]]),
        "seconds_per_jacobian": summary([r["seconds_per_jacobian"] for r in rec["scipy"]])}
    return rec


def markdown(out: dict) -> str:
    names = ", ".join(DISPLAY[m] for m in out["models"])
    lines = [f"# ForwardPassInv's Jacobians against this machine's matrix-product peak: "
             f"{names} ({out['date']}, {out['host']})", "",
             f"torch {out['torch']}, {out['threads']} thread(s); `quick` models, "
             f"{out['repeats']} repeats (seed = repeat), median [min–max]; LM on 10 classes × "
             f"{out['n']} targets, SciPy `trf` on the first {out['scipy_subset']} of them.", ""]
    rows = []
    for name, rec in out["models"].items():
        for key in ("float32", "bfloat16"):
            rows.append([DISPLAY[name], key, f"{num(rec['flops_per_jacobian'] / 1e9)} GFLOP",
                         rng(rec["peak"][key], scale=1e-9, unit=" GFLOP/s"),
                         rng(rec["jacobian_seconds"][key], scale=1e3, unit=" ms"),
                         rng(rec["efficiency"][key], scale=100, unit="%"),
                         rng(rec["jacobians_at_target"][key])])
    lines += table(["model", "Jacobian dtype", "products per Jacobian per image",
                    "peak (best of the model's shapes and a 2048-cube)",
                    "one Jacobian per image (batch)", "efficiency",
                    f"Jacobians per image allowed at {TARGET_RATIO:g}× (at the peak)"], rows)
    rows = []
    for name, rec in out["models"].items():
        s = rec["scipy_summary"]
        rows.append([DISPLAY[name], rec["kind"], "SciPy `trf` (one image at a time)",
                     f"{sum(s['verified'])} / {s['images'] * len(s['verified'])}",
                     rng(s["jacobians"]), "—", rng(s["seconds_per_verified"], unit=" s"), "—",
                     f"{rng(rec['scipy_efficiency'], scale=100, unit='%')} (F / P over its "
                     "time per Jacobian, all its work included)"])
        for setting, r in rec["summary"].items():
            rows.append([DISPLAY[name], rec["kind"], f"LM, {setting}",
                         f"{sum(r['verified'])} / {r['images'] * len(r['verified'])}",
                         rng(r["jacobians"]),
                         f"{num(rec['lm_flops_per_verified'][setting] / 1e9)} GFLOP",
                         rng(r["seconds_per_verified"], unit=" s"),
                         rng(r["scipy_over_lm"], unit="×"), rng(r["scipy_over_peak"], unit="×")])
    lines += table(["model", "target", "solver", "verified", "Jacobians per image",
                    "matrix products per verified image (seed 0)", "s per verified image",
                    "SciPy ÷ LM per verified image",
                    "ratio at peak (all of LM's matrix products at the peak, nothing else)"],
                   rows)
    lines.append(f"Total runtime {num(out['seconds'] / 60)} min.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["vit_tiny"],
                    choices=["vit_tiny", "dinov3_base"],
                    help="the ViTs (on the FCNNs LM differentiates in the first layer's row "
                         "space, whose Jacobians cost less than the one counted here)")
    ap.add_argument("--kind", default="p=0.9", choices=["p=0.9", "model-produced"])
    ap.add_argument("--n", type=int, default=2, help="samples per class")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scipy-subset", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    out = {**run_header(), "n": args.n, "repeats": args.repeats,
           "scipy_subset": args.scipy_subset,
           "models": {m: measure(m, args.n, args.repeats, args.scipy_subset, args.kind)
                      for m in args.models}}
    out["seconds"] = time.perf_counter() - t
    name = "jacobian-peak" + ("" if args.models == ap.get_default("models")
                              else "-" + "-".join(args.models))
    write_experiment(args.out, name, out, markdown(out))
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)            # the times in the results are on one thread
    main()
