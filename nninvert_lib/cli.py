"""The ``nninvert`` command line.

Examples::

    nninvert data                              # which MNIST source would be used
    nninvert train all --profile quick         # train (or load) the five models
    nninvert train fcnn6 --profile paper --device cuda --force
    nninvert models --profile quick            # cached models and their accuracy
    nninvert invert fcnn6 --method back --classes 0 3 --n 20 --out inv.pt --png inv.png
    nninvert invert vit_tiny --method generalized --n-verified 20   # 20 verified per class
    nninvert invert fcnn6 --target 3:0.45 8:0.45 --n 20   # as likely a 3 as an 8
    nninvert verify inv.pt                     # check saved inputs on their model again
    nninvert figure3 --profile quick --png fig3.png --csv fig3.csv   # Figure 3 as data
    nninvert frontier vit_tiny --warm-start 200 --json peaks.json    # highest p per class
    nninvert assignments make                  # student versions into _build/assignments/student
    nninvert assignments grade a1_softmax_selu.ipynb --out grade.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from collections.abc import Iterator

from . import __version__
from .assignments import add_subcommands as add_assignment_subcommands
from .data import load_mnist
from .errors import InsufficientMemoryError
from .models import DISPLAY_NAMES, MODEL_NAMES, PAPER_ACCURACY
from .profiles import PROFILES


def _accuracy_row(card: dict) -> str:
    name = card["name"]
    return (f"{DISPLAY_NAMES.get(name, name):<12} {card['profile']:<6} "
            f"{100 * card['val_accuracy']:6.2f}%  (paper {PAPER_ACCURACY[name]:.1f}%)  "
            f"n_val={card['n_val']:<6} data={card['data']['train']['source']:<15} "
            f"init={'pretrained' if card['arch'].get('pretrained') else 'random'}  "
            f"{card['train_seconds']:.0f}s")


def _add_threads(p: argparse.ArgumentParser) -> None:
    """The ``--threads`` option of the commands that compute (applied by :func:`main`)."""
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (default 0: torch's choice, one per core); 1 when "
                        "other work shares the CPU, which slows several threads down more "
                        "than one")


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """In the block, print each warning as it is raised, as one ``warning: <message>``
    line on stderr, not with Python's file, line and source line (the filters stay
    Python's: a warning repeated at one place is shown once)."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"warning: {message}", file=sys.stderr if file is None else file)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _cmd_train(args: argparse.Namespace) -> int:
    from .zoo import load_model

    names = list(MODEL_NAMES) if "all" in args.names else args.names
    unknown = [n for n in names if n not in MODEL_NAMES]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {list(MODEL_NAMES)} or 'all'")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but no CUDA GPU is available")
    if args.jobs > 1 and len(names) > 1:
        return _train_in_parallel(names, args)
    unfit = []
    for name in names:
        try:
            _, card = load_model(name, profile=args.profile, device=args.device,
                                 force=args.force, progress=not args.no_progress,
                                 data_root=args.data_root)
        except InsufficientMemoryError as exc:   # the others may still fit: go on
            print(f"{name}: {exc}", file=sys.stderr, flush=True)
            unfit.append(name)
            continue
        print(_accuracy_row(card), flush=True)
    if unfit:
        print(f"not trained (memory): {', '.join(unfit)}", file=sys.stderr)
        return 1
    return 0


#: longest first, so that parallel jobs finish together (FCNN-6's 20 epochs take longest)
_TRAIN_ORDER = ("fcnn6", "dinov3_base", "vit_tiny", "fcnn1", "fcnn2")


def _train_in_parallel(names: list[str], args: argparse.Namespace) -> int:
    """Train each model in its own process, ``args.jobs`` at a time, sharing the CPU cores."""
    import os
    import subprocess
    import time

    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    queue = sorted(names, key=lambda n: _TRAIN_ORDER.index(n) if n in _TRAIN_ORDER else 99)
    running: dict[str, subprocess.Popen] = {}
    failed = []
    print(f"training {len(queue)} model(s), {args.jobs} at a time, {threads} thread(s) each",
          flush=True)
    while queue or running:
        while queue and len(running) < args.jobs:
            name = queue.pop(0)
            cmd = [sys.executable, "-m", "nninvert_lib.cli", "train", name, "--profile",
                   args.profile, "--device", args.device, "--threads", str(threads),
                   "--no-progress"] + (["--force"] if args.force else []) + (
                   ["--data-root", args.data_root] if args.data_root else [])
            running[name] = subprocess.Popen(cmd)
        time.sleep(0.5)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                if proc.returncode != 0:
                    failed.append(name)
    if failed:
        print(f"training failed for {failed}", file=sys.stderr)
        return 1
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .zoo import cached_cards

    cards = cached_cards(args.profile)
    if args.json:
        print(json.dumps(cards, indent=2))
    elif not cards:
        print("no trained models cached yet; run `nninvert train all --profile quick`")
    else:
        for card in cards:
            print(_accuracy_row(card), " ", card["path"])
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    train, val = (load_mnist(s, root=args.data_root, download=not args.no_download)
                  for s in ("train", "val"))
    for data in (train, val):
        print(f"{data.split:<5} {len(data):>6} images  source={data.source}  from {data.location}")
    return 0


def _parent_made(path: str) -> str:
    """``path`` after creating its parent folders (an output file of a command)."""
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return path


def _check_model_name(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is one of ``MODEL_NAMES``."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose from {list(MODEL_NAMES)}")


def _check_image_path(path: str) -> None:
    """Raise ``ValueError``, before any work, unless ``path`` ends in an image format
    Matplotlib can write (``.png``, ``.pdf``, ``.svg``, ...)."""
    from pathlib import Path

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    formats = FigureCanvasAgg(Figure()).get_supported_filetypes()
    suffix = Path(path).suffix[1:].lower()
    if suffix not in formats:
        raise ValueError(f"cannot save an image as {path!r}: name a file ending in .png, or "
                         f"another format Matplotlib writes ({', '.join(sorted(formats))})")


METHODS = ("back", "back-paper", "forward", "generalized")


def _check_atol(atol: float) -> None:
    """Raise ``ValueError`` unless ``atol`` (``--atol``) lies in ``(0, 1)``."""
    if not (0 < atol < 1):
        raise ValueError(f"--atol is the tolerance on each probability and must lie in "
                         f"(0, 1), got {atol}")


def _class_counts(classes, ok) -> list[str]:
    """``class <c>: <verified>/<n> verified`` for each class in ``classes`` ``(n,)`` (the
    class each input was asked for, in order of first appearance), ``ok`` ``(n,)`` bool."""
    return [f"class {c}: {int(ok[classes == c].sum())}/{int((classes == c).sum())} verified"
            for c in dict.fromkeys(classes.tolist())]


def _parse_target(items: list[str], num_classes: int = 10) -> dict[int, float]:
    """``--target``'s items as ``{class: probability}``: ``CLASS:P`` pairs
    (``["3:0.45", "8:0.45"]``), or all ``num_classes`` probabilities in one item,
    separated by commas. Raises ``ValueError`` naming a malformed item; what the
    numbers must satisfy is :func:`~nninvert_lib.result.prescribed_distribution`'s."""
    usage = (f"--target takes CLASS:P items (e.g. --target 3:0.45 8:0.45) or all "
             f"{num_classes} probabilities separated by commas")
    if len(items) == 1 and "," in items[0]:
        parts = items[0].split(",")
        if len(parts) != num_classes:
            raise ValueError(f"{usage}; got {len(parts)} numbers in {items[0]!r}")
        try:
            return {c: float(v) for c, v in enumerate(parts)}
        except ValueError:
            raise ValueError(f"{usage}; {items[0]!r} holds a value that is not a number") \
                from None
    probs: dict[int, float] = {}
    for item in items:
        cls, sep, value = item.partition(":")
        try:
            c, p = int(cls), float(value)
        except ValueError:
            c = p = None
        if not sep or c is None:
            raise ValueError(f"{usage}; got {item!r}")
        if c in probs:
            raise ValueError(f"--target names class {c} twice")
        probs[c] = p
    return probs


def _target_label(target) -> str:
    """A prescribed distribution ``(K,)`` in one line: the classes above the rest,
    then what each other class gets."""
    rest = float(target.min())
    named = [f"{c}:{float(p):g}" for c, p in enumerate(target) if float(p) > rest]
    if not named:
        return f"{float(target[0]):g} on every class"
    return " ".join(named) + f" ({rest:g} on the others)"


def _cmd_invert(args: argparse.Namespace) -> int:
    import torch

    from .backward import back_pass_inv
    from .collect import collect_verified
    from .forward import forward_pass_inv
    from .generalized import generalized_inv
    from .result import prescribed_distribution, target_distribution
    from .zoo import load_model, weights_fingerprint

    _check_model_name(args.name)
    if args.target is not None and (args.classes is not None or args.p is not None):
        raise ValueError("--target prescribes the whole distribution: give it without "
                         "--classes and --p")
    if args.method == "generalized" and args.name.startswith("fcnn"):
        raise ValueError("the generalized method inverts a ViT's head and backbone; for an "
                         "FCNN use --method back or forward")
    if args.warm_start and (args.name.startswith("fcnn") or args.method.startswith("back")):
        raise ValueError("--warm-start aligns a ViT's class token before LM: it needs a ViT "
                         "and --method forward or generalized")
    if args.warm_start < 0:
        raise ValueError(f"--warm-start must be >= 0, got {args.warm_start}")
    if args.broyden and args.method.startswith("back"):
        raise ValueError("--broyden updates LM's Jacobian between chord steps: it needs "
                         "--method forward or generalized")
    if args.jacobian_dtype and args.method.startswith("back"):
        raise ValueError("--jacobian-dtype sets the precision of LM's Jacobians: it needs "
                         "--method forward or generalized")
    _check_atol(args.atol)
    if args.max_iter is not None:
        if args.method == "back-paper":
            raise ValueError("--max-iter sets the LM iterations; the paper's BackPassInv "
                             "(back-paper) runs no LM")
        if args.max_iter < 1:
            raise ValueError(f"--max-iter must be >= 1, got {args.max_iter}")
    if args.png:
        _check_image_path(args.png)
    # refuses bad classes and P first
    if args.target is not None:
        target = prescribed_distribution(_parse_target(args.target)).unsqueeze(0)
    else:
        args.classes = list(range(10)) if args.classes is None else args.classes
        target = target_distribution(args.classes, p=0.9 if args.p is None else args.p)
    model, card = load_model(args.name, profile=args.profile, progress=not args.no_progress,
                             data_root=args.data_root)
    if args.method == "forward":
        method, options = forward_pass_inv, {"progress": not args.no_progress,
                                             "warm_start": args.warm_start}
    elif args.method == "generalized":
        method, options = generalized_inv, {"std": args.std, "max_cond": args.max_cond,
                                            "progress": not args.no_progress,
                                            "warm_start": args.warm_start}
    else:
        method, options = back_pass_inv, {
            "std": args.std, "max_cond": args.max_cond, "progress": not args.no_progress,
            "strategy": "paper" if args.method == "back-paper" else "anchored"}
    options["atol"] = args.atol
    if args.broyden:
        options["broyden"] = True
    if args.jacobian_dtype:
        options["jacobian_dtype"] = getattr(torch, args.jacobian_dtype)
    if args.max_iter is not None:
        options["lm_max_iter" if method is back_pass_inv else "max_iter"] = args.max_iter
    if args.n_verified:
        result = collect_verified(method, model, target, args.n_verified, seed=args.seed,
                                  max_rounds=args.max_rounds, **options)
        print(f"{result.info['rounds']} round(s), attempts per class "
              f"{result.info['attempts_per_row']}")
    else:
        result = method(model, target, n_samples=args.n, seed=args.seed, **options)
    if args.target is not None:
        classes = None
        ok = result.converged
        print(f"target {_target_label(target[0])}: {int(ok.sum())}/{len(ok)} verified "
              f"(atol {args.atol:g})")
    else:
        # the class each target row was asked for (not its argmax: with P < 1/10 the
        # requested class is the least likely one)
        classes = torch.as_tensor(args.classes).repeat_interleave(
            len(result.converged) // len(target))
        for line in _class_counts(classes, result.converged):
            print(f"{line} (atol {args.atol:g})")
    print(f"{DISPLAY_NAMES[args.name]} ({args.profile}), {args.method}: "
          f"{100 * result.success_rate:.1f}% verified")
    for line in result.failure_summary():
        print(line)
    if args.out:
        _parent_made(args.out)
        torch.save({"inputs": result.inputs, "probs": result.probs, "target": result.target,
                    "converged": result.converged, "classes": classes, "model": args.name,
                    "profile": args.profile, "method": args.method, "atol": args.atol,
                    "weights": weights_fingerprint(model),
                    "reasons": [str(r) for r in result.info.get("reasons") or []]},
                   args.out)
        print(f"saved {len(result.inputs)} inputs to {args.out}")
    if args.png:
        from .plotting import image_grid

        labels = [""] * len(result.converged) if classes is None else classes.tolist()
        fig = image_grid(result.inputs[:100], vmin=None, vmax=None,
                         titles=[f"{c}{'' if ok else ' ✗'}"
                                 for c, ok in zip(labels[:100], result.converged[:100])])
        fig.savefig(_parent_made(args.png), dpi=100)
        print(f"saved a grid of {min(100, len(result.inputs))} images to {args.png}")
    return 0


#: what ``nninvert invert --out`` saves and ``nninvert verify`` needs
SAVED_KEYS = ("inputs", "target", "model", "profile")


def _cmd_verify(args: argparse.Namespace) -> int:
    import torch

    from .result import DEFAULT_ATOL, verify
    from .zoo import load_model, weights_fingerprint

    try:
        saved = torch.load(args.file, weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"no file {args.file!r}") from None
    except Exception:                 # not a torch file, or one holding other objects
        raise ValueError(f"{args.file!r} is not a file written by `nninvert invert --out` "
                         f"(torch.load cannot read it)") from None
    missing = [k for k in SAVED_KEYS if not isinstance(saved, dict) or k not in saved]
    if missing:
        raise ValueError(f"{args.file!r} is not a file written by `nninvert invert --out`: "
                         f"it lacks {', '.join(missing)}")
    name, profile = saved["model"], args.profile or saved["profile"]
    _check_model_name(name)
    atol = args.atol if args.atol is not None else float(saved.get("atol", DEFAULT_ATOL))
    _check_atol(atol)
    try:
        model, _ = load_model(name, profile=profile, train=False, progress=False,
                              data_root=args.data_root)
    except FileNotFoundError as exc:
        raise ValueError(f"{exc}; the inputs can only be checked on the model they were "
                         f"made for") from None
    fingerprint = weights_fingerprint(model)
    if saved.get("weights") not in (None, fingerprint):
        warnings.warn(f"the cached {DISPLAY_NAMES[name]} ({profile}) has other weights than "
                      f"the model these inputs were made for (fingerprint {fingerprint}, the "
                      f"file says {saved['weights']}): it was trained again, elsewhere or on "
                      f"other data, so its verdict says little about the inputs")
    probs, ok = verify(model, saved["inputs"], saved["target"], atol=atol)
    error = (probs - torch.as_tensor(saved["target"]).to(probs)).abs().amax(dim=1)
    classes = saved.get("classes")
    if classes is not None:
        print("\n".join(_class_counts(classes, ok)))
    print(f"{DISPLAY_NAMES[name]} ({profile}), {len(ok)} inputs from {args.file}: "
          f"{int(ok.sum())}/{len(ok)} verified (atol {atol:g}; largest error "
          f"{error.max().item():.2e})")
    flags = saved.get("converged")
    if flags is not None and len(flags) == len(ok) and atol == float(saved.get("atol", atol)):
        differ = int((flags.bool() != ok).sum())
        print(f"the file's own flags: {int(flags.sum())} verified" +
              (f"; {differ} disagree with this check" if differ else ", the same"))
    return 0 if bool(ok.all()) else 1


def _cmd_frontier(args: argparse.Namespace) -> int:
    import math

    from .frontier import peak_frontier
    from .zoo import load_model

    _check_model_name(args.name)
    if args.warm_start and args.name.startswith("fcnn"):
        raise ValueError("--warm-start aligns a ViT's class token: it needs a ViT")
    model, _ = load_model(args.name, profile=args.profile, progress=not args.no_progress,
                          data_root=args.data_root)
    fr = peak_frontier(model, classes=args.classes, p_start=args.p_start, step=args.step,
                       min_step=args.min_step, p_max=args.p_max, n_samples=args.n,
                       seed=args.seed, warm_start=args.warm_start,
                       start_tries=args.start_tries, progress=not args.no_progress)
    show = lambda v, spec=".3f": "-" if math.isnan(v) else format(v, spec)  # noqa: E731
    rows = fr.rows()
    print(f"{DISPLAY_NAMES[args.name]} ({args.profile}), {fr.info['seconds']:.0f} s")
    print("class  highest verified p  stalled at  closest miss there  verified inputs")
    for row in rows:
        print(f"{row['class']:>5}  {show(row['highest']):>18}  {show(row['stalled_at']):>10}  "
              f"{show(row['stall_error'], '.2e'):>18}  {row['verified']:>15}")
    if any(not math.isnan(row["stall_error"]) for row in rows):
        print(f"closest miss: at the P where a class stalled, the smallest max_k |p_k - "
              f"target_k| LM reached (verified needs at most {fr.info['atol']:g})")
    if args.json:
        with open(_parent_made(args.json), "w") as f:
            json.dump({"model": args.name, "profile": args.profile, "rows": rows,
                       "history": fr.history, "info": fr.info}, f, indent=1)
        print(f"saved the table to {args.json}")
    return 0


def _cmd_figure3(args: argparse.Namespace) -> int:
    import pandas as pd

    from .comparison import figure3, figure3_settings, plot_figure3

    if args.png:
        _check_image_path(args.png)
    fig3 = figure3(args.profile, figure3_settings(args.profile, seed=args.seed),
                   cache=not args.no_cache, progress=not args.no_progress)
    print(f"{len(fig3.table)} images ({'from the cache' if fig3.meta['from_cache'] else 'computed'}"
          f"; data: {fig3.meta['data_source']})")
    for name, why in fig3.meta.get("skipped", {}).items():
        print(f"{name} left out: {why}")
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.max_colwidth", 120):
        print(fig3.summary(verified_only=True).round(3).to_string(index=False))
        print()
        for _, c in fig3.claims().iterrows():
            print(f"- {c['claim']}: {c['verdict']}\n    {c['measured']}\n    ({c['note']})")
    if args.csv:
        fig3.table.to_csv(_parent_made(args.csv), index=False)
        print(f"saved the table ({len(fig3.table)} rows) to {args.csv}")
    if args.png:
        plot_figure3(fig3).savefig(_parent_made(args.png), dpi=120, bbox_inches="tight")
        print(f"saved the grid to {args.png}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nninvert", description="The methods of 'Inverting Neural Networks' on its "
        "MNIST models (FCNN-1/2/6, ViT-tiny, DINOv3-Base): train them, generate inputs that "
        "give prescribed outputs, and measure the paper's Figure 3.")
    parser.add_argument("--version", action="version", version=f"nninvert {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the named models (or load them from the cache)",
                       description="Train the named models under a profile and cache them; "
                       "a cached model with the same configuration and data is loaded instead.")
    p.add_argument("names", nargs="+", metavar="NAME",
                   help=f"model names ({', '.join(MODEL_NAMES)}) or 'all'")
    p.add_argument("--profile", choices=PROFILES, default="quick",
                   help="training recipe: paper (Table I), quick (CPU, default), smoke (seconds)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--force", action="store_true", help="retrain even if cached")
    p.add_argument("--jobs", type=int, default=1,
                   help="train this many models at once, each in its own process (default 1)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per training process (default: torch's choice, or "
                        "the CPU count divided by --jobs); 1 when other work shares the CPU")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--data-root", default=None, help="folder holding MNIST/raw/")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("models", help="list cached models and their accuracy",
                       description="List the trained models in the cache with their model cards.")
    p.add_argument("--profile", choices=PROFILES, default=None, help="only this profile")
    p.add_argument("--json", action="store_true", help="print the full model cards as JSON")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("invert", help="generate inputs that give a prescribed output",
                       description="Invert a trained model: images whose softmax puts probability "
                       "P on each requested class and (1-P)/9 on the others, or gives any "
                       "prescribed distribution (--target).")
    p.add_argument("name", metavar="NAME", help=f"model name ({', '.join(MODEL_NAMES)})")
    p.add_argument("--method", choices=METHODS, default="back",
                   help="back: BackPassInv (FCNNs; default), back-paper: the paper's literal "
                   "BackPassInv, forward: ForwardPassInv (any model), generalized: the "
                   "generalized method (ViTs)")
    p.add_argument("--classes", type=int, nargs="+", default=None,
                   help="target classes (default 0..9)")
    p.add_argument("--n", type=int, default=10, help="samples per class (default 10)")
    p.add_argument("--n-verified", type=int, default=None, metavar="N",
                   help="instead of --n: call the method again for the classes still short "
                   "until each has N distinct verified inputs (collect_verified)")
    p.add_argument("--max-rounds", type=int, default=4,
                   help="calls at most with --n-verified (default 4)")
    p.add_argument("--p", type=float, default=None, help="target probability (default 0.9)")
    p.add_argument("--target", nargs="+", default=None, metavar="CLASS:P",
                   help="instead of --classes and --p, any prescribed output: CLASS:P items, "
                   "the rest spread evenly over the other classes (--target 3:0.45 8:0.45: "
                   "as likely a 3 as an 8), or all 10 probabilities separated by commas; "
                   "--n samples of it")
    p.add_argument("--std", type=float, default=0.1,
                   help="null-space noise: random null-space components of norm STD·‖x_p‖ "
                   "(default 0.1; 0 adds none)")
    p.add_argument("--max-cond", type=float, default=100.0,
                   help="SVD threshold: keep the singular values σ ≥ σ_max / MAX_COND "
                   "(default 100)")
    p.add_argument("--warm-start", type=int, default=0, metavar="STEPS",
                   help="ViT, forward or generalized: Adam steps aligning the class token "
                        "before LM (default 0; 200 helps a weakly trained ViT at high p)")
    p.add_argument("--broyden", action="store_true",
                   help="forward or generalized: correct LM's reused Jacobian between chord "
                        "steps by Broyden's update (fewer Jacobians; 8-27%% less time per verified "
                        "image on the ViTs in the benchmarks)")
    p.add_argument("--jacobian-dtype", choices=("bfloat16", "float16"), default=None,
                   help="forward or generalized: compute LM's Jacobians under autocast to "
                        "this dtype (residuals and steps stay float32); faster where the "
                        "hardware multiplies in it (a CPU with AVX-512 BF16, a GPU)")
    p.add_argument("--atol", type=float, default=1e-3,
                   help="an input is verified when every probability is within ATOL of the "
                   "target (default 1e-3)")
    p.add_argument("--max-iter", type=int, default=None, metavar="N",
                   help="LM iterations per sample: forward and generalized, and back's LM "
                   "polish (default 30, the paper's)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--profile", choices=PROFILES, default="quick",
                   help="which trained model (default quick)")
    p.add_argument("--out", default=None, help="save inputs, probabilities, flags, each "
                   "sample's reason and the model's weight fingerprint (.pt; nninvert verify "
                   "checks it again)")
    p.add_argument("--png", default=None, help="save a grid of the first 100 images (.png)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--data-root", default=None, help="folder holding MNIST/raw/")
    _add_threads(p)
    p.set_defaults(func=_cmd_invert)

    p = sub.add_parser("verify", help="check inputs saved by `invert --out` on their model",
                       description="Run the model an `nninvert invert --out` file names "
                       "(cached, in float64) on the inputs it holds, and check every "
                       "probability against the target. Exits with status 0 when every input "
                       "verifies, 1 when some do not.")
    p.add_argument("file", metavar="FILE", help="a .pt file written by nninvert invert --out")
    p.add_argument("--atol", type=float, default=None,
                   help="tolerance on each probability (default: the file's, else 1e-3)")
    p.add_argument("--profile", choices=PROFILES, default=None,
                   help="check on this profile's model (default: the file's)")
    p.add_argument("--data-root", default=None, help="folder holding MNIST/raw/")
    _add_threads(p)
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("frontier", help="per class, the highest target probability P with "
                       "verified inputs (continuation in P)",
                       description="Continuation in P (peak_frontier): ForwardPassInv at "
                       "--p-start, then LM from the verified inputs towards higher P. Every P "
                       "reported comes with inputs that verify it; where a class stalls, LM "
                       "could not take the next step.")
    p.add_argument("name", metavar="NAME", help=f"model name ({', '.join(MODEL_NAMES)})")
    p.add_argument("--classes", type=int, nargs="+", default=None,
                   help="classes to measure (default all)")
    p.add_argument("--n", type=int, default=4, help="random starts per class (default 4)")
    p.add_argument("--p-start", type=float, default=0.8, help="first P (default 0.8)")
    p.add_argument("--step", type=float, default=0.02, help="first increase of P (default 0.02)")
    p.add_argument("--min-step", type=float, default=0.005,
                   help="stop a class when its step falls below this (default 0.005)")
    p.add_argument("--p-max", type=float, default=0.99, help="largest P tried (default 0.99)")
    p.add_argument("--start-tries", type=int, default=5,
                   help="random-start solves per class at most: --p-start, then one step "
                        "below, one above, ... (default 5)")
    p.add_argument("--warm-start", type=int, default=0, metavar="STEPS",
                   help="ViT: Adam steps aligning the class token before the first solve")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--profile", choices=PROFILES, default="quick",
                   help="which trained model (default quick)")
    p.add_argument("--json", default=None, help="save the table and the history (.json)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--data-root", default=None, help="folder holding MNIST/raw/")
    _add_threads(p)
    p.set_defaults(func=_cmd_frontier)

    p = sub.add_parser("figure3", help="the paper's Figure 3 as data: every method on every "
                       "model, measured; the three claims judged",
                       description="Run every inversion and prior method on every model for "
                       "classes 0-9 (cached), print the measured table and the verdicts on the "
                       "paper's Figure 3 claims, and optionally save the table and the grid.")
    p.add_argument("--profile", choices=PROFILES, default="quick", help="which trained models "
                   "and sizes (default quick)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--csv", default=None, help="save the tidy table (.csv)")
    p.add_argument("--png", default=None, help="save the grid (.png)")
    p.add_argument("--no-cache", action="store_true", help="recompute even if cached")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_threads(p)
    p.set_defaults(func=_cmd_figure3)

    p = sub.add_parser("data", help="show which MNIST source is used",
                       description="Load MNIST through the fallback chain and say where it came from.")
    p.add_argument("--data-root", default=None, help="folder holding MNIST/raw/")
    p.add_argument("--no-download", action="store_true", help="do not try to download")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("assignments", help="make the student versions of the assignments, or "
                       "grade submitted notebooks",
                       description="Coursework (notebooks/assignments): write student versions "
                       "with the solutions removed, or execute and score submissions (JSON).")
    add_assignment_subcommands(p)
    return parser


def _set_threads(threads: int) -> None:
    """Give torch ``threads`` intra-op threads (0: leave its choice)."""
    if threads < 0:
        raise ValueError(f"--threads must be 0 (torch's choice) or a positive count, got {threads}")
    if threads:
        import torch

        torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status. Invalid settings exit with status 2
    and ``nninvert <command>: error: <message>``, instead of a traceback: those the
    command checks itself (an unknown model, ``--png`` not naming an image format,
    ``--warm-start`` on an FCNN), before any model is loaded, and those that only the
    library can judge (its ``InversionError`` or other ``ValueError``: a class out of
    range, ``--p 1.2``, ``--max-cond 0.5``). A model this machine's memory cannot
    train exits with status 1, and so does ``verify`` when some input does not verify."""
    args = build_parser().parse_args(argv)
    try:
        _set_threads(getattr(args, "threads", 0))
        with _warnings_as_lines():
            return args.func(args)
    except ValueError as exc:           # InversionError included
        print(f"nninvert {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except InsufficientMemoryError as exc:
        print(f"nninvert {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
