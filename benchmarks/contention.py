"""How much one thread or two cost when another process keeps a core busy.

PyTorch's CPU threads wait for each other by spinning (OpenMP's active wait
policy). Alone on the machine, two threads are faster than one for the larger
products; when another process keeps one of the two cores busy, a second
thread has no core of its own, and the spinning slows the work down instead.
This measures, per workload, the time with 1 and 2 torch threads, alone and
beside a busy process (a one-thread PyTorch loop of 400×400
matrix products and ``tanh``, as a second inversion or training would be),
and the ratio of 2 threads to 1. The command line's ``--threads 1`` is for the
second case.

Workloads: an FCNN-6 (``FCNN_WIDTHS["fcnn6"]``, SELU, random initialisation)
SGD training step on a batch of 32; ``back_pass_inv`` on that network (default
strategy; an untrained network, slower to invert than a trained one) for 200
targets ``target_distribution(c, 0.9)``; a ViT-tiny (the ``quick`` profile's
architecture, random initialisation) AdamW step on a batch of 64.

    python benchmarks/contention.py               # 1 to 3 minutes on 2 cores

Writes ``benchmarks/results/<date>-<host>-contention.{json,md}`` (or into ``--out``).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

import nninvert_lib as nni
from nninvert_lib.models import build_model
from nninvert_lib.models.fcnn import FCNN_WIDTHS, make_fcnn
from nninvert_lib.profiles import train_config
from report import run_header, table, write_experiment
from timing import summary, timed

HERE = Path(__file__).resolve().parent
BUSY = ("import torch\ntorch.set_num_threads(1)\na = torch.randn(400, 400)\n"
        "while True:\n    a = torch.tanh(a @ a)\n")


def fcnn_step() -> Callable[[], object]:
    """One SGD step of FCNN-6 on a random batch of 32."""
    torch.manual_seed(0)
    net = make_fcnn(FCNN_WIDTHS["fcnn6"], "selu")
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    x, y = torch.randn(32, 784), torch.randint(0, 10, (32,))

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return step


def back_pass(n: int) -> Callable[[], object]:
    """``back_pass_inv`` on FCNN-6 (random initialisation) for ``n`` targets."""
    torch.manual_seed(0)
    net = make_fcnn(FCNN_WIDTHS["fcnn6"], "selu").eval()
    target = nni.target_distribution(torch.arange(n) % 10, 0.9)
    return lambda: nni.back_pass_inv(net, target, seed=0)


def vit_step() -> Callable[[], object]:
    """One AdamW step of the ``quick`` ViT-tiny on a random batch of 64."""
    torch.manual_seed(0)
    model, _ = build_model("vit_tiny", train_config("vit_tiny", "quick").replace(pretrained=False))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    return summary([timed(fn)[0] for _ in range(repeats)])["median"]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=20,
                    help="timed calls per setting (FCNN-6 steps: 10× as many; back_pass_inv "
                         "and ViT steps: a quarter)")
    ap.add_argument("--targets", type=int, default=200, help="back_pass_inv's targets")
    ap.add_argument("--workloads", nargs="+", default=["fcnn6_step", "back_pass_inv", "vit_step"])
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    makers = {"fcnn6_step": fcnn_step, "back_pass_inv": lambda: back_pass(args.targets),
              "vit_step": vit_step}
    repeats = {"fcnn6_step": 10 * args.repeats, "back_pass_inv": max(2, args.repeats // 4),
               "vit_step": max(2, args.repeats // 4)}
    before = torch.get_num_threads()
    out = {**run_header(), "repeats": args.repeats, "targets": args.targets, "rows": []}
    for busy in (False, True):
        proc = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
        try:
            if proc:
                time.sleep(2.0)             # let it start multiplying
            for name in args.workloads:
                fn = makers[name]()
                row = {"workload": name, "busy": busy}
                for th in (1, 2):
                    torch.set_num_threads(th)
                    row[f"threads_{th}"] = seconds(fn, repeats[name])
                row["two_over_one"] = row["threads_2"] / row["threads_1"]
                out["rows"].append(row)
                print(f"{name:14s} {'beside a busy process' if busy else 'alone':21s} "
                      f"1 thread {row['threads_1'] * 1e3:9.1f} ms   2 threads "
                      f"{row['threads_2'] * 1e3:9.1f} ms   ×{row['two_over_one']:.2f}", flush=True)
        finally:
            torch.set_num_threads(before)
            if proc:
                proc.kill()
                proc.wait()
    rows = [[r["workload"], "beside a busy process" if r["busy"] else "alone",
             f"{r['threads_1'] * 1e3:.1f} ms", f"{r['threads_2'] * 1e3:.1f} ms",
             f"{r['two_over_one']:.2f}×"] for r in out["rows"]]
    md = "\n".join([f"Torch threads alone and beside a process keeping one core busy "
                    f"({out['date']}, {out['host']}, torch {out['torch']}; median of the "
                    f"timed calls; `python benchmarks/contention.py`).", "",
                    *table(["workload", "setting", "1 thread", "2 threads",
                            "2 threads ÷ 1 thread"], rows)]) + "\n"
    write_experiment(args.out, "contention", out, md)
    return out


if __name__ == "__main__":
    main()
