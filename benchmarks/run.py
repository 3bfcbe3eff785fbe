"""Run the nninvert benchmarks: ``make bench`` (or ``python benchmarks/run.py``).

Each section runs in its own Python process (so that its peak memory is its
own), with one BLAS/OpenMP thread unless stated. The parent gathers the
sections' JSON, adds the machine's description and writes

* ``<out>/<YYYY-MM-DD>-<hostname>.json``: machine, settings, every raw timing
  and every ratio;
* ``<out>/<same>.md`` and ``<out>/latest.md`` (a copy for the book): tables;
* ``<out>/<same>-scaling.png`` and ``<out>/latest-scaling.png``.

``--quick`` runs every section on small sizes in about a minute or two and
writes ``<date>-<host>-quick.*`` (``latest.*`` is left alone).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BINDER_LIMIT_MB = 2000.0

FULL = {
    "repeats": 3,
    "backward_models": ["fcnn1", "fcnn2", "fcnn6"],
    "backward_batches": [1, 100, 10_000],
    "per_sample_count": {"fcnn1": 10, "fcnn2": 5, "fcnn6": 2},
    "forward": {
        # dtype None: the library's default, the model's dtype (both LM and SciPy)
        "fcnn6": {"classes": 10, "n_per_class": 20, "max_iter": 30, "dtype": None,
                  "scipy_subset": 10, "scipy_per_class": 2, "model_targets": False,
                  "fixed_iterations": 10},
        "vit_tiny": {"classes": 10, "n_per_class": 2, "max_iter": 30, "dtype": None,
                     "scipy_subset": 2, "model_targets": True, "fixed_iterations": 3},
        "dinov3_base": {"classes": 1, "n_per_class": 1, "max_iter": 5, "dtype": None,
                        "scipy_subset": 1, "model_targets": True, "fixed_iterations": 2},
    },
    "gradient_steps": 300,
    "prior_train_images": None,        # None: all 60,000
    "scaling_widths": [128, 256, 512],
    "scaling_batches": [10, 100, 1000],
    "scaling_lm_iterations": 5,
}

QUICK = {
    **FULL,
    "backward_batches": [1, 100],
    "per_sample_count": {"fcnn1": 2, "fcnn2": 2, "fcnn6": 1},
    "forward": {
        "fcnn6": {**FULL["forward"]["fcnn6"], "n_per_class": 2, "scipy_subset": 2,
                  "scipy_per_class": 1, "fixed_iterations": 2},
        "vit_tiny": {**FULL["forward"]["vit_tiny"], "classes": 2, "n_per_class": 1,
                     "max_iter": 3, "scipy_subset": 1, "fixed_iterations": 1},
        "dinov3_base": {**FULL["forward"]["dinov3_base"], "max_iter": 1,
                        "model_targets": False, "fixed_iterations": 1},
    },
    "gradient_steps": 20,
    "prior_train_images": 2000,
    "scaling_widths": [128, 256],
    "scaling_batches": [10, 100],
    "scaling_lm_iterations": 2,
}

#: (key, title, runs on CUDA too, thread count)
SECTIONS = [
    ("backward", "BackPassInv, FCNN-1/2/6", True, 1),
    ("threads", "BackPassInv FCNN-6, 1 vs 2 threads", False, 2),
    ("forward_fcnn6", "ForwardPassInv, FCNN-6", True, 1),
    ("forward_fcnn6_2threads", "ForwardPassInv, FCNN-6, 2 threads", False, 2),
    ("forward_vit_tiny", "ForwardPassInv, ViT-tiny", True, 1),
    ("forward_dinov3_base", "ForwardPassInv, DINOv3-Base", True, 1),
    ("prior", "Prior methods, FCNN-6", False, 1),
    ("scaling", "Scaling with batch size and width", False, 1),
]


def config(quick: bool) -> dict:
    """A deep copy of the settings (dtypes are names, turned into torch dtypes in the child)."""
    return json.loads(json.dumps(QUICK if quick else FULL))


# --------------------------------------------------------------------------- child


def run_section(key: str, device: str, quick: bool, threads: int, out_path: Path) -> None:
    """Run one section in this process and write its JSON (called in the child)."""
    import torch

    from timing import log, peak_rss_mb, prime_allocator

    torch.set_num_threads(threads)
    prime_allocator()
    import nninvert_lib  # noqa: F401  (its import is part of the baseline memory)

    rss_after_import = peak_rss_mb()
    cfg = config(quick)
    for spec in cfg["forward"].values():
        spec["dtype"] = None if spec["dtype"] is None else getattr(torch, spec["dtype"])
    t0 = time.perf_counter()
    if key == "backward":
        from backward_section import run_backward
        result = run_backward(cfg, device)
    elif key == "threads":
        from backward_section import run_threads
        result = run_threads(cfg, device)
    elif key.startswith("forward_"):
        from forward_section import run_forward
        result = run_forward(cfg, key.removeprefix("forward_").removesuffix("_2threads"), device)
    elif key == "prior":
        from prior_section import run_prior
        result = run_prior(cfg, device)
    elif key == "scaling":
        from scaling_section import run_scaling
        result = run_scaling(cfg, device)
    else:
        raise ValueError(f"unknown section {key!r}")
    result.update(seconds=time.perf_counter() - t0, threads=torch.get_num_threads(),
                  peak_rss_mb=peak_rss_mb(), rss_after_import_mb=rss_after_import)
    if device == "cuda":
        result["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 1e6
    log(f"  section {key} ({device}) took {result['seconds']:.1f} s, "
        f"peak RSS {result['peak_rss_mb']:.0f} MB")
    out_path.write_text(json.dumps(result, default=str))


# --------------------------------------------------------------------------- parent


def spawn(key: str, device: str, quick: bool, threads: int, timeout: float) -> dict:
    """Run a section in a fresh process; its JSON, or an ``error`` record."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "section.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--section", key,
               "--device", device, "--threads", str(threads), "--section-out", str(out)]
        if quick:
            cmd.append("--quick")
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=env, timeout=timeout, stdout=subprocess.PIPE,
                                  stderr=None, text=True)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s", "device": device}
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stdout or "")[-2000:]
            return {"error": f"exit status {proc.returncode}", "stdout_tail": tail,
                    "device": device, "seconds": time.perf_counter() - t0}
        return json.loads(out.read_text())


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return "unknown"


def machine_info(threads: int) -> dict:
    import numpy
    import scipy
    import torch

    import nninvert_lib

    cuda = torch.cuda.is_available()
    return {
        "host": socket.gethostname(), "date": dt.date.today().isoformat(),
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "platform": platform.platform(), "python": platform.python_version(),
        "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__, "numpy": numpy.__version__, "scipy": scipy.__version__,
        "nninvert": nninvert_lib.__version__, "git_commit": _git_commit(),
        "torch_threads": threads, "blas_threads": threads,
        "allocator_primed": True,
        "cuda_available": cuda, "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="small sizes, a minute or two: a trial of every code path")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="auto (default): CPU, plus the BackPassInv and ForwardPassInv "
                         "sections on CUDA when a GPU is present; cpu: CPU only; cuda: "
                         "like auto, but fail without a GPU")
    ap.add_argument("--out", type=Path, default=HERE / "results",
                    help="results folder (default: benchmarks/results)")
    ap.add_argument("--sections", nargs="+", metavar="KEY",
                    choices=[k for k, *_ in SECTIONS],
                    help="run only these sections: " + ", ".join(k for k, *_ in SECTIONS))
    ap.add_argument("--threads", type=int, default=1,
                    help="torch and BLAS threads per section (default 1)")
    ap.add_argument("--timeout", type=float, default=900.0,
                    help="seconds allowed to one section (default 900)")
    ap.add_argument("--section", help=argparse.SUPPRESS)
    ap.add_argument("--section-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))

    if args.section:
        run_section(args.section, args.device, args.quick, args.threads, args.section_out)
        return 0

    from report import write_reports
    from timing import log

    import torch

    info = machine_info(args.threads)
    cuda = bool(info["cuda_available"])
    if args.device == "cuda" and not cuda:
        ap.error("--device cuda: torch.cuda.is_available() is False on this machine")
    gpu_note = (None if cuda and args.device != "cpu" else
                "skipped: no CUDA GPU" if not cuda else "skipped: --device cpu")
    cfg = config(args.quick)
    wanted = set(args.sections or [k for k, *_ in SECTIONS])
    t_start = time.perf_counter()
    sections: dict = {}
    plan = [(k, title, "cpu", args.threads if th == 1 else th)
            for k, title, _, th in SECTIONS if k in wanted]
    if gpu_note is None:
        plan += [(k, title, "cuda", args.threads)
                 for k, title, gpu, _ in SECTIONS if gpu and k in wanted]
    log(f"nninvert benchmarks ({'quick' if args.quick else 'full'}), "
        f"{len(plan)} sections, torch {torch.__version__}, {args.threads} thread(s); "
        f"GPU: {info['cuda_device'] or gpu_note}")
    for i, (key, title, device, threads) in enumerate(plan, 1):
        log(f"[{i}/{len(plan)}] {title} ({device}, {threads} thread(s)) ...")
        name = key if device == "cpu" else f"{key}@cuda"
        sections[name] = spawn(key, device, args.quick, threads, args.timeout)
        sections[name].update(title=title)
        if "error" in sections[name]:
            log(f"  FAILED: {sections[name]['error']}")
    info["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    info["total_seconds"] = time.perf_counter() - t_start
    results = {"machine": info, "quick": args.quick, "config": cfg,
               "binder_limit_mb": BINDER_LIMIT_MB, "gpu": gpu_note or info["cuda_device"],
               "sections": sections}
    stem = f"{info['date']}-{info['host']}" + ("-quick" if args.quick else "")
    args.out.mkdir(parents=True, exist_ok=True)
    paths = write_reports(results, args.out, stem, latest=not args.quick)
    log(f"done in {info['total_seconds'] / 60:.1f} min; wrote " +
        ", ".join(str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)
                  for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
