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


def _same_class(a: type, b: type) -> bool:
    """The same class defined again (a module imported twice), not a different one."""
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def _claim(table: dict[str, type], kind: str, name: str, cls: type) -> None:
    """Register `cls` under `name`, refusing a name another class holds: a plug-in named
    `magnitude` must not silently replace (or be replaced by) the built-in."""
    held = table.get(name)
    if held is not None and not _same_class(held, cls):
        raise UserError(
            f"{kind} name {name!r} is taken by {held.__module__}.{held.__qualname__}; "
            f"register {cls.__qualname__} under another name"
        )
    cls.name = name
    table[name] = cls


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: make a Method available under `name` (CLI, leaderboard, conformance)."""

    def deco(cls: type[Method]) -> type[Method]:
        _claim(METHODS, "method", name, cls)
        return cls

    return deco


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator: make a Task available under `name`."""

    def deco(cls: type[Task]) -> type[Task]:
        _claim(TASKS, "task", name, cls)
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
        try:
            point.load()
        except (Exception, SystemExit) as exc:  # an installed package's code: name it
            raise UserError(
                f"entry point {point.name!r} ({point.value}) of group gapbench.{kind} failed to "
                f"load: {_describe(exc)}; fix or uninstall that package"
            ) from None


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


def builtin_task_names() -> list[str]:
    """Task names known without importing any task (each imports torch): the `tasks` package's
    subpackages (each registers the task of its own name) and the installed entry points."""
    spec = importlib.util.find_spec(BUILTIN_PACKAGES["tasks"][0])
    folders = spec.submodule_search_locations if spec else None
    names = {info.name for info in pkgutil.iter_modules(folders or [])}
    names |= {point.name for point in entry_points(group="gapbench.tasks")}
    return sorted(names)


def check_task_name(name: str) -> None:
    """Fail fast on a task name that nothing provides, before anything heavy is imported."""
    if name in TASKS:
        return
    known = builtin_task_names()
    if name not in known:
        raise UserError(f"unknown task {name!r}; choose one of: {', '.join(known)}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r})"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1]}" if text else type(exc).__name__


def load_plugin(spec: str) -> None:
    """Import a user's method or task from a .py file path or an importable module name.

    Importing runs the plug-in's code with the user's permissions (that is how it registers):
    pass only code you trust. Built-ins are discovered first, so a plug-in that reuses a built-in
    name is refused instead of being silently overridden later."""
    discover("methods")
    discover("tasks")
    try:
        _import_plugin(spec)
    except UserError as exc:
        raise UserError(f"plugin {spec}: {exc}") from None
    except (Exception, SystemExit) as exc:  # a user's code: one line, never a traceback
        raise UserError(
            f"plugin {spec} failed to import: {_describe(exc)}; "
            "a plug-in should only define and register methods or tasks"
        ) from None


def _import_plugin(spec: str) -> None:
    if not spec.endswith(".py"):
        try:
            importlib.import_module(spec)
        except ModuleNotFoundError as exc:
            if exc.name and spec.startswith(exc.name):
                raise UserError(
                    f"no module {spec!r}; pass a .py file or an importable module name"
                ) from None
            raise
        return
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"file {spec} does not exist; pass a .py file or a module name")
    mod_name = f"gapbench_plugin_{path.stem}"
    spec_obj = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec_obj)
    sys.modules[mod_name] = module
    try:
        spec_obj.loader.exec_module(module)
    except BaseException:
        del sys.modules[mod_name]
        raise
