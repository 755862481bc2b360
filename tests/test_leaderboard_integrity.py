"""The leaderboard never pools runs that differ in anything but the seed, and no record, however
broken, takes a board down: each invalid file is skipped with one warning naming it and the field.

Table-driven cases for each way a results folder goes wrong in practice, then a property test that
corrupts, duplicates and perturbs records at random."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gapbench.report.leaderboard import leaderboard_frame, records_frame, write_leaderboard
from gapbench.report.records import SCHEMA_VERSION, RunRecord, load_records, run_id


def record(
    method: str = "gap",
    seed: int = 0,
    value: float = 90.0,
    status: str = "complete",
    params: dict[str, Any] | None = None,
    **identity_overrides: Any,
) -> dict[str, Any]:
    """A valid record as the runner writes it (identity hashed into the run id)."""
    dense = method == "dense"
    identity = {
        "task": "classification",
        "profile": "tiny",
        "dataset": "shapes",
        "method": method,
        "params": params or {},
        "sparsity": 0.0 if dense else 0.9,
        "distribution": "dense" if dense else "uniform",
        "dense_layers": "first",
        "seed": seed,
        "epochs": 20,
        "batch_size": 64,
        "precision": "fp32",
        "max_steps": None,
        "pattern": "unstructured",
        "budget_mode": "epochs",
        "multiplier": 1.0,
        "match_ref": "",
        "match_epochs": 0,
        "data": None,
        "schema": SCHEMA_VERSION,
        **identity_overrides,
    }
    return {
        "schema": SCHEMA_VERSION,
        "run_id": run_id(identity),
        "status": status,
        "identity": identity,
        "task": identity["task"],
        "profile": identity["profile"],
        "dataset": identity["dataset"],
        "method": method,
        "params": identity["params"],
        "sparsity": identity["sparsity"],
        "distribution": identity["distribution"],
        "seed": seed,
        "epochs": identity["epochs"],
        "budget_mode": "epochs",
        "multiplier": 1.0,
        "metric": "top1",
        "metrics": {"top1": value} if status == "complete" else {},
        "val_metrics": {"top1": value} if status == "complete" else {},
        "measured_sparsity": identity["sparsity"],
        "prunable_params": 100,
        "alive_prunable_params": 10,
        "conv_linear_density": 0.1,
        "params_total": 120,
        "params_alive": 30,
        "policy": {},
        "per_layer": {"w": {"numel": 100, "alive": 10}},
        "budget": {"trainer_epochs": 20},
        "plan": {},
        "flops": {
            "train": 30.0,
            "dense_train_budget": 100.0,
            "inference": 1.0,
            "dense_inference": 10.0,
        },
        "method_log": {},
        "history": [],
        "wall_time_s": 1.0,
        "device": "cpu",
        "versions": {},
        "git_commit": None,
        "task_extra": {},
        "status_reason": "" if status == "complete" else "training loss nan at step 7",
    }


def write(out: Path, name: str, data: Any) -> Path:
    path = out / "records" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = data if isinstance(data, str) else json.dumps(data)  # bare NaN where data holds nan
    path.write_text(text)
    return path


def board(out: Path) -> Any:
    return leaderboard_frame(records_frame(load_records(out)))


def rows_of(table: Any, method: str) -> Any:
    return table[table["method"] == method]


# ---- runs that differ are never pooled -------------------------------------------------------
def test_runs_differing_in_precision_are_two_rows_that_name_the_difference(tmp_path, capsys):
    write(tmp_path, "a", record("dense", 0, 68.06, precision="fp16"))
    write(tmp_path, "b", record("dense", 0, 80.00, precision="fp32"))
    table = board(tmp_path)
    dense = rows_of(table, "dense")
    assert sorted(dense["n"]) == [1, 1]
    assert sorted(dense["mean"]) == [68.06, 80.00]
    assert sorted(dense["variant"]) == ["precision=fp16", "precision=fp32"]
    write_leaderboard(tmp_path)
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| variant |" in md and "precision=fp16" in md


@pytest.mark.parametrize(
    "field, a, b",
    [
        ("batch_size", 64, 128),
        ("dense_layers", "first", "none"),
        ("data", "mydata:abc123", "mydata:def456"),
        ("max_steps", None, 10),
    ],
)
def test_every_identity_field_splits_rows(tmp_path, field, a, b):
    for seed in range(2):
        write(tmp_path, f"a{seed}", record("static", seed, 70.0 + seed, **{field: a}))
        write(tmp_path, f"b{seed}", record("static", seed, 80.0 + seed, **{field: b}))
    static = rows_of(board(tmp_path), "static")
    assert list(static["n"]) == [2, 2]
    assert all(label.startswith(f"{field}=") for label in static["variant"])


def test_a_reference_method_in_two_variants_gives_one_paired_delta_per_row(tmp_path):
    # magnitude start=0.5 beside the default magnitude: this crashed the paired difference.
    for seed in range(3):
        write(tmp_path, f"m{seed}", record("magnitude", seed, 90.0 + seed))
        write(tmp_path, f"h{seed}", record("magnitude", seed, 85.0, params={"start": 0.5}))
        write(tmp_path, f"g{seed}", record("gap", seed, 91.0 + seed))
    write(tmp_path, "h3", record("magnitude", 3, 85.0, params={"start": 0.5}))
    table = board(tmp_path)
    magnitude = rows_of(table, "magnitude")
    assert sorted(magnitude["n"]) == [3, 4]
    assert set(magnitude["variant"]) == {"start=-", "start=0.5"}
    (gap,) = rows_of(table, "gap").itertuples()
    # Both variants share the three seeds gap ran: ties go to the first label, named on the row.
    assert gap.delta_n == 3 and gap.ref_variant == "start=-"
    assert gap.delta_vs_ref == pytest.approx(1.0)
    write_leaderboard(tmp_path)
    assert "(vs start=-)" in (tmp_path / "leaderboard.md").read_text()


def test_the_paired_difference_only_pairs_runs_of_the_same_context(tmp_path):
    for seed in range(2):
        write(tmp_path, f"m{seed}", record("magnitude", seed, 90.0, precision="fp16"))
        write(tmp_path, f"g{seed}", record("gap", seed, 91.0))
    (gap,) = rows_of(board(tmp_path), "gap").itertuples()
    assert gap.delta_n == 0 and math.isnan(gap.delta_vs_ref)  # fp32 gap vs fp16 magnitude: no


# ---- duplicates, divergence, broken records --------------------------------------------------
def test_one_run_in_two_files_counts_once_and_says_whether_the_copies_differ(tmp_path, capsys):
    for seed in range(3):
        write(tmp_path, f"a{seed}", record("static", seed, 70.0 + seed))
    write(tmp_path, "copy0", record("static", 0, 70.0))
    changed = record("static", 1, 71.0)
    changed["wall_time_s"] = 99.0
    write(tmp_path, "copy1", changed)
    static = rows_of(board(tmp_path), "static")
    assert list(static["n"]) == [3]
    err = capsys.readouterr().err
    assert err.count("duplicated") == 2
    assert "identical copies" in err and "differ in wall_time_s" in err


def test_diverged_runs_are_counted_never_averaged(tmp_path):
    write(tmp_path, "a", record("rigl", 0, 80.0))
    write(tmp_path, "b", record("rigl", 1, status="diverged"))
    write(tmp_path, "c", record("set", 0, status="diverged"))
    table = board(tmp_path)
    (rigl,) = rows_of(table, "rigl").itertuples()
    assert (rigl.n, rigl.mean, rigl.diverged) == (1, 80.0, 1)
    (set_,) = rows_of(table, "set").itertuples()
    assert set_.n == 0 and math.isnan(set_.mean) and set_.diverged == 1
    write_leaderboard(tmp_path)
    md = (tmp_path / "leaderboard.md").read_text()
    assert "1 diverged" in md


def test_records_are_written_as_strict_json(tmp_path):
    data = record("gap")
    data["history"] = [{"epoch": 0, "train_loss": float("nan")}]
    names = list(data)
    rec = RunRecord(**{k: data[k] for k in names})
    text = rec.to_json()
    assert "NaN" not in text
    json.loads(text, parse_constant=lambda token: pytest.fail(f"bare {token}"))


def _break(data: dict, path: str, value: Any) -> dict:
    data = copy.deepcopy(data)
    *parents, leaf = path.split(".")
    target = data
    for key in parents:
        target = target[key]
    if value is KeyError:
        del target[leaf]
    else:
        target[leaf] = value
    return data


@pytest.mark.parametrize(
    "path, value, named",
    [
        ("metrics.top1", float("nan"), "NaN"),  # a bare NaN token
        ("metrics.top1", "91.2", "metrics.top1"),
        ("metrics.top1", KeyError, "metrics.top1"),
        ("flops", {}, "flops.train"),
        ("flops.dense_inference", "10", "flops.dense_inference"),
        ("seed", "0", "'seed'"),
        ("sparsity", True, "'sparsity'"),
        ("history", {}, "'history'"),
        ("status", "finished", "'status'"),
        ("schema", 1, "'schema'"),
        ("per_layer", KeyError, "'per_layer'"),
        ("method", "rigl", "'method'"),  # disagrees with the identity
        ("run_id", "0123456789ab", "'run_id'"),
    ],
)
def test_an_invalid_record_is_skipped_with_one_warning_naming_file_and_field(
    tmp_path, capsys, path, value, named
):
    for seed in range(2):
        write(tmp_path, f"ok{seed}", record("gap", seed, 90.0))
    bad = write(tmp_path, "bad", _break(record("gap", 2, 50.0), path, value))
    table = write_leaderboard(tmp_path)
    assert list(table["n"]) == [2] and list(table["mean"]) == [90.0]
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(lines) == 1 and str(bad) in lines[0] and named in lines[0]


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", "\xff\xfe", "null"])
def test_unreadable_files_are_skipped_with_a_warning(tmp_path, capsys, text):
    write(tmp_path, "ok", record("gap", 0, 90.0))
    path = tmp_path / "records" / "bad.json"
    path.write_bytes(text.encode("latin-1"))
    assert list(write_leaderboard(tmp_path)["n"]) == [1]
    assert capsys.readouterr().err.count(str(path)) == 1


# ---- property: corrupt, duplicate and perturb at random --------------------------------------
BREAKS = [
    ("metrics.top1", float("nan")),
    ("metrics.top1", "x"),
    ("flops", {}),
    ("seed", None),
    ("metrics", KeyError),
    ("identity", []),
    ("wall_time_s", float("inf")),
    ("budget", "20 epochs"),
]


@st.composite
def folders(draw: Any) -> list[tuple[str, Any, bool]]:
    """(file name, content, valid?) for a random results folder."""
    files: list[tuple[str, Any, bool]] = []
    for i in range(draw(st.integers(1, 10))):
        data = record(
            method=draw(st.sampled_from(["dense", "gap", "magnitude", "rigl"])),
            seed=draw(st.integers(0, 2)),
            value=draw(st.floats(0, 100, allow_nan=False)),
            status=draw(st.sampled_from(["complete", "complete", "diverged"])),
            params=draw(st.sampled_from([{}, {"start": 0.5}])),
            precision=draw(st.sampled_from(["fp32", "bf16"])),
            batch_size=draw(st.sampled_from([64, 128])),
        )
        action = draw(st.sampled_from(["keep", "keep", "break", "duplicate"]))
        if action == "break":
            data = _break(data, *draw(st.sampled_from(BREAKS)))
            files.append((f"r{i}", data, False))
        else:
            files.append((f"r{i}", data, True))
        if action == "duplicate":
            files.append((f"r{i}-copy", copy.deepcopy(data), True))
    return files


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(files=folders())
def test_any_folder_builds_a_board_that_pools_only_seeds(tmp_path_factory, capsys, files):
    out = tmp_path_factory.mktemp("board")
    for name, data, _ in files:
        write(out, name, data)
    capsys.readouterr()
    table = write_leaderboard(out)
    err = capsys.readouterr().err
    for name, _, valid in files:
        assert err.count(f"records/{name}.json: ") == (0 if valid else 1), name
    identities = {r.run_id: r.identity for r in load_records(out)}
    for run_ids in table.get("run_ids", []):
        without_seed = {
            json.dumps({**identities[i], "seed": None}, sort_keys=True) for i in run_ids
        }
        assert len(without_seed) == 1  # seeds of one row share everything but the seed
        assert len(run_ids) == len({identities[i]["seed"] for i in run_ids})
