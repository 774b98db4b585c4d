"""Evaluation with real bitstreams on an image folder: the report's Part 3 table per run.

For each image: pad to a multiple of 64, compress, pack to bytes (bits = 8 x every byte the
decoder needs), unpack, decompress, crop back, check that the decoded latent is the one the
encoder coded, then PSNR and MS-SSIM on the 8-bit-rounded reconstruction.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from pytorch_msssim import ms_ssim
from tqdm import tqdm

from codec.data.images import IMAGE_SUFFIXES, UnreadableImage, read_rgb
from codec.errors import LicSweepError
from codec.models.bitstream import (
    MAX_SIDE,
    PAD_MULTIPLE,
    LatentOutOfRange,
    decode,
    decode_mismatches,
    encode,
    pack,
    unpack,
)
from codec.records.layout import RunDir
from codec.records.record import ImageResult, SetResult
from codec.schema import CoderDevice


class DecodeMismatch(LicSweepError):
    pass


def list_eval_images(folder: str | Path, max_images: int | None = None) -> tuple[list[Path], list[str]]:
    """(image files to evaluate, names of other files skipped). Errors name the folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LicSweepError(f"eval.sets: {folder} is not a directory")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    images, skipped = [], []
    for p in files:
        (images if p.suffix.lower() in IMAGE_SUFFIXES else skipped).append(p)
    skipped_names = [str(p.relative_to(folder)) for p in skipped
                     if p.suffix.lower() not in {".txt", ".md", ".json", ".csv"} and p.name != "SHA256SUMS"]
    if not images:
        raise LicSweepError(f"eval.sets: {folder} holds no PNG or JPEG images")
    return images[:max_images] if max_images else images, skipped_names


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1).float().div(255).unsqueeze(0)


def quality_metrics(original: np.ndarray, reconstruction: torch.Tensor) -> tuple[float, float]:
    """PSNR (dB) and MS-SSIM on 8-bit values: reconstruction rounded to 0..255 first."""
    org = torch.from_numpy(np.array(original, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
    rec = (reconstruction.detach().cpu() * 255).clamp(0, 255).round()
    mse = torch.mean((org - rec) ** 2).item()
    psnr = math.inf if mse == 0 else 20 * math.log10(255) - 10 * math.log10(mse)
    h, w = original.shape[:2]
    # not defined under MS_SSIM_MIN_SIDE: NaN, left out of the set's mean (summarize)
    ssim = ms_ssim(org, rec, data_range=255).item() if min(h, w) >= MS_SSIM_MIN_SIDE else float("nan")
    return psnr, ssim


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate_model(model, folder: str | Path, device: str | torch.device = "cpu", max_images: int | None = None,
                   out_dir: Path | None = None, save_bitstreams: bool = False,
                   save_reconstructions: bool = False) -> tuple[list[ImageResult], list[str]]:
    """Per-image results for every image in `folder`, and the names of skipped files."""
    device = torch.device(device)
    # plain NCHW whatever layout training used, so that results do not depend on it
    model = model.to(device, memory_format=torch.contiguous_format).eval()
    model.update(force=True)
    with channels_last_transforms(model, enabled=device.type == "cpu"):
        return _evaluate_images(model, folder, device, max_images, out_dir, save_bitstreams, save_reconstructions)


@contextlib.contextmanager
def channels_last_transforms(model, enabled: bool = True):
    """g_a and g_s in channels-last layout (about 1.3x faster convolutions on CPU at the protocol's
    channel counts), while everything the entropy coder sees (y out of g_a, the hyperprior, the
    context model) stays plain NCHW: encoder and decoder must compute bit-identical parameters."""
    if not enabled:
        yield
        return
    hooks = []
    for transform in (model.g_a, model.g_s):
        transform.to(memory_format=torch.channels_last)
        hooks.append(transform.register_forward_pre_hook(
            lambda _m, args: (args[0].contiguous(memory_format=torch.channels_last), *args[1:])))
        hooks.append(transform.register_forward_hook(lambda _m, _args, out: out.contiguous()))
    try:
        yield
    finally:
        for h in hooks:
            h.remove()
        for transform in (model.g_a, model.g_s):
            transform.to(memory_format=torch.contiguous_format)


# The smallest side evaluated: one block of the models' padding (bitstream.PAD_MULTIPLE). A 1x1 image is
# coded as a 64x64 block, so its bits per pixel (944 on a real model) would swamp a set's mean.
MIN_SIDE = PAD_MULTIPLE
# pytorch-msssim's five scales need more than 160 pixels a side; MS-SSIM is not defined below that.
MS_SSIM_MIN_SIDE = 161


def usable_images(folder: str | Path, max_images: int | None, skipped: list[str], desc: str):
    """(name, path, HxWx3 uint8) for each image of an evaluation folder that can be evaluated, one at a
    time. The rest are skipped with a warning naming the file and why, and their names added to
    `skipped`: other files, files that do not decode (corrupt, or a decompression bomb: codec.data.images),
    and images under MIN_SIDE or over MAX_SIDE pixels a side. Model and classical evaluation read images
    only here."""
    folder = Path(folder)
    images, others = list_eval_images(folder, max_images)
    if others:  # stacklevel 3: the warning points at the evaluation's caller
        warnings.warn(f"skipped {len(others)} non-image file(s) in {folder}: {', '.join(others)}", stacklevel=3)
    skipped += others
    for path in tqdm(images, desc=desc, leave=False, dynamic_ncols=True):
        name = str(path.relative_to(folder))
        try:
            img = read_rgb(path)
        except UnreadableImage as exc:
            warnings.warn(f"skipped unreadable image {exc}", stacklevel=3)
            skipped.append(name)
            continue
        h, w = img.shape[:2]
        why = (f"under {MIN_SIDE} a side (one block of the models' padding: its bits per pixel would be mostly "
               "padding)" if min(h, w) < MIN_SIDE else
               f"over {MAX_SIDE} a side (the bitstream's 16-bit size header)" if max(h, w) > MAX_SIDE else "")
        if why:
            warnings.warn(f"skipped {path}: {w}x{h} pixels, {why}", stacklevel=3)
            skipped.append(name)
            continue
        yield name, path, img


def _evaluate_images(model, folder, device, max_images, out_dir, save_bitstreams, save_reconstructions):
    results, skipped = [], []
    for name, path, img in usable_images(folder, max_images, skipped, "evaluate"):
        x = to_tensor(img).to(device)
        _sync(device)
        t0 = time.perf_counter()
        try:
            encoded = encode(model, x)
        except LatentOutOfRange as exc:
            raise LatentOutOfRange(f"{path}: {exc}") from None
        data = pack(encoded)
        _sync(device)
        t1 = time.perf_counter()
        x_hat, y_hat = decode(model, unpack(data, model))
        _sync(device)
        t2 = time.perf_counter()
        mismatches = decode_mismatches(encoded, y_hat)
        if mismatches:
            raise DecodeMismatch(f"{path}: the decoded latent differs from the encoded one in {mismatches} "
                                 "elements (entropy coder or model not deterministic on this device?)")
        psnr, ssim = quality_metrics(img, x_hat)
        h, w = img.shape[:2]
        bits = 8 * len(data)
        results.append(ImageResult(name, h * w, bits, bits / (h * w), psnr, ssim, t1 - t0, t2 - t1))
        if out_dir and save_bitstreams:
            (out_dir / "bitstreams").mkdir(parents=True, exist_ok=True)
            (out_dir / "bitstreams" / f"{path.stem}.bin").write_bytes(data)
        if out_dir and save_reconstructions:
            from PIL import Image

            (out_dir / "reconstructions").mkdir(parents=True, exist_ok=True)
            rec = (x_hat[0].cpu().permute(1, 2, 0).numpy() * 255).clip(0, 255).round().astype(np.uint8)
            Image.fromarray(rec).save(out_dir / "reconstructions" / f"{path.stem}.png")
    return checked_results(results, skipped, folder)


def checked_results(results: list[ImageResult], skipped: list[str], folder) -> tuple[list[ImageResult], list[str]]:
    """The per-image results of a set, once every image is done: refused when there are none; a warning
    names the images MS-SSIM is not defined for (the set's MS-SSIM is the mean over the others)."""
    if not results:
        raise LicSweepError(f"eval.sets: none of the images in {folder} could be evaluated (unreadable, or under "
                            f"{MIN_SIDE} pixels a side)")
    small = [r.image for r in results if math.isnan(r.ms_ssim)]
    if small:
        warnings.warn(f"MS-SSIM is not defined under {MS_SSIM_MIN_SIDE} pixels a side: {', '.join(small)} in "
                      f"{folder}; the set's MS-SSIM is the mean over the other {len(results) - len(small)} image(s)",
                      stacklevel=3)
    return results, skipped


def evaluate_sets(e, model, run: RunDir, log_table=None) -> tuple[dict[str, SetResult], torch.device]:
    """Evaluate `model` on each test set of `e` (the run's eval config), in order (the first is the
    headline); returns each set's results and the device the entropy coder ran on. The one evaluation
    path, after training and for `task=eval`: the transforms run where the model is, the entropy coder on
    the CPU unless eval.entropy_coder_device=same. `log_table(key, rows)` receives each set's per-image rows."""
    from codec.data.test_sets import resolved_sets

    device = torch.device("cpu") if e.entropy_coder_device == CoderDevice.cpu else next(model.parameters()).device
    folders = resolved_sets(e.sets, e.sets_root)
    names = list(folders)
    sets: dict[str, SetResult] = {}
    for name, folder in folders.items():
        per_image, skipped = evaluate_model(model, folder, device, e.max_images, run.set_outputs(name, names),
                                            e.save_bitstreams, e.save_reconstructions)
        s = sets[name] = SetResult(name, str(folder), per_image, skipped)
        if log_table:
            log_table(f"eval/{name}/per_image", s.to_json()["per_image"])
        print(f"evaluated {s['num_images']} images of {name} on {device}: bpp {s['bpp']:.4f} "
              f"psnr {s['psnr']:.2f} dB ms-ssim {s['ms_ssim']:.4f} "
              f"enc {s['enc_time']:.3f}s dec {s['dec_time']:.3f}s per image")
    return sets, device
