"""Plots made from records alone (PNG, under `<out>/plots/`):

- `<task>-<profile>-<budget>-sparsity.png`: metric vs sparsity, 95% t-interval error bars, one
  line per method and distribution, dense as a band;
- `<task>-<profile>-flops.png`: metric vs training FLOPs relative to dense (RigL's figure), every
  budget of that task and profile;
- `<task>-<profile>-gap-schedule.png`: GaP's partition densities over epochs (the schedule seen);
- `<task>-<profile>-turnover.png`: RigL/SET mask turnover at every update;
- `<task>-<profile>-budget.png`: metric vs training budget multiple (gapbench.report.budget).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from gapbench.report.budget import budget_label, budget_stats, row_order
from gapbench.report.records import RunRecord

STYLE = {
    "dense": "k",
    "gap": "tab:red",
    "magnitude": "tab:blue",
    "rigl": "tab:green",
    "set": "tab:orange",
    "static": "tab:gray",
    "oneshot": "tab:purple",
    "snfs": "tab:brown",
    "snip": "tab:pink",
    "grasp": "tab:olive",
    "synflow": "tab:cyan",
}
MARKERS = {"uniform": "o", "erk": "s", "global": "^", "dense": "_"}
PATTERN_MARKER = "D"  # N:M and block runs: a fixed sparsity, never joined to a curve
VARIANT_MARKERS = ("o", "s", "^", "v", "D")  # a method's configurations on the budget axis


def _series(method: str, dist: str, pattern: str, variant: str = "") -> str:
    name = f"{method} ({dist})" if pattern == "unstructured" else f"{method} ({pattern})"
    return f"{name} [{variant}]" if variant else name


def _marker(dist: str, pattern: str) -> str:
    return MARKERS.get(dist, "o") if pattern == "unstructured" else PATTERN_MARKER


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "gapbench"
    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    return path


def _error(row: pd.Series) -> float:
    return 0.0 if math.isnan(row["ci95_high"]) else row["ci95_high"] - row["mean"]


SERIES = ["method", "distribution", "pattern", "variant"]


def _scored(table: pd.DataFrame) -> pd.DataFrame:
    """Rows with a mean: a row of diverged runs only has nothing to draw."""
    return table[table["mean"].notna()] if not table.empty else table


def plot_sparsity(table: pd.DataFrame, out: Path) -> list[Path]:
    plt, paths = _plt(), []
    for (task, profile, mode, mult, epochs, _ref), g in _scored(table).groupby(
        ["task", "profile", "budget_mode", "multiplier", "epochs", "match_ref"], sort=True
    ):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for (method, dist, pattern, variant), m in g.groupby(SERIES, sort=True):
            color = STYLE.get(method)
            if method == "dense":
                r = m.iloc[0]
                ax.axhline(
                    r["mean"],
                    color="k",
                    linestyle="--",
                    label="dense" + (f" [{variant}]" if variant else ""),
                )
                if not math.isnan(r["ci95_low"]):
                    ax.axhspan(r["ci95_low"], r["ci95_high"], color="k", alpha=0.08)
                continue
            m = m.sort_values("sparsity")
            ax.errorbar(
                m["sparsity"],
                m["mean"],
                yerr=[_error(r) for _, r in m.iterrows()],
                marker=_marker(dist, pattern),
                color=color,
                capsize=3,
                linestyle="-" if pattern == "unstructured" else "none",
                label=_series(method, dist, pattern, variant),
            )
        ax.set_xlabel("sparsity")
        ax.set_ylabel(f"{g['metric'].iloc[0]} (mean, 95% CI)")
        budget = (
            f"{epochs} ep"
            + (f", {mult:g}x" if mult != 1 else "")
            + (", FLOPs-matched" if mode == "flops" else "")
        )
        ax.set_title(f"{task} ({profile}, {budget})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        name = f"{task}-{profile}-{mode}-{mult:g}x-{epochs}ep-sparsity.png"
        paths.append(_save(fig, out / "plots" / name))
        plt.close(fig)
    return paths


def plot_flops(table: pd.DataFrame, out: Path) -> list[Path]:
    plt, paths = _plt(), []
    for (task, profile), g in _scored(table).groupby(["task", "profile"], sort=True):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        # One series per method, distribution, pattern and variant: its points are the sparsities
        # and budgets it ran at, placed by the training FLOPs they cost (not joined: mixed budgets).
        for (method, dist, pattern, variant), m in g.groupby(SERIES, sort=True):
            m = m.sort_values("train_flops_vs_dense")
            ax.errorbar(
                m["train_flops_vs_dense"],
                m["mean"],
                yerr=[_error(r) for _, r in m.iterrows()],
                marker=_marker(dist, pattern),
                color=STYLE.get(method),
                capsize=3,
                linestyle="none",
                label=_series(method, dist, pattern, variant),
            )
        ax.set_xscale("log")
        ax.set_xlabel("training FLOPs / dense training over the budget")
        ax.set_ylabel(g["metric"].iloc[0])
        ax.set_title(f"{task} ({profile}): metric vs training FLOPs")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6, ncol=2)
        paths.append(_save(fig, out / "plots" / f"{task}-{profile}-flops.png"))
        plt.close(fig)
    return paths


def _first(records: list[RunRecord], method: str, task: str, profile: str) -> RunRecord | None:
    """The reference run to draw a schedule from: lowest seed, 90% (else first) uniform."""
    runs = [
        r
        for r in records
        if r.method == method
        and r.task == task
        and r.profile == profile
        and r.status == "complete"
        and r.budget_mode == "epochs"
        and r.multiplier == 1
    ]
    runs.sort(key=lambda r: (abs(r.sparsity - 0.9), r.distribution != "uniform", r.seed, r.run_id))
    return runs[0] if runs else None


def plot_schedules(records: list[RunRecord], out: Path) -> list[Path]:
    plt, paths = _plt(), []
    for task, profile in sorted({(r.task, r.profile) for r in records}):
        gap = _first(records, "gap", task, profile)
        if gap and gap.method_log.get("partition_density"):
            density = gap.method_log["partition_density"]
            fig, ax = plt.subplots(figsize=(6.4, 3.6))
            for k in range(len(density[0])):
                ax.step(
                    range(len(density)),
                    [row[k] for row in density],
                    where="post",
                    label=f"partition {k + 1}",
                )
            ax.set_xlabel("trainer epoch")
            ax.set_ylabel("density")
            ax.set_ylim(0, 1.05)
            ax.set_title(
                f"GaP schedule: {task} ({profile}), {gap.params.get('mode')}, s={gap.sparsity}, seed {gap.seed}"
            )
            ax.legend(fontsize=7)
            paths.append(_save(fig, out / "plots" / f"{task}-{profile}-gap-schedule.png"))
            plt.close(fig)
        dynamic = [
            r
            for r in (_first(records, m, task, profile) for m in ("rigl", "set"))
            if r and r.method_log.get("updates")
        ]
        if dynamic:
            fig, ax = plt.subplots(figsize=(6.4, 3.6))
            for r in dynamic:
                updates = r.method_log["updates"]
                ax.plot(
                    [u["step"] for u in updates],
                    [u["turnover"] for u in updates],
                    marker=".",
                    color=STYLE.get(r.method),
                    label=f"{r.method} (s={r.sparsity}, seed {r.seed})",
                )
            ax.set_xlabel("optimizer step")
            ax.set_ylabel("mask turnover (new / alive)")
            ax.set_title(f"RigL/SET mask turnover: {task} ({profile})")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            paths.append(_save(fig, out / "plots" / f"{task}-{profile}-turnover.png"))
            plt.close(fig)
    return paths


def budget_lines(records: list[RunRecord]) -> pd.DataFrame:
    """The budget stats the plot draws: methods (configurations) with two or more budgets."""
    stats = budget_stats(records)
    budgets = stats.groupby(["task", "profile", "sparsity", "label"])["multiplier"]
    return stats[budgets.transform("nunique") >= 2]


def plot_budget(records: list[RunRecord], out: Path) -> list[Path]:
    """`plots/<task>-<profile>-budget.png`: metric vs budget multiple (log2 axis), one line per
    method with 95% t-interval error bars, dense dashed; one panel per sparsity. Only methods run
    at two or more budgets are drawn (budget.md lists the rest): a lone point is no trend, and a
    collapsed one-budget method would squash the axis."""
    stats = budget_lines(records)
    plt, paths = _plt(), []
    for (task, profile), tp in stats.groupby(["task", "profile"], sort=True):
        panels = sorted(tp["sparsity"].unique())
        fig, axes = plt.subplots(
            1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False, sharey=True
        )
        for ax, sparsity in zip(axes[0], panels):
            g = tp[tp["sparsity"] == sparsity]
            labels = sorted(
                {(lab, m) for lab, m in zip(g["label"], g["method"])},
                key=lambda x: row_order(*x),
            )
            seen: dict[str, int] = {}
            for label, method in labels:
                s = g[g["label"] == label].sort_values("multiplier")
                dense = method == "dense"
                nth = seen[method] = seen.get(method, -1) + 1  # a method's configurations
                ax.errorbar(
                    s["multiplier"],
                    s["mean"],
                    yerr=[0.0 if math.isnan(h) else h for h in s["half"]],
                    marker="_" if dense else VARIANT_MARKERS[nth % len(VARIANT_MARKERS)],
                    color="k" if dense else STYLE.get(method),
                    linestyle="--" if dense else "-",
                    capsize=3,
                    label=label,
                )
            budgets = sorted(g["multiplier"].unique())
            ax.set_xscale("log", base=2)
            ax.set_xticks(budgets)
            ax.set_xticklabels([budget_label(m) for m in budgets])
            ax.minorticks_off()
            ax.set_xlabel("training budget (multiple of the profile's epochs)")
            ax.set_title(f"{task} ({profile}), {sparsity * 100:g}% uniform", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        axes[0][0].set_ylabel(f"{tp['metric'].iloc[0]} (mean, 95% CI)")
        paths.append(_save(fig, Path(out) / "plots" / f"{task}-{profile}-budget.png"))
        plt.close(fig)
    return paths


def write_plots(table: pd.DataFrame, records: list[RunRecord], out: Path) -> list[Path]:
    if table.empty:
        return []
    return (
        plot_sparsity(table, out)
        + plot_flops(table, out)
        + plot_schedules(records, out)
        + plot_budget(records, out)
    )
