"""Run logs that reach files: stdlib logging under the "gapbench" logger, to stderr and to a
per-run file `<out>/logs/<run_id>.log`.

Why: runs live in nohup, tmux, SLURM and CI, where stdout is a file and a tqdm bar is off or
erased; one plain line per epoch (and per method event) is what a researcher can `tail -f`.
Handlers are attached for one run and removed after it, and the logger keeps propagating, so a
host application's logging (or pytest's caplog) still sees every line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

LOGGER_NAME = "gapbench"
FORMAT = "%(asctime)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

_run_clock_used = False


def get_logger(part: str = "") -> logging.Logger:
    """The "gapbench" logger or one of its children ("gapbench.train", "gapbench.sweep")."""
    return logging.getLogger(f"{LOGGER_NAME}.{part}" if part else LOGGER_NAME)


def log_path(out: Path, run_id: str) -> Path:
    """Where a run's log file lives: beside the records, one file per run id (appended to by
    every attempt, so a resumed run's log tells its whole story)."""
    return Path(out) / "logs" / f"{run_id}.log"


def process_start_time() -> float:
    """When this process started (epoch seconds), from /proc where it can be read: a record's
    total time then includes interpreter start and imports. Falls back to now."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22 of stat(5); fields here start at field 3
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return int(line.split()[1]) + started_ticks / ticks
    except (OSError, ValueError, IndexError):
        pass
    return time.time()


def run_clock_start() -> float:
    """The moment a run's total time counts from: the process start for the first run of a
    process, the call itself for every later run of the same process."""
    global _run_clock_used
    if _run_clock_used:
        return time.time()
    _run_clock_used = True
    return min(process_start_time(), time.time())


def format_duration(seconds: float) -> str:
    """12:03 or 1:02:03 (h:mm:ss)."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@contextlib.contextmanager
def run_logging(file: Path | None, console: bool = True) -> Iterator[logging.Logger]:
    """For the duration of one run: INFO lines of the "gapbench" logger go to `file` (appended)
    and, when `console`, to stderr. Everything attached here is removed again on exit."""
    logger = get_logger()
    added: list[logging.Handler] = []
    formatter = logging.Formatter(FORMAT, DATE_FORMAT)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        added.append(logging.FileHandler(file, encoding="utf-8"))
    if console and not any(getattr(h, "_gapbench_console", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler._gapbench_console = True  # type: ignore[attr-defined]
        added.append(handler)
    for handler in added:
        handler.setFormatter(formatter)
        handler.setLevel(logging.INFO)
        logger.addHandler(handler)
    level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield logger
    finally:
        logger.setLevel(level)
        for handler in added:
            logger.removeHandler(handler)
            handler.close()
