"""Wall-clock gains of running in parallel, measured by hand on an otherwise idle machine:

- P-GaP: one round of kappa=2 workers on 2 gloo processes (worker groups) against the one-process
  emulation that runs the workers one after another (same seed, same merged model: see
  tests/test_distributed.py);
- sweeps: a 4-run grid as 2 local submitit jobs against the same grid run serially.

    python benchmarks/bench_parallel.py [--task classification --profile digits]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="classification")
    parser.add_argument("--profile", default="digits")
    parser.add_argument("--epochs-per-step", type=int, default=3)
    args = parser.parse_args()
    gapbench = [
        sys.executable,
        "-m",
        "gapbench",
        "run",
        "--task",
        args.task,
        "--profile",
        args.profile,
        "--device",
        "cpu",
    ]
    pgap = ["--methods", "gap", "--epochs", str(args.epochs_per_step), "--method-arg", "gap.mode=parallel",
            "--method-arg", "gap.partitions=2", "--method-arg", "gap.rounds=1",
            "--method-arg", f"gap.epochs_per_step={args.epochs_per_step}", "--method-arg", "gap.finetune=0"]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        timed(
            [*gapbench, "--methods", "dense", "--epochs", "1", "--out", f"{tmp}/warm"]
        )  # data generated once
        serial = timed([*gapbench, *pgap, "--out", f"{tmp}/serial"])
        torchrun = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29561",
            "-m",
            "gapbench",
        ]
        groups = timed([*torchrun, *gapbench[3:], *pgap, "--out", f"{tmp}/groups"])
        grid = ["--methods", "static,magnitude", "--seeds", "0", "1", "--epochs", "3"]
        one = timed([*gapbench, *grid, "--out", f"{tmp}/one"])
        two = timed([*gapbench, *grid, "--launcher", "local", "--jobs", "2", "--out", f"{tmp}/two"])
    print(f"P-GaP round (kappa=2, T={args.epochs_per_step}, {args.task}/{args.profile}): one process {serial:.1f} s, "
          f"2 worker groups {groups:.1f} s: {serial / groups:.2f}x")  # fmt: skip
    print(
        f"4-run sweep: serial {one:.1f} s, --launcher local --jobs 2 {two:.1f} s: {one / two:.2f}x"
    )


if __name__ == "__main__":
    main()
