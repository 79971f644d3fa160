"""Writing files so that no half-written file is ever left: through a temporary file, then a rename.

Every file the toolchain writes (object files, weight data, traces, output arrays) goes through here.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def umask_mode(directory: bool = False) -> int:
    """The mode that the user's umask gives a new file (0o666 masked) or folder (0o777 masked): what `open`
    and `mkdir` would create. Temporary files and folders start private (0600, 0700); they get this mode
    before they are renamed into place, so results can be shared as any other file of the user's."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside `path` to write; renamed onto `path` when the block succeeds, removed
    when it fails. The temporary name keeps `path`'s suffix (numpy's savez appends .npz otherwise)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix or ".tmp", dir=target.parent)
    os.close(fd)
    try:
        os.chmod(tmp, umask_mode())
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` atomically (flushed to disk before the rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
