"""Leaderboards (CSV and Markdown) made from run records alone, with the statistics a reader needs
to tell a real difference from seed noise.

Per row (task, profile, budget, method, distribution, sparsity): mean, standard deviation, n and
a 95% confidence interval over seeds (Student t, scipy). Per row also the paired difference to a
reference method at the same task/budget/distribution/sparsity (`--vs`, default magnitude), over
the seeds both ran, with its 95% interval; the Markdown marks differences whose interval excludes
zero with `*`. Published numbers are shown beside measured ones for `paper` profiles, labelled,
never mixed into the statistics. Output is deterministic: the same records give the same bytes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
from scipy import stats

from gapbench.report.atomic import atomic_write_text
from gapbench.report.records import RunRecord, load_records

SECTION = ["task", "profile", "budget_mode", "multiplier", "epochs"]
ROW = ["method", "distribution", "sparsity", "pattern"]
DEFAULT_REF = "magnitude"


def records_frame(records: list[RunRecord]) -> pd.DataFrame:
    """One row per complete run, with the numbers the leaderboard aggregates."""
    rows = []
    for r in records:
        if r.status != "complete":
            continue
        dense_budget = r.flops.get("dense_train_budget") or float("nan")
        flops_mode = r.budget_mode == "flops"
        if flops_mode and r.identity.get("match_epochs") and r.epochs:
            # The record prices dense training over the epochs this run trained; the comparison's
            # budget is the reference's epochs (dense FLOPs per epoch do not change).
            dense_budget *= int(r.identity["match_epochs"]) / int(r.epochs)
        row = {
            "task": r.task,
            "profile": r.profile,
            "budget_mode": r.budget_mode,
            "multiplier": float(r.multiplier),
            # The comparison's budget: FLOPs-matched runs train other epochs than the reference.
            "epochs": int(r.identity.get("match_epochs") or r.epochs)
            if flops_mode
            else int(r.epochs),
            "match_ref": r.identity.get("match_ref", "") if flops_mode else "",
            "dataset": r.dataset,
            "method": r.method,
            "distribution": r.distribution,
            "sparsity": float(r.sparsity),
            "pattern": r.identity.get("pattern", "unstructured"),
            "seed": int(r.seed),
            "metric": r.metric,
            "measured_sparsity": r.measured_sparsity,
            "conv_linear_density": r.conv_linear_density,
            # Against dense training over the comparison's budget, for every method alike.
            "train_flops_vs_dense": r.flops["train"] / dense_budget,
            "train_flops": r.flops["train"],
            "inference_flops_vs_dense": r.flops["inference"] / r.flops["dense_inference"]
            if r.flops.get("dense_inference")
            else float("nan"),
            "trainer_epochs": r.budget.get("trainer_epochs", r.epochs),
            "wall_time_s": r.wall_time_s,
        }
        for key, value in r.metrics.items():
            row[f"m:{key}"] = float(value)
        rows.append(row)
    return pd.DataFrame(rows)


def t_interval(values: list[float]) -> tuple[float, float, float, float]:
    """(mean, std, low, high): the 95% Student-t interval of the mean (nan below 2 values)."""
    n = len(values)
    mean = sum(values) / n if n else float("nan")
    if n < 2:
        return mean, float("nan"), float("nan"), float("nan")
    std = float(pd.Series(values).std(ddof=1))
    half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def leaderboard_frame(df: pd.DataFrame, ref: str = DEFAULT_REF) -> pd.DataFrame:
    """Aggregate over seeds and attach the paired difference to `ref`."""
    if df.empty:
        return df
    out = []
    for key, g in df.groupby(SECTION + ROW, sort=True, dropna=False):
        row: dict[str, Any] = dict(zip(SECTION + ROW, key))
        primary = g["metric"].iloc[0]
        values = g[f"m:{primary}"].tolist()
        mean, std, low, high = t_interval(values)
        row.update(metric=primary, mean=mean, std=std, n=len(values), ci95_low=low, ci95_high=high)
        row.update(_paired(df, g, key, primary, ref))
        for col in sorted(c for c in g.columns if c.startswith("m:") and c != f"m:{primary}"):
            if g[col].notna().any():
                row[f"{col[2:]}_mean"] = g[col].mean()
        for col in (
            "measured_sparsity",
            "conv_linear_density",
            "train_flops_vs_dense",
            "inference_flops_vs_dense",
            "train_flops",
            "trainer_epochs",
            "wall_time_s",
        ):
            row[col] = g[col].mean()
        row["match_ref"] = g["match_ref"].iloc[0]
        row["dataset"] = g["dataset"].iloc[0]
        out.append(row)
    table = pd.DataFrame(out)
    table["_order"] = -table["mean"]
    table = table.sort_values(
        [*SECTION, "sparsity", "distribution", "_order", "method"], kind="stable"
    )
    return table.drop(columns="_order").reset_index(drop=True)


def _paired(df: pd.DataFrame, g: pd.DataFrame, key: tuple, metric: str, ref: str) -> dict[str, Any]:
    """Mean paired difference to `ref` over the seeds both ran, with its 95% t interval."""
    nan = float("nan")
    empty = {
        "ref_method": ref,
        "delta_vs_ref": nan,
        "delta_ci95_low": nan,
        "delta_ci95_high": nan,
        "delta_n": 0,
    }
    fields = dict(zip(SECTION + ROW, key))
    if fields["method"] == ref:
        return empty
    mask = (df["method"] == ref) & (df["metric"] == metric)
    for col in SECTION + ["distribution", "sparsity", "pattern"]:
        mask &= df[col] == fields[col]
    reference = df[mask].set_index("seed")[f"m:{metric}"]
    mine = g.set_index("seed")[f"m:{metric}"]
    seeds = sorted(set(reference.index) & set(mine.index))
    if not seeds:
        return empty
    diffs = [float(mine[s] - reference[s]) for s in seeds]
    mean, _, low, high = t_interval(diffs)
    return {
        "ref_method": ref,
        "delta_vs_ref": mean,
        "delta_ci95_low": low,
        "delta_ci95_high": high,
        "delta_n": len(seeds),
    }


def _fmt(value: float, digits: int) -> str:
    return (
        ""
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.{digits}f}"
    )


def _digits(table: pd.DataFrame) -> int:
    return 3 if table["mean"].abs().max() <= 1.0 else 2  # mIoU-style [0, 1] metrics get a third


def _section_title(fields: dict[str, Any]) -> str:
    mode = fields["budget_mode"]
    budget = f"{fields['epochs']} epochs"
    if fields["multiplier"] != 1.0:
        budget += f", {fields['multiplier']:g}x"
    if mode == "flops":
        budget = f"training FLOPs matched to {fields.get('match_ref') or 'the reference'}, {budget} for the reference"
    return f"## {fields['task']} ({fields['profile']}, {budget})"


def to_markdown(table: pd.DataFrame, published: pd.DataFrame | None = None) -> str:
    """One section per task/profile/budget. Markdown pipes and dashes, no extra dependency."""
    lines = [
        "# gapbench leaderboard",
        "",
        "Final-epoch test metric over seeds: mean ± std, 95% t-interval [low, high], n. "
        "Δ = paired difference to the reference method over the seeds both ran, with its 95% "
        "interval; `*` = the interval excludes 0. Train FLOPs are relative to dense training "
        "over the comparison's budget.",
    ]
    if table.empty:
        return "\n".join([*lines, "", "No complete runs yet."]) + "\n"
    for key, g in table.groupby(SECTION, sort=False):
        fields = dict(zip(SECTION, key))
        fields["match_ref"] = g["match_ref"].iloc[0]
        digits = _digits(g)
        metric = g["metric"].iloc[0]
        ref = g["ref_method"].iloc[0]
        extra = [c for c in g.columns if c.endswith("_mean") and c != "mean" and g[c].notna().any()]
        header = [
            "method",
            "distribution",
            "sparsity",
            f"{metric} mean ± std",
            "95% CI",
            "n",
            f"Δ vs {ref} [95% CI]",
            *[c.removesuffix("_mean") for c in extra],
            "measured sparsity",
            "conv+linear density",
            "train FLOPs",
            "inference FLOPs",
            "trainer epochs",
        ]
        lines += [
            "",
            _section_title(fields),
            "",
            f"Data: {g['dataset'].iloc[0]}",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        for _, r in g.iterrows():
            mean_std = _fmt(r["mean"], digits) + (
                "" if math.isnan(r["std"]) else f" ± {_fmt(r['std'], digits)}"
            )
            ci = (
                ""
                if math.isnan(r["ci95_low"])
                else f"[{_fmt(r['ci95_low'], digits)}, {_fmt(r['ci95_high'], digits)}]"
            )
            delta = ""
            if not math.isnan(r["delta_vs_ref"]):
                delta = f"{r['delta_vs_ref']:+.{digits}f}"
                if not math.isnan(r["delta_ci95_low"]):
                    sig = "*" if r["delta_ci95_low"] > 0 or r["delta_ci95_high"] < 0 else ""
                    delta += f" [{r['delta_ci95_low']:+.{digits}f}, {r['delta_ci95_high']:+.{digits}f}]{sig}"
            pattern = "" if r["pattern"] == "unstructured" else f" ({r['pattern']})"
            cells = [
                r["method"],
                r["distribution"] + pattern,
                f"{r['sparsity']:.2f}",
                mean_std,
                ci,
                str(int(r["n"])),
                delta,
                *[_fmt(r[c], digits) for c in extra],
                f"{r['measured_sparsity']:.4f}",
                f"{r['conv_linear_density']:.3f}",
                f"{r['train_flops_vs_dense']:.3f}",
                f"{r['inference_flops_vs_dense']:.3f}",
                f"{r['trainer_epochs']:.0f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        if published is not None and fields["profile"] == "paper":
            lines += _published_rows(published, fields["task"])
    return "\n".join(lines) + "\n"


def _published_rows(published: pd.DataFrame, task: str) -> list[str]:
    rows = published[published["task"] == task]
    if rows.empty:
        return []
    out = [
        "",
        "Published (not measured here; never mixed into the statistics above):",
        "",
        "| source | model | method | variant | distribution | sparsity | epochs | metric | value |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in rows.iterrows():
        out.append(
            f"| published: {r['source']} | {r['model']} | {r['method']} | {r['variant']} | {r['distribution']} | {r['sparsity']} | {r['train_epochs']} | {r['metric']} | {r['value']} |"
        )
    return out


CSV_COLUMNS = [
    *SECTION,
    *ROW,
    "metric",
    "mean",
    "std",
    "n",
    "ci95_low",
    "ci95_high",
    "ref_method",
    "delta_vs_ref",
    "delta_ci95_low",
    "delta_ci95_high",
    "delta_n",
    "measured_sparsity",
    "conv_linear_density",
    "train_flops_vs_dense",
    "train_flops",
    "inference_flops_vs_dense",
    "trainer_epochs",
    "match_ref",
    "wall_time_s",
]


def to_csv(table: pd.DataFrame) -> str:
    if table.empty:
        return ",".join(CSV_COLUMNS) + "\n"
    extra = sorted(c for c in table.columns if c.endswith("_mean") and c != "mean")
    return table[CSV_COLUMNS + extra].to_csv(index=False, float_format="%.6g")


def write_leaderboard(out: Path, ref: str = DEFAULT_REF) -> pd.DataFrame:
    """Read every record under `out`; write leaderboard.csv, leaderboard.md and plots there."""
    from gapbench.report.plots import write_plots
    from gapbench.report.published import load_published

    records = load_records(out)
    table = leaderboard_frame(records_frame(records), ref)
    atomic_write_text(to_csv(table), out / "leaderboard.csv")
    atomic_write_text(to_markdown(table, load_published()), out / "leaderboard.md")
    write_plots(table, records, out)
    return table


def task_markdown(table: pd.DataFrame, task: str) -> str:
    """The Markdown leaderboard of one task (what `run` prints)."""
    from gapbench.report.published import load_published

    return to_markdown(table[table["task"] == task] if not table.empty else table, load_published())
