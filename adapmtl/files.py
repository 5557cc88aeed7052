"""Files written so that a reader sees the old content or the new, never half of it."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | Path, *chunks: bytes | memoryview) -> Path:
    """Write `chunks` to a temporary `.NAME.*.tmp` file next to `path`, fsync, then rename it over `path`.

    A process killed midway leaves `path` as it was, and the temporary file (which
    `remove_temporaries` deletes). Returns `path`. Raises OSError naming `path` when the
    folder cannot be written or the disk is full (errno ENOSPC).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise _naming(error, path) from None
    try:
        os.fchmod(handle, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
        with os.fdopen(handle, "wb") as file:
            for chunk in chunks:
                file.write(chunk)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise _naming(error, path) from None
        raise
    return path


def _naming(error: OSError, path: Path) -> OSError:
    """`error` naming `path`, the file the caller asked for (not our temporary file; a full disk's
    write error names no file at all)."""
    return type(error)(error.errno, error.strerror or str(error), str(path))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files `write_atomic` left in `folder` when its process was killed;
    returns them. Only safe while no other process writes there (hold the run folder's lock)."""
    stale = sorted(Path(folder).glob(".*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
