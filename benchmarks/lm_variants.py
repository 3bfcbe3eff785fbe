"""How many Jacobians ForwardPassInv needs, and what they cost, with and without
Broyden's update between chord steps.

Each LM iteration computes a Jacobian (a forward pass and ``K - 1`` VJPs) and,
with ``chord`` (default 2), takes up to that many more steps with it, a forward
pass each (Fan's modified LM). ``broyden=True`` corrects that reused Jacobian
after every accepted step by Broyden's rank-one update, so the chord steps see
how the residual actually moved. On a ViT a Jacobian costs about twenty forward
passes, so every Jacobian saved is most of an iteration.

For each model (``quick`` profile) and each setting, this runs
``forward_pass_inv`` on ``target_distribution(c, 0.9)`` and on the model's own
softmax on the first validation digit of each class (*model-produced*),
c = 0..9, ``--n`` samples each (seed = repeat), and records the verified
success, the time per verified image, the mean LM iterations and the mean
Jacobians computed per image (``info["jacobians"]``). SciPy's ``trf``
(``method="scipy"``) runs on the first ``--scipy-subset`` targets of every
repeat, side by side, for the ratio of the two per verified image, as
``make bench`` forms it. The settings alternate within each repeat, so that a
slow moment of the machine is shared.

Each repeat also times one forward pass plus one ``(K - 1)``-row batched VJP
(one Jacobian) on the whole batch, as LM computes it. SciPy's time per verified
image over that Jacobian's time per image is the *ceiling*: the largest ratio
LM could reach on this machine if it computed a single Jacobian per image and
nothing else.

``--jacobian-dtype bfloat16`` adds two settings whose Jacobians are computed
under autocast to that dtype (``jacobian_dtype``; the residuals and steps stay
float32), with and without Broyden's update, and times one such Jacobian per
image too, for the ceiling it would set.

``--method generalized`` times :func:`nninvert_lib.generalized_inv` with the
same settings instead (its residual has ``embedding_rank`` = 32 rows, so its
Jacobians cost more than ForwardPassInv's; no SciPy, no ceiling).

    python benchmarks/lm_variants.py                       # ViT-tiny and FCNN-6, ~4 min
    python benchmarks/lm_variants.py --models vit_tiny --n 20
    python benchmarks/lm_variants.py --models dinov3_base --n 1 --repeats 1 --kinds model-produced
    python benchmarks/lm_variants.py --models vit_tiny --method generalized
    python benchmarks/lm_variants.py --models vit_tiny --jacobian-dtype bfloat16

Writes ``benchmarks/results/<date>-<host>-lm-variants.{json,md}`` (or ``--out``);
with other ``--models`` than the default, their names end the file name
(``...-lm-variants-dinov3_base.md``), and ``-generalized`` after them.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import nninvert_lib as nni
from forward_section import model_targets
from nninvert_lib.forward import inversion_copy
from nninvert_lib.modelcopy import with_fast_activations
from report import DISPLAY, num, rng, run_header, table, write_experiment
from roofline import forward_and_vjp, per_call, under_autocast
from timing import ratio_summary, summary

INPUT_SHAPE = (1, 28, 28)

HERE = Path(__file__).resolve().parent

#: the two kinds of target
KINDS: tuple[str, ...] = ("p=0.9", "model-produced")
#: name -> options of forward_pass_inv; the first is the library's default
SETTINGS: dict[str, dict] = {
    "default (chord 2)": {},
    "chord 2 + Broyden": {"broyden": True},
    "chord 5": {"chord": 5},
    "chord 5 + Broyden": {"chord": 5, "broyden": True},
}


def low_precision_settings(dtype: str) -> dict[str, dict]:
    """The settings ``--jacobian-dtype`` adds: chord 2 with Jacobians under autocast to
    ``dtype`` (a name in ``torch``), with and without Broyden's update."""
    return {f"chord 2, {dtype} Jacobians": {"jacobian_dtype": dtype},
            f"chord 2 + Broyden, {dtype} Jacobians": {"broyden": True, "jacobian_dtype": dtype}}


def timed_inversion(model, targets, n: int, seed: int, generalized: bool = False,
                    **options) -> dict:
    """One timed ``forward_pass_inv`` (or ``generalized_inv``) call: seconds, images,
    verified, seconds per verified image, mean iterations, and the mean Jacobians
    per image (LM) or the total Jacobian evaluations ``njev`` (SciPy)."""
    t = time.perf_counter()
    invert = nni.generalized_inv if generalized else nni.forward_pass_inv
    if isinstance(options.get("jacobian_dtype"), str):      # names in the JSON, dtypes here
        options = {**options, "jacobian_dtype": getattr(torch, options["jacobian_dtype"])}
    res = invert(model, targets, n_samples=n, seed=seed, **options)
    seconds = time.perf_counter() - t
    verified = int(res.converged.sum())
    out = {"seconds": seconds, "images": len(res.converged), "verified": verified,
           "seconds_per_verified": seconds / verified if verified else float("inf"),
           "iterations": float(res.info["iterations"].float().mean())}
    if "jacobians" in res.info:
        out["jacobians"] = float(res.info["jacobians"].float().mean())
    if "njev" in res.info:                                  # SciPy's Jacobian evaluations
        out["njev"] = sum(res.info["njev"])
    return out


def measure(name: str, n: int, repeats: int, scipy_subset: int,
            kinds: tuple[str, ...] = KINDS, generalized: bool = False,
            settings: dict[str, dict] | None = None, jacobian_dtype: str | None = None
            ) -> dict:
    """Every setting (default :data:`SETTINGS`) on every kind of target, ``repeats``
    times; SciPy and the ceiling only for ForwardPassInv (``generalized=False``),
    and the ceiling with Jacobians under autocast to ``jacobian_dtype`` too when
    given."""
    settings = SETTINGS if settings is None else settings
    model, card = nni.load_model(name, "quick", train=True, progress=False)
    classes = list(range(10))
    made = {"p=0.9": lambda: nni.target_distribution(classes, 0.9),
            "model-produced": lambda: model_targets(model, classes, "cpu")}
    kinds = {k: made[k]() for k in kinds}
    nni.forward_pass_inv(model, next(iter(kinds.values()))[:1], seed=0, max_iter=2)  # warm up
    out = {"val_accuracy": card.get("val_accuracy"), "batch": 10 * n, "kinds": {}}
    per_image: list[float] = []
    per_image_low: list[float] = []
    if not generalized:     # one Jacobian of LM's own working copy, for the ceiling
        net = inversion_copy(model)[0]
        with_fast_activations(net)
        x = torch.rand(10 * n, 784, generator=torch.Generator().manual_seed(0))
        jacobian = forward_and_vjp(net, x, rows=9, input_shape=INPUT_SHAPE)["both"]
        if jacobian_dtype is not None:
            low_jacobian = under_autocast(jacobian, getattr(torch, jacobian_dtype))
    for kind, targets in kinds.items():
        runs: dict[str, list[dict]] = {s: [] for s in settings}
        if not generalized:
            runs["scipy"] = []
        for rep in range(repeats):
            for setting, options in settings.items():
                runs[setting].append(timed_inversion(model, targets, n, rep, generalized,
                                                     **options))
            if generalized:
                continue
            runs["scipy"].append(timed_inversion(model, targets[:scipy_subset], 1, rep,
                                                 method="scipy"))
            per_image.append(per_call(jacobian, min_seconds=0.2, max_calls=50) / (10 * n))
            if jacobian_dtype is not None:
                per_image_low.append(per_call(low_jacobian, min_seconds=0.2, max_calls=50)
                                     / (10 * n))
            print(name, kind, rep, {s: round(r[-1]["seconds_per_verified"], 4)
                                    for s, r in runs.items()}, flush=True)
        rec = {}
        for setting, rs in runs.items():
            rec[setting] = {
                "verified": [r["verified"] for r in rs], "images": rs[0]["images"],
                "seconds_per_verified": summary([r["seconds_per_verified"] for r in rs]),
                "iterations": summary([r["iterations"] for r in rs]),
                **({"jacobians": summary([r["jacobians"] for r in rs])}
                   if "jacobians" in rs[0] else {})}
            if setting != "scipy" and not generalized:
                rec[setting]["scipy_over_lm"] = ratio_summary(
                    [r["seconds_per_verified"] for r in runs["scipy"]],
                    [r["seconds_per_verified"] for r in rs])
        if not generalized:
            scipy = [r["seconds_per_verified"] for r in runs["scipy"]]
            rec["scipy"]["ceiling"] = ratio_summary(scipy, per_image[-repeats:])
            if per_image_low:
                rec["scipy"]["ceiling_low_precision"] = ratio_summary(
                    scipy, per_image_low[-repeats:])
        out["kinds"][kind] = rec
    if not generalized:
        out["jacobian_seconds_per_image"] = summary(per_image)
        if per_image_low:
            out["low_precision_jacobian_seconds_per_image"] = summary(per_image_low)
    return out


def markdown(out: dict) -> str:
    names = ", ".join(DISPLAY[m] for m in out["models"])
    generalized = out.get("method") == "generalized"
    method = "The generalized method" if generalized else "ForwardPassInv"
    low = out.get("jacobian_dtype")
    what = "Broyden's update between chord steps" + (f" and {low} Jacobians" if low else "")
    lines = [f"# {method} with {what}: {names} "
             f"({out['date']}, {out['host']})", "",
             f"torch {out['torch']}, NumPy {out['numpy']}, SciPy {out['scipy']}, "
             f"{out['threads']} thread(s); `quick` models, targets c = 0..9 × {out['n']} "
             f"samples, {out['repeats']} repeats (seed = repeat), median [min–max]"
             + ("." if generalized else f"; SciPy `trf` on the first {out['scipy_subset']} "
                "targets of each repeat."), ""]
    rows = []
    for name, rec in out["models"].items():
        for kind, settings in rec["kinds"].items():
            for setting, r in settings.items():
                done = sum(r["verified"])
                rows.append([DISPLAY[name], kind, setting,
                             f"{done} / {r['images'] * len(r['verified'])}",
                             rng(r["seconds_per_verified"], unit=" s"),
                             rng(r["iterations"]), rng(r.get("jacobians")),
                             rng(r.get("scipy_over_lm"), unit="×")])
    header = ["model", "target", "setting", "verified", "s per verified image",
              "iterations", "Jacobians per image", "SciPy ÷ LM per verified image"]
    if generalized:
        header, rows = header[:-1], [r[:-1] for r in rows]
    lines += table(header, rows)
    if generalized:
        lines.append(f"Total runtime {num(out['seconds'] / 60)} min.")
        return "\n".join(lines) + "\n"
    rows = [[DISPLAY[name], f"{rec['batch']:,}", rng(rec["jacobian_seconds_per_image"],
                                                      scale=1e3, unit=" ms"), kind,
             rng(r["scipy"]["seconds_per_verified"], unit=" s"),
             rng(r["scipy"]["ceiling"], unit="×")]
            + ([rng(rec["low_precision_jacobian_seconds_per_image"], scale=1e3, unit=" ms"),
                rng(r["scipy"]["ceiling_low_precision"], unit="×")] if low else [])
            for name, rec in out["models"].items() for kind, r in rec["kinds"].items()]
    lines += ["One Jacobian (a forward pass and a 9-row batched VJP on the whole batch), per "
              "image, and the ceiling it sets: SciPy's time per verified image over it, the "
              "largest ratio LM could reach here with one Jacobian per image and nothing else.",
              ""]
    lines += table(["model", "batch", "one Jacobian per image", "target",
                    "SciPy s per verified image", "ceiling"]
                   + ([f"one {low} Jacobian per image", "its ceiling"] if low else []), rows)
    lines.append(f"Total runtime {num(out['seconds'] / 60)} min.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["vit_tiny", "fcnn6"],
                    choices=["fcnn1", "fcnn2", "fcnn6", "vit_tiny", "dinov3_base"])
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    ap.add_argument("--method", default="forward", choices=["forward", "generalized"],
                    help="generalized: time generalized_inv (no SciPy, no ceiling)")
    ap.add_argument("--n", type=int, default=2, help="samples per class")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scipy-subset", type=int, default=2)
    ap.add_argument("--jacobian-dtype", choices=["bfloat16", "float16"], default=None,
                    help="also run the settings with Jacobians under autocast to this dtype")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    settings = dict(SETTINGS)
    if args.jacobian_dtype:
        settings.update(low_precision_settings(args.jacobian_dtype))
    t = time.perf_counter()
    out = {**run_header(), "n": args.n, "repeats": args.repeats,
           "scipy_subset": args.scipy_subset, "settings": settings, "method": args.method,
           "jacobian_dtype": args.jacobian_dtype,
           "models": {m: measure(m, args.n, args.repeats, args.scipy_subset,
                                 tuple(args.kinds), args.method == "generalized", settings,
                                 args.jacobian_dtype)
                      for m in args.models}}
    out["seconds"] = time.perf_counter() - t
    default = ap.get_default("models")
    name = "lm-variants" + ("" if args.models == default else "-" + "-".join(args.models))
    name += "-generalized" if args.method == "generalized" else ""
    name += f"-{args.jacobian_dtype}" if args.jacobian_dtype else ""
    write_experiment(args.out, name, out, markdown(out))
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)            # the times in the results are on one thread
    main()
