"""README's shipped-board tables are the shipped leaderboard's numbers: every row of a `bench`
board table and of a budget-axis table must read what `results/reference` rebuilds to, so README
cannot drift from the records when a batch lands (or keep a number after its records go)."""

import csv
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
REFERENCE = ROOT / "results" / "reference"
TASKS = {
    "Part segmentation": "partseg",
    "Translation": "translation",
    "Classification": "classification",
    "Detection": "detection",
}


def _sections() -> dict[str, str]:
    """The text of each `### <Task> (bench)` section, by task."""
    parts = re.split(r"^### ", README, flags=re.M)
    out = {}
    for part in parts:
        title, _, body = part.partition("\n")
        for name, task in TASKS.items():
            if title.strip() == f"{name} (bench)":
                out[task] = body
    return out


BOARD_HEADER = "| method | mean ± std |"
FLOPS_HEADER = "| method | epochs | mean ± std |"  # an equal-FLOPs board: each method's epochs


def _rows_below(lines: list[str], header: int) -> list[list[str]]:
    """The cells of each row of the Markdown table whose header is `lines[header]`."""
    rows = []
    for row in lines[header + 2 :]:
        if not row.startswith("|"):
            break
        rows.append([c.strip() for c in row.strip("|").split("|")])
    return rows


def _tables(body: str, header: str = BOARD_HEADER) -> list[tuple[float, list[list[str]]]]:
    """(sparsity, rows) of each board table, the sparsity read from the line that introduces it."""
    tables = []
    lines = body.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith(header):
            continue
        intro = next(x for x in reversed(lines[:i]) if x.strip())
        sparsity = float(re.search(r"(\d+)%", intro).group(1)) / 100
        tables.append((sparsity, _rows_below(lines, i)))
    return tables


def _bench_rows(budget_mode: str = "epochs") -> list[dict[str, str]]:
    """Leaderboard rows of the bench boards at 1x (by epochs, or at equal FLOPs)."""
    with open(REFERENCE / "leaderboard.csv", newline="") as handle:
        return [
            r
            for r in csv.DictReader(handle)
            if (r["profile"], r["budget_mode"], float(r["multiplier"]))
            == ("bench", budget_mode, 1.0)
        ]


def _board(budget_mode: str = "epochs") -> dict[tuple[str, str, float], dict[str, str]]:
    """Bench rows at 1x, unstructured, per layer, by (task, method, sparsity)."""
    return {
        (r["task"], r["method"], float(r["sparsity"])): r
        for r in _bench_rows(budget_mode)
        if r["pattern"] == "unstructured" and r["distribution"] in ("uniform", "dense")
    }


def _expected(r: dict[str, str], digits: int) -> list[str]:
    f = lambda v: f"{float(v):.{digits}f}"  # noqa: E731
    s = lambda v: f"{float(v):+.{digits}f}"  # noqa: E731
    cells = [
        f"{f(r['mean'])} ± {f(r['std'])}",
        f"[{f(r['ci95_low'])}, {f(r['ci95_high'])}]",
        r["n"],
    ]
    if r["delta_vs_ref"]:
        low, high = float(r["delta_ci95_low"]), float(r["delta_ci95_high"])
        star = "*" if low > 0 or high < 0 else ""
        cells.append(f"{s(r['delta_vs_ref'])} [{s(low)}, {s(high)}]{star}")
    else:
        cells.append("")
    return cells


def test_readme_bench_tables_read_the_shipped_leaderboard():
    board = _board()
    sections = _sections()
    assert set(sections) == set(TASKS.values()), "a bench section is missing from README"
    checked = 0
    for task, body in sections.items():
        digits = 3 if task == "partseg" else 2
        for sparsity, rows in _tables(body):
            assert rows, f"{task}: empty table"
            for cells in rows:
                method = cells[0]
                key = (task, method, 0.0 if method == "dense" else sparsity)
                assert key in board, f"README {task} {sparsity:.0%} row {method}: no shipped record"
                r = board[key]
                want = _expected(r, digits)
                assert cells[1:5] == want, (
                    f"README {task} {sparsity:.0%} {method}: {cells} vs {want}"
                )
                assert cells[-1] == f"{float(r['train_flops_vs_dense']):.3f}", (task, method)
                checked += 1
    assert checked >= 20


def test_readme_equal_flops_tables_read_the_shipped_leaderboard():
    """Equal-FLOPs tables (an epochs column after the method) in the bench sections: every row is
    the shipped `--match flops` row, its epochs the trainer's."""
    board = _board("flops")
    checked = 0
    for task, body in _sections().items():
        digits = 3 if task == "partseg" else 2
        for sparsity, rows in _tables(body, FLOPS_HEADER):
            for cells in rows:
                method = cells[0]
                key = (task, method, 0.0 if method == "dense" else sparsity)
                assert key in board, f"README {task} equal FLOPs {method}: no shipped record"
                r = board[key]
                epochs = float(r["trainer_epochs"])  # whole, or ending inside an epoch
                want = f"{epochs:.0f}" if epochs.is_integer() else f"{epochs:.2f}"
                assert cells[1] == want, (task, method, cells[1])
                assert cells[2:6] == _expected(r, digits), (task, method, cells)
                assert cells[-1] == f"{float(r['train_flops_vs_dense']):.3f}", (task, method)
                checked += 1
    if any(r["task"] == "translation" for r in board.values()):
        assert checked >= 6, "the shipped translation equal-FLOPs board is not in README"


def _budget_md() -> dict[str, dict[str, list[str]]]:
    """budget.md's cells per task and method (the rank column dropped)."""
    out: dict[str, dict[str, list[str]]] = {}
    task = None
    for line in (REFERENCE / "budget.md").read_text().splitlines():
        heading = re.match(r"## (\w+) \(bench\)", line)
        if heading:
            task = heading.group(1)
        elif task and line.startswith("| ") and not line.startswith("| method"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            out.setdefault(task, {})[cells[0]] = cells[1:-1]
    return out


def test_readme_budget_tables_read_the_shipped_budget_axis():
    """Each `#### <Task>` part of README's budget-axis section: its table is budget.md's cells."""
    section = README.split("### Budget axis", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    shipped = _budget_md()
    checked = 0
    for part in section.split("\n#### ")[1:]:
        title, _, body = part.partition("\n")
        task = TASKS[title.strip()]
        table = [x for x in body.splitlines() if x.startswith("| ")]
        assert table and table[0].startswith("| method | 1×"), f"README budget {task}: no table"
        for line in table[1:]:
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert cells[0] in shipped[task], f"README budget {task}: {cells[0]} not in budget.md"
            assert cells[1:] == shipped[task][cells[0]][: len(cells) - 1], (task, cells)
            checked += 1
    assert checked >= 5


def _curve_header(line: str) -> list[tuple[float, str]] | None:
    """(sparsity, distribution) of each column of a sparsity-curve table's header
    (`| method | 80% | 90% | 90% ERK | 90% global |`: uniform unless the column names another)."""
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    columns = [re.fullmatch(r"(\d+)%(?: (ERK|global))?", c) for c in cells[1:]]
    if len(cells) < 3 or cells[0] != "method" or not all(columns):
        return None
    return [(int(c.group(1)) / 100, (c.group(2) or "uniform").lower()) for c in columns]


def test_readme_sparsity_curve_tables_read_the_shipped_leaderboard():
    """Sparsity-curve tables in the bench sections (a column per sparsity and distribution):
    each cell is the shipped 1x board's mean ± half the 95% interval (n seeds) there."""
    board = {
        (r["task"], r["method"], float(r["sparsity"]), r["distribution"]): r
        for r in _bench_rows()
        if r["pattern"] == "unstructured"
    }
    checked = 0
    for task, body in _sections().items():
        digits = 3 if task == "partseg" else 2
        lines = body.splitlines()
        for i, line in enumerate(lines):
            columns = _curve_header(line)
            if columns is None:
                continue
            for cells in _rows_below(lines, i):
                for (sparsity, distribution), cell in zip(columns, cells[1:], strict=True):
                    key = (task, cells[0], sparsity, distribution)
                    assert key in board, f"README {task} curve {key}: no shipped record"
                    r = board[key]
                    half = (float(r["ci95_high"]) - float(r["ci95_low"])) / 2
                    want = f"{float(r['mean']):.{digits}f} ± {half:.{digits}f} ({r['n']})"
                    assert cell == want, (key, cell, want)
                    checked += 1
    shipped = {k[3] for k in board if k[0] == "classification" and k[1] != "dense"}
    if any(k[0] == "classification" and k[2] == 0.98 for k in board):
        assert checked >= 16, "the shipped classification sparsity curve is not in README"
    if "erk" in shipped:
        assert checked >= 24, "the shipped classification ERK point is not in README"
    if "global" in shipped:
        assert checked >= 32, "the shipped classification global point is not in README"


PATTERN_HEADER = "| method | pattern | n |"  # a board of structured patterns (one seed per method)


def test_readme_pattern_tables_read_the_shipped_leaderboard():
    """Pattern tables (`--pattern nm:2:4` runs) in the bench sections: each row is the shipped 1x
    row of that method and pattern, its metric the mean over its seeds."""
    rows = {(r["task"], r["method"], r["pattern"]): r for r in _bench_rows()}
    checked = 0
    for task, body in _sections().items():
        digits = 3 if task == "partseg" else 2
        lines = body.splitlines()
        for i, line in enumerate(lines):
            if not line.startswith(PATTERN_HEADER):
                continue
            for method, pattern, n, metric, sparsity, flops in _rows_below(lines, i):
                pattern = "unstructured" if method == "dense" else pattern.strip("`")
                key = (task, method, pattern)
                assert key in rows, f"README {task} {method} {pattern}: no shipped record"
                r = rows[key]
                assert [n, metric] == [r["n"], f"{float(r['mean']):.{digits}f}"], (task, method)
                want = "0" if method == "dense" else f"{float(r['measured_sparsity']):.4f}"
                assert sparsity == want, (task, method, sparsity)
                assert flops == f"{float(r['train_flops_vs_dense']):.3f}", (task, method)
                checked += 1
    patterned = {k[0] for k in rows if k[2] != "unstructured"}
    assert checked >= 3 * len(patterned), "a shipped 2:4 board is not in README"
