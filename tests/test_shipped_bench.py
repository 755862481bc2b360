"""The shipped `bench` boards hold the criteria that make a board measure methods, read from their
records: every run's schedule (warm-up share, GaP's rounds, phase steps and fine-tune share, GMP's
last prune, RigL's and SET's updates, the test split), dense's convergence wherever dense at 2x
the budget is shipped (within one metric point, 0.01 for mIoU, of dense at 1x) and, on every
headline board that is complete, the separation (dense above the best sparse mean, best and
worst intervals disjoint), or else that it still has fewer than 5 seeds.
The bench boards are made batch by batch (benchmarks/reference_runs.sh); these tests hold every
batch shipped so far."""

from pathlib import Path

from gapbench.cli import headline_sparsity
from gapbench.report.board_checks import convergence_checks, schedule_checks, separation_checks
from gapbench.report.records import RunRecord, load_records

REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference"
HEADLINE_METHODS = {"dense", "static", "magnitude", "set", "rigl", "gap"}


def bench_records() -> list[RunRecord]:
    return [r for r in load_records(REFERENCE) if r.profile == "bench"]


def complete_headlines(records: list[RunRecord]) -> dict[str, float]:
    """Tasks whose headline board has every headline method with at least 3 seeds."""
    done = {}
    for task in sorted({r.task for r in records}):
        sparsity = headline_sparsity(task, "bench")
        seeds: dict[str, set[int]] = {}
        for r in records:
            on_board = r.method == "dense" or (
                r.sparsity == sparsity and r.distribution == "uniform"
            )
            if r.task == task and r.multiplier == 1.0 and r.budget_mode == "epochs" and on_board:
                seeds.setdefault(r.method, set()).add(r.seed)
        if all(len(seeds.get(m, ())) >= 3 for m in HEADLINE_METHODS):
            done[task] = sparsity
    return done


def test_every_shipped_bench_run_keeps_the_schedule_criteria():
    records = bench_records()
    assert records, "no bench records shipped"
    checks = schedule_checks(records)
    assert len(checks) >= 5
    failed = [f"{c.name}: {c.value}" for c in checks if not c.ok]
    assert not failed, failed


def test_a_headline_board_separates_its_methods_or_is_marked_for_five_seeds():
    """Where 3 seeds do not separate the best and worst sparse methods, the board needs 5
    (`SEEDS="0 1 2 3 4" benchmarks/reference_runs.sh headline-TASK`): a board with 5 seeds per
    row must separate."""
    records = bench_records()
    headlines = complete_headlines(records)
    assert headlines, "no bench headline board with 3 seeds per method shipped"
    for task, sparsity in headlines.items():
        checks = separation_checks(records, task, "bench", sparsity)
        failed = [f"{c.name}: {c.value}" for c in checks if not c.ok]
        fewest = min(
            len({r.seed for r in records if r.task == task and r.method == m})
            for m in HEADLINE_METHODS
        )
        assert not failed or fewest < 5, (task, failed)


def test_dense_has_converged_on_every_shipped_board_that_ran_it_at_2x():
    records = bench_records()
    doubled = {r.task for r in records if r.method == "dense" and r.multiplier == 2.0}
    checks = [c for c in convergence_checks(records) if c.name.split("/")[0] in doubled]
    assert len(checks) == len(doubled)
    failed = [f"{c.name}: {c.value}" for c in checks if not c.ok]
    assert not failed, failed
