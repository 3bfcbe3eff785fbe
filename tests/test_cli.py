"""The ``nninvert`` command line: every command's --help, and real smoke runs."""
from __future__ import annotations

import subprocess
import sys

import pytest

from nninvert_lib import cli


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["models", "--help"],
                                  ["data", "--help"], ["figure3", "--help"],
                                  ["frontier", "--help"]])
def test_every_command_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: nninvert" in out


def test_version_names_the_package_version(capsys):
    import nninvert_lib

    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"nninvert {nninvert_lib.__version__}"


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "nninvert_lib.cli", "train", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--profile" in out and "--device" in out


def test_train_smoke_then_list_models(fresh_cache, capsys):
    assert cli.main(["train", "fcnn1", "--profile", "smoke", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "FCNN-1" in out and "smoke" in out and "paper 91.5%" in out
    assert cli.main(["models", "--profile", "smoke"]) == 0
    assert "FCNN-1" in capsys.readouterr().out
    assert cli.main(["models", "--json"]) == 0
    assert '"val_accuracy"' in capsys.readouterr().out


def test_train_goes_on_past_a_model_memory_cannot_hold(fresh_cache, capsys, monkeypatch):
    """With a limit that fits FCNN-1's training but not DINOv3-Base's: FCNN-1 is trained,
    DINOv3-Base is refused with the reason, and the exit status says not all were."""
    from nninvert_lib import zoo

    # the parameters' share of the bound only, so that the test does not hang on this
    # process's memory: 16 bytes per parameter (weights, gradients, AdamW's two states)
    monkeypatch.setattr(zoo, "memory_needed",
                        lambda model, config: 16 * sum(p.numel() for p in model.parameters()))
    monkeypatch.setenv("NNINVERT_MEMORY_LIMIT", "1G")
    assert cli.main(["train", "dinov3_base", "fcnn1", "--profile", "smoke",
                     "--no-progress"]) == 1
    out, err = capsys.readouterr()
    assert "FCNN-1" in out and "DINOv3" not in out
    assert "dinov3_base: training dinov3_base ('smoke' profile) needs at least" in err
    assert "not trained (memory): dinov3_base" in err


@pytest.mark.slow
def test_train_in_parallel_processes_caches_every_model(fresh_cache, capsys):
    assert cli.main(["train", "fcnn1", "fcnn2", "--profile", "smoke", "--jobs", "2"]) == 0
    assert "2 at a time" in capsys.readouterr().out
    assert cli.main(["models", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "FCNN-1" in out and "FCNN-2" in out


def test_empty_cache_says_how_to_train(fresh_cache, capsys):
    assert cli.main(["models"]) == 0
    assert "nninvert train all" in capsys.readouterr().out


def test_unknown_model_is_refused(capsys):
    assert cli.main(["train", "lenet", "--profile", "smoke"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nninvert train: error: unknown model")


def test_cuda_without_gpu_is_refused(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["train", "fcnn1", "--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_data_command_reports_source(capsys):
    assert cli.main(["data", "--no-download"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "val" in out and "source=" in out


def test_invert_help_lists_methods(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["invert", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "back-paper" in out and "forward" in out and "--classes" in out
    assert "generalized" in out and "--n-verified" in out


@pytest.mark.parametrize("method", ["back", "forward"])
def test_invert_smoke_saves_verified_inputs(method, fresh_cache, tmp_path, capsys):
    import torch

    out, png = tmp_path / "inv.pt", tmp_path / "new" / "folder" / "inv.png"   # made for it
    argv = ["invert", "fcnn1", "--profile", "smoke", "--method", method, "--classes", "1", "7",
            "--n", "3", "--p", "0.5", "--out", str(out), "--png", str(png), "--no-progress"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "class 1:" in text and "class 7:" in text and "verified" in text
    saved = torch.load(out, weights_only=True)
    assert saved["inputs"].shape == (6, 1, 28, 28) and saved["classes"].tolist() == [1] * 3 + [7] * 3
    assert torch.allclose(saved["probs"].sum(dim=1), torch.ones(6, dtype=saved["probs"].dtype))
    # the flags are honest: recompute them from the saved probabilities
    ok = ((saved["probs"] - saved["target"]).abs() <= 1e-3).all(dim=1)
    assert torch.equal(ok, saved["converged"])
    assert len(saved["reasons"]) == 6                   # one per sample
    assert all(r not in ("", "converged") for r, c in zip(saved["reasons"], ok.tolist()) if not c)
    assert png.stat().st_size > 1000


@pytest.mark.parametrize("spec, label", [
    (["3:0.45", "8:0.45"], "target 3:0.45 8:0.45 (0.0125 on the others): "),
    (["0.05,0.05,0.05,0.3,0.05,0.05,0.05,0.05,0.3,0.05"],
     "target 3:0.3 8:0.3 (0.05 on the others): "),
])
def test_invert_any_prescribed_distribution(spec, label, fresh_cache, tmp_path, capsys):
    import torch

    out = tmp_path / "inv.pt"
    argv = ["invert", "fcnn1", "--profile", "smoke", "--method", "forward", "--target", *spec,
            "--n", "3", "--out", str(out), "--png", str(tmp_path / "inv.png"), "--no-progress"]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.startswith("target "))
    assert row.startswith(label) and row.endswith("/3 verified (atol 0.001)")
    saved = torch.load(out, weights_only=True)
    assert saved["classes"] is None and saved["inputs"].shape == (3, 1, 28, 28)
    t = saved["target"]
    assert t.shape == (3, 10) and torch.allclose(t[:, 3], t[:, 8]) and t[0].argsort()[-2:].sort() \
        .values.tolist() == [3, 8]
    ok = ((saved["probs"] - t).abs() <= 1e-3).all(dim=1)
    assert torch.equal(ok, saved["converged"]) and int(row.split(": ")[1].split("/")[0]) == ok.sum()


def test_invert_says_why_the_unverified_samples_failed(fresh_cache, capsys):
    # one LM step from random starts to P = 0.9: most samples stop short
    argv = ["invert", "fcnn1", "--profile", "smoke", "--method", "forward", "--classes", "0",
            "5", "--n", "4", "--max-iter", "1", "--no-progress"]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    verified = sum(int(line.split(": ")[1].split("/")[0]) for line in lines
                   if line.startswith("class "))
    failed = [line for line in lines if " not verified" in line]
    assert sum(int(line.split()[0]) for line in failed) == 8 - verified
    assert verified < 8 and all("max_iter=1 reached" in line or "stalled" in line
                                or "other reason" in line for line in failed)


def test_invert_n_verified_collects_and_reports_rounds(fresh_cache, tmp_path, capsys):
    import torch

    out = tmp_path / "inv.pt"
    argv = ["invert", "fcnn1", "--profile", "smoke", "--method", "forward", "--classes", "2",
            "--n-verified", "2", "--p", "0.5", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "round(s)" in text and "class 2: 2/2 verified" in text
    saved = torch.load(out, weights_only=True)
    assert saved["inputs"].shape == (2, 1, 28, 28) and saved["converged"].all()


def test_invert_counts_the_requested_class_even_when_it_is_not_the_likeliest(fresh_cache,
                                                                             capsys):
    # P = 0.05 < 1/10: every other class is likelier than the requested one
    argv = ["invert", "fcnn1", "--profile", "smoke", "--classes", "3", "8", "--n", "2",
            "--p", "0.05", "--no-progress"]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith("class ")] == \
        ["class 3", "class 8"]
    assert all("/2 verified" in line for line in lines if line.startswith("class "))


@pytest.mark.parametrize("argv, message", [
    (["--classes", "12"], "classes must lie in 0..9"),
    (["--p", "1.2"], "p must be a number strictly between 0 and 1"),
    (["--n", "0"], "n_samples must be an int >= 1"),
    (["--max-cond", "0.5", "--classes", "1", "--n", "1"], "max_cond must be >= 1"),
    (["--atol", "0"], "--atol is the tolerance on each probability and must lie in (0, 1)"),
    (["--atol", "nan"], "must lie in (0, 1), got nan"),
    (["--max-iter", "0", "--method", "forward"], "--max-iter must be >= 1"),
    (["--max-iter", "5", "--method", "back-paper"], "runs no LM"),
    (["--broyden"], "--broyden updates LM's Jacobian between chord steps"),
    (["--jacobian-dtype", "bfloat16"], "--jacobian-dtype sets the precision of LM's Jacobians"),
    (["--target", "3:0.6", "8:0.45"], "sum to 1.05, leaving nothing for the 8 classes"),
    (["--target", "3=0.4"], "--target takes CLASS:P items"),
    (["--target", "0.5,0.5"], "got 2 numbers in '0.5,0.5'"),
    (["--target", "3:0.4", "3:0.3"], "--target names class 3 twice"),
    (["--target", "3:0.4", "--p", "0.5"], "give it without --classes and --p"),
    (["--target", "3:0.4", "--classes", "3"], "give it without --classes and --p"),
])
def test_invert_reports_invalid_settings_without_a_traceback(argv, message, fresh_cache,
                                                             capsys):
    assert cli.main(["invert", "fcnn1", "--profile", "smoke", "--no-progress", *argv]) == 2
    # the error is the last line; only warnings (the MNIST fallback, where the full data
    # is missing) may come before it
    *before, last = capsys.readouterr().err.splitlines()
    assert last.startswith("nninvert invert: error:") and message in last
    assert all(line.startswith("warning: ") for line in before), before


@pytest.mark.parametrize("method, module, name, key", [
    ("forward", "forward", "forward_pass_inv", "max_iter"),
    ("back", "backward", "back_pass_inv", "lm_max_iter"),
])
def test_invert_passes_atol_and_max_iter_to_the_method(method, module, name, key, fresh_cache,
                                                      tmp_path, monkeypatch, capsys):
    import importlib

    import torch

    mod = importlib.import_module(f"nninvert_lib.{module}")
    real, seen = getattr(mod, name), {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(mod, name, spy)
    out = tmp_path / "inv.pt"
    argv = ["invert", "fcnn1", "--profile", "smoke", "--method", method, "--classes", "4",
            "--n", "3", "--p", "0.5", "--atol", "0.2", "--max-iter", "2", "--out", str(out),
            "--no-progress"]
    assert cli.main(argv) == 0
    assert seen["atol"] == 0.2 and seen[key] == 2
    assert seen["progress"] is False                      # --no-progress
    assert "broyden" not in seen and "jacobian_dtype" not in seen
    assert "verified (atol 0.2)" in capsys.readouterr().out
    saved = torch.load(out, weights_only=True)
    assert saved["atol"] == 0.2
    ok = ((saved["probs"] - saved["target"]).abs() <= 0.2).all(dim=1)
    assert torch.equal(ok, saved["converged"])


@pytest.mark.parametrize("flags, key, value", [
    (["--broyden"], "broyden", True),
    (["--jacobian-dtype", "bfloat16"], "jacobian_dtype", "bfloat16"),
])
def test_invert_lm_flags_reach_the_forward_method(flags, key, value, fresh_cache, monkeypatch,
                                                  capsys):
    import torch

    from nninvert_lib import forward

    real, seen = forward.forward_pass_inv, {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(forward, "forward_pass_inv", spy)
    argv = ["invert", "fcnn1", "--profile", "smoke", "--method", "forward", "--classes", "2",
            "--n", "2", "--p", "0.5", *flags, "--no-progress"]
    assert cli.main(argv) == 0
    assert seen[key] is (getattr(torch, value) if isinstance(value, str) else value)
    assert "verified" in capsys.readouterr().out


def test_invert_generalized_refuses_an_fcnn(capsys):
    assert cli.main(["invert", "fcnn1", "--profile", "smoke", "--method", "generalized",
                     "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nninvert invert: error:") and "ViT" in err


@pytest.mark.parametrize("command", [["invert", "fcnn1"], ["figure3"]])
@pytest.mark.parametrize("png", ["grid.txt", "grid", "out.d/grid"])
def test_png_that_names_no_image_format_is_refused_before_any_work(command, png, tmp_path,
                                                                   monkeypatch, capsys):
    """Checked before a model is loaded or a method runs, not after minutes of work."""
    from nninvert_lib import comparison, zoo

    def no_work(*args, **kwargs):
        raise AssertionError("the command started working")

    monkeypatch.setattr(zoo, "load_model", no_work)
    monkeypatch.setattr(comparison, "figure3", no_work)
    assert cli.main([*command, "--profile", "smoke", "--png", str(tmp_path / png)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nninvert {command[0]}: error: cannot save an image as")
    assert ".png" in err and "svg" in err
    assert not list(tmp_path.iterdir())


def test_invert_warm_start_runs_on_a_vit_and_is_refused_elsewhere(fresh_cache, capsys):
    argv = ["invert", "vit_tiny", "--profile", "smoke", "--method", "forward", "--classes", "4",
            "--n", "1", "--p", "0.3", "--warm-start", "3", "--no-progress"]
    assert cli.main(argv) == 0
    assert "class 4:" in capsys.readouterr().out
    for bad in (["fcnn1", "--method", "forward"], ["vit_tiny", "--method", "back"]):
        assert cli.main(["invert", *bad, "--profile", "smoke", "--warm-start", "3"]) == 2
        assert "--warm-start" in capsys.readouterr().err


def test_frontier_smoke_prints_each_class_and_saves_json(fresh_cache, tmp_path, capsys):
    import json

    out = tmp_path / "peaks.json"
    argv = ["frontier", "fcnn1", "--profile", "smoke", "--classes", "3", "8", "--n", "2",
            "--p-start", "0.5", "--step", "0.2", "--min-step", "0.1", "--p-max", "0.9",
            "--json", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "highest verified p" in text
    saved = json.loads(out.read_text())
    assert [r["class"] for r in saved["rows"]] == [3, 8]
    # a shallow net is nearly linear: the continuation reaches p_max for both classes
    assert all(r["highest"] == 0.9 and r["verified"] >= 1 for r in saved["rows"])


def test_frontier_shows_how_close_a_stalled_class_came(fresh_cache, monkeypatch, capsys):
    import math

    import torch

    from nninvert_lib import frontier

    def stalled(model, classes, **kwargs):
        return frontier.PeakFrontier(
            classes=[3, 8], highest=torch.tensor([0.95, math.nan], dtype=torch.float64),
            inputs=[torch.zeros(2, 1, 28, 28), torch.zeros(0, 1, 28, 28)],
            stalled_at=torch.tensor([0.955, math.nan], dtype=torch.float64),
            stall_error=torch.tensor([0.0042, math.nan], dtype=torch.float64),
            info={"seconds": 1.0, "atol": 1e-3})

    monkeypatch.setattr(frontier, "peak_frontier", stalled)
    assert cli.main(["frontier", "fcnn1", "--profile", "smoke", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split() == ["3", "0.950", "0.955", "4.20e-03", "2"]
    assert lines[3].split() == ["8", "-", "-", "-", "0"]
    assert lines[4].startswith("closest miss: at the P where a class stalled")
    assert lines[4].endswith("(verified needs at most 0.001)")


def test_frontier_refuses_bad_settings(capsys):
    assert cli.main(["frontier", "fcnn1", "--warm-start", "5"]) == 2
    assert "ViT" in capsys.readouterr().err
    assert cli.main(["frontier", "lenet"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_frontier_names_a_bad_range(fresh_cache, capsys):
    assert cli.main(["frontier", "fcnn1", "--profile", "smoke", "--p-start", "0.9",
                     "--p-max", "0.5", "--no-progress"]) == 2
    assert "p_max" in capsys.readouterr().err


def test_invert_unknown_model_is_refused(capsys):
    assert cli.main(["invert", "lenet"]) == 2
    assert "unknown model" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["train", "fcnn1"], ["invert", "fcnn1"],
                                     ["frontier", "fcnn1"], ["figure3"]])
def test_threads_sets_torchs_thread_count_before_the_command_runs(command, monkeypatch):
    import torch

    calls, seen = [], []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    # the parser looks the command up when main builds it: a stand-in that records
    monkeypatch.setattr(cli, f"_cmd_{command[0]}", lambda args: seen.append(list(calls)) or 0)
    assert cli.main([*command, "--threads", "1"]) == 0
    assert seen == [[1]]
    assert cli.main(command) == 0       # 0, the default: torch's own choice stands
    assert calls == [1]


def test_negative_threads_are_refused(capsys):
    assert cli.main(["invert", "fcnn1", "--threads", "-1"]) == 2
    assert "--threads must be 0" in capsys.readouterr().err


@pytest.mark.slow
def test_figure3_smoke_prints_claims_and_saves_table_and_grid(tmp_path, capsys):
    csv, png = tmp_path / "fig3.csv", tmp_path / "fig3.png"
    assert cli.main(["figure3", "--profile", "smoke", "--no-progress", "--csv", str(csv),
                     "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n- ") == 3 and "randomness grows with depth" in out
    import pandas as pd

    table = pd.read_csv(csv)
    assert {"model", "method", "class", "sample", "nearest_distance"} <= set(table.columns)
    assert png.stat().st_size > 10_000


def test_figure3_prints_skipped_models_and_undecided_claims(monkeypatch, capsys):
    """A model left out (no memory to train it) is named, and a claim that cannot be
    told is printed as such (``iterrows`` turns its ``None`` into NaN)."""
    import pandas as pd
    import torch

    from nninvert_lib import comparison

    columns = ["model", "method", "class", "sample", "image", "verified", "nearest_distance",
               "random_likeness"]
    meta = {"from_cache": False, "data_source": "mnist",
            "skipped": {"dinov3_base": "training dinov3_base needs at least 2.7 GiB"}}
    empty = comparison.Figure3(pd.DataFrame(columns=columns), torch.zeros(0, 1, 28, 28), meta)
    monkeypatch.setattr(comparison.Figure3, "summary", lambda self, verified_only=True:
                        pd.DataFrame({"model": [], "method": []}))
    monkeypatch.setattr(comparison, "figure3", lambda *a, **k: empty)
    assert cli.main(["figure3", "--profile", "smoke", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "dinov3_base left out: training dinov3_base needs at least 2.7 GiB" in out
    assert out.count(": cannot be told") == 3


def test_verify_checks_saved_inputs_again_and_notices_tampering(fresh_cache, tmp_path, capsys):
    import torch

    from nninvert_lib import zoo

    out = tmp_path / "inv.pt"
    assert cli.main(["invert", "fcnn1", "--profile", "smoke", "--method", "forward", "--classes",
                     "2", "5", "--n", "3", "--p", "0.5", "--out", str(out), "--no-progress"]) == 0
    saved = torch.load(out, weights_only=True)
    model, _ = zoo.load_model("fcnn1", "smoke", train=False)
    assert saved["weights"] == zoo.weights_fingerprint(model)
    capsys.readouterr()
    status = cli.main(["verify", str(out)])
    text = capsys.readouterr().out
    n_ok = int(saved["converged"].sum())
    assert status == (0 if n_ok == 6 else 1)
    assert f"6 inputs from {out}: {n_ok}/6 verified (atol 0.001" in text
    assert "class 2: " in text and "class 5: " in text
    assert f"the file's own flags: {n_ok} verified, the same" in text

    # move every verified input: the check must now fail them, and say so
    saved["inputs"] = saved["inputs"] + 0.5
    torch.save(saved, out)
    assert cli.main(["verify", str(out)]) == 1
    text = capsys.readouterr().out
    assert "0/6 verified" in text and f"{n_ok} disagree with this check" in text

    # inputs made for other weights: checked, with a warning
    saved["weights"] = "0" * 16
    torch.save(saved, out)
    cli.main(["verify", str(out)])
    assert "has other weights than the model these inputs were made for" in \
        capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    (None, "no file"),
    (b"not a torch file", "torch.load cannot read it"),
    ({"inputs": 1}, "it lacks target, model, profile"),
])
def test_verify_refuses_what_invert_did_not_write(content, message, tmp_path, capsys):
    import torch

    path = tmp_path / "x.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    assert cli.main(["verify", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nninvert verify: error:") and message in err


def test_verify_needs_the_cached_model(fresh_cache, tmp_path, capsys):
    import torch

    path = tmp_path / "x.pt"
    torch.save({"inputs": torch.zeros(1, 1, 28, 28), "target": torch.full((10,), 0.1),
                "model": "fcnn2", "profile": "smoke"}, path)
    assert cli.main(["verify", str(path)]) == 2
    err = capsys.readouterr().err
    assert "nninvert train fcnn2 --profile smoke" in err and "made for" in err


def test_warnings_are_one_line_each_as_they_happen(fresh_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("NNINVERT_DATA", raising=False)
    assert cli.main(["data", "--no-download", "--data-root", str(tmp_path)]) == 0
    err = capsys.readouterr().err.splitlines()
    # the fallback is warned of once (the second split records it in notes only)
    assert len(err) == 1 and err[0].startswith("warning: Full MNIST is not available"), err
    assert "data.py" not in err[0]
