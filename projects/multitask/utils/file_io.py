"""Atomic file writes: a crash mid-write never leaves a truncated file at the final path."""

import os
import tempfile
from typing import IO, Callable


def atomic_write(path: str, write_fn: Callable[[IO], None], mode: str = "wb") -> None:
    """Call ``write_fn(f)`` on a temporary file ``.tmp_<name>*`` in ``path``'s directory (created
    if needed), flush it to disk and move it onto ``path`` with ``os.replace``; on any error the
    temporary file is removed and the error re-raised. ``mode``: ``"wb"`` or ``"w"`` (text)."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_" + os.path.basename(path))
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
