"""Reading packed training data (written by codec.data.prepare): uint8 shards read through memory maps."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codec.errors import LicSweepError

INDEX = "index.json"
PROGRESS = "progress.json"

_MAPS: dict[tuple[Path, int], np.memmap] = {}  # (store, shard): its memory map, opened once per process


def _shard_path(out: Path, shard: int) -> Path:
    return out / f"shard-{shard:05d}.u8"


@dataclass(frozen=True)
class PackedImage:
    """One image of a packed store; read() maps its bytes (the shard's map is opened once per process)."""
    store: Path
    name: str
    shard: int
    offset: int
    height: int
    width: int
    stored: int | None = None  # the bytes in the shard, where they are compressed
    compression: str | None = None  # None (raw pixels) or "zlib"

    @property
    def nbytes(self) -> int:
        return self.height * self.width * 3

    def read(self) -> np.ndarray:
        key = (self.store, self.shard)
        if key not in _MAPS:
            _MAPS[key] = np.memmap(_shard_path(self.store, self.shard), dtype=np.uint8, mode="r")
        if self.compression == "zlib":
            data = zlib.decompress(_MAPS[key][self.offset:self.offset + self.stored])
            return np.frombuffer(data, dtype=np.uint8).reshape(self.height, self.width, 3)
        return _MAPS[key][self.offset:self.offset + self.nbytes].reshape(self.height, self.width, 3)

    def __str__(self) -> str:  # messages and skipped-file lists name the source image
        return f"{self.store}:{self.name}"


def packed_groups(store: str | Path) -> dict[str, list[PackedImage]]:
    """{group: [PackedImage, ...]} of a packed store, in the source's order."""
    store = Path(store)
    index_path = store / INDEX
    if not index_path.is_file():
        hint = " (packing was interrupted: rerun `python -m codec.prepare` to finish)" if (store / PROGRESS).is_file() else ""
        raise LicSweepError(f"data.root: {store} is not a packed store: no {INDEX}{hint}; make one with "
                            "`python -m codec.prepare SRC OUT`, or set data.format to vimeo or folder")
    index = json.loads(index_path.read_text())
    compression = index.get("compression")
    if compression not in (None, "zlib"):
        raise LicSweepError(f"data.root: {index_path} stores its images as {compression!r}, which this version "
                            "cannot read; pack it again with `python -m codec.prepare`")
    groups: dict[str, list[PackedImage]] = {}
    for e in index["images"]:
        groups.setdefault(e["group"], []).append(PackedImage(store, e["name"], e["shard"], e["offset"], e["height"],
                                                             e["width"], e.get("stored"), compression))
    if not groups:
        raise LicSweepError(f"data.root: the packed store {store} holds no images")
    return groups
