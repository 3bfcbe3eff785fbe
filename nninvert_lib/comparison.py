"""The paper's Figure 3 as data: every method on every model, measured and cached.

Figure 3 of the paper is a grid of images, one column per class 0–9 and one row
per source:

============  ===========================================================
row           images
============  ===========================================================
train-data    MNIST training digits of the class
[6]-1layer    the prior method of [6] on the one-layer network (gradient
              training of the input from the max-class image)
1layer-NN     BackPassInv on FCNN-1 (Std 0.1)
2layer-NN     BackPassInv on FCNN-2
6layer-NN     BackPassInv on FCNN-6
ViT-tiny      ForwardPassInv (Levenberg–Marquardt on the input)
DINOv3        ForwardPassInv
============  ===========================================================

The paper reads three claims off that grid: the new images are farther from the
training set than those of [6]; they grow more random-like with depth; DINOv3's
are more random than ViT-tiny's. :func:`figure3` turns the grid into a tidy
table (one row per model × class × method × sample) with the measures of
:mod:`.measures` for every image, so that those claims can be checked
(:meth:`Figure3.claims`) rather than looked at. It runs more than the grid
shows: every prior method of [6] on every FCNN and on ViT-tiny, and
ForwardPassInv on the FCNNs too, so that each model has an old-against-new
comparison of its own (add ``"generalized_inv"`` for a ViT through
``Figure3Settings.methods``; it costs about ten times ForwardPassInv on a CPU).
:func:`plot_figure3` draws the grid.

Results are cached (like the models) under ``<cache>/figure3/<key>/``; the key
covers the models' checkpoints, the settings, the inversion functions' default
arguments and this module's format.
"""
from __future__ import annotations

import ast
import hashlib
import inspect
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from . import measures, paths
from .backward import back_pass_inv
from .data import load_mnist
from .errors import InsufficientMemoryError, InversionError
from .forward import DEFAULT_CHORD, DEFAULT_RESTARTS, forward_pass_inv, levenberg_marquardt
from .generalized import generalized_inv
from .models import DISPLAY_NAMES, MODEL_NAMES
from .prior import gradient_image, max_class_image, percentile_average_image, training_set_probs
from .result import InversionResult, target_distribution
from .profiles import train_config
from .zoo import load_model, model_key

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["PAPER_ROWS", "METHODS", "NEW_METHODS", "PRIOR_METHODS", "Figure3Settings",
           "Figure3", "figure3", "plot_figure3", "figure3_settings"]

FORMAT = 1

#: the paper's rows: (label, model or None for the training data, method)
PAPER_ROWS: tuple[tuple[str, str | None, str], ...] = (
    ("train-data", None, "training"),
    ("[6]-1layer", "fcnn1", "prior_gradient"),
    ("1layer-NN", "fcnn1", "back_pass_inv"),
    ("2layer-NN", "fcnn2", "back_pass_inv"),
    ("6layer-NN", "fcnn6", "back_pass_inv"),
    ("ViT-tiny", "vit_tiny", "forward_pass_inv"),
    ("DINOv3", "dinov3_base", "forward_pass_inv"),
)
PRIOR_METHODS = ("prior_max_class", "prior_percentile", "prior_gradient")
NEW_METHODS = ("back_pass_inv", "forward_pass_inv", "generalized_inv")
METHODS = ("training",) + PRIOR_METHODS + NEW_METHODS
#: methods that draw random samples (the others give one image per class)
STOCHASTIC = frozenset(NEW_METHODS)

_FCNNS = ("fcnn1", "fcnn2", "fcnn6")
_DEFAULT_METHODS = {
    **{m: ("back_pass_inv", "forward_pass_inv") + PRIOR_METHODS for m in _FCNNS},
    "vit_tiny": ("forward_pass_inv",) + PRIOR_METHODS,
    "dinov3_base": ("forward_pass_inv",),
}


@dataclass(frozen=True)
class Figure3Settings:
    """What :func:`figure3` runs.

    Attributes:
        profile: the models' training profile (``paper``, ``quick``, ``smoke``).
        classes: target classes (the columns).
        p: target probability of the class (the paper: 0.9).
        n_samples: samples per class for the stochastic methods, per model.
        max_iter: Levenberg–Marquardt iterations per model (the paper: 30).
        methods: methods run on each model (see :data:`METHODS`).
        std: null-space noise of BackPassInv and the generalized method (0.1).
        gradient_steps: steps of the gradient method of [6].
        prior_train_images: training images the prior methods search (None: all).
        reference_images: held-out digits whose nearest-training distances are
            the yardstick for "far" (see :func:`.measures.distance_percentile`).
        seed: seeds every random draw.
    """

    profile: str = "quick"
    classes: tuple[int, ...] = tuple(range(10))
    p: float = 0.9
    n_samples: Mapping[str, int] = field(default_factory=dict)
    max_iter: Mapping[str, int] = field(default_factory=dict)
    methods: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(_DEFAULT_METHODS))
    std: float = 0.1
    gradient_steps: int = 300
    prior_train_images: int | None = 10_000
    reference_images: int = 1000
    seed: int = 0

    def to_dict(self) -> dict:
        return {"profile": self.profile, "classes": list(self.classes), "p": self.p,
                "n_samples": dict(self.n_samples), "max_iter": dict(self.max_iter),
                "methods": {k: list(v) for k, v in self.methods.items()}, "std": self.std,
                "gradient_steps": self.gradient_steps,
                "prior_train_images": self.prior_train_images,
                "reference_images": self.reference_images, "seed": self.seed}


def figure3_settings(profile: str = "quick", **changes) -> Figure3Settings:
    """Sizes that fit each profile's time budget on a 2-core CPU.

    ``paper``: 10 samples per class everywhere, 30 LM iterations, every prior
    image searched. ``quick`` (the book): 8 samples per class for the FCNNs, 4
    for ViT-tiny, 1 for DINOv3-Base with 10 LM iterations (each DINOv3 iteration
    costs about a second per image here). ``smoke`` (the tests): 2 samples per
    class, 3 classes, short runs.

    Args:
        profile: ``paper``, ``quick`` or ``smoke``.
        **changes: any :class:`Figure3Settings` field, replacing the profile's.
    """
    if profile == "paper":
        base = dict(n_samples={m: 10 for m in MODEL_NAMES}, max_iter={m: 30 for m in MODEL_NAMES},
                    prior_train_images=None, reference_images=10_000)
    elif profile == "quick":
        base = dict(n_samples={**{m: 8 for m in _FCNNS}, "vit_tiny": 4, "dinov3_base": 1},
                    max_iter={**{m: 30 for m in _FCNNS}, "vit_tiny": 30, "dinov3_base": 10})
    elif profile == "smoke":
        base = dict(classes=(0, 1, 2), n_samples={m: 2 for m in MODEL_NAMES},
                    max_iter={**{m: 10 for m in _FCNNS}, "vit_tiny": 3, "dinov3_base": 1},
                    gradient_steps=10, prior_train_images=500, reference_images=100)
    else:
        raise InversionError(f"profile must be 'paper', 'quick' or 'smoke', got {profile!r}")
    base.update(changes)
    settings = Figure3Settings(profile=profile, **base)
    _check_settings(settings)
    return settings


def _check_settings(s: Figure3Settings) -> None:
    for model, methods in s.methods.items():
        if model not in MODEL_NAMES:
            raise InversionError(f"methods names an unknown model {model!r}; "
                                 f"models are {MODEL_NAMES}")
        bad = [m for m in methods if m not in METHODS or m == "training"]
        if bad:
            raise InversionError(f"unknown method(s) {bad} for {model}; choose from {METHODS[1:]}")
        if "back_pass_inv" in methods and model not in _FCNNS:
            raise InversionError(f"back_pass_inv needs Linear/activation layers only; "
                                 f"{model} is a transformer (use generalized_inv)")
        if "generalized_inv" in methods and model in _FCNNS:
            raise InversionError(f"generalized_inv is for the ViTs, not {model}")
    if not s.classes or any(not 0 <= c <= 9 for c in s.classes):
        raise InversionError(f"classes must be digits 0–9, got {s.classes}")
    if not 0.1 < s.p < 1.0:
        raise InversionError(f"p must lie in (0.1, 1), got {s.p}")
    for name, n in s.n_samples.items():
        if n < 1:
            raise InversionError(f"n_samples[{name!r}] must be >= 1, got {n}")


@dataclass
class Figure3:
    """The data behind Figure 3.

    Attributes:
        table: one row per (model, method, class, sample). Columns: ``model``
            (``"mnist"`` for the training data), ``method``, ``class``,
            ``sample``, ``image`` (row of :attr:`images`), ``verified``,
            ``max_error`` (``max |softmax - p|``), ``p_class`` (the output
            probability of the class; NaN for the training digits, which no
            model produced), ``predicted`` (argmax), ``nearest_distance``
            (L2 to the nearest training image, pixel scale),
            ``distance_percentile`` (its rank among held-out digits' own
            distances, 0–100), ``random_likeness`` (spectral flatness scaled 0 =
            digits, 1 = white noise), ``random_likeness_corr`` (the same from
            the correlation length), ``out_of_range`` (fraction of pixels
            outside [0, 1]) and ``agreement`` (fraction of the *other* models
            that predict the class for this image).
        images: float32 ``(len(table), 1, 28, 28)`` on the CPU.
        meta: settings, model cards, reference values, seconds per run.
    """

    table: pd.DataFrame
    images: torch.Tensor
    meta: dict

    def rows(self, model: str | None, method: str) -> pd.DataFrame:
        """The table's rows of one (model, method); ``model=None`` for the training data."""
        key = "mnist" if model is None else model
        return self.table[(self.table["model"] == key) & (self.table["method"] == method)]

    def summary(self, verified_only: bool = False) -> pd.DataFrame:
        """One row per (model, method): medians of the measures and the diversity.

        Args:
            verified_only: measure only the images that reached the target
                (the training data and the prior methods' images count as they are).

        Returns:
            DataFrame with ``model``, ``method``, ``n``, ``verified (%)``,
            ``nearest distance``, ``distance percentile``, ``random-likeness``,
            ``random-likeness (corr.)``, ``out of range (%)``, ``agreement (%)``,
            ``pairwise distance`` and ``effective rank`` (the mean over classes
            with ≥ 2 images of :func:`.measures.mean_pairwise_distance` and
            :func:`.measures.effective_rank`; NaN for one image per class).
        """
        out = []
        for (model, method), g in self.table.groupby(["model", "method"], sort=False):
            if verified_only and method in STOCHASTIC:
                g = g[g["verified"]]
            row = {"model": DISPLAY_NAMES.get(model, "MNIST training data"), "method": method,
                   "n": len(g),
                   "verified (%)": 100.0 * g["verified"].mean() if len(g) else math.nan}
            for col, label in [("nearest_distance", "nearest distance"),
                               ("distance_percentile", "distance percentile"),
                               ("random_likeness", "random-likeness"),
                               ("random_likeness_corr", "random-likeness (corr.)")]:
                row[label] = g[col].median() if len(g) else math.nan
            row["out of range (%)"] = 100.0 * g["out_of_range"].mean() if len(g) else math.nan
            row["agreement (%)"] = 100.0 * g["agreement"].mean() if len(g) else math.nan
            mpd, erank = [], []
            for _, gc in g.groupby("class"):
                if len(gc) >= 2:
                    x = self.images[torch.as_tensor(gc["image"].to_numpy().copy())]
                    mpd.append(measures.mean_pairwise_distance(x))
                    erank.append(measures.effective_rank(x))
            row["pairwise distance"] = float(np.mean(mpd)) if mpd else math.nan
            row["effective rank"] = float(np.mean(erank)) if erank else math.nan
            out.append(row)
        return pd.DataFrame(out)

    def claims(self) -> pd.DataFrame:
        """The paper's three claims about Figure 3, each measured and judged.

        1. *Farther from the training set than [6]*: on each model with both,
           the median nearest-training distance of every new method's verified
           images exceeds that of every prior method's images.
        2. *More random with depth*: the median random-likeness of BackPassInv's
           verified images rises from FCNN-1 to FCNN-2 to FCNN-6.
        3. *DINOv3 more random than ViT-tiny*: the median random-likeness of
           ForwardPassInv's images is higher for DINOv3-Base (verified images
           where both models have some, else all images, as stated).

        Returns:
            DataFrame with ``claim``, ``measured`` (the numbers compared, in
            words), ``holds`` (True/False, or None when it cannot be told),
            ``verdict`` (the same in words: "holds", "does not hold", "cannot be
            told"; ``DataFrame.iterrows`` turns a ``None`` into NaN, this column
            stays readable) and ``note``.
        """
        t = self.table
        rows = []

        def med(model, method, col, verified=True):
            g = t[(t["model"] == model) & (t["method"] == method)]
            if verified and method in STOCHASTIC:
                g = g[g["verified"]]
            return float(g[col].median()) if len(g) else math.nan

        parts, verdicts = [], []
        for model in t["model"].unique():
            new = {m: med(model, m, "nearest_distance") for m in NEW_METHODS
                   if len(self.rows(model, m))}
            old = {m: med(model, m, "nearest_distance") for m in PRIOR_METHODS
                   if len(self.rows(model, m))}
            new = {k: v for k, v in new.items() if not math.isnan(v)}
            if new and old:
                verdicts.append(min(new.values()) > max(old.values()))
                parts.append(f"{DISPLAY_NAMES.get(model, model)}: new "
                             + ", ".join(f"{k} {v:.2f}" for k, v in new.items()) + "; [6] "
                             + ", ".join(f"{k} {v:.2f}" for k, v in old.items()))
        rows.append({"claim": "the new methods' images are farther from the training set "
                              "than those of [6]",
                     "measured": " | ".join(parts),
                     "holds": all(verdicts) if verdicts else None,
                     "note": "median L2 distance to the nearest training image "
                             "(verified images of the new methods)"})

        depth = [(m, med(m, "back_pass_inv", "random_likeness")) for m in _FCNNS]
        depth = [(m, v) for m, v in depth if not math.isnan(v)]
        holds = (all(a < b for (_, a), (_, b) in zip(depth, depth[1:]))
                 if len(depth) == 3 else None)
        rows.append({"claim": "randomness grows with depth (FCNN-1 < FCNN-2 < FCNN-6)",
                     "measured": ", ".join(f"{DISPLAY_NAMES[m]} {v:.3f}" for m, v in depth),
                     "holds": holds,
                     "note": "median random-likeness of BackPassInv's verified images "
                             "(0 = like digits, 1 = like white noise)"})

        v_vit, v_dino = (med(m, "forward_pass_inv", "random_likeness") for m in
                         ("vit_tiny", "dinov3_base"))
        basis = "verified images"
        if math.isnan(v_vit) or math.isnan(v_dino):
            v_vit, v_dino = (med(m, "forward_pass_inv", "random_likeness", verified=False)
                             for m in ("vit_tiny", "dinov3_base"))
            basis = "all images, verified or not (one model has no verified image)"
        holds = None if math.isnan(v_vit) or math.isnan(v_dino) else v_dino > v_vit
        rows.append({"claim": "DINOv3's images are more random than ViT-tiny's",
                     "measured": f"DINOv3-Base {v_dino:.3f}, ViT-tiny {v_vit:.3f}",
                     "holds": holds,
                     "note": f"median random-likeness of ForwardPassInv's {basis}"})
        for row in rows:
            row["verdict"] = VERDICTS[row["holds"]]
        return pd.DataFrame(rows)[["claim", "measured", "holds", "verdict", "note"]]


#: a claim's ``holds`` in words
VERDICTS = {True: "holds", False: "does not hold", None: "cannot be told"}


# ----------------------------------------------------------------------------- running
def _method_defaults() -> dict:
    """The default arguments of the inversion functions Figure 3 calls: a change of
    default (e.g. LM's working dtype or chord steps) changes the images, so the key."""
    out = {}
    for fn in (back_pass_inv, forward_pass_inv, levenberg_marquardt):
        params = inspect.signature(fn).parameters.values()
        out[fn.__name__] = {p.name: repr(p.default) for p in params
                            if p.default is not inspect.Parameter.empty}
    out["forward_constants"] = {"DEFAULT_RESTARTS": DEFAULT_RESTARTS,
                                "DEFAULT_CHORD": DEFAULT_CHORD}
    return out


def _methods_source() -> str:
    """A hash of the code of the modules that compute Figure 3's images: a change of the
    algorithms (not only of a default) changes the images, so the key. Docstrings and
    comments are left out (their syntax trees without docstrings are hashed)."""
    from . import activations, backward, forward, generalized, linear, modelcopy, prior, \
        result, softmax
    dumps = []
    for module in (activations, backward, forward, generalized, linear, modelcopy, prior,
                   result, softmax):
        tree = ast.parse(inspect.getsource(module))
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                    and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        dumps.append(ast.dump(tree))
    return hashlib.sha256("".join(dumps).encode()).hexdigest()[:16]


def _cache_key(settings: Figure3Settings, names: Sequence[str], data_source: str) -> str:
    """Settings, data, the methods' defaults and source, and each model's checkpoint key
    (its recipe, architecture and data)."""
    payload = {"format": FORMAT, "settings": settings.to_dict(), "data": data_source,
               "defaults": _method_defaults(), "source": _methods_source(),
               "models": {n: model_key(n, train_config(n, settings.profile), data_source)
                          for n in sorted(names)}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load_cached(folder) -> Figure3 | None:
    try:
        table = pd.read_csv(folder / "table.csv")
        images = torch.load(folder / "images.pt", weights_only=True)
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError, RuntimeError):
        return None
    if len(images) != len(table):
        return None
    table["verified"] = table["verified"].astype(bool)
    return Figure3(table, images, {**meta, "from_cache": True})


def _save(fig3: Figure3, folder) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    fig3.table.to_csv(folder / "table.csv", index=False)
    torch.save(fig3.images, folder / "images.pt")
    (folder / "meta.json").write_text(json.dumps(fig3.meta, indent=1, default=str))


def _run_method(method: str, model: nn.Module, settings: Figure3Settings, name: str,
                train_images: torch.Tensor, train_probs: torch.Tensor | None) -> InversionResult:
    classes = list(settings.classes)
    n = settings.n_samples.get(name, 1)
    seed = settings.seed
    if method == "back_pass_inv":
        return back_pass_inv(model, target_distribution(classes, settings.p), n_samples=n,
                             std=settings.std, seed=seed)
    if method == "forward_pass_inv":
        return forward_pass_inv(model, target_distribution(classes, settings.p), n_samples=n,
                                max_iter=settings.max_iter.get(name, 30), seed=seed,
                                dtype=None if name not in _FCNNS else torch.float64)
    if method == "generalized_inv":
        return generalized_inv(model, target_distribution(classes, settings.p), n_samples=n,
                               std=settings.std, max_iter=settings.max_iter.get(name, 30),
                               seed=seed)
    if method == "prior_max_class":
        return max_class_image(model, train_images, classes, p=settings.p, probs=train_probs)
    if method == "prior_percentile":
        return percentile_average_image(model, train_images,
                                        target_distribution(classes, settings.p),
                                        probs=train_probs)
    if method == "prior_gradient":
        return gradient_image(model, target_distribution(classes, settings.p),
                              train_images=train_images, steps=settings.gradient_steps)
    raise InversionError(f"unknown method {method!r}")


@torch.no_grad()
def _predictions(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``argmax model(x)`` for every image, in the model's own dtype and device (int64, CPU)."""
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        out = [model(images[s:s + batch_size].to(param.device, param.dtype)).argmax(dim=1).cpu()
               for s in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def _agreement(table: pd.DataFrame, images: torch.Tensor, names: Sequence[str],
               get_model) -> np.ndarray:
    """Per image: the fraction of the models other than its source that predict its class.

    The same question as :func:`.measures.cross_model_agreement`, asked once per
    model for all images (argmax only, so the model's own dtype suffices). The
    models come from ``get_model(name)`` one at a time.
    """
    cls = torch.as_tensor(table["class"].to_numpy().copy())
    agrees = {}
    for name in names:
        agrees[name] = (_predictions(get_model(name), images) == cls).numpy()
    out = np.full(len(table), np.nan)
    source = table["model"].to_numpy()
    for i in range(len(table)):
        others = [agrees[n][i] for n in agrees if n != source[i]]
        if others:
            out[i] = float(np.mean(others))
    return out


def figure3(profile: str = "quick", settings: Figure3Settings | None = None, *,
            models: Mapping[str, nn.Module] | None = None, cache: bool = True,
            progress: bool = True) -> Figure3:
    """Run every method on every model for the classes and measure every image.

    Args:
        profile: which trained models to load (and, without ``settings``, the
            sizes: :func:`figure3_settings` ``(profile)``).
        settings: what to run; its ``profile`` wins over ``profile``.
        models: name -> model to use instead of loading (for experiments and
            tests; such a run is never cached). Without it the models are
            loaded one at a time and released after their runs, so that the
            peak memory is that of the largest model, not of all five.
        cache: read and write ``<cache>/figure3/<key>/`` (a run that left a model
            out is not written).
        progress: show a progress bar over the runs.

    Returns:
        :class:`Figure3` (``meta["from_cache"]`` says whether it was read back).

    Raises:
        InversionError: invalid settings. A method that fails on a model (an
            :class:`InversionError` from its checks) is recorded in
            ``meta["failures"]``, not raised; its rows are absent. So is a model
            this machine cannot train (an :class:`~.errors.InsufficientMemoryError`,
            DINOv3-Base on Binder's 2 GB): ``meta["skipped"]`` names it with the
            reason, its rows are absent and the run is not cached.
    """
    settings = settings or figure3_settings(profile)
    _check_settings(settings)
    names = [m for m in MODEL_NAMES if m in settings.methods]
    train = load_mnist("train")
    val = load_mnist("val")
    given = models is not None
    cards: dict[str, dict] = {}
    if given:
        missing = [n for n in names if n not in models]
        if missing:
            raise InversionError(f"models lacks {missing} that settings.methods names")

    def get_model(name: str) -> nn.Module:
        if given:
            return models[name]
        model, cards[name] = load_model(name, settings.profile, progress=progress)
        return model

    key = _cache_key(settings, names, train.source)
    folder = paths.cache_dir() / "figure3" / key
    if cache and not given:
        hit = _load_cached(folder)
        if hit is not None:
            return hit

    gen = torch.Generator().manual_seed(settings.seed)
    prior_train = train.images
    if settings.prior_train_images is not None and settings.prior_train_images < len(train):
        prior_train = train.images[torch.randperm(len(train), generator=gen)
                                   [:settings.prior_train_images]]
    reference = measures.randomness_reference(train.images, n=1000, seed=settings.seed)
    ref_dist = measures.reference_nearest_distances(val.images, train.images,
                                                    n=settings.reference_images,
                                                    seed=settings.seed)

    runs: list[tuple[str | None, str]] = [(None, "training")]
    runs += [(name, m) for name in names for m in settings.methods[name]]
    tables, image_parts, seconds, failures = [], [], {}, {}
    probs_cache: dict[str, torch.Tensor] = {}
    offset = 0
    bar = tqdm(runs, desc="Figure 3", disable=not progress)
    current: tuple[str | None, nn.Module | None] = (None, None)
    skipped: dict[str, str] = {}
    for name, method in bar:
        if name in skipped:
            continue
        bar.set_postfix_str(f"{name or 'mnist'}: {method}")
        t0 = time.perf_counter()
        if method == "training":
            n = max(settings.n_samples.values(), default=1)
            idx = torch.cat([(train.labels == c).nonzero().flatten()[:n] for c in settings.classes])
            x = train.images[idx]
            cls = train.labels[idx]
            verified = torch.ones(len(idx), dtype=torch.bool)
            probs = None
        else:
            if current[0] != name:
                current = (None, None)  # release the previous model before loading the next
                probs_cache.clear()
                try:
                    current = (name, get_model(name))
                except InsufficientMemoryError as exc:
                    skipped[name] = str(exc)
                    continue
            model = current[1]
            train_probs = None
            if method in ("prior_max_class", "prior_percentile"):
                if name not in probs_cache:  # one pass over the images serves both methods
                    probs_cache[name] = training_set_probs(model, prior_train)
                train_probs = probs_cache[name]
            try:
                res = _run_method(method, model, settings, name, prior_train, train_probs)
            except InversionError as exc:
                failures[f"{name}/{method}"] = str(exc)
                continue
            x = res.inputs.detach().float().cpu()
            cls = res.target.argmax(dim=1).cpu()
            verified = res.converged.cpu()
            probs = res.probs.cpu()
        seconds[f"{name or 'mnist'}/{method}"] = time.perf_counter() - t0
        near = measures.nearest_training_image(x, train.images)
        df = pd.DataFrame({
            "model": name or "mnist", "method": method, "class": cls.numpy(),
            "image": np.arange(offset, offset + len(x)),
            "verified": verified.numpy().astype(bool),
            "max_error": (np.zeros(len(x)) if probs is None else
                          (probs - target_distribution(cls.tolist(), settings.p)).abs()
                          .amax(dim=1).numpy()),
            "p_class": (np.full(len(x), np.nan) if probs is None else
                        probs.gather(1, cls[:, None]).squeeze(1).numpy()),
            "predicted": (cls.numpy() if probs is None else probs.argmax(dim=1).numpy()),
            "nearest_distance": near.distance.numpy(),
            "distance_percentile": measures.distance_percentile(near.distance, ref_dist).numpy(),
            "random_likeness": measures.random_likeness(x, reference).numpy(),
            "random_likeness_corr": measures.random_likeness(x, reference,
                                                             "correlation_length").numpy(),
            "out_of_range": measures.fraction_out_of_range(x).numpy(),
        })
        df.insert(3, "sample", df.groupby("class").cumcount())
        tables.append(df)
        image_parts.append(x.reshape(len(x), 1, 28, 28))
        offset += len(x)
    bar.close()
    current, model, res = (None, None), None, None  # only the next loader's model is held now
    table = pd.concat(tables, ignore_index=True)
    images = torch.cat(image_parts)
    table["agreement"] = _agreement(table, images, [n for n in names if n not in skipped],
                                    get_model)
    meta = {"settings": settings.to_dict(), "data_source": train.source,
            "cards": {k: {f: c.get(f) for f in ("val_accuracy", "profile", "key")}
                      for k, c in cards.items()},
            "randomness_reference": vars(reference),
            "reference_distance_median": float(ref_dist.median()),
            "seconds": seconds, "failures": failures, "skipped": skipped, "key": key,
            "from_cache": False}
    result = Figure3(table, images, meta)
    if cache and not given and not skipped:
        _save(result, folder)
    return result


# ----------------------------------------------------------------------------- plotting
def plot_figure3(fig3: Figure3, rows: Sequence[tuple[str, str | None, str]] = PAPER_ROWS,
                 sample: int = 0, size: float = 0.95, scale: str = "row") -> Figure:
    """Draw the paper's grid: one row per source, one column per class.

    Images are shown in grey; an inverted image may leave [0, 1], so each row is
    scaled to its own range (``scale="row"``; ``"fixed"``: [0, 1], clipped by
    the colour map only). An image that did not reach the target gets a red
    frame; a missing one (a method that was not run) an empty cell.

    Args:
        fig3: from :func:`figure3`.
        rows: ``(label, model, method)`` per row (default :data:`PAPER_ROWS`).
        sample: which sample of each class to show.
        size: inches per cell.
        scale: ``"row"`` or ``"fixed"``.

    Returns:
        the matplotlib figure.
    """
    import matplotlib.pyplot as plt

    if scale not in ("row", "fixed"):
        raise InversionError(f"scale must be 'row' or 'fixed', got {scale!r}")
    classes = sorted(fig3.table["class"].unique().tolist())
    fig, axes = plt.subplots(len(rows), len(classes), squeeze=False,
                             figsize=(size * len(classes) + 1.2, size * len(rows) + 0.4))
    for r, (label, model, method) in enumerate(rows):
        g = fig3.rows(model, method)
        g = g[g["sample"] == sample]
        imgs = {int(c): fig3.images[int(i)].reshape(28, 28) for c, i in zip(g["class"], g["image"])}
        ok = dict(zip(g["class"].astype(int), g["verified"]))
        if scale == "row" and imgs:
            stack = torch.stack(list(imgs.values()))
            vmin, vmax = float(stack.min()), float(stack.max())
        else:
            vmin, vmax = 0.0, 1.0
        for c_i, c in enumerate(classes):
            ax = axes[r, c_i]
            ax.set_xticks([]), ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c in imgs:
                ax.imshow(imgs[c].numpy(), cmap="gray", vmin=vmin, vmax=vmax)
                if not ok[c]:
                    for s in ax.spines.values():
                        s.set_visible(True), s.set_color("red"), s.set_linewidth(2)
            if c_i == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
            if r == len(rows) - 1:
                ax.set_xlabel(f"Class {c}", fontsize=8)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return fig
