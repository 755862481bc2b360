"""One registry for tasks and methods: built-ins, `baselines/` modules, entry points, plug-ins.

The core never imports `tasks` or `baselines` statically: `discover()` imports them by name the
first time a task or method is looked up, together with every installed package's
`gapbench.methods` / `gapbench.tasks` entry points.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from gapbench.errors import UserError

if TYPE_CHECKING:
    from gapbench.sparse.method import Method
    from gapbench.task import Task

METHODS: dict[str, type[Method]] = {}
TASKS: dict[str, type[Task]] = {}
# Packages searched for built-ins, imported by name only.
BUILTIN_PACKAGES = {"methods": ("gapbench.gap", "baselines"), "tasks": ("tasks",)}
_discovered: set[str] = set()

T = TypeVar("T")


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: make a Method available under `name` (CLI, leaderboard, conformance)."""

    def deco(cls: type[Method]) -> type[Method]:
        cls.name = name
        METHODS[name] = cls
        return cls

    return deco


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator: make a Task available under `name`."""

    def deco(cls: type[Task]) -> type[Task]:
        cls.name = name
        TASKS[name] = cls
        return cls

    return deco


def _import_package_modules(package_name: str) -> None:
    package = importlib.import_module(package_name)
    for info in pkgutil.iter_modules(getattr(package, "__path__", [])):
        importlib.import_module(f"{package_name}.{info.name}")


def discover(kind: str) -> None:
    """Import the built-in packages and entry points of `kind` ("methods" or "tasks") once."""
    if kind in _discovered:
        return
    _discovered.add(kind)
    for package in BUILTIN_PACKAGES[kind]:
        _import_package_modules(package)
    for point in entry_points(group=f"gapbench.{kind}"):
        point.load()


def rediscover() -> None:
    """Forget what was discovered (tests that add modules to a search path)."""
    _discovered.clear()


def get_method_class(name: str) -> type[Method]:
    discover("methods")
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; choose one of: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def get_task_class(name: str) -> type[Task]:
    discover("tasks")
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; choose one of: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def all_methods() -> dict[str, type[Method]]:
    discover("methods")
    return dict(sorted(METHODS.items()))


def all_tasks() -> dict[str, type[Task]]:
    discover("tasks")
    return dict(sorted(TASKS.items()))


def load_plugin(spec: str) -> None:
    """Import a user's method or task from a .py file path or an importable module name."""
    if spec.endswith(".py"):
        path = Path(spec)
        if not path.is_file():
            raise UserError(f"plugin file {spec} does not exist; pass a .py file or a module name")
        mod_name = f"gapbench_plugin_{path.stem}"
        spec_obj = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(spec_obj)
        sys.modules[mod_name] = module
        try:
            spec_obj.loader.exec_module(module)
        except Exception as exc:  # a user's file: report, don't crash with a traceback
            del sys.modules[mod_name]
            raise UserError(f"plugin {spec} failed to import: {exc}") from exc
    else:
        try:
            importlib.import_module(spec)
        except ImportError as exc:
            raise UserError(f"plugin module {spec!r} cannot be imported: {exc}") from exc
