"""Plots from the leaderboard table: final metric against sparsity, one line per method."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def plot_leaderboard(table: pd.DataFrame, out: Path) -> list[Path]:
    """One PNG per task/profile/budget: metric vs. sparsity; the dense reference as a line."""
    if table.empty:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for (task, profile, epochs), g in table.groupby(["task", "profile", "epochs"], sort=True):
        fig, ax = plt.subplots(figsize=(6, 4))
        for (method, dist), m in g.groupby(["method", "distribution"], sort=True):
            if method == "dense":
                ax.axhline(m["score_mean"].mean(), color="black", linestyle="--", label="dense")
                continue
            m = m.sort_values("sparsity")
            ax.plot(m["sparsity"], m["score_mean"], marker="o", label=f"{method} ({dist})")
        ax.set_xlabel("sparsity")
        ax.set_ylabel(g["metric"].iloc[0])
        ax.set_title(f"{task} ({profile}, {epochs} epochs)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        path = out / f"leaderboard-{task}-{profile}-{epochs}ep.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
