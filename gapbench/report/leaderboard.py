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

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from gapbench.report.atomic import atomic_write_text
from gapbench.report.intervals import metric_digits, t_interval
from gapbench.report.records import RunRecord, flatten_identity, load_records

SECTION = ["task", "profile", "budget_mode", "multiplier", "epochs", "match_ref"]
ROW = ["method", "distribution", "sparsity", "pattern"]
DEFAULT_REF = "magnitude"
# Identity fields that the section and row columns already show, or that tell seeds apart.
_SHOWN = {*SECTION, *ROW, "seed", "schema", "match_epochs"}
SCORED, UNSCORED = "complete", ("diverged", "no_metric")


def _variant(r: RunRecord, flops_mode: bool) -> dict[str, Any]:
    """Everything of the run's resolved identity that no section or row column shows: method
    parameters, precision, batch size, dense layers, data, ... Seeds of one row share all of it."""
    shown = set(_SHOWN)
    if not flops_mode:
        shown.add("epochs")  # the section's budget; FLOPs-matched runs each keep their own
    return {k: v for k, v in flatten_identity(r.identity).items() if k.split(".")[0] not in shown}


def _key(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True, default=str)


def records_frame(records: list[RunRecord]) -> pd.DataFrame:
    """One row per run that belongs on a board (scored, diverged or unscored; smoke runs that
    stopped early never do), with the numbers the leaderboard aggregates."""
    rows = []
    for r in records:
        if r.status != SCORED and r.status not in UNSCORED:
            continue
        flops = {k: float("nan") if v is None else v for k, v in r.flops.items()}
        dense_budget = flops.get("dense_train_budget") or float("nan")
        flops_mode = r.budget_mode == "flops"
        if flops_mode and r.identity.get("match_epochs") and r.epochs:
            # The record prices dense training over the epochs this run trained; the comparison's
            # budget is the reference's epochs (dense FLOPs per epoch do not change).
            # (fractional where the run's budget ended inside an epoch).
            dense_budget *= int(r.identity["match_epochs"]) / float(
                r.budget.get("exact_epochs") or r.epochs
            )
        variant = _variant(r, flops_mode)
        context = {
            k: v for k, v in variant.items() if not k.startswith("params.") and k != "epochs"
        }
        scored = r.status == SCORED
        row = {
            "task": r.task,
            "profile": r.profile,
            "budget_mode": r.budget_mode,
            "multiplier": float(r.multiplier),
            # The comparison's budget: FLOPs-matched runs train other epochs than the reference.
            "epochs": int(r.identity.get("match_epochs") or r.epochs)
            if flops_mode
            else int(r.epochs),
            "match_ref": str(r.identity.get("match_ref", "")) if flops_mode else "",
            "dataset": r.dataset,
            "method": r.method,
            "distribution": r.distribution,
            "sparsity": float(r.sparsity),
            "pattern": r.identity.get("pattern", "unstructured"),
            "seed": int(r.seed),
            "run_id": r.run_id,
            "status": r.status,
            "variant_key": _key(variant),
            "context_key": _key(context),
            "_variant": variant,
            "metric": r.metric,
            "measured_sparsity": r.measured_sparsity,
            "conv_linear_density": r.conv_linear_density,
            # Against dense training over the comparison's budget, for every method alike.
            "train_flops_vs_dense": flops.get("train", float("nan")) / dense_budget,
            "train_flops": flops.get("train", float("nan")),
            "inference_flops_vs_dense": flops.get("inference", float("nan"))
            / flops["dense_inference"]
            if flops.get("dense_inference")
            else float("nan"),
            # Fractional where a FLOPs-matched budget ends inside an epoch.
            "trainer_epochs": r.budget.get("exact_epochs")
            if r.identity.get("train_steps")
            else r.budget.get("trainer_epochs", r.epochs),
            "wall_time_s": r.wall_time_s,
        }
        for key, value in r.metrics.items():
            row[f"m:{key}"] = float(value) if scored else float("nan")
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        df["variant"] = _variant_labels(df)
    return df


def _format_value(value: Any) -> str:
    return "-" if value is None else str(value)


def _variant_labels(df: pd.DataFrame) -> pd.Series:
    """Per run, what sets its row apart from the other rows of its method at the same section,
    distribution, sparsity and pattern: `key=value` for every identity field that differs
    (`start=0.5`, `precision=fp16`); empty where the method ran in one variant only."""
    labels = pd.Series("", index=df.index, dtype=object)
    for _, g in df.groupby(SECTION + ROW, sort=False, dropna=False):
        variants = {k: v for k, v in zip(g["variant_key"], g["_variant"])}
        if len(variants) < 2:
            continue
        keys = sorted({k for v in variants.values() for k in v})
        differing = [k for k in keys if len({_key({k: v.get(k)}) for v in variants.values()}) > 1]
        for index, vkey in zip(g.index, g["variant_key"]):
            v = variants[vkey]
            labels[index] = ", ".join(
                f"{k.removeprefix('params.')}={_format_value(v.get(k))}" for k in differing
            )
    return labels


ROW_KEY = SECTION + ROW + ["variant_key"]


def leaderboard_frame(df: pd.DataFrame, ref: str = DEFAULT_REF) -> pd.DataFrame:
    """Aggregate over seeds, one row per resolved run but the seed, and attach the paired
    difference to `ref`. Diverged and unscored runs are counted, never averaged."""
    if df.empty:
        return df
    scored_df = df[df["status"] == SCORED]
    out = []
    for key, g in df.groupby(ROW_KEY, sort=True, dropna=False):
        row: dict[str, Any] = dict(zip(ROW_KEY, key))
        scored = g[g["status"] == SCORED]
        primary = g["metric"].iloc[0]
        values = scored[f"m:{primary}"].tolist() if f"m:{primary}" in scored else []
        mean, std, low, high = t_interval(values)
        row.update(metric=primary, mean=mean, std=std, n=len(values), ci95_low=low, ci95_high=high)
        row.update(
            variant=g["variant"].iloc[0],
            context_key=g["context_key"].iloc[0],
            diverged=int((g["status"] == "diverged").sum()),
            no_metric=int((g["status"] == "no_metric").sum()),
            run_ids=sorted(g["run_id"]),
        )
        row.update(_paired(scored_df, scored, row, primary, ref))
        for col in sorted(c for c in g.columns if c.startswith("m:") and c != f"m:{primary}"):
            if scored[col].notna().any():
                row[f"{col[2:]}_mean"] = scored[col].mean()
        for col in (
            "measured_sparsity",
            "conv_linear_density",
            "train_flops_vs_dense",
            "inference_flops_vs_dense",
            "train_flops",
            "trainer_epochs",
            "wall_time_s",
        ):
            row[col] = (scored if len(scored) else g)[col].mean()
        row["dataset"] = g["dataset"].iloc[0]
        out.append(row)
    table = pd.DataFrame(out)
    table["_order"] = -table["mean"].fillna(-math.inf)
    table = table.sort_values(
        [*SECTION, "sparsity", "distribution", "_order", "method", "variant"], kind="stable"
    )
    return table.drop(columns=["_order", "variant_key"]).reset_index(drop=True)


def _paired(
    df: pd.DataFrame, mine: pd.DataFrame, row: dict[str, Any], metric: str, ref: str
) -> dict[str, Any]:
    """Mean paired difference to `ref` over the seeds both ran, with its 95% t interval.

    The reference runs share the row's section, distribution, sparsity, pattern and everything
    of the identity but the method's own parameters (precision, batch, data, ...). Where the
    reference ran in several variants, the one sharing most seeds is used (ties: the first
    label), and `ref_variant` names it."""
    nan = float("nan")
    result = {
        "ref_method": ref,
        "ref_variant": "",
        "delta_vs_ref": nan,
        "delta_ci95_low": nan,
        "delta_ci95_high": nan,
        "delta_n": 0,
    }
    if row["method"] == ref or mine.empty:
        return result
    mask = (
        (df["method"] == ref) & (df["metric"] == metric) & (df["context_key"] == row["context_key"])
    )
    for col in SECTION + ["distribution", "sparsity", "pattern"]:
        mask &= df[col] == row[col]
    my_values = mine.set_index("seed")[f"m:{metric}"]
    best: tuple[int, str] | None = None
    for _vkey, candidate in df[mask].groupby("variant_key", sort=True):
        shared = sorted(set(candidate["seed"]) & set(my_values.index))
        label = candidate["variant"].iloc[0]
        if shared and (best is None or (-len(shared), label) < (-best[0], best[1])):
            best, reference, seeds = (len(shared), label), candidate, shared
    if best is None:
        return result
    ref_values = reference.set_index("seed")[f"m:{metric}"]
    diffs = [float(my_values[s] - ref_values[s]) for s in seeds]
    mean, _, low, high = t_interval(diffs)
    result.update(
        ref_variant=best[1],
        delta_vs_ref=mean,
        delta_ci95_low=low,
        delta_ci95_high=high,
        delta_n=len(seeds),
    )
    return result


def _fmt(value: float, digits: int) -> str:
    return (
        ""
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.{digits}f}"
    )


def _digits(table: pd.DataFrame) -> int:
    return metric_digits(list(table["mean"]))


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
        "over the comparison's budget. `variant` names what sets a method's rows apart "
        "(parameters, precision, ...); diverged or unscored runs are counted, never averaged.",
    ]
    if table.empty:
        return "\n".join([*lines, "", "No complete runs yet."]) + "\n"
    for key, g in table.groupby(SECTION, sort=False):
        fields = dict(zip(SECTION, key))
        digits = _digits(g)
        variants = (g["variant"] != "").any() or (g["ref_variant"] != "").any()
        unscored = (g["diverged"] + g["no_metric"] > 0).any()
        metric = g["metric"].iloc[0]
        ref = g["ref_method"].iloc[0]
        extra = [c for c in g.columns if c.endswith("_mean") and c != "mean" and g[c].notna().any()]
        header = [
            "method",
            *(["variant"] if variants else []),
            "distribution",
            "sparsity",
            f"{metric} mean ± std",
            "95% CI",
            "n",
            *(["not scored"] if unscored else []),
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
                if r["ref_variant"]:
                    delta += f" (vs {r['ref_variant']})"
            pattern = "" if r["pattern"] == "unstructured" else f" ({r['pattern']})"
            cells = [
                r["method"],
                *([r["variant"]] if variants else []),
                r["distribution"] + pattern,
                f"{r['sparsity']:.2f}",
                mean_std,
                ci,
                str(int(r["n"])),
                *([_unscored(r)] if unscored else []),
                delta,
                *[_fmt(r[c], digits) for c in extra],
                _fmt(r["measured_sparsity"], 4),
                _fmt(r["conv_linear_density"], 3),
                _fmt(r["train_flops_vs_dense"], 3),
                _fmt(r["inference_flops_vs_dense"], 3),
                f"{round(r['trainer_epochs'], 2):g}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        if published is not None and fields["profile"] == "paper":
            lines += _published_rows(published, fields["task"])
    return "\n".join(lines) + "\n"


def _unscored(r: pd.Series) -> str:
    parts = [f"{int(r['diverged'])} diverged" if r["diverged"] else ""]
    parts.append(f"{int(r['no_metric'])} no metric" if r["no_metric"] else "")
    return ", ".join(p for p in parts if p)


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
    "variant",
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
    "ref_variant",
    "diverged",
    "no_metric",
    "measured_sparsity",
    "conv_linear_density",
    "train_flops_vs_dense",
    "train_flops",
    "inference_flops_vs_dense",
    "trainer_epochs",
    "wall_time_s",
]


def to_csv(table: pd.DataFrame) -> str:
    if table.empty:
        return ",".join(CSV_COLUMNS) + "\n"
    extra = sorted(c for c in table.columns if c.endswith("_mean") and c != "mean")
    return table[CSV_COLUMNS + extra].to_csv(index=False, float_format="%.6g")


def write_leaderboard(out: Path, ref: str = DEFAULT_REF) -> pd.DataFrame:
    """Read every record under `out`; write leaderboard.csv, leaderboard.md, budget.md (where a
    budget axis exists) and plots there."""
    from gapbench.report.budget import write_budget
    from gapbench.report.plots import write_plots
    from gapbench.report.published import load_published

    records = load_records(out)
    table = leaderboard_frame(records_frame(records), ref)
    atomic_write_text(to_csv(table), out / "leaderboard.csv")
    atomic_write_text(to_markdown(table, load_published()), out / "leaderboard.md")
    write_budget(records, out)
    remove_stale_plots(out / "plots", write_plots(table, records, out))
    return table


def remove_stale_plots(folder: Path, written: list[Path]) -> None:
    """Remove the board plots (`<task>-*.png` of a known task) this rebuild did not write: a
    retired board's plots would otherwise outlive its records. Other files are left alone."""
    from gapbench.registry import all_tasks

    if not folder.is_dir():
        return
    keep = {path.resolve() for path in written}
    prefixes = tuple(f"{task}-" for task in all_tasks())
    for path in folder.glob("*.png"):
        if path.name.startswith(prefixes) and path.resolve() not in keep:
            path.unlink()


def task_markdown(table: pd.DataFrame, task: str) -> str:
    """The Markdown leaderboard of one task (what `run` prints)."""
    from gapbench.report.published import load_published

    return to_markdown(table[table["task"] == task] if not table.empty else table, load_published())
