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

from gapbench.engine.signals import Interrupted
from gapbench.errors import UserError

DEFAULT_METHODS = "dense,magnitude,gap"
DEFAULT_OUT = "results/runs"
PLUGIN_HELP = (
    "a .py file or importable module defining a method or task; it is imported, which EXECUTES "
    "its code with your permissions: pass only code you trust"
)


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


def _check_vs(vs: str, out: Path | None = None) -> None:
    """--vs must name a method: a registered one, or one that the records under `out` hold."""
    from gapbench.registry import all_methods

    known = set(all_methods())
    if vs in known:
        return
    if out is not None:
        known |= _record_methods(out)
        if vs in known:
            return
    raise UserError(
        f"--vs {vs!r} is not a method; choose the reference among: {', '.join(sorted(known))}"
    )


def _record_methods(out: Path) -> set[str]:
    """Method names in the records under `out` (a plug-in's method is not registered here)."""
    import json

    from gapbench.report.records import records_dir

    names = set()
    for path in records_dir(out).glob("*.json"):
        try:
            names.add(str(json.loads(path.read_text())["method"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # the board warns about broken records
    return names


def _warn_slow_precision(precision: str, device: Any) -> None:
    if precision == "fp16" and getattr(device, "type", str(device)) == "cpu":
        print(
            "gapbench: warning: --precision fp16 on CPU is about 12x slower than fp32 "
            "(no fast fp16 CPU kernels); use fp32 or bf16 on CPU",
            file=sys.stderr,
        )


def _sweep(args: argparse.Namespace, specs: list, options: Any, plugins: list[str]) -> dict:
    from gapbench.slurm import parse_slurm_args
    from gapbench.sweep import SlurmOptions, run_sweep

    slurm = SlurmOptions(
        partition=args.slurm_partition,
        gpus_per_job=args.slurm_gpus_per_job,
        cpus_per_job=args.slurm_cpus_per_job,
        time_min=args.slurm_time,
        extra=parse_slurm_args(_split(args.slurm_arg)),
    )
    return run_sweep(
        specs, options, args.launcher, args.jobs, slurm,
        log=lambda m: print(m, flush=True), plugins=plugins,
    )  # fmt: skip


def _run_here(specs: list, options: Any) -> dict[str, int]:
    """Each run in this process, one after the other; counts by outcome."""
    from gapbench.runner import execute_locked, outcome_kind

    counts: dict[str, int] = {}
    for i, spec in enumerate(specs, 1):
        label = f"[{i}/{len(specs)}] {spec.label()}"
        print(f"{label}: starting", flush=True)
        outcome, record = execute_locked(spec, options)
        kind = outcome_kind(outcome)
        counts[kind] = counts.get(kind, 0) + 1
        if record is None or outcome != "trained":
            print(f"{label}: {outcome}", flush=True)
            continue
        if record.status in ("diverged", "no_metric"):
            print(f"{label}: {record.status}: {record.status_reason}", flush=True)
            continue
        metric = record.metrics.get(record.metric, float("nan"))
        print(
            f"{label}: trained: {record.metric}={metric:.3f} "
            f"sparsity={record.measured_sparsity:.4f} ({record.wall_time_s:.0f}s) "
            f"-> {Path(options.out) / 'records' / record.file_name}",
            flush=True,
        )
    return counts


def cmd_run(args: argparse.Namespace) -> int:
    from gapbench.registry import check_task_name, load_plugin

    plugins = _split(args.plugin)
    if not plugins:  # a plug-in may add a task; without one, fail before torch is imported
        check_task_name(args.task)
    for plugin in plugins:
        load_plugin(plugin)
    _check_vs(args.vs)

    from gapbench.report.leaderboard import task_markdown, write_leaderboard
    from gapbench.runner import ExecOptions, check_output, summary
    from gapbench.runspec import GridRequest, resolve_grid

    request = GridRequest(
        task=args.task,
        methods=_split([args.methods]),
        sparsities=_numbers(args.sparsity or ["0.9"], float, "--sparsity"),
        sparsities_given=args.sparsity is not None,
        pattern=args.pattern,
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
        multipliers=_numbers(args.multiplier, float, "--multiplier"),
    )
    specs = resolve_grid(request)
    if args.match == "flops":
        from gapbench.matching import match_flops

        specs = match_flops(specs, args.match_ref, log=lambda m: print(m, flush=True))
    from gapbench.engine.distributed import resolve_device

    device = resolve_device(args.device)  # an unavailable device fails before the first run
    if args.accumulate is not None and args.accumulate < 1:
        raise UserError(f"--accumulate must be at least 1, got {args.accumulate}")
    out = Path(args.out)
    options = ExecOptions(
        out=out,
        device=args.device,
        resume=True,  # the default; --resume is kept as a no-op for old scripts
        restart=args.restart,
        checkpoint_every=args.checkpoint_every,
        workers=args.workers,
        accumulate=args.accumulate,
        channels_last=args.channels_last,
        compile=args.compile,
        save_weights=args.save_weights,
        force=args.force,
        log=tuple(_split(args.log)),
    )
    if options.log:
        from gapbench.engine.tracking import BACKENDS

        unknown = [b for b in options.log if b not in BACKENDS]
        if unknown:
            raise UserError(f"--log {','.join(unknown)}: choose from {', '.join(BACKENDS)}")
    if args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    if args.checkpoint_every is not None and args.checkpoint_every < 1:
        raise UserError(f"--checkpoint-every must be at least 1 step, got {args.checkpoint_every}")
    check_output(options)  # an unwritable --out fails now, not after hours of training
    _warn_slow_precision(request.precision, device)
    if args.launcher != "none":
        counts = _sweep(args, specs, options, plugins)
    else:
        counts = _run_here(specs, options)
    print(f"{'sweep' if args.launcher != 'none' else 'runs'}: {summary(counts)}", flush=True)
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun, rank 0 alone writes and prints the leaderboard
    table = write_leaderboard(out, args.vs)
    print()
    print(task_markdown(table, args.task))
    print(f"leaderboard written to {out / 'leaderboard.md'} and {out / 'leaderboard.csv'}")
    if args.profile == "tiny":
        print(
            "(the quick tiny profile: the shipped board is `--profile bench`, its records and "
            "leaderboard are in results/reference/; benchmarks/reference_runs.sh makes them)"
        )
    return 0


def headline_sparsity(task: str, profile: str) -> float:
    """The sparsity a profile's headline board compares methods at (90% unless it says)."""
    from gapbench.registry import get_task_class

    return float(get_task_class(task)().profile(profile).options.get("headline_sparsity", 0.9))


def cmd_check_board(args: argparse.Namespace) -> int:
    from gapbench.report.board_checks import board_checks
    from gapbench.report.records import load_records, records_dir

    out = Path(args.out)
    if not records_dir(out).is_dir():
        raise UserError(f"no run records under {records_dir(out)}; pass the board's --out")
    records = [r for r in load_records(out) if r.profile == args.profile]
    if not records:
        raise UserError(f"no records of profile {args.profile!r} under {records_dir(out)}")
    tasks = sorted({r.task for r in records})
    headlines = {(t, args.profile): headline_sparsity(t, args.profile) for t in tasks}
    checks = board_checks(records, headlines)
    for check in checks:
        print(f"{'PASS' if check.ok else 'FAIL'}  {check.name}: {check.value}")
    failed = sum(not c.ok for c in checks)
    print(f"{len(checks) - failed} of {len(checks)} board checks hold")
    return 1 if failed else 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from gapbench.report.leaderboard import to_markdown, write_leaderboard
    from gapbench.report.published import load_published
    from gapbench.report.records import records_dir

    out = Path(args.out)
    if not records_dir(out).is_dir():
        raise UserError(
            f"no run records under {records_dir(out)}; run `python -m gapbench run --task ...` first"
        )
    _check_vs(args.vs, out)
    from gapbench.report.atomic import check_writable_folder

    check_writable_folder(out)  # the board's files go next to records/
    table = write_leaderboard(out, args.vs)
    print(to_markdown(table, load_published()))
    print(f"written: {out / 'leaderboard.csv'}, {out / 'leaderboard.md'}")
    return 0


def cmd_published(args: argparse.Namespace) -> int:
    from gapbench.registry import all_tasks
    from gapbench.report.published import load_published, published_markdown

    if args.task is not None and args.task not in all_tasks():
        raise UserError(f"unknown task {args.task!r}; choose one of: {', '.join(all_tasks())}")
    if load_published(args.task).empty:
        print(f"no published numbers shipped for task {args.task}")
        return 0
    print(published_markdown(args.task), end="")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from gapbench.deploy.export import export_run

    path = export_run(Path(args.out), args.run_id, args.format, Path(args.to))
    print(f"exported {args.run_id} to {path}")
    return 0


def cmd_speed(args: argparse.Namespace) -> int:
    import json

    from gapbench.deploy.speed import measure
    from gapbench.engine.distributed import resolve_device

    for name, value in (("--batch-size", args.batch_size), ("--repeats", args.repeats)):
        if value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    report = measure(
        Path(args.out),
        args.run_id,
        resolve_device(args.device),
        args.batch_size,
        args.repeats,
        data_root=Path(args.data_root) if args.data_root else None,
    )
    lat, thr = report["latency_ms"], report["throughput"]
    print(
        f"{report['task']} {report['method']} s={report['sparsity']} {report['pattern']} on {report['device']} "
        f"({report['threads']} threads, {report['sparse_layers']} layers on {report['kernel']} kernels)"
    )
    print(
        f"latency (batch 1): dense {lat['dense']:.2f} ms, sparse {lat['sparse']:.2f} ms: {lat['speedup']:.2f}x"
    )
    print(
        f"throughput (batch {thr['batch']}): dense {thr['dense']:.1f}/s, sparse {thr['sparse']:.1f}/s: "
        f"{thr['speedup']:.2f}x"
    )
    if args.json:
        print(json.dumps(report))
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
    run.add_argument(
        "--sparsity", nargs="+", default=None, help="one or more target sparsities (default 0.9)"
    )
    run.add_argument(
        "--pattern", default="unstructured", help="unstructured, nm:N:M (e.g. nm:2:4) or block:HxW"
    )
    run.add_argument("--distribution", nargs="+", default=["uniform"], help="uniform, erk, global")
    run.add_argument("--seeds", nargs="+", default=["0"], help="one or more seeds")
    run.add_argument(
        "--profile",
        default="tiny",
        help="tiny (the quick default), bench (the shipped boards; both on embedded data) or paper "
        "(real data)",
    )
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
        "--resume", action="store_true", help="(the default) continue runs from their checkpoints"
    )
    run.add_argument(
        "--restart", action="store_true", help="discard runs' checkpoints and train from scratch"
    )
    run.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="N",
        help="also checkpoint every N optimizer steps (long epochs; resumes bit-identically)",
    )
    run.add_argument("--force", action="store_true", help="rerun even if a complete record exists")
    run.add_argument(
        "--multiplier",
        nargs="+",
        default=["1"],
        help="training multipliers (RigL's 1x 2x 5x): scale every schedule",
    )
    run.add_argument(
        "--match",
        default="epochs",
        choices=("epochs", "flops"),
        help="match budgets by epochs or by training FLOPs",
    )
    run.add_argument(
        "--match-ref", default="gap", help="the method whose training FLOPs --match flops meets"
    )
    run.add_argument(
        "--vs", default="magnitude", help="reference method of the leaderboard's paired differences"
    )
    run.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1")
    run.add_argument("--precision", default="fp32", help="fp32, bf16 or fp16 (autocast)")
    run.add_argument(
        "--workers",
        type=int,
        default=None,
        help="data-loader processes (default: 8 on paper profiles, 0 on embedded data)",
    )
    run.add_argument("--accumulate", type=int, default=None, help="gradient accumulation steps")
    run.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    run.add_argument("--compile", action="store_true", help="torch.compile the model")
    run.add_argument(
        "--log", action="append", help="trackers: tensorboard, wandb (offline), mlflow"
    )
    run.add_argument(
        "--save-weights", action="store_true", help="keep final weights and masks (out/weights/)"
    )
    run.add_argument(
        "--launcher",
        default="none",
        choices=("none", "local", "slurm"),
        help="run each run of the grid as a submitit job",
    )
    run.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="jobs at once (local: processes; slurm: array parallelism)",
    )
    run.add_argument("--slurm-partition", default=None)
    run.add_argument("--slurm-gpus-per-job", type=int, default=0)
    run.add_argument("--slurm-cpus-per-job", type=int, default=4)
    run.add_argument("--slurm-time", type=int, default=24 * 60, help="minutes per job")
    run.add_argument(
        "--slurm-arg", action="append", help="key=value passed to sbatch, e.g. account=abc"
    )
    run.add_argument("--plugin", action="append", help=PLUGIN_HELP)
    run.add_argument("--method-arg", action="append", help="method.key=value, e.g. gap.rounds=2")
    run.set_defaults(func=cmd_run)

    board = sub.add_parser("leaderboard", help="write leaderboard.csv/.md and plots from records")
    board.add_argument("--out", default=DEFAULT_OUT)
    board.add_argument(
        "--vs", default="magnitude", help="reference method of the paired differences"
    )
    board.set_defaults(func=cmd_leaderboard)

    check = sub.add_parser(
        "check-board",
        help="does a board measure methods? dense converged, schedules, test size, separation",
    )
    check.add_argument("--out", default="results/reference")
    check.add_argument("--profile", default="bench")
    check.set_defaults(func=cmd_check_board)

    published = sub.add_parser(
        "published", help="list the published numbers gapbench ships (with sources)"
    )
    published.add_argument("--task", default=None)
    published.set_defaults(func=cmd_published)

    export = sub.add_parser(
        "export", help="write a run's sparse weights and masks (pt or safetensors)"
    )
    export.add_argument("run_id")
    export.add_argument("--out", default=DEFAULT_OUT, help="the results folder holding the run")
    export.add_argument("--format", default="pt", choices=("pt", "safetensors"))
    export.add_argument("--to", required=True, help="file to write (not a folder)")
    export.set_defaults(func=cmd_export)

    speed = sub.add_parser("speed", help="measure a run's inference speed, dense vs sparse kernels")
    speed.add_argument("run_id")
    speed.add_argument("--out", default=DEFAULT_OUT)
    speed.add_argument("--device", default="cpu")
    speed.add_argument("--batch-size", type=int, default=64)
    speed.add_argument("--repeats", type=int, default=20)
    speed.add_argument(
        "--data-root", default=None, help="the data the run trained on (runs on real data only)"
    )
    speed.add_argument("--json", action="store_true", help="also print the report as JSON")
    speed.set_defaults(func=cmd_speed)

    methods = sub.add_parser("methods", help="list methods with their parameters")
    methods.add_argument("--plugin", action="append", help=PLUGIN_HELP)
    methods.set_defaults(func=cmd_methods)

    tasks_cmd = sub.add_parser("tasks", help="list tasks and profiles")
    tasks_cmd.set_defaults(func=cmd_tasks)
    return parser


def one_line(exc: UserError) -> str:
    """The error's own message on one line. A UserError raised in a data-loader worker comes back
    wrapped ("Caught UserError in DataLoader worker ... Original Traceback ..."): its last line
    holds the message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else type(exc).__name__
    last = lines[-1]
    prefix = f"{UserError.__module__}.{UserError.__name__}: "
    return last.removeprefix(prefix).removeprefix(f"{UserError.__name__}: ")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"gapbench: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except Interrupted as exc:  # a stop signal: the checkpoint is written, the line says so
        print(f"gapbench: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(
            "gapbench: interrupted; rerun the same command to continue from the last checkpoint",
            file=sys.stderr,
        )
        return 130
    except BrokenPipeError:  # `gapbench tasks | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return 0
