"""The README's Python example runs as printed."""
from __future__ import annotations

import functools
import re

import nninvert_lib as nni
from conftest import ROOT


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_python_example_runs(fresh_cache, monkeypatch, capsys):
    blocks = python_blocks((ROOT / "README.md").read_text())
    assert len(blocks) == 1 and "nni.back_pass_inv" in blocks[0]
    # the smoke model instead of training the quick one here
    monkeypatch.setattr(nni, "load_model", functools.partial(nni.load_model, profile="smoke",
                                                             progress=False))
    exec(compile(blocks[0], "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"\d+ of 20 samples verified.*", lines[0]), lines
    assert re.fullmatch(r"\d+ of 4 samples verified.*", lines[1]), lines
