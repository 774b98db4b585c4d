"""Writing files atomically: a kill at any moment leaves the previous file readable; a failed write (disk full,
no permission) raises CannotWrite naming the path."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

from codec.errors import LicSweepError


class CannotWrite(LicSweepError):
    """A file could not be written (disk full, no permission): the previous version is untouched."""


def _write_atomic(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write through a temporary file in the same folder, then rename over `path`. A kill leaves the
    previous file; a failed write (ENOSPC, EACCES, ...) too, and raises CannotWrite naming the path."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        cause = exc if isinstance(exc, OSError) else exc.__cause__ or exc.__context__
        if not isinstance(cause, OSError):  # torch.save wraps the file's OSError; anything else is a bug
            raise
        code = errno.errorcode.get(cause.errno, "")
        kept = f"the previous {path.name} is unchanged; " if path.exists() else ""
        raise CannotWrite(f"cannot write {path}: {cause.strerror or cause}{f' ({code})' if code else ''}; {kept}"
                          "free disk space or fix the folder's permissions, then rerun the same command to "
                          "resume") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(obj: Any, path: str | Path) -> None:
    write_text_atomic(json.dumps(obj, indent=2), path)


def write_text_atomic(text: str, path: str | Path) -> None:
    _write_atomic(path, lambda f: f.write(text.encode()))
