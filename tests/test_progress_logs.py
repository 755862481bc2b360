"""Progress that reaches log files: a run with stdout and stderr in files logs one line per epoch
(loss, LR, density, step time, elapsed, ETA) and method events, keeps `<out>/logs/<run_id>.log`,
and its record carries per-epoch train/eval times and the run's true total cost."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from helpers import run_one

from gapbench.engine.progress import MethodEvents, epoch_line
from gapbench.logs import format_duration, get_logger, run_logging

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@contextlib.contextmanager
def log_lines() -> Iterator[list[str]]:
    """Every message of the "gapbench" logger (and its children) while the block runs, through
    an explicit handler (pytest's caplog did not reliably see them in the full suite)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger, handler = get_logger(), Collect(logging.INFO)
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


@pytest.mark.slow
def test_a_run_with_output_in_files_logs_each_epoch_and_keeps_a_log_file(tmp_path):
    out = tmp_path / "out"
    with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
        code = subprocess.run(
            [sys.executable, "-m", "gapbench", "run", "--task", "classification", "--profile",
             "digits", "--methods", "gap", "--epochs", "3", "--method-arg", "gap.rounds=1",
             "--method-arg", "gap.epochs_per_step=1", "--device", "cpu", "--out", str(out)],
            stdout=stdout, stderr=stderr, env=ENV, timeout=600,
        ).returncode  # fmt: skip
    err = (tmp_path / "stderr").read_text()
    assert code == 0, err[-1500:]
    (record_path,) = (out / "records").glob("*.json")
    record = json.loads(record_path.read_text())
    log_file = out / "logs" / f"{record['run_id']}.log"
    logged = log_file.read_text()
    for text in (err, logged):
        epochs = [line for line in text.splitlines() if " epoch " in line and ": loss " in line]
        assert [line.split(" epoch ")[1].split(":")[0] for line in epochs] == ["1/3", "2/3", "3/3"]
        for word in ("loss ", "lr ", "density ", "step ", "elapsed ", "eta "):
            assert all(word in line for line in epochs), (word, epochs)
        assert "gap: grow partition 1/3" in text and "gap: prune partition 3/3" in text
        assert "\r" not in text  # no progress bar off a terminal
    assert "\r" not in (tmp_path / "stdout").read_text()
    history = record["history"]
    assert len(history) == 3
    assert all(e["train_time_s"] > 0 for e in history)
    assert history[-1]["eval_time_s"] > 0 and history[0]["eval_time_s"] == 0.0
    timing = record["timing"]
    assert timing["train_s"] == record["wall_time_s"]  # wall_time_s keeps its meaning
    # The total counts the interpreter start, the data build and the evaluation as well.
    assert timing["total_s"] > timing["train_s"] + timing["data_s"] + timing["eval_s"]
    assert timing["attempts"] == 1


@pytest.mark.slow
def test_lines_go_through_the_gapbench_logger_and_its_handlers_are_removed(tmp_path):
    logger = get_logger()
    before = list(logger.handlers)
    with log_lines() as lines:
        record = run_one(tmp_path, method="rigl", profile="digits", epochs=2,
                         params={"delta_frac": 0.2})  # fmt: skip
    assert logger.handlers == before and logger.propagate
    epochs = [line for line in lines if " epoch " in line and ": loss " in line]
    assert len(epochs) == 2
    updates = [line for line in lines if "rigl: update at step" in line]
    assert len(updates) == len(record.method_log["updates"]) > 0
    assert all("turnover" in line for line in updates)
    assert (tmp_path / "logs" / f"{record.run_id}.log").read_text().count(": loss ") == 2


def test_method_events_say_what_is_new_once():
    log = {"updates": [{"step": 100, "sparsity": 0.5, "changed": 10}]}
    events = MethodEvents("magnitude", log)
    assert events.new_lines(log, 0) == []  # what was there at the start is not new
    log["updates"].append({"step": 200, "sparsity": 0.75, "changed": 7})
    assert events.new_lines(log, 1) == ["magnitude: update at step 200: sparsity 0.75, changed 7"]
    assert events.new_lines(log, 2) == []
    gap = {"partitions": [["a"], ["b"]], "schedule": [], "partition_density": []}
    events = MethodEvents("gap", gap)
    gap["schedule"].append({"step": 1, "epochs": [2, 3], "grown": ["b"]})
    assert events.new_lines(gap, 2) == ["gap: grow partition 2/2 for epochs 3-4"]
    gap["partition_density"].append([0.1, 0.1])
    assert events.new_lines(gap, 3) == [
        "gap: prune partition 2/2 after epoch 4; partition densities [0.1, 0.1]"
    ]


def test_epoch_line_and_durations():
    entry = {"train_loss": 0.5, "sparsity": 0.9}
    line = epoch_line("run", 2, 10, entry, 0.05, 0.0123, 65, 3725)
    assert line == (
        "run epoch 3/10: loss 0.5000, lr 0.05, density 0.1000, step 12.3 ms, elapsed 1:05, "
        "eta 1:02:05"
    )
    assert format_duration(0) == "0:00"


def test_run_logging_writes_the_file_and_leaves_the_logger_as_it_was(tmp_path):
    logger = get_logger()
    handlers, level = list(logger.handlers), logger.level
    path = tmp_path / "logs" / "x.log"
    with run_logging(path, console=False):
        get_logger("train").info("hello %s", "file")
        get_logger("train").debug("not at INFO")
    get_logger("train").info("after the run")
    assert path.read_text().strip().endswith("gapbench.train: hello file")
    assert "not at INFO" not in path.read_text() and "after" not in path.read_text()
    assert logger.handlers == handlers and logger.level == level and logger.propagate
