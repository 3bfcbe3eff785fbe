"""The ``nninvert`` command line.

Examples::

    nninvert data                              # which MNIST source would be used
    nninvert train all --profile quick         # train (or load) the five models
    nninvert train fcnn6 --profile paper --device cuda --force
    nninvert models --profile quick            # cached models and their accuracy
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings

from .data import load_mnist
from .models import DISPLAY_NAMES, MODEL_NAMES, PAPER_ACCURACY
from .profiles import PROFILES


def _accuracy_row(card: dict) -> str:
    name = card["name"]
    return (f"{DISPLAY_NAMES.get(name, name):<12} {card['profile']:<6} "
            f"{100 * card['val_accuracy']:6.2f}%  (paper {PAPER_ACCURACY[name]:.1f}%)  "
            f"n_val={card['n_val']:<6} data={card['data']['train']['source']:<15} "
            f"init={'pretrained' if card['arch'].get('pretrained') else 'random'}  "
            f"{card['train_seconds']:.0f}s")


def _cmd_train(args: argparse.Namespace) -> int:
    from .zoo import load_model

    names = list(MODEL_NAMES) if "all" in args.names else args.names
    unknown = [n for n in names if n not in MODEL_NAMES]
    if unknown:
        print(f"unknown model(s) {unknown}; choose from {list(MODEL_NAMES)} or 'all'",
              file=sys.stderr)
        return 2
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("--device cuda was asked for but no CUDA GPU is available", file=sys.stderr)
            return 2
    for name in names:
        _, card = load_model(name, profile=args.profile, device=args.device, force=args.force,
                             progress=not args.no_progress, data_root=args.data_root)
        print(_accuracy_row(card), flush=True)
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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train, val = (load_mnist(s, root=args.data_root, download=not args.no_download)
                      for s in ("train", "val"))
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    for data in (train, val):
        print(f"{data.split:<5} {len(data):>6} images  source={data.source}  from {data.location}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nninvert", description="Train and inspect the models of 'Inverting Neural "
        "Networks' (FCNN-1/2/6, ViT-tiny, DINOv3-Base) on MNIST.")
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
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--data-root", default=None, help="folder holding MNIST/raw/")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("models", help="list cached models and their accuracy",
                       description="List the trained models in the cache with their model cards.")
    p.add_argument("--profile", choices=PROFILES, default=None, help="only this profile")
    p.add_argument("--json", action="store_true", help="print the full model cards as JSON")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("data", help="show which MNIST source is used",
                       description="Load MNIST through the fallback chain and say where it came from.")
    p.add_argument("--data-root", default=None, help="folder holding MNIST/raw/")
    p.add_argument("--no-download", action="store_true", help="do not try to download")
    p.set_defaults(func=_cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
