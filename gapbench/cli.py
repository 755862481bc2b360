"""Command line: `python -m gapbench run|leaderboard|methods|tasks`.

User mistakes (unknown task or method, bad parameters, missing data, an unavailable device) are
one line on stderr and exit code 2, found before any training starts.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from gapbench.errors import UserError

DEFAULT_METHODS = "dense,magnitude,gap"
DEFAULT_OUT = "results/runs"


def _split(values: list[str] | None) -> list[str]:
    """Accept both `--x a b` and `--x a,b`."""
    return [v for item in values or [] for v in item.split(",") if v]


def _numbers(values: list[str], cast: type, what: str) -> list[Any]:
    try:
        return [cast(v) for v in _split(values)]
    except ValueError as exc:
        kind = "numbers" if cast is float else "integers"
        raise UserError(f"{what} must be {kind}, got {values}") from exc


def parse_method_args(items: list[str]) -> dict[str, dict[str, Any]]:
    """`name.key=value` strings -> {name: {key: typed value}}, typed by the method's Params."""
    from gapbench.registry import get_method_class

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise UserError(
                f"--method-arg {item!r} must look like method.key=value, e.g. gap.rounds=2"
            )
        lhs, raw = item.split("=", 1)
        name, key = lhs.split(".", 1)
        cls = get_method_class(name)
        try:
            out.setdefault(name, {})[key] = cls.Params.parse(key, raw)
        except UserError as exc:
            raise UserError(f"--method-arg {item!r}: method {name!r} {exc}") from exc
    return out


def cmd_run(args: argparse.Namespace) -> int:
    from gapbench.registry import load_plugin
    from gapbench.report.leaderboard import task_markdown, write_leaderboard
    from gapbench.report.records import find_record
    from gapbench.runner import ExecOptions, execute
    from gapbench.runspec import GridRequest, resolve_grid

    for plugin in _split(args.plugin):
        load_plugin(plugin)
    request = GridRequest(
        task=args.task,
        methods=_split([args.methods]),
        sparsities=_numbers(args.sparsity, float, "--sparsity"),
        distributions=_split(args.distribution),
        seeds=_numbers(args.seeds, int, "--seeds"),
        profile=args.profile,
        epochs=args.epochs,
        batch_size=args.batch_size,
        dense_layers=args.dense_layers,
        method_args=parse_method_args(args.method_arg or []),
        data_root=args.data_root,
        max_steps=args.max_steps,
        precision=args.precision,
    )
    specs = resolve_grid(request)
    from gapbench.engine.distributed import resolve_device

    resolve_device(args.device)  # an unavailable device fails before the first run
    if args.accumulate is not None and args.accumulate < 1:
        raise UserError(f"--accumulate must be at least 1, got {args.accumulate}")
    out = Path(args.out)
    options = ExecOptions(
        out=out,
        device=args.device,
        resume=args.resume,
        workers=args.workers,
        accumulate=args.accumulate,
        channels_last=args.channels_last,
        compile=args.compile,
    )
    for i, spec in enumerate(specs, 1):
        label = f"[{i}/{len(specs)}] {spec.label()}"
        existing = find_record(out, spec.run_id)
        if existing and existing.status == "complete" and not args.force:
            print(f"{label}: reusing {existing.run_id} (use --force to rerun)", flush=True)
            continue
        print(f"{label}: training", flush=True)
        record = execute(spec, options)
        print(
            f"{label}: {record.metric}={record.metrics.get(record.metric, float('nan')):.3f} "
            f"sparsity={record.measured_sparsity:.4f} ({record.wall_time_s:.0f}s) "
            f"-> {out / 'records' / record.file_name}",
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
    from gapbench.report.leaderboard import to_markdown, write_leaderboard
    from gapbench.report.records import records_dir

    out = Path(args.out)
    if not records_dir(out).is_dir():
        raise UserError(
            f"no run records under {records_dir(out)}; run `python -m gapbench run --task ...` first"
        )
    table = write_leaderboard(out)
    print(to_markdown(table))
    print(f"written: {out / 'leaderboard.csv'}, {out / 'leaderboard.md'}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from gapbench.registry import all_methods, load_plugin

    for plugin in _split(args.plugin):
        load_plugin(plugin)
    for name, cls in all_methods().items():
        print(f"{name}: {cls.description}")
        if cls.reference:
            print(f"    reference: {cls.reference}")
        defaults = cls.Params()
        for f in fields(cls.Params):
            print(f"    {name}.{f.name} = {getattr(defaults, f.name)!r}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from gapbench.registry import all_tasks

    for name, cls in all_tasks().items():
        print(f"{name}: {cls.description}")
        print(f"    profiles: {', '.join(cls.profiles)}; metrics: {', '.join(cls.metrics)}")
        for profile in cls.profiles.values():
            print(
                f"    {profile.name}: {profile.dataset}; {profile.epochs} epochs, "
                f"batch {profile.batch_size} {profile.batch_unit}"
            )
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
    run.add_argument(
        "--batch-size", type=int, default=None, help="global batch (default: profile's)"
    )
    run.add_argument(
        "--dense-layers", default=None, help="first, last, first,last or none (default: profile's)"
    )
    run.add_argument(
        "--max-steps", type=int, default=None, help="stop after N optimizer steps (smoke runs)"
    )
    run.add_argument(
        "--out", default=DEFAULT_OUT, help=f"records and leaderboard (default {DEFAULT_OUT})"
    )
    run.add_argument(
        "--resume", action="store_true", help="continue interrupted runs from checkpoints"
    )
    run.add_argument("--force", action="store_true", help="rerun even if a complete record exists")
    run.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1")
    run.add_argument("--precision", default="fp32", help="fp32, bf16 or fp16 (autocast)")
    run.add_argument("--workers", type=int, default=0, help="data-loader worker processes")
    run.add_argument("--accumulate", type=int, default=None, help="gradient accumulation steps")
    run.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    run.add_argument("--compile", action="store_true", help="torch.compile the model")
    run.add_argument("--plugin", action="append", help="a .py file or module defining a method")
    run.add_argument("--method-arg", action="append", help="method.key=value, e.g. gap.rounds=2")
    run.set_defaults(func=cmd_run)

    board = sub.add_parser("leaderboard", help="write leaderboard.csv/.md and plots from records")
    board.add_argument("--out", default=DEFAULT_OUT)
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
