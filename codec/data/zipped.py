"""Training data read straight from a zip archive (data.format=zip, and `python -m codec.prepare ARCHIVE.zip`):
Vimeo-90k's vimeo_septuplet.zip or vimeo_triplet.zip as downloaded, or a zip of image files (DIV2K, CLIC),
with nothing unpacked. Each loader worker opens the archive once and decodes the PNG members it draws.

Layout: where data.list_file (else Vimeo's own sep_trainlist.txt or tri_trainlist.txt) is a member of the
archive (at any depth, as vimeo_septuplet/sep_trainlist.txt; the shallowest where several), the archive is
Vimeo-90k: the listed sequences under sequences/ next to it. Otherwise every PNG and JPEG member is an
image, as a folder (an archive that looks like Vimeo's without a list file is refused: its test sequences
would be trained on).
Names are relative to the folder that holds the list file (Vimeo) or to the archive's top (images), exactly
as the unpacked folder's: the split by name hash, the crops and the data manifest are the unpacked path's.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from codec.data.images import IMAGE_SUFFIXES, UnreadableImage, read_rgb
from codec.errors import LicSweepError

VIMEO_LISTS = ("sep_trainlist.txt", "tri_trainlist.txt")

_OPEN: dict[tuple[int, Path], io.BufferedReader] = {}  # (process, archive): its file, opened once per loader worker


def _file(path: Path) -> io.BufferedReader:
    key = (os.getpid(), path)  # a forked worker opens its own: a shared file offset would mix members
    if key not in _OPEN:
        _OPEN[key] = open(path, "rb")
    return _OPEN[key]


@dataclass(frozen=True, slots=True)
class ZipImage:
    """One image member of a zip archive, read by its offset (a worker reads the member's bytes straight from
    the file: parsing the central directory of Vimeo's 640,000 members takes ~4 s and ~400 MB per process).
    `name` is its path relative to the data's root (as in the unpacked folder), `nbytes` the member's size
    (the PNG's bytes, as the unpacked file's size: the data manifest)."""
    archive: Path
    member: str
    name: str
    nbytes: int
    offset: int  # of the member's local header
    stored: int  # compressed size
    method: int  # zipfile.ZIP_STORED or ZIP_DEFLATED
    crc: int

    def read(self) -> np.ndarray:
        try:
            f = _file(self.archive)
            f.seek(self.offset)
            header = f.read(30)
            if len(header) < 30 or header[:4] != b"PK\x03\x04":
                raise UnreadableImage(f"{self}: no zip member at byte {self.offset} (the archive changed or is cut short)")
            name_length, extra_length = struct.unpack("<HH", header[26:30])
            f.seek(self.offset + 30 + name_length + extra_length)
            data = f.read(self.stored)
            if self.method == zipfile.ZIP_DEFLATED:  # no further than the declared size (a bomb stops there)
                data = zlib.decompressobj(-15).decompress(data, self.nbytes + 1)
            if len(data) != self.nbytes or zlib.crc32(data) != self.crc:
                raise UnreadableImage(f"{self}: its bytes do not match the archive's CRC (a corrupt or cut-short "
                                      "download: `python -m codec.datasets fetch` verifies it)")
        except (zlib.error, OSError) as exc:
            raise UnreadableImage(f"{self}: {exc}") from None
        return read_rgb(io.BytesIO(data), name=str(self))

    def __str__(self) -> str:  # messages and skipped-file lists name the archive and the member
        return f"{self.archive}:{self.member}"


def _image(archive: Path, info: zipfile.ZipInfo, name: str) -> ZipImage:
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or info.flag_bits & 0x1:
        raise LicSweepError(f"data.root: {archive}:{info.filename} is encrypted or compressed with method "
                            f"{info.compress_type}; data.format=zip reads stored and deflated members (unpack it, or "
                            "pack it with `python -m codec.prepare` from the unpacked folder)")
    return ZipImage(archive, info.filename, name, info.file_size, info.header_offset, info.compress_size,
                    info.compress_type, info.CRC)


def _listing(archive: Path) -> tuple[list[zipfile.ZipInfo], zipfile.ZipFile]:
    """The archive's file members, and the archive opened (to read its list file; the caller closes it)."""
    if not archive.is_file():
        raise LicSweepError(f"data.root: {archive} is not a file (data.format=zip reads a .zip archive)")
    try:
        zf = zipfile.ZipFile(archive)
        return [i for i in zf.infolist() if not i.is_dir()], zf
    except (zipfile.BadZipFile, OSError) as exc:
        raise LicSweepError(f"data.root: {archive} is not a readable zip archive ({exc}); an interrupted download? "
                            "`python -m codec.datasets fetch` resumes and verifies it") from None


def zip_groups(archive: str | Path, list_file: str | None = None) -> dict[str, list[ZipImage]]:
    """{group: [ZipImage, ...]} of an archive, grouped and named as the unpacked folder would be by
    codec.data.training.source_groups (a Vimeo sequence; or one image per group)."""
    archive = Path(archive).resolve()
    infos, zf = _listing(archive)
    with zf:
        return _groups(archive, infos, zf, list_file)


def _groups(archive: Path, infos: list[zipfile.ZipInfo], zf: zipfile.ZipFile, list_file: str | None):
    wanted = (list_file,) if list_file else VIMEO_LISTS

    def is_list(filename: str) -> bool:  # a list file at any depth (or the path given, inside the archive)
        return any(filename == w or filename.endswith("/" + w) for w in wanted)

    lists = sorted((i for i in infos if is_list(i.filename)), key=lambda i: (i.filename.count("/"), i.filename))
    if list_file and not lists:
        raise LicSweepError(f"data.list_file: {archive} holds no {list_file}; Vimeo-90k's zips hold "
                            "sep_trainlist.txt or tri_trainlist.txt, an image archive none: set data.list_file=null "
                            "(prepare: leave out --list-file) to read every image in it")
    if not lists:  # a zip of images, as a folder
        if any("/sequences/" in "/" + i.filename and PurePosixPath(i.filename).name.startswith("im")
               for i in infos[:1000]):
            raise LicSweepError(f"data.root: {archive} looks like Vimeo-90k (sequences/.../im*.png) but holds no "
                                f"{' or '.join(VIMEO_LISTS)}: name its list file with data.list_file (prepare: "
                                "--list-file), so that its test sequences stay out of training")
        groups = {i.filename: [_image(archive, i, i.filename)] for i in sorted(
            infos, key=lambda i: PurePosixPath(i.filename).parts)  # the order of the unpacked folder's paths
            if PurePosixPath(i.filename).suffix.lower() in IMAGE_SUFFIXES}
        if not groups:
            raise LicSweepError(f"data.root: {archive} holds no PNG or JPEG images")
        return groups
    listed = lists[0]
    prefix = listed.filename[:listed.filename.rfind("/") + 1]  # the folder holding the list file: the data's root
    try:
        names = [line.strip() for line in zf.read(listed).decode().splitlines() if line.strip()]
    except (UnicodeDecodeError, zipfile.BadZipFile, zlib.error, OSError) as exc:
        raise LicSweepError(f"data.list_file: {archive}:{listed.filename} cannot be read as a list of sequences "
                            f"({exc})") from None
    if not names:
        raise LicSweepError(f"data.list_file: {archive}:{listed.filename} lists no sequences")
    frames: dict[str, list[ZipImage]] = {}
    start = prefix + "sequences/"
    for info in infos:
        path = info.filename
        if path.startswith(start) and path.endswith(".png") and PurePosixPath(path).name.startswith("im"):
            relative = path[len(prefix):]
            frames.setdefault(relative[len("sequences/"):].rsplit("/", 1)[0], []).append(_image(archive, info, relative))
    missing = [n for n in names if n not in frames]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise LicSweepError(f"{archive}:{listed.filename} names {len(missing)} sequence(s) with no im*.png frames "
                            f"under {start}: {shown}")
    return {n: sorted(frames[n], key=lambda z: z.name) for n in names}
