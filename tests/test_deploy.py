"""Patterns, export and speed: 2:4 masks hold exactly 2 of every 4 weights, runs export to pt and
safetensors with their masks and N:M metadata, and `speed` measures dense against sparse kernels."""

import json
from pathlib import Path

import pytest
import torch
from helpers import cli, records

REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference"


def _two_of_four(masks: dict[str, torch.Tensor]) -> None:
    assert masks
    for name, mask in masks.items():
        groups = mask.to(torch.int64).reshape(-1, 4).sum(1)
        assert bool((groups == 2).all()), name


@pytest.mark.parametrize("method", ["magnitude", "rigl", "gap"])
def test_shipped_two_four_runs_hold_two_of_every_four_weights(method):
    shipped = [
        r for r in (json.loads(p.read_text()) for p in (REFERENCE / "records").glob(f"classification-{method}-*.json"))
        if r["identity"]["pattern"] == "nm:2:4"
    ]  # fmt: skip
    assert len(shipped) == 1, "the shipped classification 2:4 run is missing"
    state = torch.load(REFERENCE / "weights" / f"{shipped[0]['run_id']}.pt")
    _two_of_four(state["masks"])
    for name, mask in state["masks"].items():
        assert torch.all(state["weights"][name][~mask] == 0)


def test_export_of_a_run_without_weights_is_a_clear_error(tmp_path, capsys):
    code, _, err = cli(
        capsys, "export", "nosuchrun", "--out", str(tmp_path), "--to", str(tmp_path / "x.pt")
    )
    assert code == 2 and "no record nosuchrun" in err


@pytest.mark.slow
def test_two_four_run_exports_and_measures_speed(tmp_path, capsys):
    argv = ["run", "--task", "classification", "--profile", "digits", "--methods", "magnitude,rigl",
            "--pattern", "nm:2:4", "--epochs", "2", "--save-weights", "--device", "cpu", "--out", str(tmp_path)]  # fmt: skip
    code, out, err = cli(capsys, *argv)
    assert code == 0, err
    for record in records(tmp_path):
        assert record["sparsity"] == 0.5 and record["identity"]["pattern"] == "nm:2:4"
        rid = record["run_id"]
        code, _, err = cli(
            capsys,
            "export",
            rid,
            "--out",
            str(tmp_path),
            "--format",
            "pt",
            "--to",
            str(tmp_path / f"{rid}.pt"),
        )
        assert code == 0, err
        exported = torch.load(tmp_path / f"{rid}.pt")
        _two_of_four(exported["masks"])
        assert exported["metadata"]["nm"]["n"] == 2 and exported["metadata"]["nm"]["m"] == 4
        code, _, err = cli(
            capsys,
            "export",
            rid,
            "--out",
            str(tmp_path),
            "--format",
            "safetensors",
            "--to",
            str(tmp_path / f"{rid}.st"),
        )
        assert code == 0, err
        from safetensors import safe_open

        with safe_open(str(tmp_path / f"{rid}.st"), "pt") as f:
            assert json.loads(f.metadata()["gapbench"])["pattern"] == "nm:2:4"
            _two_of_four({k: f.get_tensor(k).bool() for k in f.keys() if k.startswith("masks/")})
    code, out, err = cli(
        capsys,
        "speed",
        rid,
        "--out",
        str(tmp_path),
        "--repeats",
        "3",
        "--batch-size",
        "8",
        "--json",
    )
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["latency_ms"]["dense"] > 0 and report["sparse_layers"] >= 1
    assert report["throughput"]["speedup"] > 0


@pytest.mark.slow
def test_save_weights_retrains_a_finished_run_that_kept_no_weights(tmp_path, capsys):
    argv = ["run", "--task", "classification", "--profile", "digits", "--methods", "magnitude",
            "--epochs", "1", "--device", "cpu", "--out", str(tmp_path)]  # fmt: skip
    assert cli(capsys, *argv)[0] == 0
    (record,) = records(tmp_path)
    kept = tmp_path / "weights" / f"{record['run_id']}.pt"
    assert not kept.exists()
    code, out, err = cli(capsys, *argv, "--save-weights")
    assert code == 0, err
    assert "retraining" in out and kept.exists()
    (again,) = records(tmp_path)
    assert again["metrics"] == record["metrics"]  # the same run, trained again: same numbers
    code, out, _ = cli(capsys, *argv, "--save-weights")
    assert code == 0 and "reusing" in out and "retraining" not in out


def _shipped_run(task: str, method: str, pattern: str) -> dict:
    (record,) = [
        r for r in (json.loads(p.read_text()) for p in (REFERENCE / "records").glob(f"{task}-{method}-*.json"))
        if r["identity"]["pattern"] == pattern and (REFERENCE / "weights" / f"{r['run_id']}.pt").exists()
    ]  # fmt: skip
    return record


def test_a_shipped_run_exports(tmp_path, capsys):
    record = _shipped_run("classification", "magnitude", "unstructured")
    target = tmp_path / "model.safetensors"
    code, _, err = cli(
        capsys,
        "export",
        record["run_id"],
        "--out",
        str(REFERENCE),
        "--format",
        "safetensors",
        "--to",
        str(target),
    )
    assert code == 0, err
    from safetensors.torch import load_file

    tensors = load_file(str(target))
    masks = {k: v.bool() for k, v in tensors.items() if k.startswith("masks/")}
    alive = sum(int(m.sum()) for m in masks.values())
    assert alive == record["alive_prunable_params"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "task, pattern", [("classification", "unstructured"), ("translation", "nm:2:4")]
)  # fmt: skip
def test_speed_is_measured_on_a_kept_run(capsys, task, pattern):
    record = _shipped_run(task, "magnitude", pattern)  # a shipped run, with its shipped weights
    code, out, err = cli(
        capsys,
        "speed",
        record["run_id"],
        "--out",
        str(REFERENCE),
        "--repeats",
        "3",
        "--batch-size",
        "16",
        "--json",
    )
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["sparse_layers"] > 0 and report["latency_ms"]["speedup"] > 0
