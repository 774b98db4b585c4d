"""The peers we measure against: CompressAI's own training loop and its evaluation.

Training: the loop of CompressAI's examples/train.py (`train_one_epoch`), written out here with
CompressAI's own pieces: `compressai.datasets.ImageFolder` reading the PNG files through PIL with
torchvision's RandomCrop + ToTensor, `compressai.losses.RateDistortionLoss`, an Adam on the
parameters and an Adam on the entropy bottleneck quantiles (its `configure_optimizers`), gradient
clipping, then the aux step. Its console print every 10 batches is left out (it only helps the peer).

Evaluation: `compressai.utils.eval_model`'s own `load_checkpoint` and `eval_model` functions
(compress, decompress, PSNR and MS-SSIM per image), called in-process.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import transforms

def image_folder(files: list[Path], root: Path, patch_size: int):
    """CompressAI's ImageFolder over exactly these files (it wants root/train/*: symlinks)."""
    from compressai.datasets import ImageFolder

    split = root / "train"
    split.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(files):
        link = split / f"{i:05d}{f.suffix}"
        if not link.exists():
            os.symlink(Path(f).resolve(), link)
    return ImageFolder(root, split="train",
                       transform=transforms.Compose([transforms.RandomCrop(patch_size), transforms.ToTensor()]))


def optimizers(model, lr: float, aux_lr: float):
    """examples/train.py's configure_optimizers: quantiles apart, everything else in the main Adam."""
    params = {n for n, p in model.named_parameters() if not n.endswith(".quantiles") and p.requires_grad}
    aux = {n for n, p in model.named_parameters() if n.endswith(".quantiles") and p.requires_grad}
    named = dict(model.named_parameters())
    main_opt = torch.optim.Adam((named[n] for n in sorted(params)), lr=lr)
    aux_opt = torch.optim.Adam((named[n] for n in sorted(aux)), lr=aux_lr)
    return main_opt, aux_opt


def peer_step(model, lmbda: float, lr: float, aux_lr: float, clip_max_norm: float):
    """examples/train.py's train_one_epoch body, as a function of one batch already on the device."""
    from compressai.losses import RateDistortionLoss

    criterion = RateDistortionLoss(lmbda=lmbda)
    optimizer, aux_optimizer = optimizers(model, lr, aux_lr)
    model.train()

    def step(d: torch.Tensor) -> float:
        optimizer.zero_grad()
        aux_optimizer.zero_grad()
        out_net = model(d)
        out_criterion = criterion(out_net, d)
        out_criterion["loss"].backward()
        if clip_max_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_max_norm)
        optimizer.step()
        aux_loss = model.aux_loss()
        aux_loss.backward()
        aux_optimizer.step()
        return out_criterion["loss"]

    return step


def train_steps(model, dataset, steps: int, batch_size: int, lmbda: float, lr: float, aux_lr: float,
                clip_max_norm: float, num_workers: int, device: torch.device) -> int:
    """examples/train.py's train_one_epoch for `steps` batches (epochs repeat); returns images seen."""
    step = peer_step(model, lmbda, lr, aux_lr, clip_max_norm)
    done = 0
    while done < steps:
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=True,
                            pin_memory=device.type == "cuda")
        for d in loader:
            step(d.to(device))
            done += 1
            if done == steps:
                break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * batch_size


def load_for_eval(name: str, checkpoint: Path):
    """The model as eval_model loads it (architecture by name; update(force=True))."""
    from compressai.utils.eval_model.__main__ import load_checkpoint

    from codec.models.registry import registry_entry

    architecture = registry_entry(name).compressai_name
    if architecture:
        return load_checkpoint(architecture, False, str(checkpoint))
    from codec.models.checkpoint import load_model

    net, _ = load_model(checkpoint)
    net.update(force=True)
    return net.eval()


def evaluate(model, folder: Path, files: list[Path]) -> dict:
    """eval_model's eval_model(): real bitstreams, PSNR, MS-SSIM; averages over `files`."""
    from compressai.utils.eval_model.__main__ import eval_model

    return dict(eval_model(model, Path("."), folder, files, entropy_estimation=False, half=False,
                           per_image=False, architecture="peer"))
