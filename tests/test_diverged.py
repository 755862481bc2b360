"""A run whose training loss goes non-finite stops there, says so, and leaves a `diverged` record
that the board counts and never averages; records are strict JSON."""

import json
import sys
import textwrap

import pytest
from helpers import cli

from gapbench import registry

POISON = textwrap.dedent(
    """
    import torch

    from gapbench.registry import register_method
    from gapbench.sparse import Method


    @register_method("zz_poison")
    class Poison(Method):
        \"\"\"Static masks whose first weight becomes NaN after step 2: a run that diverges.\"\"\"

        description = "diverges on purpose (tests)"

        def setup(self, ctx):
            super().setup(ctx)
            self.draw_random_masks()

        def update(self, step):
            if step == 2:
                with torch.no_grad():
                    next(iter(self.masks.params.values())).fill_(float("nan"))
    """
)


@pytest.fixture(autouse=True)
def _forget_plugins():
    registry.discover("methods")  # the built-ins, before the plug-in registers beside them
    methods, modules = dict(registry.METHODS), set(sys.modules)
    yield
    registry.METHODS.clear()
    registry.METHODS.update(methods)
    for name in set(sys.modules) - modules:
        if "zz_" in name or name.startswith("gapbench_plugin_"):
            del sys.modules[name]


def test_a_diverged_run_is_recorded_as_diverged_and_counted_on_the_board(tmp_path, capsys):
    plugin = tmp_path / "zz_poison.py"
    plugin.write_text(POISON)
    out = tmp_path / "out"
    args = ["run", "--task", "classification", "--profile", "digits", "--epochs", "1"]
    args += ["--plugin", str(plugin), "--methods", "zz_poison,static", "--out", str(out)]
    code, stdout, _ = cli(capsys, *args)
    assert code == 0
    assert "diverged: training loss nan at step 3 (epoch 0)" in stdout
    texts = {p.name: p.read_text() for p in (out / "records").glob("*.json")}
    (poisoned,) = [t for name, t in texts.items() if "zz_poison" in name]
    assert "NaN" not in poisoned  # strict JSON
    record = json.loads(poisoned)
    assert record["status"] == "diverged" and record["metrics"] == {}
    assert "step 3" in record["status_reason"]
    board = (out / "leaderboard.md").read_text()
    row = next(line for line in board.splitlines() if line.startswith("| zz_poison |"))
    assert "1 diverged" in row and "| 0 |" in row  # counted, n = 0, no mean
    # Training is deterministic: the diverged run is not trained again without --force.
    code, stdout, _ = cli(capsys, *args)
    assert code == 0 and stdout.count("reusing") == 2, stdout
