"""Published numbers, shipped beside measured ones and never mixed with them.

gapbench/report/published.csv holds only numbers traced to a paper table or an official README,
each with its source (column `source`). `python -m gapbench published [--task T]` lists them; the
leaderboard shows the matching rows under `paper`-profile sections, labelled as published.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

PUBLISHED = Path(__file__).with_name("published.csv")


def load_published(task: str | None = None) -> pd.DataFrame:
    table = pd.read_csv(PUBLISHED, dtype=str, keep_default_na=False)
    return table[table["task"] == task] if task else table


def published_markdown(task: str | None = None) -> str:
    table = load_published(task)
    header = [
        "task",
        "model",
        "dataset",
        "method",
        "variant",
        "distribution",
        "sparsity",
        "train_epochs",
        "metric",
        "value",
        "source",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join(str(r[h]) for h in header) + " |")
    return "\n".join(lines) + "\n"
