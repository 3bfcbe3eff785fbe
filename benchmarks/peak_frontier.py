"""Per class, the highest p of target_distribution(c, p) a ViT-tiny reaches (peak_frontier).

Runs :func:`nninvert_lib.peak_frontier` on all ten classes: ForwardPassInv
(with ``--warm-start`` Adam steps of class-token alignment) from
``--n-samples`` random starts at ``--p-start`` (a class without a verified
start tries new ones 0.02 below, then above, ...), then LM from the verified
inputs towards higher ``p`` (step 0.02, halved after each miss down to 0.005).
Beside each class's highest verified ``p`` it lists where the continuation
stalled and how close LM came there, and the largest probability the model
gives that class on any validation digit (the peak alone, with the other nine
probabilities unconstrained).

    python benchmarks/peak_frontier.py                  # quick ViT-tiny, ~2 min on 2 threads
    python benchmarks/peak_frontier.py --steps 3000     # the longer-trained one of vit_budget.py

Writes ``benchmarks/results/<date>-<host>-peak-frontier[-<steps>].{json,md}`` (or ``--out``).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import math
import platform
from pathlib import Path

import torch

import nninvert_lib as nni
from report import write_experiment
from vit_budget import budget_config

HERE = Path(__file__).resolve().parent


def validation_peaks(model: torch.nn.Module, batch: int = 500) -> list[float]:
    """Per class, the largest softmax probability the model gives it on a validation digit."""
    val = nni.load_mnist("val")
    with torch.no_grad():
        probs = torch.cat([torch.softmax(model(val.images[i:i + batch]).double(), dim=1)
                           for i in range(0, len(val), batch)])
    return probs.amax(dim=0).tolist()


def report(out: dict) -> str:
    """The result as a Markdown table."""
    cell = (lambda v: "—" if v is None or (isinstance(v, float) and math.isnan(v))
            else f"{v:.3f}")
    err = lambda v: "—" if math.isnan(v) else f"{v:.1e}"  # noqa: E731
    lines = [f"ViT-tiny ({out['model']}, {out['val_accuracy']:.2%} validation accuracy), "
             f"`peak_frontier(p_start={out['p_start']}, n_samples={out['n_samples']}, "
             f"warm_start={out['warm_start']}, seed=0)`, `atol=1e-3`, {out['threads']} CPU "
             f"threads, {out['seconds']:.0f} s.",
             "",
             "| class | first verified start | highest verified p | continuation stalled at | "
             "its smallest error | verified inputs | largest p on a validation digit |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r, s, v in zip(out["rows"], out["start_p"], out["validation_peak"]):
        lines.append(f"| {r['class']} | {cell(s)} | {cell(r['highest'])} | "
                     f"{cell(r['stalled_at'])} | "
                     f"{err(r['stall_error'])} | {r['verified']} | {v:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=None,
                    help="use vit_budget.py's model trained this many steps (default: quick)")
    ap.add_argument("--n-samples", type=int, default=4)
    ap.add_argument("--p-start", type=float, default=0.8)
    ap.add_argument("--warm-start", type=int, default=200)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    config = None if args.steps is None else budget_config(args.steps)
    model, card = nni.load_model("vit_tiny", "quick", config=config, progress=True)
    fr = nni.peak_frontier(model, p_start=args.p_start, n_samples=args.n_samples,
                           warm_start=args.warm_start, seed=0, progress=True)
    out = {"date": _dt.date.today().isoformat(), "host": platform.node(),
           "torch": torch.__version__, "threads": torch.get_num_threads(),
           "model": "quick" if args.steps is None else f"{card['steps']} steps",
           "val_accuracy": card["val_accuracy"], "p_start": args.p_start,
           "n_samples": args.n_samples, "warm_start": args.warm_start,
           "seconds": fr.info["seconds"], "rows": fr.rows(), "start_p": fr.info["start_p"],
           "history": fr.history, "validation_peak": validation_peaks(model)}
    print(report(out))
    suffix = "" if args.steps is None else f"-{args.steps}"
    write_experiment(args.out, f"peak-frontier{suffix}", out, report(out))
    return out


if __name__ == "__main__":
    main()
