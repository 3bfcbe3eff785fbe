"""Tables the book and the command line print: our numbers beside the paper's."""
from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from .models import DISPLAY_NAMES, PAPER_ACCURACY


def accuracy_table(cards: Iterable[dict]) -> pd.DataFrame:
    """One row per model card: our validation accuracy beside the paper's.

    Columns: ``model``, ``ours (%)``, ``paper (%)``, ``gap (points)`` (ours minus
    paper), ``validation images``, ``data``, ``profile``, ``init``, ``train s``.
    """
    rows = []
    for card in cards:
        name = card["name"]
        ours = 100.0 * card["val_accuracy"]
        rows.append({
            "model": DISPLAY_NAMES.get(name, name),
            "ours (%)": round(ours, 2),
            "paper (%)": PAPER_ACCURACY[name],
            "gap (points)": round(ours - PAPER_ACCURACY[name], 2),
            "validation images": card["n_val"],
            "data": card["data"]["train"]["source"],
            "profile": card["profile"],
            "init": "pretrained" if card["arch"].get("pretrained") else "random",
            "train s": round(card["train_seconds"], 1),
        })
    return pd.DataFrame(rows)
