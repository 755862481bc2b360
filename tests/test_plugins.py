"""A user's method from a --plugin file, a new module in baselines/ and an installed package's
entry point, end to end. Nothing is written into the repository."""

import json
import sys
import textwrap
from importlib.metadata import EntryPoint

import pytest
import torch

import baselines
import gapbench.registry as registry
from gapbench.cli import main
from gapbench.testing import check_method


@pytest.fixture(autouse=True)
def one_thread_and_clean_registry():
    """One torch thread (tiny models on a shared 2-core box run several times faster), and forget
    the test's plug-ins afterwards so they do not leak into other tests' method lists."""
    registry.discover("methods")
    threads, methods, modules = torch.get_num_threads(), dict(registry.METHODS), set(sys.modules)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    registry.METHODS.clear()
    registry.METHODS.update(methods)
    registry.discover("methods")  # built-ins are imported already: this only marks them found
    for name in set(sys.modules) - modules:
        if name.startswith("gapbench_plugin_") or "zz_" in name:
            del sys.modules[name]


PLUGIN = textwrap.dedent(
    '''
    from dataclasses import dataclass

    from gapbench.registry import register_method
    from gapbench.sparse import Method, Params


    @dataclass(frozen=True)
    class ExtraParams(Params):
        extra: int = 1


    @register_method("{name}")
    class LayerwiseMagnitude(Method):
        """Magnitude masks at init, never changed: a user's baseline in a few lines."""

        description = "user plug-in for the tests"
        Params = ExtraParams

        def setup(self, ctx):
            super().setup(ctx)
            for name in self.masks.names:
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
    record = json.loads(next((out / "records").glob(f"*-{name}-*.json")).read_text())
    assert record["params"] == {"extra": 3}
    assert record["alive_prunable_params"] == round(0.1 * record["prunable_params"])


def test_plugin_from_a_file(tmp_path, capsys):
    path = tmp_path / "my_method.py"
    path.write_text(PLUGIN.format(name="fileplugin"))
    _run_plugin(tmp_path, "fileplugin", ["--plugin", str(path)])
    assert main(["methods", "--plugin", str(path)]) == 0
    listing = capsys.readouterr().out
    assert "fileplugin: user plug-in for the tests" in listing
    assert "fileplugin.extra = 1" in listing
    for name in ("dense", "static", "magnitude", "oneshot", "set", "rigl", "gap"):
        assert f"\n{name}: " in f"\n{listing}"  # every built-in, with its one-line description
    assert "rigl.alpha = 0.3" in listing and "rigl.delta_t = 100" in listing
    assert "reference: Evci et al." in listing


def test_plugin_as_a_module_in_baselines(tmp_path, monkeypatch):
    # A second folder on the baselines package path stands in for a new file in baselines/.
    extra = tmp_path / "more_baselines"
    extra.mkdir()
    (extra / "zz_test_plugin_tmp.py").write_text(PLUGIN.format(name="dirplugin"))
    monkeypatch.setattr(baselines, "__path__", [*baselines.__path__, str(extra)])
    registry.rediscover()  # discover again, as a new process would
    _run_plugin(tmp_path, "dirplugin", [])
    assert "baselines.zz_test_plugin_tmp" in sys.modules


def test_plugin_from_an_installed_package_entry_point(tmp_path, monkeypatch):
    (tmp_path / "zz_pkg_plugin_tmp.py").write_text(PLUGIN.format(name="epplugin"))
    monkeypatch.syspath_prepend(str(tmp_path))
    point = EntryPoint("epplugin", "zz_pkg_plugin_tmp", "gapbench.methods")
    seen = []

    def fake_entry_points(group):
        seen.append(group)
        return [point]

    monkeypatch.setattr(registry, "entry_points", fake_entry_points)
    registry.rediscover()
    cls = registry.get_method_class("epplugin")
    assert seen == ["gapbench.methods"] and cls.Params().extra == 1
    report = check_method("epplugin", {"extra": 2})  # a user's method through the same check
    assert report.final_counts == report.target_counts


def test_unknown_method_argument_is_a_user_error(capsys):
    code = main(
        ["run", "--task", "classification", "--methods", "rigl", "--method-arg", "rigl.beta=1"]
    )
    assert code == 2 and "beta" in capsys.readouterr().err


def test_missing_plugin_file_is_a_user_error(tmp_path, capsys):
    code = main(["run", "--task", "classification", "--plugin", str(tmp_path / "nope.py")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
