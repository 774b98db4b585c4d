"""Training and validation data: Vimeo-90k through its official list files, any image folder, either of them
still in its zip archive (codec.data.zipped), or a packed copy (codec.prepare: uint8 shards read through
memory maps, no PNG decoding).

Training samples are random crops, validation samples centre crops. The split is by sequence
(Vimeo) or by file (folder), fixed by a hash of the name, so it never overlaps and never moves.
Crops come from a generator seeded by (seed, epoch, index): the same run sees the same data,
whatever the number of loader workers, and a resumed run continues the same stream.

A file that cannot be decoded, or is smaller than the crop under small_images=skip, is replaced
by the next sample; its path travels with the batch so the training loop can warn once and count it.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from codec.data.images import UnreadableImage, list_images, read_rgb
from codec.errors import LicSweepError


def _in_validation(name: str, val_fraction: float) -> bool:
    digest = hashlib.sha1(name.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < val_fraction


def vimeo_frames(root: Path, list_file: str) -> dict[str, list[Path]]:
    """Frames per listed sequence: {"00001/0001": [im1.png, ...]}; errors name what is missing."""
    list_path = root / list_file
    if not list_path.is_file():
        raise LicSweepError(f"data.list_file: {list_path} does not exist (Vimeo-90k ships "
                            "sep_trainlist.txt for septuplets and tri_trainlist.txt for triplets)")
    names = [line.strip() for line in list_path.read_text().splitlines() if line.strip()]
    if not names:
        raise LicSweepError(f"data.list_file: {list_path} lists no sequences")
    sequences, missing = {}, []
    for name in names:
        folder = root / "sequences" / name
        frames = sorted(folder.glob("im*.png"))
        if not frames:
            missing.append(str(folder))
        sequences[name] = frames
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise LicSweepError(f"{list_path} names {len(missing)} sequence(s) with no im*.png frames: {shown}")
    return sequences


@dataclass
class Split:
    train: list[Path]
    val: list[Path]


def source_groups(fmt: str, root: str | Path, list_file: str | None = None) -> dict[str, list]:
    """The training data as named groups (a Vimeo sequence, or one image of a folder), the unit of the
    train/validation split; for data.format=packed, the groups its source had (codec.prepare)."""
    root = Path(root)
    if fmt == "zip":  # Vimeo-90k's zip as downloaded, or a zip of images: read in place (codec.data.zipped)
        from codec.data.zipped import zip_groups

        return zip_groups(root, list_file)
    if not root.is_dir():
        hint = " (a .zip archive: data.format=zip reads it in place)" if root.suffix.lower() == ".zip" else ""
        raise LicSweepError(f"data.root: {root} is not a directory{hint}")
    if fmt == "packed":
        from codec.data.packed import packed_groups

        return packed_groups(root)
    if fmt == "vimeo":
        return vimeo_frames(root, list_file or "sep_trainlist.txt")
    files = list_images(root)
    if not files:
        raise LicSweepError(f"data.root: {root} holds no PNG or JPEG images")
    return {str(p.relative_to(root)): [p] for p in files}


def split_files(fmt: str, root: str | Path, val_fraction: float, list_file: str | None = None) -> Split:
    root = Path(root)
    groups = source_groups(fmt, root, list_file)
    val_names = [n for n in groups if _in_validation(n, val_fraction)]
    if not val_names:  # tiny sets: hold out at least one group
        val_names = [min(groups, key=lambda n: hashlib.sha1(n.encode()).digest())]
    if len(val_names) == len(groups):
        raise LicSweepError(f"data.root: {root} has too few images to hold out a validation split")
    val = set(val_names)
    return Split(train=[f for n, fs in groups.items() if n not in val for f in fs],
                 val=[f for n in sorted(val) for f in groups[n]])


def read_item(item) -> np.ndarray:
    """An 8-bit RGB image (H, W, 3) from an image file, or from a packed store (codec.data.packed.PackedImage)."""
    return item.read() if hasattr(item, "read") else read_rgb(item)


class CropDataset(Dataset):
    """Crops of `patch_size` from a list of image files; returns (tensor, skipped path or "")."""

    def __init__(self, files: list[Path], patch_size: int, train: bool, small_images: str = "pad", seed: int = 0,
                 cache_images: bool = False):
        self.files, self.patch_size, self.train = files, patch_size, train
        self.small_images, self.seed, self.epoch = small_images, seed, 0
        # Decoded images kept in memory (per loader worker): for small sets such as the quickstart's.
        self.cache: dict[int, np.ndarray] | None = {} if cache_images else None

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _read(self, i: int) -> np.ndarray:
        if self.cache is None:
            return read_item(self.files[i])
        if i not in self.cache:
            self.cache[i] = read_item(self.files[i])
        return self.cache[i]

    def _crop(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        p = self.patch_size
        h, w = img.shape[:2]
        if h < p or w < p:
            img = np.pad(img, ((0, max(0, p - h)), (0, max(0, p - w)), (0, 0)), mode="reflect"
                         if h > p // 2 and w > p // 2 else "edge")
            h, w = img.shape[:2]
        if self.train:
            top, left = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
        else:
            top, left = (h - p) // 2, (w - p) // 2
        return img[top:top + p, left:left + p]

    def __getitem__(self, index: int):
        """Sample `index` of an epoch's order: image index % len(files), its crop drawn from (seed, epoch,
        index), so a second pass over a small set within one epoch gives new crops of the same images."""
        skipped = []
        for attempt in range(len(self.files)):
            i = (index + attempt) % len(self.files)
            path = self.files[i]
            try:
                img = self._read(i)
            except UnreadableImage:
                skipped.append(f"{path} (cannot be decoded)")
                continue
            if self.small_images == "skip" and min(img.shape[:2]) < self.patch_size:
                skipped.append(f"{path} (smaller than {self.patch_size}px crop)")
                continue
            rng = np.random.default_rng([self.seed, self.epoch, index + attempt])
            crop = np.ascontiguousarray(self._crop(img, rng))
            tensor = torch.from_numpy(crop).permute(2, 0, 1).float().div_(255.0)
            return tensor, "\n".join(skipped)
        raise LicSweepError(f"no usable image among {len(self.files)} files (first: {self.files[0]})")


def crops_per_second(items: list, patch_size: int, sample: int = 24, seconds: float = 2.0) -> float:
    """Random training crops per second on one core (this process, torch on one thread) from `sample` images
    spread over `items`, each decoded at every access as training does: what one loader worker gives."""
    picks = [items[round(k * (len(items) - 1) / max(1, sample - 1))] for k in range(min(sample, len(items)))]
    dataset = CropDataset(picks, patch_size, train=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dataset[0]  # the first access opens files and maps (a worker does so once)
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or done < len(picks):
            dataset[done % len(picks)]
            done += 1
        return done / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def epoch_order(num_samples: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                min_length: int = 0) -> list[int]:
    """This rank's sample order for an epoch: permutations fixed by (seed, epoch, pass), as many
    passes as it takes to give this rank at least `min_length` samples. Pass p's samples are numbered
    p * num_samples + image index (CropDataset takes the image modulo its length and draws the crop
    from the number, so repeated passes do not repeat crops)."""
    order: list[int] = []
    passes = 0
    while passes == 0 or len(order) // world_size < min_length:
        permutation = np.random.default_rng([seed, epoch, passes]).permutation(num_samples)
        order += (permutation + passes * num_samples).tolist()
        passes += 1
    usable = len(order) - len(order) % world_size
    return order[rank:usable:world_size]


def loader_workers(setting: str, local_world_size: int = 1) -> int:
    """data.num_workers as a number: itself, or for auto the CPUs this process may run on (its affinity
    mask: Slurm's cpus_per_task, taskset, a container's cpuset) shared among the node's training
    processes, less one for the training loop itself, at most 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return loader_workers_for(setting, cpus, local_world_size)


def loader_workers_for(setting: str, cpus: int, local_world_size: int = 1) -> int:
    """data.num_workers as a number for a process given `cpus` CPUs (loader_workers: this process's own)."""
    if setting != "auto":
        return int(setting)
    return max(0, min(8, cpus // max(1, local_world_size) - 1))
