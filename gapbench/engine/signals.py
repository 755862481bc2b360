"""Stop requests: SIGTERM (how SLURM preempts and `kill` stops), SIGINT (Ctrl-C) and SIGUSR1
ask a run to finish its current step, write a checkpoint and exit.

Why a flag and not an exception: a signal lands between any two bytecodes, possibly inside a
backward pass or a half-updated mask; the step loop reads the flag only between steps, where the
state is whole and a checkpoint resumes bit-identically.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class Interrupted(Exception):
    """A run stopped on a signal after writing its checkpoint; the CLI exits with 128 + signum."""

    def __init__(self, signum: int, run: str, checkpoint: Path | None, where: str):
        self.signum, self.run, self.checkpoint, self.where = signum, run, checkpoint, where
        kept = f"checkpoint {checkpoint} kept" if checkpoint else "no checkpoint kept"
        super().__init__(
            f"{signal.Signals(signum).name}: stopped {run} {where}; {kept}; rerun the same "
            "command to continue from it (--restart starts over)"
        )

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopFlag:
    """Set by a stop signal; read by the step loop between steps."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """Within the block, STOP_SIGNALS set the returned flag instead of killing the process; the
    previous handlers come back on exit. Off the main thread (signals cannot be caught there)
    the flag is never set."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        signal.signal(s, flag._handle)
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
