"""Atomic file writes: a crash mid-write never leaves a truncated file at the final path."""

import glob
import os
import tempfile
from typing import IO, Callable, List, Sequence, Tuple


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str, write_fn: Callable[[IO], None], mode: str = "wb") -> None:
    """Call ``write_fn(f)`` on a temporary file ``.tmp_<name>*`` in ``path``'s directory (created
    if needed), flush it to disk and move it onto ``path`` with ``os.replace``; on any error the
    temporary file is removed and the error re-raised. ``mode``: ``"wb"`` or ``"w"`` (text).
    The file gets the permissions ``open()`` would give it (``0o666`` less the umask), not the
    owner-only ones of the temporary file."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_" + os.path.basename(path))
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def expand_inputs(patterns: Sequence[str]) -> Tuple[List[str], List[str]]:
    """-> (sorted unique files, patterns that matched nothing). A folder gives its (non-hidden)
    files, a glob its matching files (``**`` recursive); other paths are kept as given (a
    missing one is reported when it is read)."""
    files, unmatched = [], []
    for p in patterns:
        if os.path.isdir(p):
            found = [
                os.path.join(p, f) for f in os.listdir(p)
                if not f.startswith(".") and os.path.isfile(os.path.join(p, f))
            ]
        elif glob.has_magic(p):
            found = [f for f in glob.glob(p, recursive=True) if os.path.isfile(f)]
        else:
            found = [p]
        if not found:
            unmatched.append(p)
        files.extend(found)
    unique = {}
    for f in files:
        unique.setdefault(os.path.normpath(os.path.abspath(f)), os.path.normpath(f))
    return sorted(unique.values()), unmatched
