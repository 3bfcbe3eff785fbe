"""Interactive explorers for the book: turn a knob, watch an inversion change.

Two explorers, each a small class around standard ipywidgets (no custom
JavaScript, so an executed notebook keeps a working snapshot in its saved
widget state):

* :func:`null_space_explorer`: BackPassInv (:func:`~nninvert_lib.backward.back_pass_inv`)
  for one class. The figure shows the ``n_samples`` inputs it draws from the
  null spaces of the linear layers and, beside them, their softmax outputs
  against the target ``target_distribution(cls, p)``. ``Std`` scales every
  null-space step (larger: the samples spread further apart), ``max κ`` limits
  the condition number of every pseudoinverse (smaller: fewer directions kept,
  a target that may no longer be reachable), ``p`` is the probability asked
  of the class.
* :func:`lm_explorer`: ForwardPassInv (Levenberg–Marquardt on the input,
  :func:`~nninvert_lib.forward.levenberg_marquardt`) for one image. A slider
  steps through the iterations: the image at iteration ``k``, its softmax
  against the target, and ``‖r‖`` per iteration on a log axis with ``k``
  marked.

Every control is an attribute (``.cls``, ``.std``, ``.iteration``, ...) and every
change of a control's ``value`` runs the explorer's ``update``, so a notebook
cell or a test can set ``explorer.std.value = 0.5`` and read
``explorer.result``, ``explorer.figure`` and ``explorer.status.value`` at once.
``explorer.widget`` is the top-level ``VBox``; a cell that ends with the
explorer displays it.

Figures are :class:`matplotlib.figure.Figure` objects made without pyplot:
pyplot's list of open figures never grows, a replaced figure is simply
released, and no backend can show a figure twice. They reach the page as PNG
images in an ``ipywidgets.Output``, whatever matplotlib backend is active.
"""
from __future__ import annotations

import html
import io
import math
from collections.abc import Mapping, Sequence

import ipywidgets as widgets
import numpy as np
import torch
from IPython.display import Image, display
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import nn

from .backward import back_pass_inv
from .errors import InversionError
from .forward import forward_pass_inv
from .models import DISPLAY_NAMES
from .modelcopy import model_dtype_device
from .result import DEFAULT_ATOL, InversionResult, target_distribution, verify

__all__ = ["NullSpaceExplorer", "LMExplorer", "null_space_explorer", "lm_explorer"]

#: resolution of the PNG images shown in the notebook
DPI = 90


# --------------------------------------------------------------------------- helpers


def _show(output: widgets.Output, fig: Figure | None) -> None:
    """Replace what ``output`` shows by ``fig`` rendered as a PNG (nothing for None)."""
    output.clear_output(wait=True)
    if fig is not None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)
        with output:
            display(Image(data=buf.getvalue(), format="png"))


def _as_images(x: torch.Tensor) -> np.ndarray:
    """``(n, 1, H, W)``, ``(n, H, W)`` or ``(n, d)`` -> float64 array ``(n, H, W)``
    (a ``1 × d`` strip for flat inputs; the first channel of multi-channel ones)."""
    x = x.detach().cpu().to(torch.float64)
    if x.ndim == 4:
        x = x[:, 0]
    elif x.ndim != 3:
        x = x.reshape(len(x), 1, -1)
    return x.numpy()


def _color_range(images: np.ndarray) -> tuple[float, float]:
    """Shared ``(vmin, vmax)`` of the finite pixels (``(0, 1)`` when there are none)."""
    finite = images[np.isfinite(images)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def _probability_bars(ax, probs: torch.Tensor, target: torch.Tensor, title: str) -> None:
    """Bars: mean of ``probs`` ``(n, K)`` over the finite rows, whiskers min–max;
    the target ``(K,)`` as red ticks."""
    k = np.arange(target.shape[-1])
    p = probs.detach().cpu().to(torch.float64)
    p = p[torch.isfinite(p).all(dim=1)].numpy()
    if len(p):
        mean = p.mean(axis=0)
        spread = np.stack([mean - p.min(axis=0), p.max(axis=0) - mean])
        ax.bar(k, mean, width=0.7, color="tab:blue", alpha=0.8, label="output",
               yerr=spread if len(p) > 1 else None, ecolor="0.3", capsize=2)
    ax.plot(k, target.detach().cpu().numpy(), "_", color="tab:red", markersize=18,
            markeredgewidth=2.5, label="target")
    ax.set_xticks(k)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("class")
    ax.set_ylabel("probability")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", fontsize=8, frameon=False)


def _error_html(message: str) -> str:
    return f"<span style='color:#b00020'>Cannot invert: {html.escape(message)}</span>"


def _last_linear_width(model: nn.Module, default: int = 10) -> int:
    """K, the output width of the model's last ``nn.Linear`` (``default`` without one)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else default


# --------------------------------------------------------------------------- BackPassInv


class NullSpaceExplorer:
    """BackPassInv samples for one class, redrawn on every change of a control.

    Attributes:
        model, cls, std, max_cond, p: the controls (``Dropdown``, ``Dropdown``,
            ``FloatLogSlider``, ``FloatLogSlider``, ``FloatSlider``); set their
            ``value`` to re-invert.
        status: ``HTML`` line: samples verified and the largest
            ``|probs - target|``, or the error in words.
        output: ``Output`` holding the figure.
        widget: the top-level ``VBox``.
        result: latest :class:`~nninvert_lib.result.InversionResult`
            (``inputs`` ``(n_samples, *input_shape)``, ``probs`` and ``target``
            ``(n_samples, K)``); None after an error.
        error: message of the latest :class:`~nninvert_lib.errors.InversionError`,
            None after a success.
        figure: latest figure (samples as images, probability bars); None after
            an error.
    """

    def __init__(self, models: Mapping[str, nn.Module], classes: Sequence[int] = range(10), *,
                 std: float = 0.1, max_cond: float = 100.0, p: float = 0.9, n_samples: int = 8,
                 seed: int = 0, strategy: str = "anchored"):
        if not isinstance(models, Mapping) or not models:
            raise InversionError("models must be a non-empty mapping name -> model, "
                                 "e.g. {'fcnn2': nni.load_model('fcnn2')[0]}")
        classes = [int(c) for c in classes]
        if not classes:
            raise InversionError("classes must hold at least one class index, e.g. range(10)")
        for name, v in (("std", std), ("max_cond", max_cond)):
            if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
                raise InversionError(f"{name} must be a positive finite number (it sits on "
                                     f"a logarithmic slider), got {v!r}")
        if not (isinstance(p, (int, float)) and 0.0 < p < 1.0):
            raise InversionError(f"p must lie strictly between 0 and 1, got {p!r}")
        self.models = dict(models)
        self.n_samples, self.seed, self.strategy = n_samples, seed, strategy
        self.result: InversionResult | None = None
        self.error: str | None = None
        self.figure: Figure | None = None

        log_std, log_cond = math.log10(std), math.log10(max_cond)
        self.model = widgets.Dropdown(
            options=[(DISPLAY_NAMES.get(k, str(k)), k) for k in self.models],
            description="Model")
        self.cls = widgets.Dropdown(options=classes, value=classes[0], description="Class")
        self.std = widgets.FloatLogSlider(
            value=std, base=10, min=min(-3.0, log_std), max=max(0.5, log_std), step=0.05,
            description="Std", readout_format=".3g", continuous_update=False)
        self.max_cond = widgets.FloatLogSlider(
            value=max_cond, base=10, min=0.0, max=max(4.0, log_cond), step=0.05,
            description="max κ", readout_format=".3g", continuous_update=False)
        self.p = widgets.FloatSlider(
            value=p, min=min(0.05, p), max=max(0.999, p), step=0.001, description="p",
            readout_format=".3f", continuous_update=False)
        self.status = widgets.HTML()
        self.output = widgets.Output()
        self.widget = widgets.VBox([
            widgets.HBox([self.model, self.cls]),
            widgets.HBox([self.std, self.max_cond, self.p]),
            self.status, self.output])
        for control in (self.model, self.cls, self.std, self.max_cond, self.p):
            control.observe(self._on_change, names="value")
        self.update()

    def _on_change(self, change: dict) -> None:
        self.update()

    def update(self) -> InversionResult | None:
        """Invert for the controls' current values, redraw, and return ``.result``.

        An :class:`~nninvert_lib.errors.InversionError` (an unsupported layer, a
        class the model does not have, ...) is caught: it goes to ``.error`` and
        the status line, and ``.result`` and ``.figure`` become None.
        """
        model = self.models[self.model.value]
        try:
            target = target_distribution(int(self.cls.value), float(self.p.value),
                                         num_classes=_last_linear_width(model))
            result = back_pass_inv(model, target, n_samples=self.n_samples,
                                   std=float(self.std.value),
                                   max_cond=float(self.max_cond.value), seed=self.seed,
                                   strategy=self.strategy)
        except InversionError as exc:
            self.result, self.error, self.figure = None, str(exc), None
            self.status.value = _error_html(self.error)
        else:
            self.result, self.error = result, None
            self.figure = self._draw(result)
            self.status.value = self._describe(result)
        _show(self.output, self.figure)
        return self.result

    def _describe(self, result: InversionResult) -> str:
        """Status line: verified count, largest ``|probs - target|``, first failure."""
        n, ok = len(result.converged), int(result.converged.sum())
        atol = result.info.get("atol", DEFAULT_ATOL)
        text = (f"<b>{ok} / {n}</b> samples verified (every |probs − target| ≤ {atol:g}); "
                f"largest |probs − target| = {float(result.max_error.max()):.2e}")
        if ok < n:
            i = int(torch.nonzero(~result.converged)[0])
            reasons = result.info.get("reasons") or [""] * n
            text += f"<br>sample {i}: {html.escape(str(reasons[i]) or 'not verified')}"
        return text

    def _draw(self, result: InversionResult) -> Figure:
        """Samples as images (shared grey scale) beside their probability bars."""
        images = _as_images(result.inputs)
        vmin, vmax = _color_range(images)
        n = len(images)
        ncols = min(n, 4)
        nrows = math.ceil(n / ncols)
        fig = Figure(figsize=(4.5 + 1.3 * ncols, max(3.0, 1.5 * nrows + 0.6)),
                     layout="constrained")
        left, right = fig.subfigures(1, 2, width_ratios=[1.3 * ncols, 4.5])
        cls = int(self.cls.value)
        for i, ax in enumerate(left.subplots(nrows, ncols, squeeze=False).flat):
            ax.set_axis_off()
            if i < n:
                ax.imshow(images[i], cmap="gray", vmin=vmin, vmax=vmax)
                mark = "ok" if bool(result.converged[i]) else "missed"
                ax.set_title(f"p{cls}={float(result.probs[i, cls]):.3f} {mark}", fontsize=8)
        left.suptitle(f"{n} BackPassInv samples, std={self.std.value:.3g}, "
                      f"max κ={self.max_cond.value:.3g}\ngrey scale [{vmin:.2f}, {vmax:.2f}]",
                      fontsize=9)
        _probability_bars(right.subplots(), result.probs, result.target[0],
                          f"softmax of the samples vs target (class {cls}, p={self.p.value:.3f})")
        return fig

    def _ipython_display_(self) -> None:
        display(self.widget)


def null_space_explorer(models: Mapping[str, nn.Module], classes: Sequence[int] = range(10), *,
                        std: float = 0.1, max_cond: float = 100.0, p: float = 0.9,
                        n_samples: int = 8, seed: int = 0,
                        strategy: str = "anchored") -> NullSpaceExplorer:
    """Widgets to explore BackPassInv: model, class, ``std``, ``max_cond`` and ``p``.

    On every change it calls ``back_pass_inv(model, target_distribution(cls, p),
    n_samples=n_samples, std=std, max_cond=max_cond, seed=seed, strategy=strategy)``
    and redraws the samples and their softmax outputs against the target. The
    fixed ``seed`` means that only the control you move changes the picture
    (e.g. the same noise, scaled by ``std``).

    Args:
        models: name -> model (FCNNs: ``nn.Sequential`` of Flatten/Linear and
            invertible activations); the dropdown shows ``nni.DISPLAY_NAMES[name]``
            where there is one, else the name.
        classes: the classes offered; the first is selected.
        std, max_cond, p: initial values of the sliders (``std`` and ``max_cond``
            on logarithmic sliders, so both must be positive).
        n_samples: inputs per inversion.
        seed: seed of every inversion.
        strategy: ``"anchored"`` or ``"paper"`` (see ``back_pass_inv``).

    Returns:
        :class:`NullSpaceExplorer`; a notebook cell ending with it displays it.

    Raises:
        InversionError: no models, no classes, or initial values out of range.
            Errors of later inversions are shown in the status line instead.
    """
    return NullSpaceExplorer(models, classes, std=std, max_cond=max_cond, p=p,
                             n_samples=n_samples, seed=seed, strategy=strategy)


# --------------------------------------------------------------------------- Levenberg–Marquardt


class LMExplorer:
    """One ForwardPassInv run from a random start, stepped through iteration by iteration.

    The iterates come from the solver itself: ``levenberg_marquardt`` records
    the input after every step when asked (``record_inputs=True``), so what is
    shown is exactly the trajectory of one run, restarts and chord steps
    included, at the cost of one run. (Re-running with ``max_iter = k`` for
    every ``k`` would cost ``O(N²)`` steps and would not reproduce a run with
    ``chord`` steps or restarts, which stop differently at the budget.)

    Attributes:
        iteration: ``IntSlider`` over ``0..N``, N the steps the run took;
            ``play`` is a ``Play`` linked to it in the browser.
        result: the run's :class:`~nninvert_lib.result.InversionResult` (one sample).
        target: float64 ``(K,)``.
        iterates: float64 ``(N+1, *input_shape)``; ``iterates[0]`` is the start,
            ``iterates[N]`` the run's answer (``result.inputs[0]`` before the
            cast to the model's dtype).
        probs: float64 ``(N+1, K)``, ``softmax(model(iterates[k]))``.
        verified: bool ``(N+1,)``, ``|probs[k] - target| <= atol`` everywhere.
        residual_norms: float64 ``(N+1,)``, the run's ``‖r‖`` after step ``k``
            (``info["residual_history"]``).
        status, output, widget, figure: as in :class:`NullSpaceExplorer`.
    """

    def __init__(self, model: nn.Module, target: int | torch.Tensor | Sequence[float], *,
                 seed: int = 0, max_iter: int = 30, input_shape: tuple[int, ...] = (1, 28, 28),
                 **lm_options):
        clash = sorted({"history", "record_inputs", "n_samples"} & set(lm_options))
        if clash:
            raise InversionError(f"lm_explorer sets {clash} itself; leave them out")
        if isinstance(target, int) and not isinstance(target, bool):
            target = target_distribution(target, 0.9, num_classes=self._width(model, input_shape))
        # float64 unless asked otherwise: the iterates shown then reproduce the
        # recorded residuals to rounding error when re-evaluated
        options = {"restarts": 0, "dtype": torch.float64, **lm_options,
                   "record_inputs": True, "history": True}
        self.result = forward_pass_inv(model, target, n_samples=1, max_iter=max_iter, seed=seed,
                                       input_shape=tuple(input_shape), **options)
        info = self.result.info
        n = int(info["iterations"][0])
        self.atol: float = info["atol"]
        self.target = self.result.target[0]
        self.iterates = info["input_history"][0, : n + 1]
        self.residual_norms = info["residual_history"][0, : n + 1]
        device = self.result.inputs.device
        probs, ok = verify(model, self.iterates.to(device), self.target.expand(n + 1, -1),
                           self.atol)
        self.probs, self.verified = probs.cpu(), ok.cpu()
        self._images = _as_images(self.iterates)
        self._vrange = _color_range(self._images)
        self.figure: Figure | None = None

        self.iteration = widgets.IntSlider(value=n, min=0, max=n, description="Iteration")
        self.play = widgets.Play(value=n, min=0, max=n, interval=500, description="Play")
        widgets.jslink((self.play, "value"), (self.iteration, "value"))
        self.status = widgets.HTML()
        self.output = widgets.Output()
        self.widget = widgets.VBox([widgets.HBox([self.play, self.iteration]),
                                    self.status, self.output])
        self.iteration.observe(self._on_change, names="value")
        self.update()

    @staticmethod
    def _width(model: nn.Module, input_shape: Sequence[int]) -> int:
        """K, from one forward pass on zeros."""
        dtype, device = model_dtype_device(model)
        with torch.no_grad():
            return int(model(torch.zeros((1, *input_shape), dtype=dtype, device=device)).shape[-1])

    def _on_change(self, change: dict) -> None:
        self.update()

    def update(self) -> None:
        """Redraw the figure and status for ``iteration.value``."""
        k = int(self.iteration.value)
        self.figure = self._draw(k)
        self.status.value = self._describe(k)
        _show(self.output, self.figure)

    def _describe(self, k: int) -> str:
        """Status line: iteration, ‖r‖, largest |softmax − p|, verified or not."""
        n = len(self.iterates) - 1
        err = float((self.probs[k] - self.target).abs().max())
        verdict = "verified" if bool(self.verified[k]) else "not verified"
        text = (f"iteration <b>{k} / {n}</b>: ‖r‖ = {float(self.residual_norms[k]):.3e}, "
                f"largest |softmax − p| = {err:.2e}, <b>{verdict}</b> (atol {self.atol:g})")
        if k == n:
            text += f"; the run: {html.escape(self.result.info['reasons'][0])}"
        return text

    def _draw(self, k: int) -> Figure:
        """Image at iteration ``k``, its probabilities, and ‖r‖ per iteration."""
        fig = Figure(figsize=(11.0, 3.2), layout="constrained")
        ax_img, ax_bar, ax_res = fig.subplots(1, 3, width_ratios=[1.0, 1.4, 1.4])
        vmin, vmax = self._vrange
        ax_img.imshow(self._images[k], cmap="gray", vmin=vmin, vmax=vmax)
        ax_img.set_axis_off()
        ax_img.set_title(f"input at iteration {k}\ngrey scale [{vmin:.2f}, {vmax:.2f}]",
                         fontsize=10)
        _probability_bars(ax_bar, self.probs[k: k + 1], self.target,
                          f"softmax at iteration {k} vs target")
        steps = np.arange(len(self.residual_norms))
        ax_res.semilogy(steps, self.residual_norms.numpy(), "o-", color="tab:blue", ms=4)
        ax_res.semilogy([k], [float(self.residual_norms[k])], "o", color="tab:red", ms=10,
                        label=f"iteration {k}")
        ax_res.axvline(k, color="tab:red", lw=0.8, alpha=0.5)
        ax_res.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_res.set_xlabel("iteration")
        ax_res.set_ylabel("‖r‖")
        ax_res.set_title("residual norm per iteration", fontsize=10)
        ax_res.legend(fontsize=8, frameon=False)
        return fig

    def _ipython_display_(self) -> None:
        display(self.widget)


def lm_explorer(model: nn.Module, target: int | torch.Tensor | Sequence[float], *, seed: int = 0,
                max_iter: int = 30, input_shape: tuple[int, ...] = (1, 28, 28),
                **lm_options) -> LMExplorer:
    """Step through the Levenberg–Marquardt iterations of ForwardPassInv for one image.

    Runs ``forward_pass_inv(model, target, n_samples=1, max_iter=max_iter,
    seed=seed, input_shape=input_shape, restarts=0, dtype=torch.float64,
    record_inputs=True, **lm_options)`` once (the same start as ``forward_pass_inv`` with this seed;
    no restarts unless ``lm_options`` asks for them) and shows iteration ``k``
    of that run for the slider's ``k``.

    Args:
        model: any differentiable model returning logits.
        target: a class index (then ``target_distribution(target, 0.9)``) or a
            probability vector ``(K,)``.
        seed: seed of the random start.
        max_iter: LM steps at most.
        input_shape: shape of one input.
        **lm_options: passed on (``residual``, ``max_step``, ``bounds``,
            ``chord``, ``restarts``, ...); not ``history``, ``record_inputs`` or
            ``n_samples``, which the explorer sets.

    Returns:
        :class:`LMExplorer`, its slider at the last iteration.

    Raises:
        InversionError: invalid target or options (as ``forward_pass_inv``).
    """
    return LMExplorer(model, target, seed=seed, max_iter=max_iter, input_shape=input_shape,
                      **lm_options)
