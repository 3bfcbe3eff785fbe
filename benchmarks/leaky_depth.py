"""How deep a random narrowing LeakyReLU network BackPassInv inverts, and why it stops.

LeakyReLU is a bijection and every narrowing linear layer is onto, so every
target has exact preimages at any depth. Numerically they get out of reach:
going back, a negative hidden entry is divided by the slope, and the
pseudoinverse of a narrowing layer amplifies along its small singular
directions, so the input needed grows geometrically with depth. Once the
input's entries are ~1e7 or more times the size of the logits, the float32
input (the model's dtype) no longer reproduces the logits, and from ~1e14 not
even float64 does.

For each slope, width ratio (each layer ``ratio`` times as wide as the one
before it, ending at 10) and depth, this builds the network with PyTorch's
default initialisation (seed = depth), runs the default ``back_pass_inv`` on
``target_distribution(c, 0.9)`` for c = 0..9, ``--n`` samples each (seed 1),
and records the verified success rate and the largest input entry.

    python benchmarks/leaky_depth.py            # about 2 minutes on one CPU thread

Writes ``benchmarks/results/<date>-<host>-leaky-depth.{json,md}`` (or ``--out``).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import platform
import time
from pathlib import Path

import torch

import nninvert_lib as nni
from nninvert_lib.models.fcnn import make_fcnn

HERE = Path(__file__).resolve().parent


def narrowing_widths(depth: int, ratio: float, out: int = 10) -> tuple[int, ...]:
    """``depth + 1`` widths ending at ``out``, each ``ratio`` times the one before it."""
    widths = [out]
    for _ in range(depth):
        widths.insert(0, int(round(widths[0] / ratio)))
    return tuple(widths)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slopes", type=float, nargs="+", default=[0.1, 0.01])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.5, 0.75])
    ap.add_argument("--depths", type=int, nargs="+", default=[2, 4, 6, 8, 10])
    ap.add_argument("--max-width", type=int, default=3000,
                    help="skip networks whose input is wider (SVD time)")
    ap.add_argument("--n", type=int, default=4, help="samples per class")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    target = nni.target_distribution(list(range(10)), 0.9)
    rows = []
    for slope in args.slopes:
        for ratio in args.ratios:
            for depth in args.depths:
                widths = narrowing_widths(depth, ratio)
                if widths[0] > args.max_width:
                    continue
                torch.manual_seed(depth)
                net = make_fcnn(widths, "leaky_relu", negative_slope=slope).eval()
                t = time.perf_counter()
                res = nni.back_pass_inv(net, target, n_samples=args.n, seed=1)
                big = float(res.inputs.double().abs().max())
                rows.append({"slope": slope, "ratio": ratio, "depth": depth,
                             "input_width": widths[0], "success_rate": float(res.success_rate),
                             "max_abs_input": big if math.isfinite(big) else None,
                             "seconds": time.perf_counter() - t})
                print(rows[-1], flush=True)
    out = {"date": _dt.date.today().isoformat(), "host": platform.node(),
           "torch": torch.__version__, "n_per_class": args.n, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{out['date']}-{out['host']}-leaky-depth"
    stem.with_suffix(".json").write_text(json.dumps(out, indent=1))
    lines = ["| slope | width ratio | depth | input width | verified | largest input entry |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        big = "—" if r["max_abs_input"] is None else f"{r['max_abs_input']:.2g}"
        lines.append(f"| {r['slope']} | {r['ratio']} | {r['depth']} | {r['input_width']} | "
                     f"{r['success_rate']:.0%} | {big} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {stem}.json and .md")
    return out


if __name__ == "__main__":
    main()
