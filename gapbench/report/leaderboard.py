"""Leaderboard tables (CSV and Markdown) made from run records alone."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gapbench.report.atomic import atomic_write_text
from gapbench.report.records import RunRecord, load_records

GROUP = ["task", "profile", "epochs", "method", "distribution", "sparsity"]


def records_frame(records: list[RunRecord]) -> pd.DataFrame:
    """One row per complete run, with the numbers the leaderboard aggregates."""
    rows = []
    for r in records:
        if r.status != "complete":
            continue
        dense_budget = r.flops.get("dense_train_budget") or float("nan")
        row = {
            "task": r.task,
            "profile": r.profile,
            "dataset": r.dataset,
            "method": r.method,
            "distribution": r.distribution,
            "sparsity": r.sparsity,
            "seed": r.seed,
            "epochs": r.epochs,
            "metric": r.metric,
            "measured_sparsity": r.measured_sparsity,
            "conv_linear_density": r.conv_linear_density,
            # Against dense training over the comparison's budget, for every method alike.
            "train_flops_rel": r.flops["train"] / dense_budget,
            "inference_flops": r.flops["inference"],
            "inference_flops_rel": r.flops["inference"] / r.flops["dense_inference"]
            if r.flops.get("dense_inference")
            else float("nan"),
            "wall_time_s": r.wall_time_s,
        }
        for key, value in r.metrics.items():
            row[f"m:{key}"] = value
        rows.append(row)
    return pd.DataFrame(rows)


def _mean_std(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return ""
    digits = 3 if values.abs().max() <= 1.0 else 2  # mIoU-style [0, 1] metrics need a third digit
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def leaderboard_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Aggregate over seeds: per task, rows = method x distribution x sparsity (x budget)."""
    if df.empty:
        return df
    out = []
    for key, g in df.groupby(GROUP, sort=True, dropna=False):
        row = dict(zip(GROUP, key))
        primary = g["metric"].iloc[0]
        row["metric"] = primary
        row["score"] = _mean_std(g[f"m:{primary}"])
        row["score_mean"] = g[f"m:{primary}"].mean()
        for col in sorted(c for c in g.columns if c.startswith("m:") and c != f"m:{primary}"):
            if g[col].notna().any():
                row[col[2:]] = _mean_std(g[col])
        row["n"] = len(g)
        row["measured_sparsity"] = round(g["measured_sparsity"].mean(), 6)
        row["conv_linear_density"] = round(g["conv_linear_density"].mean(), 4)
        row["train_flops_vs_dense"] = round(g["train_flops_rel"].mean(), 4)
        row["inference_flops_vs_dense"] = round(g["inference_flops_rel"].mean(), 4)
        row["inference_gflops"] = round(g["inference_flops"].mean() / 1e9, 6)
        row["wall_time_s"] = round(g["wall_time_s"].mean(), 1)
        out.append(row)
    table = pd.DataFrame(out)
    return table.sort_values(
        ["task", "profile", "epochs", "sparsity", "score_mean"],
        ascending=[True, True, True, True, False],
    )


def to_markdown(table: pd.DataFrame) -> str:
    """One section per task/profile/budget; pipes-and-dashes Markdown (no extra dependency)."""
    if table.empty:
        return "# gapbench leaderboard\n\nNo complete runs yet.\n"
    lines = ["# gapbench leaderboard", "", "Final-epoch test metric, mean ± std over seeds (n)."]
    for (task, profile, epochs), g in table.groupby(["task", "profile", "epochs"], sort=True):
        metric = g["metric"].iloc[0]
        extra = [
            c
            for c in g.columns
            if c
            not in GROUP
            + [
                "metric",
                "score",
                "score_mean",
                "n",
                "measured_sparsity",
                "conv_linear_density",
                "train_flops_vs_dense",
                "inference_flops_vs_dense",
                "inference_gflops",
                "wall_time_s",
            ]
            and g[c].notna().any()
        ]
        header = [
            "method",
            "distribution",
            "sparsity",
            metric,
            *extra,
            "n",
            "measured sparsity",
            "conv+linear density",
            "train FLOPs vs dense",
            "inference FLOPs vs dense",
            "epochs",
            "wall s",
        ]
        lines += [
            "",
            f"## {task} ({profile}, {epochs} epochs)",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        for _, r in g.iterrows():
            cells = [
                r["method"],
                r["distribution"],
                f"{r['sparsity']:.2f}",
                r["score"],
                *[str(r[c]) if pd.notna(r[c]) else "" for c in extra],
                str(r["n"]),
                f"{r['measured_sparsity']:.4f}",
                f"{r['conv_linear_density']:.3f}",
                f"{r['train_flops_vs_dense']:.3f}",
                f"{r['inference_flops_vs_dense']:.3f}",
                str(r["epochs"]),
                f"{r['wall_time_s']:.0f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_leaderboard(out: Path) -> pd.DataFrame:
    """Read every record under `out`; write leaderboard.csv, leaderboard.md and plots there."""
    from gapbench.report.plots import plot_leaderboard

    table = leaderboard_frame(records_frame(load_records(out)))
    csv = table.drop(columns=["score_mean"], errors="ignore").to_csv(index=False)
    atomic_write_text(csv, out / "leaderboard.csv")
    atomic_write_text(to_markdown(table), out / "leaderboard.md")
    plot_leaderboard(table, out)
    return table


def task_markdown(table: pd.DataFrame, task: str) -> str:
    """The Markdown leaderboard of one task (what `run` prints)."""
    return to_markdown(table[table["task"] == task] if not table.empty else table)
