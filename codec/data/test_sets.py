"""Test and training sets as data: one manifest per set (data/manifests/<name>.json: source URLs, files with SHA-256
and size, licence), fetched once, verified, unpacked; evaluation finds them by name (eval.sets).

    python -m codec.datasets list
    python -m codec.datasets fetch clic2020-professional-valid [--dest DIR] [--source URL_OR_DIR]
    python -m codec.datasets fetch vimeo90k-septuplet      # a training set: its zip, kept as it is

Training sets (purpose "training": Vimeo-90k, DIV2K, CLIC 2020 train) are fetched the same way; an archive
that training reads in place (unpack false: Vimeo's zip, read by data.format=zip or codec.prepare) is moved
into the set's folder, not unpacked or copied. A file of unknown exact size is read up to the manifest's
max_size (Vimeo's 82 GB zip is over the 16 GiB default).

A download goes to <dest>/<name>/.downloads/<file>.part and resumes from there (HTTP Range, or the offset
in a local mirror); a finished file is checked against its size and SHA-256 before it is used, and a file
that does not match is refused, named, and kept aside as <file>.rejected. Nothing is read past the size
the manifest declares (or --max-size, 16 GiB by default, where it declares none). Archives are unpacked
with codec.data.archives.safe_extract (nothing outside the destination, no collisions, at most the manifest's
unpacked_size or 10x the archive). Where a manifest lacks a checksum (the maintainers could not download
that set), fetch refuses unless --trust-first-download, which records the hash it saw and says so.
<dest>/<name>/.fetched.json, written last, lists every file with its size: a set counts as fetched only
while its files match it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from codec.data.archives import safe_extract
from codec.data.images import IMAGE_SUFFIXES
from codec.errors import LicSweepError
from codec.records.layout import REPO

MANIFESTS = REPO / "data" / "manifests"
CHUNK = 1 << 20


class ChecksumMismatch(LicSweepError):
    pass


@dataclass(frozen=True)
class SetFile:
    name: str
    url: str
    sha256: str | None = None
    size: int | None = None
    unpack: bool = False  # an archive: extracted into the set's folder
    unpacked_size: int | None = None  # an archive: the bytes its entries declare (else at most 10x its size)
    max_size: int | None = None  # no exact size known: read at most this much (instead of --max-size)


@dataclass(frozen=True)
class Manifest:
    name: str
    description: str
    licence: str
    homepage: str
    files: tuple[SetFile, ...]
    num_images: int | None = None
    shipped: str | None = None  # a folder of this repository that already holds the set (Kodak)
    anchors: str | None = None  # prefix of analysis/anchors/classical/<prefix>-*.json for this set
    notes: tuple[str, ...] = field(default_factory=tuple)
    # test: a set to evaluate on (eval.sets); training: data to train on (data.root=<its folder>/<file>)
    purpose: str = "test"
    use: str | None = None  # for a training set: how to train on it once fetched

    @staticmethod
    def read(path: Path) -> "Manifest":
        raw = json.loads(path.read_text())
        try:
            files = tuple(SetFile(**f) for f in raw.pop("files"))
            return Manifest(files=files, notes=tuple(raw.pop("notes", ())), **raw)
        except TypeError as exc:
            raise LicSweepError(f"{path}: not a valid test-set manifest ({exc})") from None


def manifests() -> dict[str, Manifest]:
    return {m.name: m for m in (Manifest.read(p) for p in sorted(MANIFESTS.glob("*.json")))}


def manifest(name: str) -> Manifest:
    known = manifests()
    if name not in known:
        raise LicSweepError(f"no test set named {name!r}; known: {', '.join(known)} (manifests in {MANIFESTS})")
    return known[name]


def default_root() -> Path:
    """Where fetched sets live: $LIC_SWEEP_DATASETS, else data/sets/ in the repository (git-ignored)."""
    return Path(os.environ.get("LIC_SWEEP_DATASETS") or REPO / "data" / "sets")


def set_folder(name_or_path: str, root: str | Path | None = None) -> Path:
    """The image folder of an evaluation set: a manifest's name (shipped, or fetched under `root`), or a
    folder path. Errors say how to get a set that is not there."""
    known = manifests()
    if name_or_path in known:
        m = known[name_or_path]
        if m.shipped:
            return REPO / m.shipped
        if m.purpose != "test":
            raise LicSweepError(f"eval.sets: {m.name} is a training set, not one to evaluate on (test sets: "
                                f"{', '.join(n for n, k in known.items() if k.purpose == 'test')})")
        folder = Path(root or default_root()) / m.name  # evaluation looks for images in its subfolders too
        if not fetched(folder, m):
            raise LicSweepError(f"eval.sets: {m.name} is not fetched under {folder.parent}; run "
                                f"`python -m codec.datasets fetch {m.name}` (or set eval.sets_root)")
        return folder
    path = Path(name_or_path)
    if path.is_dir():
        return path
    raise LicSweepError(f"eval.sets: {name_or_path!r} is neither a known test set ({', '.join(known)}) "
                        "nor an existing folder")


def resolved_sets(entries: list[str], root: str | Path | None = None) -> dict[str, Path]:
    """{name: image folder} of eval.sets' entries, in their order (the first is the headline)."""
    return {set_name(entry): set_folder(entry, root) for entry in entries}


def set_name(name_or_path: str) -> str:
    """The name results are kept under: the manifest's name, or the folder's own name."""
    return name_or_path if name_or_path in manifests() else Path(name_or_path).name


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _source_url(entry: SetFile, source: str | None) -> str:
    """Where to read a file from: the manifest's URL, or the same file name in a mirror (a folder or URL)."""
    if not source:
        return entry.url
    if "://" in source:
        return source.rstrip("/") + "/" + entry.name
    return Path(source).resolve().joinpath(entry.name).as_uri()


# A file the manifest gives no size for is read up to this many bytes (--max-size); one with a size, up to that.
DEFAULT_MAX_DOWNLOAD = 16 << 30
# An archive without a declared unpacked size may unpack to at most this many times its own size.
UNPACK_RATIO = 10
RECORD = ".fetched.json"


class TooLarge(LicSweepError):
    pass


def _download(url: str, part: Path, limit: int, declared: bool) -> None:
    """Append the rest of `url` to `part` (resuming from its current size), reading at most `limit` bytes
    in all: a source that sends more (or says it will) is refused and what arrived is kept aside."""
    what = "the size the manifest declares" if declared else "--max-size, for a file the manifest gives no size for"

    def too_large(happened: str) -> TooLarge:
        rejected = part.with_name(part.name[:-len(".part")] + ".rejected")
        if part.exists():
            part.replace(rejected)
        return TooLarge(f"{url}: {happened}, over the limit of {limit:,} bytes ({what}); stopped reading"
                        + (f", what arrived is kept aside as {rejected}" if rejected.exists() else ""))

    offset = part.stat().st_size if part.exists() else 0
    if offset > limit:
        raise too_large(f"{part} already holds {offset:,} bytes")
    if declared and offset == limit:
        return

    def copy(read, fout, done: int) -> None:
        shown = -1
        while chunk := read(min(CHUNK, limit - done) or 1):
            if done + len(chunk) > limit:
                raise too_large("the source sends more")
            fout.write(chunk)
            done += len(chunk)
            if (pct := 100 * done // limit) // 10 != shown and declared:
                shown = pct // 10
                print(f"  {part.name[:-5]}: {done / 1e6:.1f} of {limit / 1e6:.1f} MB", flush=True)

    parsed = urlparse(url)
    if parsed.scheme == "file":
        src = Path(url2pathname(parsed.path))
        if not src.is_file():
            raise LicSweepError(f"{src}: not in the mirror")
        with open(src, "rb") as fin, open(part, "ab") as fout:
            fin.seek(offset)
            copy(fin.read, fout, offset)
        return
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            resumed = response.status == 206
            if offset and not resumed:
                print(f"{url}: the server does not resume; downloading from the start")
            start = offset if resumed else 0
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and start + int(length) > limit:
                raise too_large(f"the server announces {start + int(length):,} bytes")
            with open(part, "ab" if resumed else "wb") as fout:
                copy(response.read, fout, start)
    except urllib.error.HTTPError as exc:
        if exc.code == 416:  # nothing left to send: the part is complete (or longer than the file)
            return
        raise LicSweepError(f"{url}: HTTP {exc.code} {exc.reason}; rerun to resume") from None
    except (urllib.error.URLError, OSError) as exc:
        raise LicSweepError(f"{url}: download failed ({exc}); {part} keeps what arrived, rerun to resume") from None


def _verify(entry: SetFile, path: Path, trust_first: bool, pinned: dict[str, str]) -> str:
    size, digest = path.stat().st_size, sha256_of(path)
    expected = entry.sha256 or pinned.get(entry.name)
    if entry.size is not None and size != entry.size or expected and digest != expected:
        rejected = path.with_name(entry.name + ".rejected")
        path.replace(rejected)
        raise ChecksumMismatch(f"{entry.name}: refused, it does not match the manifest (size {size} vs "
                               f"{entry.size}, sha256 {digest} vs {expected}); kept aside as {rejected}")
    if not expected:
        if not trust_first:
            raise ChecksumMismatch(f"{entry.name}: the manifest has no checksum for it (sha256 {digest}, "
                                   f"{size} bytes); check it against the publisher and rerun with "
                                   "--trust-first-download to pin this hash")
        print(f"{entry.name}: no checksum in the manifest; pinned the one seen now: {digest}")
    return digest


def fetched(target: Path, m: Manifest) -> dict | None:
    """The record of a finished fetch in `target`, if it holds and the files it lists are there with their
    sizes; else None. The record is written last, by fetch itself (an archive entry of that name is
    refused), so a record that does not match its files is a fetch that did not finish, or a tampered one."""
    try:
        record = json.loads((target / RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("manifest") != m.name:
        return None
    files = record.get("files")
    if not isinstance(files, dict) or not files or not all(
            isinstance(name, str) and isinstance(size, int) and _file_size(target, name) == size
            for name, size in files.items()):
        return None
    images = _image_count(files)
    if record.get("images") != images or m.num_images is not None and images != m.num_images:
        return None
    return record


def _image_count(names) -> int:
    return sum(1 for name in names if Path(name).suffix.lower() in IMAGE_SUFFIXES)


def _file_size(target: Path, name: str) -> int | None:
    path = target / name
    if ".." in Path(name).parts or Path(name).is_absolute() or not path.is_file():
        return None
    return path.stat().st_size


def fetch(name: str, dest: str | Path | None = None, source: str | None = None,
          trust_first_download: bool = False, max_size: int = DEFAULT_MAX_DOWNLOAD) -> Path:
    """Download, verify and unpack a test set; returns its folder. A set already fetched (its record holds
    and its files are there) is left as it is. No file is read past the size its manifest declares (or
    `max_size` where it declares none); no archive unpacks to more than its declared unpacked size (or
    UNPACK_RATIO x its own size)."""
    m = manifest(name)
    target = Path(dest or default_root()) / m.name
    record_path = target / RECORD
    if fetched(target, m):
        print(f"{m.name}: already fetched in {target}")
        return target
    if record_path.exists():
        print(f"{m.name}: {record_path} does not match the files in {target}; fetching again")
        record_path.unlink()
    downloads = target / ".downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    pinned: dict[str, str] = {}
    for entry in m.files:
        final = downloads / entry.name
        kept = target / entry.name
        if not entry.unpack and not final.is_file() and kept.is_file():  # moved in place by a fetch that stopped
            kept.replace(final)
        if not final.is_file():
            part = downloads / (entry.name + ".part")
            url = _source_url(entry, source)
            print(f"{m.name}: {entry.name} from {url}" + (f" (resuming at {part.stat().st_size} bytes)"
                                                            if part.exists() else ""))
            declared = entry.size is not None
            have = part.stat().st_size if part.exists() else 0
            free = shutil.disk_usage(downloads).free
            if declared and entry.size - have > free:
                raise LicSweepError(f"{entry.name}: {entry.size - have:,} bytes still to download, but {downloads} has "
                                    f"{free:,} free; free some space or fetch into another --dest")
            if (entry.size or entry.max_size or 0) >= 100e6:  # a large download: what it needs against what is free
                print(f"  {'' if declared else 'up to '}{(entry.size or entry.max_size) / 1e9:.1f} GB; "
                      f"{free / 1e9:.1f} GB free in {downloads}")
                if not declared and entry.max_size - have > free:
                    print(f"  WARNING: {downloads} may be too small for {entry.name} (its size is not known exactly: "
                          f"up to {entry.max_size / 1e9:.0f} GB; see the manifest's notes); a full disk stops the "
                          "download, and a rerun resumes it")
            _download(url, part, entry.size if declared else entry.max_size or max_size, declared)
            pinned[entry.name] = _verify(entry, part, trust_first_download, pinned)
            part.replace(final)
        else:
            pinned[entry.name] = _verify(entry, final, trust_first_download, pinned)
        if entry.unpack:
            limit, note = ((entry.unpacked_size, "the manifest's unpacked size") if entry.unpacked_size is not None
                           else (UNPACK_RATIO * final.stat().st_size, f"{UNPACK_RATIO}x the archive's own size"))
            safe_extract(final, target, limit, reserved=(RECORD, ".downloads"), limit_note=note)
        else:  # kept as it is (a training set's zip is read in place): moved, not copied (82 GB for Vimeo)
            final.replace(kept)
    files = {str(p.relative_to(target)): p.stat().st_size for p in sorted(target.rglob("*"))
             if p.is_file() and ".downloads" not in p.relative_to(target).parts and p.name != RECORD}
    count = _image_count(files)
    if m.num_images is not None and count != m.num_images:
        raise LicSweepError(f"{m.name}: {target} holds {count} images, the manifest says {m.num_images}; "
                            "delete the folder and fetch again")
    from codec.records.files import write_json_atomic

    write_json_atomic({"manifest": m.name, "sha256": pinned, "images": count,
                       "source": source or "manifest URLs", "files": files}, record_path)
    shutil.rmtree(downloads)  # verified and unpacked: the archives are not needed twice
    print(f"{m.name}: {count} images in {target}" if m.purpose == "test" else
          f"{m.name}: fetched in {target}" + (f"; {m.use.replace('{folder}', str(target))}" if m.use else ""))
    return target


def status(m: Manifest, root: Path) -> str:
    if m.shipped:
        return f"shipped in {m.shipped}"
    target = root / m.name
    if fetched(target, m):
        return f"fetched in {target}"
    if (target / RECORD).exists():
        return f"incomplete in {target} (its {RECORD} does not match the files; fetch again)"
    if (target / ".downloads").is_dir():
        return f"partial download in {target / '.downloads'} (fetch again to resume)"
    return "not fetched"


def parse_size(text: str) -> int:
    """Bytes from '500M', '16G', '16GiB', '2T' or a plain number (powers of 1024)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    clean = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = clean[-1] if clean and clean[-1] in units else ""
    try:
        value = float(clean[:len(clean) - len(unit)]) * units.get(unit, 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 500M, 16G)") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return int(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codec.datasets", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="the known test and training sets and whether they are here")
    listing.add_argument("--dest", type=Path, default=None, help="where fetched sets live (default data/sets)")
    get = sub.add_parser("fetch", help="download, verify and unpack a test set (a training set's zip is kept as it is)")
    get.add_argument("name")
    get.add_argument("--dest", type=Path, default=None, help="where to put it (default: $LIC_SWEEP_DATASETS or data/sets)")
    get.add_argument("--source", default=None, help="a mirror (folder or URL) holding the manifest's file names")
    get.add_argument("--trust-first-download", action="store_true",
                     help="accept a file the manifest has no checksum for, and pin the hash seen")
    get.add_argument("--max-size", type=parse_size, default=DEFAULT_MAX_DOWNLOAD,
                     help="read at most this much of a file the manifest gives no size for (default 16G)")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            root = args.dest or default_root()
            for purpose in ("test", "training"):
                print(f"{purpose} sets:")
                for m in (m for m in manifests().values() if m.purpose == purpose):
                    count = f"{m.num_images} images" if m.num_images else "? images"
                    pinned = "" if all(f.sha256 for f in m.files) else " [no checksum in the manifest]"
                    print(f"  {m.name:30s} {count:13s} {status(m, root)}{pinned}\n      {m.description}; "
                          f"licence: {m.licence}")
            return 0
        fetch(args.name, args.dest, args.source, args.trust_first_download, args.max_size)
        return 0
    except LicSweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
