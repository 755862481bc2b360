"""Atomic writes: a temporary file in the same folder, then a rename. Never a half-written file.

Files are created with the mode a plain `open()` would give (0o666 less the umask), so a results
folder shared with colleagues stays readable to them. A writer that is killed (kill -9, power loss)
cannot remove its temporary file: `remove_stale_temps` clears such leftovers once they are old
enough that no live writer can still own them.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

TEMP_GLOB = ".*.tmp"  # what _atomic_write leaves behind when its process is killed
STALE_AFTER_S = 15 * 60  # no atomic write takes this long; an older temp file is an orphan


def current_umask() -> int:
    """The process umask (Python can only read it by setting it, so set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; respect the umask instead
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(text: str, path: Path) -> None:
    _atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_bytes(data: bytes, path: Path) -> None:
    _atomic_write(path, lambda f: f.write(data))


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch  # only weights and checkpoints need torch; records and boards do not

    _atomic_write(path, lambda f: torch.save(obj, f))


def check_writable_folder(folder: Path, what: str = "--out") -> None:
    """Make `folder` if needed and create and delete a file in it: the one writability test that
    also holds for read-only mounts, ACLs and network file systems. A UserError names the folder."""
    from gapbench.errors import UserError

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file, not a folder; pass {what} a folder for results")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".gapbench-probe-", suffix=".tmp")
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise UserError(
            f"cannot write to {folder} ({exc.strerror or exc}); pass a writable {what}"
        ) from None


def remove_stale_temps(folder: Path, older_than_s: float = STALE_AFTER_S) -> int:
    """Delete temporary files of killed writers in `folder`; returns how many went.

    Only files matching `.*.tmp` whose last change is older than `older_than_s` are removed: a
    writer in progress (another sweep on the same folder) keeps touching its file."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    cutoff, removed = time.time() - older_than_s, 0
    for path in folder.glob(TEMP_GLOB):
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError:  # gone already, or not ours to delete: leave it
            continue
    return removed
