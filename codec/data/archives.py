"""Unpacking downloaded archives (zip, tar) without writing outside the destination.

Every entry is checked before anything is extracted: no absolute paths, no `..` that climbs out, no
links (symbolic or hard) and no device files, no two entries for one path (also by case, or a file that
another entry needs as a folder), no entry over a file already there, no reserved name, and the sizes the
entries declare add up to at most a limit and to what the disk has free. A refusal names the archive and
the entry. (Declared sizes hold: zipfile stops a member at its declared size and then fails its CRC, and a
tar member's size is its length in the stream.)
"""

from __future__ import annotations

import contextlib
import shutil
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from codec.errors import LicSweepError


class UnsafeArchive(LicSweepError):
    pass


def _check_name(archive: Path, name: str, dest: Path) -> PurePosixPath:
    pure = PurePosixPath(name.replace("\\", "/"))
    target = (dest / pure).resolve()
    if pure.is_absolute() or ".." in pure.parts or (target != dest and dest not in target.parents):
        raise UnsafeArchive(f"{archive}: entry {name!r} would be written outside {dest}; nothing was extracted")
    return PurePosixPath(*[p for p in pure.parts if p not in ("", ".")])


def _check_layout(archive: Path, entries: list[tuple[str, PurePosixPath, bool, int]], dest: Path,
                  max_bytes: int | None, reserved: tuple[str, ...], limit_note: str) -> None:
    """entries: (name as stored, normalised path, is a file, declared size). Refuses collisions, reserved
    names and a total over `max_bytes` or over the disk's free space, before anything is written."""
    def refuse(name: str, why: str) -> UnsafeArchive:
        return UnsafeArchive(f"{archive}: entry {name!r} {why}; nothing was extracted")

    seen: dict[str, tuple[str, bool]] = {}
    for name, path, is_file, _ in entries:
        if any(part in reserved for part in path.parts):
            raise refuse(name, f"uses a name this tool keeps for itself ({', '.join(reserved)})")
        key = str(path).casefold()  # two names that differ by case are one file on macOS and Windows
        if key in seen and (is_file or seen[key][1]):
            raise refuse(name, f"is a second entry for {seen[key][0]!r}")
        seen.setdefault(key, (name, is_file))
    for name, path, is_file, _ in entries:
        for parent in list(path.parents)[:-1]:
            other = seen.get(str(parent).casefold())
            if other and other[1]:
                raise refuse(name, f"needs {other[0]!r} as a folder, but that entry is a file")
            if (dest / parent).exists() and not (dest / parent).is_dir():
                raise refuse(name, f"needs {dest / parent} as a folder, but a file is there")
        if is_file and (dest / path).is_dir():
            raise refuse(name, f"would replace the folder {dest / path}")
    total = sum(size for *_, size in entries)
    if max_bytes is not None and total > max_bytes:
        raise UnsafeArchive(f"{archive}: its entries unpack to {total:,} bytes, over the limit of {max_bytes:,}"
                            f"{f' ({limit_note})' if limit_note else ''}; nothing was extracted")
    free = shutil.disk_usage(dest).free
    if total > free:
        raise UnsafeArchive(f"{archive}: its entries unpack to {total:,} bytes, but {dest} has {free:,} free; "
                            "nothing was extracted")


@contextlib.contextmanager
def _undone_on_error(archive: Path, dest: Path, entries: list[tuple[str, PurePosixPath, bool, int]]):
    """An archive that turns out corrupt while it is extracted (a member whose data fails its CRC or
    declared size, a truncated stream): the files it had written are removed again (those that were not
    there before), and one UnsafeArchive names it."""
    before = {path for _, path, is_file, _ in entries if is_file and (dest / path).exists()}
    try:
        yield
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        for _, path, is_file, _ in entries:
            if is_file and path not in before and (dest / path).is_file():
                (dest / path).unlink()
        raise UnsafeArchive(f"{archive}: cannot be unpacked ({type(exc).__name__}: {exc}); the files it had "
                            "written were removed; fetch it again") from None


def safe_extract(archive: str | Path, dest: str | Path, max_bytes: int | None = None,
                 reserved: tuple[str, ...] = (), limit_note: str = "") -> list[Path]:
    """Extract a .zip or tar archive (any compression) into `dest`; the paths written. `max_bytes` caps
    the sum of the sizes its entries declare; an entry with a name in `reserved` is refused."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dest = dest.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            entries = []
            for info in zf.infolist():
                path = _check_name(archive, info.filename, dest)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:  # a symbolic link stored in a zip
                    raise UnsafeArchive(f"{archive}: entry {info.filename!r} is a link; nothing was extracted")
                entries.append((info.filename, path, not info.is_dir(), info.file_size))
            _check_layout(archive, entries, dest, max_bytes, reserved, limit_note)
            with _undone_on_error(archive, dest, entries):
                zf.extractall(dest)
            return [dest / i.filename for i in zf.infolist() if not i.is_dir()]
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            entries = []
            for m in members:
                path = _check_name(archive, m.name, dest)
                if not (m.isfile() or m.isdir()):
                    raise UnsafeArchive(f"{archive}: entry {m.name!r} is a link or device, not a file; "
                                        "nothing was extracted")
                entries.append((m.name, path, m.isfile(), m.size if m.isfile() else 0))
            _check_layout(archive, entries, dest, max_bytes, reserved, limit_note)
            with _undone_on_error(archive, dest, entries):
                tf.extractall(dest, filter="data")
            return [dest / m.name for m in members if m.isfile()]
    raise LicSweepError(f"{archive} is neither a zip nor a tar archive")
