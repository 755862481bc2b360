"""Does a board measure methods, or the shortness of its budget? Checks read from records alone.

A shipped comparison is only meaningful if dense has converged at its budget, the test split is
large enough, the schedules are the methods' own in miniature (warm-up a small share of the run,
GaP with several rounds of long grow phases and a real fine-tune, GMP's last prune with enough of
the run left at a useful LR, RigL and SET with many updates) and the board separates methods
(dense above the best sparse method, best and worst sparse methods' intervals disjoint). Each check
reports the number it read, so a failing board says by how much.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from gapbench.engine.lr import lr_factor
from gapbench.report.intervals import t_interval
from gapbench.report.records import RunRecord

# Smallest test split per task that keeps sampling error well below the reported differences.
MIN_TEST_EXAMPLES = {"classification": 2000, "translation": 2000, "detection": 500, "partseg": 400}
MAX_WARMUP_SHARE = 0.10
GAP_MIN_ROUNDS, GAP_MIN_PHASE_STEPS, GAP_FINETUNE_SHARE = 3, 100, (0.10, 0.25)
GMP_MIN_SHARE_AFTER, USEFUL_LR = 0.25, 0.2  # of the run; of the peak LR
MIN_UPDATES = 10  # RigL drop/grow updates before T_end, SET rewirings


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    value: str  # what was read, e.g. "0.045 (15 of 330 steps)"


def _tolerance(metric: str, values: list[float]) -> float:
    """1 metric point; 0.01 for metrics in [0, 1] (mIoU)."""
    return 0.01 if values and max(abs(v) for v in values) <= 1.0 else 1.0


def _scored(records: list[RunRecord]) -> list[RunRecord]:
    return [r for r in records if r.status == "complete" and r.budget_mode == "epochs"]


def schedule_checks(records: list[RunRecord]) -> list[Check]:
    """Warm-up, GaP, GMP, RigL and SET schedules and the test-split size, per record kind."""
    checks: list[Check] = []
    for r in _scored(records):
        b, log, plan = r.budget, r.method_log, r.plan
        total = int(b.get("total_steps") or 0)
        if not total:
            continue
        where = f"{r.task}/{r.profile} {r.method} x{r.multiplier:g}"
        warmup = int(b.get("warmup_steps", -1))
        checks.append(
            Check(
                f"{where}: warm-up <= {MAX_WARMUP_SHARE:.0%} of the run",
                0 <= warmup <= MAX_WARMUP_SHARE * total,
                f"{warmup / total:.3f} ({warmup} of {total} steps)"
                if warmup >= 0
                else "not recorded",
            )
        )
        if r.method == "gap" and "grow_steps" in plan:
            checks += _gap_checks(where, r, total)
        if r.method == "magnitude" and "end_step" in log:
            end = int(log["end_step"])
            after = (total - end) / total
            lr = lr_factor(b.get("lr_schedule", "cosine"), end, total, max(0, warmup))
            checks.append(
                Check(
                    f"{where}: last prune leaves >= {GMP_MIN_SHARE_AFTER:.0%} of the run at an LR "
                    f">= {USEFUL_LR}x peak",
                    after >= GMP_MIN_SHARE_AFTER and lr >= USEFUL_LR,
                    f"{after:.2f} of the run after step {end}, LR {lr:.2f}x peak there",
                )
            )
        if r.method in ("rigl", "set") and "updates" in log:
            t_end = int(log.get("t_end_step", total))
            n = sum(1 for u in log["updates"] if int(u.get("step", 0)) <= t_end)
            checks.append(
                Check(f"{where}: >= {MIN_UPDATES} mask updates", n >= MIN_UPDATES, f"{n} updates")
            )
    for (task, profile), test in sorted(_test_sizes(records).items()):
        need = MIN_TEST_EXAMPLES.get(task, 0)
        checks.append(
            Check(
                f"{task}/{profile}: test split >= {need} examples",
                test is not None and test >= need,
                str(test),
            )
        )
    return list(dict.fromkeys(checks))  # every record is checked; identical outcomes once


def _gap_checks(where: str, r: RunRecord, total: int) -> list[Check]:
    plan = r.plan
    partitions = int(r.params.get("partitions", 1))
    rounds = int(plan["grow_steps"]) // max(1, partitions)
    phase = int(plan.get("steps_per_grow_step", 0))
    finetune = float(plan.get("finetune_epochs", 0)) / max(1, int(plan.get("trainer_epochs", 1)))
    low, high = GAP_FINETUNE_SHARE
    return [
        Check(f"{where}: rounds R >= {GAP_MIN_ROUNDS}", rounds >= GAP_MIN_ROUNDS, str(rounds)),
        Check(
            f"{where}: every grow phase >= {GAP_MIN_PHASE_STEPS} optimizer steps",
            phase >= GAP_MIN_PHASE_STEPS,
            f"{phase} steps",
        ),
        Check(
            f"{where}: fine-tune {low:.0%}-{high:.0%} of the run",
            low <= finetune <= high,
            f"{finetune:.3f}",
        ),
    ]


def _test_sizes(records: list[RunRecord]) -> dict[tuple[str, str], int | None]:
    """The smallest test split any record of a task and profile was scored on."""
    sizes: dict[tuple[str, str], int | None] = {}
    for r in _scored(records):
        key, size = (r.task, r.profile), r.budget.get("test_examples")
        if key not in sizes or size is None:
            sizes[key] = size
        elif sizes[key] is not None:
            sizes[key] = min(sizes[key], size)
    return sizes


def _means(records: list[RunRecord]) -> dict[tuple[Any, ...], list[float]]:
    """Primary metric per (task, profile, multiplier, method, distribution, sparsity, pattern)."""
    values: dict[tuple[Any, ...], list[float]] = defaultdict(list)
    for r in _scored(records):
        key = (r.task, r.profile, r.multiplier, r.method, r.distribution, r.sparsity)
        values[(*key, r.identity.get("pattern", "unstructured"))].append(r.metrics[r.metric])
    return values


def convergence_checks(records: list[RunRecord]) -> list[Check]:
    """Dense at 2x the budget within one metric point of dense at 1x (mean over seeds)."""
    checks = []
    values = _means(records)
    for key, one in sorted(values.items(), key=lambda kv: str(kv[0])):
        task, profile, multiplier, method = key[:4]
        if method != "dense" or multiplier != 1.0:
            continue
        two = values.get((task, profile, 2.0, *key[3:]))
        if not two:
            checks.append(Check(f"{task}/{profile}: dense converged (2x run)", False, "no 2x run"))
            continue
        m1, m2 = sum(one) / len(one), sum(two) / len(two)
        tol = _tolerance("", one + two)
        checks.append(
            Check(
                f"{task}/{profile}: dense at 2x within {tol:g} of dense at 1x",
                abs(m2 - m1) <= tol,
                f"1x {m1:.3f} (n={len(one)}), 2x {m2:.3f} (n={len(two)})",
            )
        )
    return checks


def separation_checks(
    records: list[RunRecord], task: str, profile: str, sparsity: float, min_seeds: int = 3
) -> list[Check]:
    """On the headline board: enough seeds, dense above the best sparse method's mean, best and
    worst sparse methods' 95% intervals disjoint."""
    values = _means(records)
    rows = {
        k[3]: v
        for k, v in values.items()
        if k[:3] == (task, profile, 1.0) and k[6] == "unstructured"
        and (k[3] == "dense" or (k[5] == sparsity and k[4] == "uniform"))
    }  # fmt: skip
    where = f"{task}/{profile} at {sparsity:g} uniform"
    if "dense" not in rows or len(rows) < 3:
        return [Check(f"{where}: headline board", False, f"methods {sorted(rows)}")]
    stats = {m: t_interval(v) for m, v in rows.items()}
    sparse = sorted((m for m in rows if m != "dense"), key=lambda m: stats[m][0])
    worst, best = sparse[0], sparse[-1]
    dense_low = stats["dense"][2]
    fewest = min(len(v) for v in rows.values())
    return [
        Check(f"{where}: >= {min_seeds} seeds per row", fewest >= min_seeds, f"fewest {fewest}"),
        Check(
            f"{where}: dense's 95% interval above the best sparse mean",
            dense_low > stats[best][0],
            f"dense low {dense_low:.3f} vs {best} {stats[best][0]:.3f}",
        ),
        Check(
            f"{where}: best and worst sparse methods' intervals disjoint",
            stats[worst][3] < stats[best][2],
            f"{worst} high {stats[worst][3]:.3f} < {best} low {stats[best][2]:.3f}",
        ),
    ]


def board_checks(records: list[RunRecord], headlines: dict[tuple[str, str], float]) -> list[Check]:
    """Every check; `headlines` maps (task, profile) to the headline board's sparsity."""
    checks = schedule_checks(records) + convergence_checks(records)
    for (task, profile), sparsity in sorted(headlines.items()):
        checks += separation_checks(records, task, profile, sparsity)
    return checks
