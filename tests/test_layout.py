"""The layers stay layers: no import cycle inside gapbench/, and the core never imports the
built-in tasks or baselines by module (the registry finds them by name)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gapbench"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        deps = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
    return graph


def test_the_core_never_imports_tasks_or_baselines():
    for module, deps in _imports().items():
        bad = sorted(d for d in deps if d.split(".")[0] in ("tasks", "baselines"))
        assert not bad, f"{module} imports {bad}"


def test_no_import_cycles_inside_gapbench():
    graph = _imports()
    modules = set(graph)
    edges = {
        m: {d for d in deps if d in modules and d != m and not m.startswith(d + ".")}
        for m, deps in graph.items()
    }
    # Drop edges to a package's own __init__ re-exports (a package importing its children).
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
