"""Helpers shared by the tests: run one resolved run, or the CLI, into a temporary folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gapbench.cli import main
from gapbench.report.records import RunRecord
from gapbench.runner import ExecOptions, execute
from gapbench.runspec import GridRequest, RunSpec, resolve_grid


def spec_for(task: str = "classification", method: str = "gap", **kw: Any) -> RunSpec:
    """The single resolved run of a one-method grid (method args under `params`)."""
    params = kw.pop("params", {})
    request = GridRequest(
        task=task, methods=[method], method_args={method: params} if params else {}, **kw
    )
    (spec,) = resolve_grid(request)
    return spec


def run_one(out: Path, task: str = "classification", method: str = "gap", **kw: Any) -> RunRecord:
    """Train one run through the runner, as the CLI does, and return its record."""
    options = ExecOptions(out=Path(out), device="cpu", resume=kw.pop("resume", False))
    return execute(spec_for(task, method, **kw), options)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((Path(out) / "records").glob("*.json"))]
