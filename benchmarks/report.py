"""Turn the gathered results into JSON, Markdown tables and the scaling plot."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

DISPLAY = {"fcnn1": "FCNN-1", "fcnn2": "FCNN-2", "fcnn6": "FCNN-6", "vit_tiny": "ViT-tiny",
           "dinov3_base": "DINOv3-Base"}
FORWARD_KEYS = ("forward_fcnn6", "forward_fcnn6_2threads", "forward_vit_tiny",
                "forward_dinov3_base")
#: the LM runs ``forward_section`` times beside the default (its keys) and how the
#: 20× target line names each
LM_VARIANTS = (("lm_broyden", "with `broyden=True`"), ("lm_bf16", "and bfloat16 Jacobians"))


def model_label(sec: dict) -> str:
    """The model's display name, with the thread count where it is not 1."""
    name = DISPLAY[sec["model"]]
    return name if sec.get("threads", 1) == 1 else f"{name}, {sec['threads']} threads"


# --------------------------------------------------------------------------- formatting


def num(x: float | None) -> str:
    """A number for a table: thousands separators, about three significant digits."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if math.isinf(x):
        return "∞"
    a = abs(x)
    if a >= 100:
        return f"{x:,.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    if a == 0:
        return "0"
    return f"{x:.3g}"


def rng(s: dict | None, scale: float = 1.0, unit: str = "") -> str:
    """``median [min–max]`` of a summary (all three scaled)."""
    if not s or s.get("median") is None or (isinstance(s["median"], float)
                                            and math.isnan(s["median"])):
        return "—"
    m, lo, hi = (num(s[k] * scale) for k in ("median", "min", "max"))
    if lo == hi == m:
        return f"{m}{unit}"
    return f"{m}{unit} [{lo}–{hi}]"


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


# --------------------------------------------------------------------------- sections


def backward_lines(sec: dict) -> list[str]:
    rows = []
    for name, rec in sec["models"].items():
        for batch, b in rec["batches"].items():
            d, p, base = b["anchored"], b["paper"], b["per_sample"]
            rows.append([
                DISPLAY[name], f"{int(batch):,}",
                f"{rng(d['verified_per_s'])} ({pct(d['success_rate'])})",
                f"{rng(p['verified_per_s'])} ({pct(p['success_rate'])})",
                f"{rng(base['samples_per_s'])} ({pct(base['success_rate'])}, n={base['n']})",
                rng(d["speedup_vs_per_sample"], unit="×"),
                rng(p["speedup_vs_per_sample_attempted"], unit="×"),
                rng(d["times_roofline"], unit="×"), rng(p["times_roofline"], unit="×")])
    lines = table(["model", "batch", "ours: verified/s (success)",
                   "paper strategy: verified/s (success)",
                   "per-sample NumPy: samples/s (its success)",
                   "ours ÷ per-sample", "paper ÷ per-sample (same work)",
                   "ours ÷ roofline (time)", "paper ÷ roofline (time)"], rows)
    plan = ", ".join(f"{DISPLAY[n]} {rng(r['plan_seconds'], 1e3, ' ms')}"
                     for n, r in sec["models"].items())
    lines += [
        "*ours* is `back_pass_inv` with the default `strategy=\"anchored\"`; *paper* is "
        "`strategy=\"paper\"` (the literal algorithm). Batch 1 is one target (class 0); "
        "larger batches are 10 classes × batch/10 samples of "
        "`target_distribution(c, 0.9)`. *ours ÷ per-sample* divides ours' **verified** "
        "samples/s by the baseline's **attempted** samples/s (its own success rate is "
        "beside it); *paper ÷ per-sample* compares attempted samples, the same algorithm "
        "doing the same work. The per-sample baseline (`benchmarks/per_sample.py`) recomputes "
        "every SVD per sample; it is timed on n samples and extrapolated. *÷ roofline* is how "
        "many times longer the call takes than the float64 matrix products of one backward "
        "pass and its verification alone (`torch.matmul`, same batch).",
        "",
        f"One-off plan cost (the SVDs, cached per model and reused by every call above): {plan}.",
        ""]
    return lines


def threads_lines(sec: dict) -> list[str]:
    rows = []
    for s, label in (("anchored", "ours (default)"), ("paper", "paper strategy")):
        r = sec[s]
        rows.append([label, rng(r["threads_1"]["verified_per_s"]),
                     rng(r["threads_2"]["verified_per_s"]),
                     rng(r["two_over_one_seconds"], unit="×")])
    return table(["FCNN-6, batch 100", "1 thread: verified/s", "2 threads: verified/s",
                  "time, 2 threads ÷ 1 thread"], rows)


def scipy_seconds(rec: dict) -> str:
    """SciPy's seconds per image; in a several-thread section, its one-thread
    time (measured side by side) in brackets after it."""
    out = rng(rec["scipy"]["seconds_per_image"], unit=" s")
    one = rec.get("scipy_1_thread")
    if one:
        out += f" (1 thread: {rng(one['seconds_per_image'], unit=' s')}, {pct(one['success_rate'])})"
    return out


def forward_lines(secs: dict, keys: tuple[str, ...]) -> list[str]:
    rows, it_rows = [], []
    for key in keys:
        sec = secs.get(key)
        if not sec or "error" in sec:
            continue
        name = model_label(sec)
        for kind, rec in sec["targets"].items():
            lm, sp = rec["lm"], rec["scipy"]
            variants = []
            for variant, _ in LM_VARIANTS:
                v = rec.get(variant)
                variants += ["—" if not v else f"{pct(v['success_rate'])}, "
                             f"{rng(v['seconds_per_verified_image'], unit=' s')}",
                             rng(rec.get(f"scipy_over_{variant}_per_verified_image"), unit="×")]
            rows.append([
                name, kind, f"{sec['classes']} × {sec['n_per_class']}", sec["dtype"],
                str(sec["max_iter"]), pct(lm["success_rate"]),
                rng(lm["seconds_per_image"], unit=" s"),
                rng(lm["seconds_per_verified_image"], unit=" s"),
                f"{sp['n']}: {pct(sp['success_rate'])}", scipy_seconds(rec),
                rng(rec["scipy_over_lm_per_image"], unit="×"),
                rng(rec["scipy_over_lm_per_verified_image"], unit="×"), *variants])
        it = sec["per_iteration"]
        sp_iter = sec["targets"]["p=0.9"]["scipy"].get("seconds_per_iteration")
        it_rows.append([name, str(it["batch"]), sec["dtype"],
                        rng(it["lm_seconds_per_iteration"], 1e3, " ms"),
                        rng(it["forward_plus_vjp_seconds"], 1e3, " ms"),
                        rng(it["ratio"], unit="×"),
                        rng(it.get("jacobians_per_iteration")),
                        rng(it.get("overhead"), unit="×"),
                        rng(sp_iter, 1e3, " ms") + " (batch 1)"])
    lines = table(["model", "target", "batch", "dtype", "max iter", "LM verified",
                   "LM s/image", "LM s/verified image", "SciPy subset: verified",
                   "SciPy s/image", "SciPy ÷ LM per image", "SciPy ÷ LM per verified image",
                   "LM + Broyden: verified, s/verified image",
                   "SciPy ÷ LM + Broyden per verified image",
                   "LM + Broyden, bfloat16 Jacobians: verified, s/verified image",
                   "SciPy ÷ LM + Broyden, bfloat16 Jacobians per verified image"], rows)
    lines += [
        "LM is `forward_pass_inv` (batched minimum-norm Levenberg–Marquardt, default "
        "options: residual `logit`, 2 restarts within the iteration budget), random starts "
        "uniform in [0, 1). SciPy is `method=\"scipy\"` (`least_squares(method=\"trf\")`, "
        "one image at a time, same residual and stopping rule) on the first targets, with "
        "its own random starts (FCNN-6: 2 per class, 20 images; the number is shown), its "
        "per-image cost extrapolated. Both run the same working copy of the model (SELUs "
        "evaluated with one `exp`, `FastELU`). Targets: "
        "*p=0.9* is `target_distribution(c, 0.9)` for classes 0, 1, ...; *model-produced* is "
        "the model's own softmax on the first validation digit of each class (reachable by "
        "construction). The ViTs are the `quick` profile's (patch 7, trained briefly). "
        "*LM + Broyden* is the same LM call with `broyden=True` (Broyden's update of the "
        "reused Jacobian between chord steps; off by default), side by side; *bfloat16 "
        "Jacobians* adds `jacobian_dtype=torch.bfloat16` to it (every Jacobian computed "
        "under `torch.autocast` to bfloat16, residuals and steps in float32; off by "
        "default; fast only where the hardware multiplies in bfloat16). "
        "*2 threads*: the same FCNN-6 measurement in a "
        "process with two torch/BLAS threads, for LM and SciPy alike (the batched LM's "
        "matrix products use both cores; SciPy's one-image products are too small to), "
        "SciPy also on one thread side by side, in brackets; its target is judged against "
        "SciPy's faster setting. "
        "∞: nothing verified.", ""]
    lines += table(["model", "batch", "dtype", "LM, one iteration",
                    "one forward + (K−1)-row VJP", "ratio", "new Jacobians per iteration",
                    "LM ÷ its model work", "SciPy, per iteration"], it_rows)
    lines += ["One LM iteration is `(T(N) − T(0)) / N` of runs of the library's LM engine "
              "(`nninvert_lib.forward.lm_solve`, what `levenberg_marquardt` runs once it has "
              "copied the model) with N and 0 iterations on the whole batch, tolerance "
              "unreachable and stall tests off, so no sample stops early; it is set against "
              "one forward pass plus "
              "one batched VJP of K−1 = 9 rows (the rows the `logit` residual needs) on the "
              "same batch and dtype (`torch.func.vjp` + `vmap`). A rejected step costs LM a "
              "forward pass only (no new Jacobian), so the ratio per iteration can fall below 1. "
              "*LM ÷ its model work* sets LM's time for those N iterations against the model "
              "evaluations they made, timed alone: N forward passes plus one VJP per new "
              "Jacobian; what exceeds 1 is LM's own overhead (the K−1 × K−1 solves, "
              "bookkeeping). SciPy's per-iteration cost is its time "
              "over its iterations, one image at a time.", ""]
    return lines


def prior_lines(sec: dict) -> list[str]:
    rows = []
    labels = {"max_class_image": "max-class training image",
              "percentile_average_image": "25th-percentile average",
              "gradient_image": f"gradient image ({sec['gradient_steps']} Adam steps)",
              "back_pass_inv": "BackPassInv (default)",
              "forward_pass_inv": "ForwardPassInv"}
    for k, rec in sec["methods"].items():
        rows.append([labels.get(k, k), rng(rec["seconds_per_image"], 1e3, " ms"),
                     pct(rec["success_rate"]), rng(rec["median_max_error"]),
                     rng(rec["over_back_pass_inv"], unit="×")])
    lines = table(["method (FCNN-6, 10 targets)", "time per image", "verified (atol 1e-3)",
                   "median max |softmax − p|", "÷ BackPassInv"], rows)
    return lines + ["Each method is called as a user would, once for the ten targets "
                    f"`target_distribution(c, 0.9)`; the data-based methods search all "
                    f"{sec.get('train_images', 60000):,} training images (a float64 forward "
                    "pass each) inside their time. The ratio is each method's time per "
                    "image over BackPassInv's on the same targets, side by side.", ""]


def memory_lines(results: dict) -> list[str]:
    limit = results["binder_limit_mb"]
    rows = []
    for name, sec in results["sections"].items():
        if "error" in sec:
            rows.append([sec.get("title", name), "—", "—", f"failed: {sec['error']}"])
            continue
        peak = sec["peak_rss_mb"]
        flag = f"**over {limit:,.0f} MB**" if peak > limit else "ok"
        dev = " (CUDA)" if name.endswith("@cuda") else ""
        rows.append([sec["title"] + dev, f"{peak:,.0f} MB", f"{sec['rss_after_import_mb']:,.0f} MB",
                     flag])
    lines = table(["section (own process)", "peak RSS", "after imports", "Binder (2 GB)"], rows)
    lines += ["Peak resident memory of each section's process (`resource.getrusage`), "
              "imports included (torch, timm, nninvert_lib; this torch build is "
              f"{results['machine']['torch']}).", ""]
    bw = results["sections"].get("backward", {})
    if "models" in bw:
        steps = [f"{DISPLAY[n]} batch {int(b):,}: {r['peak_rss_mb_so_far']:,.0f} MB"
                 for n, m in bw["models"].items() for b, r in m["batches"].items()
                 if "peak_rss_mb_so_far" in r]
        if steps:
            lines += ["BackPassInv section, peak RSS after each step (it rises where a step "
                      "set a new peak): " + "; ".join(steps) + ".", ""]
    return lines


def scaling_lines(sec: dict, png: str) -> list[str]:
    rows = []
    for p in sec["points"]:
        rows.append([str(p["width"]), f"{p['batch']:,}",
                     rng(p["back_pass_inv_seconds_per_sample"], 1e3, " ms") +
                     f" ({pct(p['back_pass_inv_success_rate'])})",
                     rng(p["paper_seconds_per_sample"], 1e3, " ms") +
                     f" ({pct(p['paper_success_rate'])})",
                     rng(p["lm_iteration_seconds_per_sample"], 1e3, " ms")])
    lines = [f"![Cost per sample against batch size and width]({png})", ""]
    lines += table(["width w", "batch", "BackPassInv per sample (success)",
                    "paper strategy per sample (success)", "one LM iteration per sample"], rows)
    return lines + ["Random SELU FCNNs 784 → w → w/2 → 10 (seeded default initialisation), "
                    f"targets `target_distribution(c, 0.9)`; LM iterations timed as "
                    f"`(T({sec['lm_iterations']}) − T(0)) / {sec['lm_iterations']}`. The plot "
                    "shows each cost per sample relative to the smallest batch (at the "
                    "middle width) and to the smallest width (at the middle batch).", ""]


# --------------------------------------------------------------------------- targets


def target_lines(results: dict) -> list[str]:
    secs = results["sections"]
    rows = []
    bw = secs.get("backward", {})
    if "models" in bw and "fcnn6" in bw["models"]:
        batches = bw["models"]["fcnn6"]["batches"]
        big = max(batches, key=int)
        b = batches[big]
        v = b["anchored"]["verified_per_s"]
        rows.append([f"BackPassInv FCNN-6 ≥ 1,000 verified samples/s (batch {int(big):,})",
                     rng(v), "met" if v["median"] >= 1000 else "missed"])
        s = b["anchored"]["speedup_vs_per_sample"]
        rows.append([f"BackPassInv FCNN-6 ≥ 50× the per-sample baseline (batch {int(big):,})",
                     rng(s, unit="×"), "met" if s["median"] >= 50 else "missed"])
    for key in FORWARD_KEYS:
        rec = (secs.get(key) or {}).get("targets", {}).get("p=0.9")
        if not rec:
            continue
        best = rec.get("scipy_best_over_lm_per_verified_image")
        q = best or rec["scipy_over_lm_per_verified_image"]
        lm_ok, sp_ok = rec["lm"]["success_rate"], rec["scipy"]["success_rate"]
        if best:
            sp_ok = max(sp_ok, rec["scipy_1_thread"]["success_rate"])
        if not math.isfinite(q["median"]) or not lm_ok:
            continue
        good = q["median"] >= 20 and lm_ok >= sp_ok
        against = " (SciPy at its faster of 1 or 2 threads)" if best else ""
        variants = ""
        for variant, label in LM_VARIANTS:
            qv = rec.get(f"scipy_best_over_{variant}_per_verified_image") \
                or rec.get(f"scipy_over_{variant}_per_verified_image")
            if qv:
                variants += (f"; {label} {rng(qv, unit='×')}, verified "
                             f"{rec[variant]['success_rate']:.0%}")
        rows.append([f"LM ≥ 20× faster than SciPy `trf` per verified image, equal or better "
                     f"success, {model_label(secs[key])} (p=0.9){against}",
                     f"{rng(q, unit='×')}; verified LM {lm_ok:.0%}, SciPy {sp_ok:.0%}{variants}",
                     "met" if good else "missed"])
    for key in FORWARD_KEYS:
        sec = secs.get(key)
        if sec and "per_iteration" in sec:
            it = sec["per_iteration"]
            r, rj = it["ratio"], it.get("overhead") or it["ratio"]
            verdict = ("met" if max(r["median"], rj["median"]) <= 1.5 else
                       "met per iteration, not against its model work" if r["median"] <= 1.5
                       else "missed")
            rows.append([f"LM iteration ≤ 1.5× forward + VJP, {model_label(sec)} "
                         f"(batch {it['batch']})",
                         f"{rng(r, unit='×')}; LM ÷ its model work {rng(rj, unit='×')}",
                         verdict])
    peaks = {n: s["peak_rss_mb"] for n, s in secs.items() if "peak_rss_mb" in s}
    if peaks:
        worst = max(peaks, key=peaks.get)
        over = [secs[n]["title"] for n, p in peaks.items() if p > results["binder_limit_mb"]]
        rows.append(["every section within Binder's 2 GB",
                     f"largest: {secs[worst]['title']}, {peaks[worst]:,.0f} MB",
                     "met" if not over else "missed: " + "; ".join(over)])
    return table(["target", "measured: median [min–max]", ""], rows)


# --------------------------------------------------------------------------- the plot


def plot_scaling(sec: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    pts = sec["points"]
    widths, batches = sec["widths"], sec["batches"]
    w_mid, b_mid = widths[len(widths) // 2], batches[len(batches) // 2]
    series = [("back_pass_inv_seconds_per_sample", "BackPassInv (default)", "o-"),
              ("paper_seconds_per_sample", "BackPassInv (paper strategy)", "s--"),
              ("lm_iteration_seconds_per_sample", "ForwardPassInv: one LM iteration", "^-")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, fixed, along, xs, xlabel in (
            (axes[0], ("width", w_mid), "batch", batches, "batch size (samples)"),
            (axes[1], ("batch", b_mid), "width", widths, "width w (784 → w → w/2 → 10)")):
        for key, label, style in series:
            sel = sorted((p for p in pts if p[fixed[0]] == fixed[1]), key=lambda p: p[along])
            if not sel:
                continue
            base = sel[0][key]["median"]
            ys = [p[key]["median"] / base for p in sel]
            lo = [p[key]["min"] / base for p in sel]
            hi = [p[key]["max"] / base for p in sel]
            x = [p[along] for p in sel]
            ax.plot(x, ys, style, label=label)
            ax.fill_between(x, lo, hi, alpha=0.15)
        if along == "width":
            params = [784 * w + w * (w // 2) + (w // 2) * 10 for w in xs]
            ax.plot(xs, [p / params[0] for p in params], ":", color="grey",
                    label="weights (relative)")
        ax.axhline(1.0, color="black", lw=0.5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{x:,}" for x in xs])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"cost per sample ÷ cost at {along} {xs[0]:,}")
        ax.set_title(f"{along} varies ({fixed[0]} {fixed[1]:,})")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- the page


def markdown(results: dict, png: str) -> str:
    m, secs = results["machine"], results["sections"]
    lines = [f"# Benchmarks: {m['date']}, {m['host']}", "",
             f"{m['cpu']}, {m['cpus_usable']} usable CPU cores (of {m['cpu_count']}); "
             f"torch {m['torch']}, NumPy {m['numpy']}, SciPy {m['scipy']}, nninvert "
             f"{m['nninvert']} (commit {m['git_commit']}); **{m['torch_threads']} torch/BLAS "
             f"thread** per section unless stated, each section in a fresh process with "
             "glibc's allocator primed (`timing.prime_allocator`); load average "
             f"{', '.join(f'{x:.1f}' for x in m['load_average_start'] or [])} at the start. "
             f"Total runtime {m['total_seconds'] / 60:.1f} min"
             + (" (`--quick`: small sizes, not comparable)" if results["quick"] else "") + ".",
             "",
             f"Every figure is measured in this run; repeats: {results['config']['repeats']}, "
             "shown as median [min–max]. Ratios are formed repeat by repeat from "
             "measurements taken side by side, then summarised. Absolute times describe this "
             "machine only.", "", "## Targets", ""]
    lines += target_lines(results)
    if "backward" in secs and "models" in secs["backward"]:
        lines += ["## 1. BackPassInv", ""] + backward_lines(secs["backward"])
    if "threads" in secs and "anchored" in secs["threads"]:
        lines += ["Threads (side by side in one process):", ""] + threads_lines(secs["threads"])
    fw = [k for k in FORWARD_KEYS if k in secs and "targets" in secs[k]]
    if fw:
        lines += ["## 2. ForwardPassInv", ""] + forward_lines(secs, tuple(fw))
    if "prior" in secs and "methods" in secs["prior"]:
        lines += ["## 3. Prior methods", ""] + prior_lines(secs["prior"])
    lines += ["## 4. Memory", ""] + memory_lines(results)
    if "scaling" in secs and "points" in secs["scaling"]:
        lines += ["## 5. Scaling", ""] + scaling_lines(secs["scaling"], png)
    lines += ["## 6. GPU", ""]
    gpu = {k.removesuffix("@cuda"): v for k, v in secs.items() if k.endswith("@cuda")}
    if not gpu:
        lines += [f"{results['gpu']}.", ""]
    else:
        lines += [f"Card: {m['cuda_device']}. The same sections with `device=\"cuda\"` "
                  "(the per-sample baseline still runs on the CPU).", ""]
        if "backward" in gpu and "models" in gpu["backward"]:
            lines += backward_lines(gpu["backward"])
        fw = tuple(k for k in FORWARD_KEYS if k in gpu and "targets" in gpu[k])
        if fw:
            lines += forward_lines(gpu, fw)
    failed = [f"{s.get('title', n)}: {s['error']}" for n, s in secs.items() if "error" in s]
    if failed:
        lines += ["## Failed sections", ""] + [f"- {f}" for f in failed] + [""]
    return "\n".join(lines)


def write_reports(results: dict, out: Path, stem: str, latest: bool) -> list[Path]:
    """Write ``<stem>.json``, ``<stem>.md``, ``<stem>-scaling.png`` (and the ``latest`` copies)."""
    paths = []
    js = out / f"{stem}.json"
    js.write_text(json.dumps(results, indent=1, default=str))
    paths.append(js)
    scaling = results["sections"].get("scaling", {})
    png = out / f"{stem}-scaling.png"
    if "points" in scaling:
        plot_scaling(scaling, png)
        paths.append(png)
    md = out / f"{stem}.md"
    md.write_text(markdown(results, png.name))
    paths.append(md)
    if latest:
        (out / "latest.md").write_text(markdown(results, "latest-scaling.png"))
        paths.append(out / "latest.md")
        if png.exists():
            shutil.copyfile(png, out / "latest-scaling.png")
            paths.append(out / "latest-scaling.png")
    return paths


def run_header() -> dict:
    """Where and with what an experiment ran: ``date``, ``host`` and the versions of
    PyTorch, NumPy and SciPy (the pattern walk's linear programs and roundings can
    end elsewhere with another NumPy or SciPy), and PyTorch's thread count."""
    import datetime
    import platform

    import numpy
    import scipy
    import torch

    return {"date": datetime.date.today().isoformat(), "host": platform.node(),
            "torch": torch.__version__, "numpy": numpy.__version__,
            "scipy": scipy.__version__, "threads": torch.get_num_threads()}


def write_experiment(out_dir: Path, name: str, out: dict, markdown: str) -> Path:
    """Write an experiment's results, ``out`` (which holds ``date`` and ``host``), as
    ``<out_dir>/<date>-<host>-<name>.json`` and ``markdown`` beside it (``.md``),
    creating ``out_dir``; prints and returns that stem."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{out['date']}-{out['host']}-{name}"
    stem.with_suffix(".json").write_text(json.dumps(out, indent=1))
    stem.with_suffix(".md").write_text(markdown)
    print(f"wrote {stem}.json and .md")
    return stem
