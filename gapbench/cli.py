"""Command line: `python -m gapbench run|leaderboard|methods|tasks`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from gapbench.distribution import DISTRIBUTIONS
from gapbench.errors import UserError

DEFAULT_METHODS = "dense,magnitude,gap"


def _split(values: list[str] | None) -> list[str]:
    """Accept both `--x a b` and `--x a,b`."""
    return [v for item in values or [] for v in item.split(",") if v]


def _floats(values: list[str], what: str) -> list[float]:
    try:
        return [float(v) for v in _split(values)]
    except ValueError as exc:
        raise UserError(f"{what} must be numbers, got {values}") from exc


def _ints(values: list[str], what: str) -> list[int]:
    try:
        return [int(v) for v in _split(values)]
    except ValueError as exc:
        raise UserError(f"{what} must be integers, got {values}") from exc


def parse_method_args(items: list[str], methods: list[str]) -> dict[str, dict[str, Any]]:
    """`name.key=value` strings -> {name: {key: typed value}}, typed by the method's defaults."""
    from gapbench.method import get_method_class, parse_value

    out: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise UserError(
                f"--method-arg {item!r} must look like method.key=value, e.g. gap.rounds=2"
            )
        lhs, raw = item.split("=", 1)
        name, key = lhs.split(".", 1)
        cls = get_method_class(name)
        if key not in cls.defaults:
            raise UserError(
                f"method {name!r} has no parameter {key!r}; it takes: {', '.join(sorted(cls.defaults)) or 'none'}"
            )
        try:
            out.setdefault(name, {})[key] = parse_value(raw, cls.defaults[key])
        except ValueError as exc:
            raise UserError(f"--method-arg {item!r}: {exc}") from exc
    return out


def cmd_run(args: argparse.Namespace) -> int:
    from gapbench.leaderboard import task_markdown, write_leaderboard
    from gapbench.method import get_method_class, load_plugin
    from gapbench.results import find_record, run_id
    from gapbench.task import get_task
    from gapbench.train import RunConfig, Trainer

    for plugin in _split(args.plugin):
        load_plugin(plugin)
    task = get_task(args.task)
    if args.profile not in task.profiles:
        raise UserError(
            f"task {args.task!r} has no profile {args.profile!r}; choose one of {', '.join(task.profiles)}"
        )
    methods = _split([args.methods])
    classes = {m: get_method_class(m) for m in methods}
    sparsities = _floats(args.sparsity, "--sparsity")
    for s in sparsities:
        if not 0.0 <= s < 1.0:
            raise UserError(f"sparsity {s} is outside [0, 1); pass e.g. --sparsity 0.9")
    distributions = _split(args.distribution)
    for d in distributions:
        if d not in DISTRIBUTIONS:
            raise UserError(f"unknown distribution {d!r}; choose one of {', '.join(DISTRIBUTIONS)}")
    seeds = _ints(args.seeds, "--seeds")
    if args.data_root is not None and not Path(args.data_root).exists():
        raise UserError(
            f"--data-root {args.data_root} does not exist; point it at the data set folder"
        )
    for name, value in (
        ("--epochs", args.epochs),
        ("--batch-size", args.batch_size),
        ("--max-steps", args.max_steps),
    ):
        if value is not None and value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    method_args = parse_method_args(args.method_arg or [], methods)
    out = Path(args.out)

    configs = []
    for seed in seeds:
        for method in methods:
            sparse = classes[method].sparse
            for sparsity in sparsities if sparse else [0.0]:
                for dist in distributions if sparse else ["dense"]:
                    cfg = RunConfig(
                        task=args.task,
                        method=method,
                        sparsity=sparsity,
                        distribution=dist,
                        seed=seed,
                        profile=args.profile,
                        epochs=args.epochs,
                        batch_size=args.batch_size,
                        data_root=args.data_root,
                        max_steps=args.max_steps,
                        method_params=method_args.get(method, {}),
                        device=args.device,
                        out=str(out),
                    )
                    if cfg not in configs:
                        configs.append(cfg)
    for i, cfg in enumerate(configs, 1):
        label = f"[{i}/{len(configs)}] {cfg.task} {cfg.method} sparsity={cfg.sparsity} {cfg.distribution} seed={cfg.seed}"
        existing = find_record(out, run_id(cfg.identity()))
        if existing and existing.get("status") == "complete" and not args.force:
            print(f"{label}: reusing {existing['run_id']} (use --force to rerun)", flush=True)
            continue
        print(f"{label}: training", flush=True)
        record = Trainer(cfg).run(resume=args.resume)
        metric = record["metric"]
        print(
            f"{label}: {metric}={record['metrics'][metric]:.3f} sparsity={record['measured_sparsity']:.4f} "
            f"({record['wall_time_s']:.0f}s) -> {record['_path']}",
            flush=True,
        )
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun, rank 0 alone writes and prints the leaderboard
    table = write_leaderboard(out)
    print()
    print(task_markdown(table, args.task))
    print(f"leaderboard written to {out / 'leaderboard.md'} and {out / 'leaderboard.csv'}")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from gapbench.leaderboard import to_markdown, write_leaderboard

    out = Path(args.out)
    if not (out / "runs").is_dir():
        raise UserError(
            f"no run records under {out / 'runs'}; run `python -m gapbench run --task ...` first"
        )
    table = write_leaderboard(out)
    print(to_markdown(table))
    print(f"written: {out / 'leaderboard.csv'}, {out / 'leaderboard.md'}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from gapbench.method import METHODS, discover_methods, load_plugin

    for plugin in _split(args.plugin):
        load_plugin(plugin)
    discover_methods()
    for name in sorted(METHODS):
        cls = METHODS[name]
        print(f"{name}: {cls.description}")
        for key, value in cls.defaults.items():
            print(f"    {name}.{key} = {value!r}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    import tasks  # noqa: F401
    from gapbench.task import TASKS

    for name in sorted(TASKS):
        cls = TASKS[name]
        print(f"{name}: {cls.description}")
        print(f"    profiles: {', '.join(cls.profiles)}; metrics: {', '.join(cls.metrics)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gapbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train methods on a task and print its leaderboard")
    run.add_argument(
        "--task", required=True, help="classification, detection, partseg, translation"
    )
    run.add_argument(
        "--methods", default=DEFAULT_METHODS, help=f"comma list (default {DEFAULT_METHODS})"
    )
    run.add_argument("--sparsity", nargs="+", default=["0.9"], help="one or more target sparsities")
    run.add_argument("--distribution", nargs="+", default=["uniform"], help="uniform, erk, global")
    run.add_argument("--seeds", nargs="+", default=["0"], help="one or more seeds")
    run.add_argument("--profile", default="tiny", help="tiny (embedded data) or paper (real data)")
    run.add_argument("--data-root", default=None, help="real data set folder (paper profile)")
    run.add_argument(
        "--epochs", type=int, default=None, help="budget in epochs (default: profile's)"
    )
    run.add_argument("--batch-size", type=int, default=None)
    run.add_argument(
        "--max-steps", type=int, default=None, help="stop after N optimizer steps (smoke runs)"
    )
    run.add_argument("--out", default="results", help="where runs/ and the leaderboard go")
    run.add_argument(
        "--resume", action="store_true", help="continue interrupted runs from checkpoints"
    )
    run.add_argument("--force", action="store_true", help="rerun even if a complete record exists")
    run.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    run.add_argument("--plugin", action="append", help="a .py file or module defining a method")
    run.add_argument("--method-arg", action="append", help="method.key=value, e.g. gap.rounds=2")
    run.set_defaults(func=cmd_run)

    board = sub.add_parser("leaderboard", help="write leaderboard.csv/.md from the run records")
    board.add_argument("--out", default="results")
    board.set_defaults(func=cmd_leaderboard)

    methods = sub.add_parser("methods", help="list methods with their parameters")
    methods.add_argument("--plugin", action="append")
    methods.set_defaults(func=cmd_methods)

    tasks_cmd = sub.add_parser("tasks", help="list tasks and profiles")
    tasks_cmd.set_defaults(func=cmd_tasks)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"gapbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gapbench: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
