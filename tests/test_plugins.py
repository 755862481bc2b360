"""A user's method from a --plugin file and from a new module in baselines/, end to end."""

import json
import textwrap
from pathlib import Path

import baselines
import gapbench.method as method_module
from gapbench.cli import main

PLUGIN = textwrap.dedent(
    '''
    from gapbench.method import Method, register_method


    @register_method("{name}")
    class LayerwiseRandom(Method):
        """Random masks per layer, redrawn never: a user's baseline in a few lines."""

        description = "user plug-in for the tests"
        defaults = {{"extra": 1}}

        def setup(self, model, optimizer, budget, masks, ctx):
            super().setup(model, optimizer, budget, masks, ctx)
            for name in masks.names:
                self.prune_to(name, self.target_counts[name])
    '''
)


def _run_plugin(tmp_path, name, extra_args):
    out = tmp_path / "out"
    code = main(
        [
            "run",
            "--task",
            "classification",
            "--methods",
            name,
            "--epochs",
            "1",
            "--method-arg",
            f"{name}.extra=3",
            "--out",
            str(out),
            *extra_args,
        ]
    )
    assert code == 0
    record = json.loads(next((out / "runs").glob(f"*-{name}-*.json")).read_text())
    assert record["method_params"] == {"extra": 3}
    assert record["alive_prunable_params"] == round(0.1 * record["prunable_params"])


def test_plugin_from_a_file(tmp_path, capsys):
    path = tmp_path / "my_method.py"
    path.write_text(PLUGIN.format(name="fileplugin"))
    _run_plugin(tmp_path, "fileplugin", ["--plugin", str(path)])
    assert main(["methods", "--plugin", str(path)]) == 0
    assert "fileplugin.extra = 1" in capsys.readouterr().out


def test_plugin_as_a_module_in_baselines(tmp_path):
    module = Path(baselines.__path__[0]) / "zz_test_plugin_tmp.py"
    module.write_text(PLUGIN.format(name="dirplugin"))
    try:
        method_module._discovered = False  # discovery runs again, as in a fresh process
        _run_plugin(tmp_path, "dirplugin", [])
    finally:
        module.unlink()


def test_missing_plugin_file_is_a_user_error(tmp_path, capsys):
    code = main(["run", "--task", "classification", "--plugin", str(tmp_path / "nope.py")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
