"""Unpacking downloaded archives (zip, tar) without writing outside the destination.

Every entry is checked before anything is extracted: no absolute paths, no `..` that climbs out, no
links (symbolic or hard) and no device files. A refusal names the archive and the entry.
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from codec.errors import LicSweepError


class UnsafeArchive(LicSweepError):
    pass


def _check_name(archive: Path, name: str, dest: Path) -> None:
    pure = PurePosixPath(name.replace("\\", "/"))
    target = (dest / pure).resolve()
    if pure.is_absolute() or ".." in pure.parts or (target != dest and dest not in target.parents):
        raise UnsafeArchive(f"{archive}: entry {name!r} would be written outside {dest}; nothing was extracted")


def safe_extract(archive: str | Path, dest: str | Path) -> list[Path]:
    """Extract a .zip or tar archive (any compression) into `dest`; the paths written."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dest = dest.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                _check_name(archive, info.filename, dest)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:  # a symbolic link stored in a zip
                    raise UnsafeArchive(f"{archive}: entry {info.filename!r} is a link; nothing was extracted")
            zf.extractall(dest)
            return [dest / i.filename for i in zf.infolist() if not i.is_dir()]
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for m in members:
                _check_name(archive, m.name, dest)
                if not (m.isfile() or m.isdir()):
                    raise UnsafeArchive(f"{archive}: entry {m.name!r} is a link or device, not a file; "
                                        "nothing was extracted")
            tf.extractall(dest, filter="data")
            return [dest / m.name for m in members if m.isfile()]
    raise LicSweepError(f"{archive} is neither a zip nor a tar archive")
