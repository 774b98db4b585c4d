"""Evaluation with real bitstreams on an image folder: the report's Part 3 table per run.

For each image: pad to a multiple of 64, compress, pack to bytes (bits = 8 x every byte the
decoder needs), unpack, decompress, crop back, check that the decoded latent is the one the
encoder coded, then PSNR and MS-SSIM on the 8-bit-rounded reconstruction.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_msssim import ms_ssim
from tqdm import tqdm

from codec.bitstream import MAX_SIDE, PAD_MULTIPLE, LatentOutOfRange, decode, decode_mismatches, encode, pack, unpack
from codec.checkpoint import CheckpointIdentity, model_checkpoint, write_json_atomic, write_text_atomic
from codec.errors import LicSweepError
from codec.images import IMAGE_SUFFIXES, UnreadableImage, read_rgb
from codec.models import entry_of, registry_entry, with_derived_buffers
from codec.schema import CoderDevice, RunConfig

RESULT_FIELDS = ("bits", "bpp", "psnr", "ms_ssim", "enc_time", "dec_time", "num_pixels")


@dataclass
class ImageResult:
    image: str
    num_pixels: int
    bits: int
    bpp: float
    psnr: float
    ms_ssim: float
    enc_time: float
    dec_time: float


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
    `skipped`: other files, files that do not decode (corrupt, or a decompression bomb: codec.images),
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


def summarize(per_image: list[ImageResult]) -> dict[str, float]:
    """Means over the images; MS-SSIM over the images it is defined for (ms_ssim_images of them, NaN if none)."""
    rows = [asdict(r) for r in per_image]
    summary = {k: float(np.mean([r[k] for r in rows])) for k in RESULT_FIELDS if k != "ms_ssim"}
    defined = [r["ms_ssim"] for r in rows if not math.isnan(r["ms_ssim"])]
    summary["ms_ssim"] = float(np.mean(defined)) if defined else float("nan")
    summary["ms_ssim_images"] = len(defined)
    summary["num_images"] = len(rows)
    return summary


def write_results(results: dict[str, Any], out_dir: Path) -> None:
    """per_image.csv (one row per set and image), then results.json (which marks the run done), each
    written atomically."""
    blocks = results.get("sets") or {results.get("set", ""): results}
    rows = [{"set": name, **row} for name, block in blocks.items() for row in block["per_image"]]
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(table.getvalue(), out_dir / "per_image.csv")
    write_json_atomic(results, out_dir / "results.json")


def set_block(dataset, per_image: list[ImageResult], skipped: list[str]) -> dict[str, Any]:
    """One test set's results: the folder, the means over its images, what was skipped, each image."""
    return {"dataset": str(dataset), **summarize(per_image), "skipped": skipped,
            "per_image": [asdict(r) for r in per_image]}


def results_record(model: str, dataset, per_image: list[ImageResult], skipped: list[str], coding_device,
                   **identity) -> dict[str, Any]:
    """The results.json shape of one evaluation on one folder (classical codecs)."""
    return {"model": model, **identity, **set_block(dataset, per_image, skipped), "coding_device": str(coding_device)}


def results_for_set(results: dict[str, Any], name: str | None = None) -> dict[str, Any] | None:
    """A results.json's fields for one test set (None: its headline, the first of eval.sets): the run's
    identity with that set's block; None when the run was not evaluated on it. Files written before
    eval.sets (no "sets") hold one set, named by their folder."""
    if name is None or name == results.get("set"):
        return results
    if "sets" not in results:
        return results if name == Path(str(results.get("dataset", ""))).name else None
    if name not in results["sets"]:
        return None
    return {**{k: v for k, v in results.items() if k != "sets"}, "set": name, **results["sets"][name]}


def evaluate_run(config: RunConfig, model, run_dir: Path, tracker, **identity) -> dict[str, Any]:
    """Evaluate `model` on each of config.eval.sets, write results.json and per_image.csv, log them to
    W&B; returns the summary: the first set's fields, "<set>/<field>" for every set, and the sets' names (eval_sets). The one
    evaluation path, after training and for `task=eval`: the transforms run where the model is, the
    entropy coder on the CPU unless eval.entropy_coder_device=same. `identity` (lmbda, N, M, run and
    sweep names, ...) goes into results.json beside the evaluation's fields."""
    from codec.datasets import set_folder, set_name

    e = config.eval
    device = torch.device("cpu") if e.entropy_coder_device == CoderDevice.cpu else next(model.parameters()).device
    blocks: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(e.sets):
        name, folder = set_name(entry), set_folder(entry, e.sets_root)
        out = run_dir if i == 0 else run_dir / "sets" / name  # bitstreams and reconstructions, per set
        per_image, skipped = evaluate_model(model, folder, device, e.max_images, out, e.save_bitstreams,
                                            e.save_reconstructions)
        blocks[name] = set_block(folder, per_image, skipped)
        tracker.table(f"eval/{name}/per_image", blocks[name]["per_image"])
        b = blocks[name]
        print(f"evaluated {b['num_images']} images of {name} on {device}: bpp {b['bpp']:.4f} "
              f"psnr {b['psnr']:.2f} dB ms-ssim {b['ms_ssim']:.4f} "
              f"enc {b['enc_time']:.3f}s dec {b['dec_time']:.3f}s per image")
    headline = set_name(e.sets[0])
    # The top level repeats the first set's block, so that a reader of one set need not know about sets.
    results = {"model": entry_of(model).name, **identity, "set": headline, **blocks[headline],
               "coding_device": str(device), "wandb_run_id": tracker.run_id, "sets": blocks}
    write_results(results, run_dir)
    summary = {k: v for k, v in results.items() if k not in ("per_image", "sets")} | {"eval_sets": list(blocks)}
    for name, block in blocks.items():
        summary |= {f"{name}/{k}": block[k] for k in (*RESULT_FIELDS, "num_images")}
    return summary


def load_model(path: str | Path):
    """(model, checkpoint dict) from our checkpoint or a CompressAI state_dict; the architecture is the
    checkpoint's own record, else the one registered model whose parameters have these names and shapes.
    Everything the file claims is checked first (codec.checkpoint.model_checkpoint)."""
    model, ckpt, _ = _checked_model(path)
    return model, ckpt


def _checked_model(path: str | Path):
    ckpt, identity = model_checkpoint(path)
    entry = registry_entry(identity.model)
    try:
        model = entry.build(identity.N, identity.M)
        model.load_state_dict(with_derived_buffers(model.state_dict(), ckpt["state_dict"]))
    except (KeyError, RuntimeError) as exc:
        raise LicSweepError(f"checkpoint {path} does not load into {entry.cls.__name__}: {exc}") from None
    return model, ckpt, identity


def checkpoint_identity(path: str | Path) -> CheckpointIdentity:
    """What a checkpoint records or its state_dict shows (model, N, M, lambda or None), checked."""
    return model_checkpoint(path)[1]


def evaluate_checkpoint(config: RunConfig, run_dir: Path) -> dict[str, Any]:
    """`python run.py task=eval checkpoint=PATH`: evaluate, write results.json in run_dir, log to W&B.
    Model and lambda are the checkpoint's (lambda is None for a file that does not record it)."""
    from codec.tracking import Tracker
    from codec.train import Distributed, pick_device

    model, _, identity = _checked_model(config.checkpoint)
    model = model.to(pick_device(config.device, Distributed()))
    tracker = Tracker(config, run_dir, None, extra_config={"checkpoint": str(config.checkpoint),
                                                           "model": identity.model, "lmbda": identity.lmbda})
    try:
        return evaluate_run(config, model, run_dir, tracker, lmbda=identity.lmbda, N=identity.N, M=identity.M,
                            checkpoint=str(config.checkpoint))
    finally:
        tracker.finish()
