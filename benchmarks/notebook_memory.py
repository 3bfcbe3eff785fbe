"""Peak memory and time of every chapter notebook under one profile (Binder gives ~2 GB).

    python benchmarks/notebook_memory.py                 # quick profile, every notebook
    python benchmarks/notebook_memory.py --profile smoke notebooks/05_null_space_sampling.ipynb
    python benchmarks/notebook_memory.py --training      # training each model instead (~15 min)

Each notebook runs under papermill in a fresh Python process of its own; when it
ends, ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` of that process is the peak resident
memory of its largest child, the notebook's kernel. The models (and Figure 3's
results) come from the cache, as in a book build after ``make train``; a notebook
that has to train or compute them first is measured doing so.

Writes ``benchmarks/results/notebook-memory-<profile>.json`` and ``.md``.

``--training`` measures what a first visit without the model cache costs instead: each
model is trained in a fresh process with an empty cache, and the table gives its peak
resident memory beside the lower bound that :func:`nninvert_lib.training.memory_needed`
computes before training (where the bound exceeds the machine's memory,
:func:`nninvert_lib.load_model` refuses to start; here the limit is lifted so that
every model is measured). Writes ``training-memory-<profile>.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BINDER_LIMIT_MB = 2000.0

CHILD = """
import resource, sys, papermill
papermill.execute_notebook(sys.argv[1], sys.argv[2], parameters={"profile": sys.argv[3]},
                           cwd=sys.argv[4], kernel_name="python3", progress_bar=False)
print("PEAK_KB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def measure(path: Path, profile: str, timeout: float) -> dict:
    """Run one notebook in a child process; its kernel's peak RSS (MB) and wall seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        proc, seconds = _run_child(CHILD, [str(path), str(Path(tmp) / path.name), profile,
                                           str(path.parent)], {"NNINVERT_PROFILE": profile},
                                   timeout)
    peak = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("PEAK_KB")]
    row = {"notebook": str(path.relative_to(ROOT)), "seconds": seconds,
           "peak_rss_mb": round(int(peak[0]) / 1024, 1) if peak else None,
           "ok": proc.returncode == 0}
    if proc.returncode != 0:
        row["error"] = _last_error(proc) or "failed"
    return row


def _run_child(code: str, args: list[str], env: dict[str, str], timeout: float
               ) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``python -c code *args`` with ``env`` added to ours; the finished process and
    its wall seconds (rounded to 0.1)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=timeout)
    return proc, round(time.perf_counter() - t0, 1)


def _last_error(proc: subprocess.CompletedProcess) -> str | None:
    """The last line a child wrote to stderr (its exception), or None."""
    return proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else None


TRAIN_CHILD = """
import json, resource, sys
from nninvert_lib import zoo
bound = []
need = zoo.memory_needed
zoo.memory_needed = lambda model, config: bound.append(need(model, config)) or bound[-1]
zoo.memory_limit = lambda: None
model, card = zoo.load_model(sys.argv[1], sys.argv[2], progress=False)
print("RESULT", json.dumps({"bound_mb": bound[0] / 2**20, "val_accuracy": card["val_accuracy"],
      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure_training(name: str, profile: str, timeout: float) -> dict:
    """Train ``name`` in a child process with an empty cache: its peak RSS (MB, ``ru_maxrss``),
    the bound of ``memory_needed`` (MB) and the wall seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        proc, seconds = _run_child(TRAIN_CHILD, [name, profile], {"NNINVERT_CACHE": tmp}, timeout)
    found = [line.split(" ", 1)[1] for line in proc.stdout.splitlines()
             if line.startswith("RESULT ")]
    row = {"model": name, "seconds": seconds, "ok": proc.returncode == 0 and bool(found)}
    if found:
        row.update({k: round(v, 3 if k == "val_accuracy" else 1)
                    for k, v in json.loads(found[0]).items()})
    elif _last_error(proc):
        row["error"] = _last_error(proc)
    return row


def training_table(profile: str, timeout: float, out: Path) -> int:
    """``--training``: every model of the zoo, trained from scratch; writes the table."""
    from nninvert_lib.models import MODEL_NAMES

    rows = []
    for name in MODEL_NAMES:
        rows.append(measure_training(name, profile, timeout))
        print(rows[-1], flush=True)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"training-memory-{profile}"
    stem.with_suffix(".json").write_text(json.dumps(
        {"profile": profile, "python": platform.python_version(), "cpus": os.cpu_count(),
         "binder_limit_mb": BINDER_LIMIT_MB, "models": rows}, indent=1))
    lines = [f"# Training memory, `{profile}` profile, empty cache", "",
             f"{os.cpu_count()} CPU(s); `python benchmarks/notebook_memory.py --training "
             f"--profile {profile}`. Bound = `memory_needed` before training (what "
             "`load_model` compares with the machine's memory); peak = the process's "
             "largest resident set size.", "",
             "| model | seconds | bound (MB) | peak RSS (MB) | within 2 GB |",
             "| --- | ---: | ---: | ---: | --- |"]
    for r in rows:
        peak = r.get("peak_mb")
        within = "—" if peak is None else "yes" if peak <= BINDER_LIMIT_MB else "**no**"
        lines.append(f"| {r['model']} | {r['seconds']:.0f} | {r.get('bound_mb', '—')} | "
                     f"{peak if peak is not None else '—'} | {within}"
                     + ("" if r["ok"] else " (failed)") + " |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {stem.with_suffix('.md')}")
    return 0 if all(r["ok"] for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", type=Path,
                    help="notebooks to run (default: every chapter and assignment)")
    ap.add_argument("--profile", default="quick", choices=("paper", "quick", "smoke"))
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per notebook")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--training", action="store_true",
                    help="train every model from an empty cache instead (training-memory-*)")
    args = ap.parse_args(argv)
    if args.training:
        return training_table(args.profile, args.timeout, args.out)
    paths = [p.resolve() for p in args.notebooks] or sorted(
        p for p in (ROOT / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    rows = []
    for i, path in enumerate(paths, 1):
        row = measure(path, args.profile, args.timeout)
        rows.append(row)
        flag = "" if row["ok"] else f"  FAILED: {row.get('error')}"
        print(f"[{i}/{len(paths)}] {row['notebook']}: {row['seconds']:.0f} s, "
              f"peak {row['peak_rss_mb']} MB{flag}", flush=True)
    from importlib.metadata import version

    torch_version = version("torch")
    result = {"profile": args.profile, "python": platform.python_version(), "torch": torch_version,
              "machine": platform.machine(), "cpus": os.cpu_count(),
              "binder_limit_mb": BINDER_LIMIT_MB, "notebooks": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"notebook-memory-{args.profile}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = [f"# Notebook peak memory and time, `{args.profile}` profile",
             "", f"{os.cpu_count()} CPU(s), Python {platform.python_version()}, torch "
             f"{torch_version} (a CUDA build loads more at import than the CPU wheel); "
             f"`python benchmarks/notebook_memory.py --profile {args.profile}`. "
             "Peak = the kernel's largest resident set size.", "",
             "| notebook | seconds | peak RSS (MB) | within 2 GB |", "| --- | ---: | ---: | --- |"]
    for r in rows:
        within = ("—" if r["peak_rss_mb"] is None else
                  "yes" if r["peak_rss_mb"] <= BINDER_LIMIT_MB else "**no**")
        lines.append(f"| {r['notebook']} | {r['seconds']:.0f} | {r['peak_rss_mb']} | {within}"
                     + ("" if r["ok"] else " (failed)") + " |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {stem.with_suffix('.md')}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
