"""The budget axis: how each method's metric moves when the training budget grows (RigL's 1x/2x/5x
training multipliers), made from records alone.

A table per task, profile and sparsity where some sparse method ran at two or more budgets: one
row per method, one column per budget multiple, each cell the final-epoch test metric over seeds
(mean ± half the 95% t-interval, n). Only complete, epochs-matched, unstructured runs count:
sparse methods at uniform distribution, dense at the same task, profile and budget. Runs that
differ in anything but the seed and the budget (precision, parameters, ...) are separate rows,
never pooled; a method's epoch-counted parameters (GaP's T and F), which a multiplier stretches,
are compared at 1x. Written as `<out>/budget.md` (here) and
`<out>/plots/<task>-<profile>-budget.png` (plots.py). The leaderboard and the plots import this
module, so it imports neither.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from gapbench.report.atomic import atomic_write_text
from gapbench.report.intervals import mean_std_half, metric_digits
from gapbench.report.records import RunRecord, flatten_identity

BUDGET_FILE = "budget.md"
STATS_COLUMNS = [
    "task",
    "profile",
    "sparsity",
    "label",
    "method",
    "multiplier",
    "epochs",
    "metric",
    "mean",
    "half",
    "n",
]
HEADER = (
    "Final-epoch test metric over seeds at each training budget: mean ± half the 95% "
    "t-interval (n seeds); a lone seed shows as mean (1). Budget = multiple of the profile's "
    "epochs; each method runs its own schedule stretched in proportion. Complete, "
    "epochs-matched, unstructured runs only: sparse methods at uniform distribution, dense at the "
    "same task, profile and budget. rank = place among the sparse methods at each budget "
    "(1 = best mean); `-` = not run at that budget."
)
# Identity fields that are the table's axes or tell seeds apart; every other field (parameters,
# precision, batch size, dense layers, data, ...) sets a configuration apart, as on the board.
_AXES = {
    "task",
    "profile",
    "budget_mode",
    "multiplier",
    "epochs",
    "match_ref",
    "match_epochs",
    "method",
    "distribution",
    "sparsity",
    "pattern",
    "seed",
    "schema",
}

TableKey = tuple[str, str, float]


def _fmt(value: float, places: int) -> str:
    return f"{value:.{places}f}"


def _epoch_fields(method: str) -> tuple[str, ...]:
    """The method's parameters counted in epochs: a multiplier stretches them with the run."""
    from gapbench.errors import UserError
    from gapbench.registry import get_method_class

    try:
        return tuple(get_method_class(method).Params.EPOCH_FIELDS)
    except UserError:  # a plug-in method that is not installed here: compare its params as is
        return ()


def _configuration(r: RunRecord) -> dict[str, Any]:
    """The run's identity but its axes, as it would read at 1x (epoch-counted parameters and the
    epochs divided by the multiplier), so one configuration's budgets line up in one row."""
    out = {k: v for k, v in flatten_identity(r.identity).items() if k.split(".")[0] not in _AXES}
    for name in _epoch_fields(r.method):
        value = out.get(f"params.{name}")
        if isinstance(value, int | float) and value > 0:
            out[f"params.{name}"] = round(value / r.multiplier)
    out["epochs at 1x"] = round(r.epochs / r.multiplier)
    return out


def _counts(r: RunRecord) -> bool:
    """Complete, epochs-matched, unstructured; sparse at uniform distribution, or dense."""
    return (
        r.status == "complete"
        and r.budget_mode == "epochs"
        and r.identity.get("pattern", "unstructured") == "unstructured"
        and (r.method == "dense" or r.distribution == "uniform")
        and r.metric in r.metrics
    )


def _frame(records: list[RunRecord]) -> pd.DataFrame:
    rows = []
    for r in sorted(filter(_counts, records), key=lambda r: r.run_id):
        config = _configuration(r)
        rows.append(
            {
                "task": r.task,
                "profile": r.profile,
                "method": r.method,
                "sparsity": float(r.sparsity),
                "multiplier": float(r.multiplier),
                "epochs": int(r.epochs),
                "metric": r.metric,
                "value": float(r.metrics[r.metric]),
                "series_key": json.dumps(config, sort_keys=True, default=str),
                "_series": config,
            }
        )
    return pd.DataFrame(rows)


def _labels(frame: pd.DataFrame) -> pd.Series:
    """`method`, or `method [key=value, ...]` naming what sets apart a method's configurations."""
    labels = pd.Series(frame["method"], index=frame.index, dtype=object)
    for method, g in frame.groupby("method", sort=True):
        configs = dict(zip(g["series_key"], g["_series"]))
        if len(configs) < 2:
            continue
        keys = sorted({k for c in configs.values() for k in c})
        differing = [
            k
            for k in keys
            if len({json.dumps(c.get(k), default=str) for c in configs.values()}) > 1
        ]
        for index, skey in zip(g.index, g["series_key"]):
            c = configs[skey]
            parts = ", ".join(f"{k.removeprefix('params.')}={c.get(k)}" for k in differing)
            labels[index] = f"{method} [{parts}]"
    return labels


def budget_stats(records: list[RunRecord]) -> pd.DataFrame:
    """One row per table, method configuration and budget multiple: mean, half-width of the 95%
    t-interval (nan below two seeds) and n. The numbers behind `budget_table` and the plot."""
    df = _frame(records)
    rows: list[dict[str, Any]] = []
    if df.empty:
        return pd.DataFrame(rows, columns=STATS_COLUMNS)
    for (task, profile), tp in df.groupby(["task", "profile"], sort=True):
        dense, sparse = tp[tp["method"] == "dense"], tp[tp["method"] != "dense"]
        for sparsity, s in sparse.groupby("sparsity", sort=True):
            if s.groupby(["method", "series_key"])["multiplier"].nunique().max() < 2:
                continue  # no sparse configuration ran at two budgets: no axis to draw
            budgets = sorted(s["multiplier"].unique())
            table = pd.concat([dense[dense["multiplier"].isin(budgets)], s])
            table["label"] = _labels(table)
            for (label, mult), g in table.groupby(["label", "multiplier"], sort=True):
                mean, _, half = mean_std_half(sorted(g["value"]))
                rows.append(
                    {
                        "task": task,
                        "profile": profile,
                        "sparsity": float(sparsity),
                        "label": label,
                        "method": g["method"].iloc[0],
                        "multiplier": float(mult),
                        "epochs": int(g["epochs"].min()),
                        "metric": g["metric"].iloc[0],
                        "mean": mean,
                        "half": half,
                        "n": len(g),
                    }
                )
    return pd.DataFrame(rows, columns=STATS_COLUMNS)


def _cell(mean: float, half: float, n: int, places: int) -> str:
    if n == 1 or math.isnan(half):
        return f"{_fmt(mean, places)} ({n})"
    return f"{_fmt(mean, places)} ± {_fmt(half, places)} ({n})"


def budget_label(multiplier: float) -> str:
    return f"{multiplier:g}x"


def row_order(label: str, method: str) -> tuple[bool, str]:
    """Table and legend order."""
    return (method != "dense", label)  # dense first, then the sparse methods by name


def budget_table(records: list[RunRecord]) -> dict[TableKey, pd.DataFrame]:
    """Per (task, profile, sparsity) with a budget axis, the table a reader compares budgets in:
    index = method (and configuration), one column per budget multiple ("1x", "2x", ...) plus
    `rank` ("1/2/-": place among sparse methods at each budget). Cells are strings, formatted with
    the leaderboard's digits. `attrs` carries the metric and the epochs of each budget."""
    stats = budget_stats(records)
    tables: dict[TableKey, pd.DataFrame] = {}
    for (task, profile, sparsity), g in stats.groupby(["task", "profile", "sparsity"], sort=True):
        places = metric_digits(list(g["mean"]))
        budgets = sorted(g["multiplier"].unique())
        sparse = g[g["method"] != "dense"].copy()
        sparse["rank"] = sparse.groupby("multiplier")["mean"].rank(method="min", ascending=False)
        ranks = {(r["label"], r["multiplier"]): int(r["rank"]) for _, r in sparse.iterrows()}
        order = sorted(
            {(lab, m) for lab, m in zip(g["label"], g["method"])}, key=lambda x: row_order(*x)
        )
        cells = {(r["label"], r["multiplier"]): r for _, r in g.iterrows()}
        rows = []
        for label, method in order:
            row = {"method": label}
            for m in budgets:
                r = cells.get((label, m))
                row[budget_label(m)] = (
                    "-" if r is None else _cell(r["mean"], r["half"], r["n"], places)
                )
            row["rank"] = (
                ""
                if method == "dense"
                else "/".join(str(ranks.get((label, m), "-")) for m in budgets)
            )
            rows.append(row)
        table = pd.DataFrame(rows).set_index("method")
        epochs = {}
        for m in budgets:
            values = sorted(set(g.loc[g["multiplier"] == m, "epochs"]))
            epochs[budget_label(m)] = values
        table.attrs = {"metric": g["metric"].iloc[0], "epochs": epochs}
        tables[(task, profile, float(sparsity))] = table
    return tables


def _column_header(budget: str, epochs: list[int]) -> str:
    return f"{budget} ({epochs[0]} ep)" if len(epochs) == 1 else budget


def budget_markdown(records: list[RunRecord]) -> str:
    """`budget.md`: one section per budget table, or "" where no table qualifies. Deterministic:
    the same records give the same bytes."""
    tables = budget_table(records)
    if not tables:
        return ""
    lines = ["# gapbench budget axis", "", HEADER]
    for (task, profile, sparsity), table in tables.items():
        metric, epochs = table.attrs["metric"], table.attrs["epochs"]
        budgets = [c for c in table.columns if c != "rank"]
        header = [
            "method",
            *[_column_header(b, epochs[b]) for b in budgets],
            f"rank ({'/'.join(budgets)})",
        ]
        lines += [
            "",
            f"## {task} ({profile}), {sparsity * 100:g}% uniform: {metric} vs budget",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        for label, row in table.iterrows():
            lines.append("| " + " | ".join([str(label), *row.tolist()]) + " |")
    return "\n".join(lines) + "\n"


def write_budget(records: list[RunRecord], out: Path) -> Path | None:
    """Write `<out>/budget.md` where some table qualifies; otherwise write (and remove) nothing."""
    text = budget_markdown(records)
    if not text:
        return None
    path = Path(out) / BUDGET_FILE
    atomic_write_text(text, path)
    return path
