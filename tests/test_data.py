"""Data sources and bad input, on the real Vimeo-90k sample and Kodak files."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from codec.data.training import CropDataset, epoch_order, split_files
from codec.errors import LicSweepError
from codec.data.images import read_rgb, to_rgb8
from tests.conftest import KODAK, VIMEO


def test_vimeo_septuplets_split_is_fixed_and_disjoint():
    a = split_files("vimeo", VIMEO, 0.125, "sep_trainlist.txt")
    b = split_files("vimeo", VIMEO, 0.125, "sep_trainlist.txt")
    assert a.train == b.train and a.val == b.val
    assert not set(a.train) & set(a.val)
    assert len(a.train) + len(a.val) == 16 * 7
    # whole sequences go to one side
    val_sequences = {p.parent for p in a.val}
    assert all(p.parent not in val_sequences for p in a.train)


def test_vimeo_triplets_through_their_list_file(tmp_path):
    for seq in ["00001/0001", "00001/0002", "00002/0001"]:
        dst = tmp_path / "sequences" / seq
        dst.mkdir(parents=True)
        for i in (1, 2, 3):
            shutil.copy(VIMEO / "sequences" / seq / f"im{i}.png", dst / f"im{i}.png")
    (tmp_path / "tri_trainlist.txt").write_text("00001/0001\n00001/0002\n00002/0001\n")
    split = split_files("vimeo", tmp_path, 0.3, "tri_trainlist.txt")
    assert len(split.train) + len(split.val) == 9 and split.val


def test_image_folder_is_recursive_png_and_jpeg(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    Image.open(KODAK / "kodim01.png").save(tmp_path / "a" / "one.png")
    Image.open(KODAK / "kodim02.png").convert("RGB").save(tmp_path / "a" / "b" / "two.JPG")
    Image.open(KODAK / "kodim03.png").convert("RGB").save(tmp_path / "three.jpeg")
    (tmp_path / "notes.txt").write_text("not an image")
    split = split_files("folder", tmp_path, 0.3)
    names = sorted(p.name for p in split.train + split.val)
    assert names == ["one.png", "three.jpeg", "two.JPG"]


def test_random_crops_for_training_centre_crops_for_validation():
    files = split_files("vimeo", VIMEO, 0.125, "sep_trainlist.txt").train[:4]
    train = CropDataset(files, 128, train=True, seed=3)
    val = CropDataset(files, 128, train=False)
    x0, _ = train[0]
    assert x0.shape == (3, 128, 128) and 0 <= x0.min() and x0.max() <= 1
    train.set_epoch(1)
    assert not torch.equal(train[0][0], x0)  # a new crop in a new epoch
    train.set_epoch(0)
    assert torch.equal(train[0][0], x0)  # and the same one again: reproducible
    img = read_rgb(files[0])
    top, left = (img.shape[0] - 128) // 2, (img.shape[1] - 128) // 2
    expected = torch.from_numpy(img[top:top + 128, left:left + 128].copy()).permute(2, 0, 1).float() / 255
    assert torch.equal(val[0][0], expected)


def test_epoch_order_covers_each_sample_once_per_pass_and_shards_by_rank():
    order = epoch_order(10, seed=1, epoch=0)
    assert sorted(order) == list(range(10))
    r0, r1 = epoch_order(10, 1, 0, rank=0, world_size=2), epoch_order(10, 1, 0, rank=1, world_size=2)
    assert not set(r0) & set(r1) and len(r0) == len(r1) == 5
    long = epoch_order(10, 1, 0, min_length=25)
    assert len(long) >= 25 and sorted(long) == list(range(len(long)))  # passes numbered on, each image once per pass


def test_a_second_pass_within_an_epoch_draws_new_crops(tmp_path):
    """A small training set (the mini-protocol's 88 photos) takes several passes per epoch: each pass
    must crop its images anew, or an epoch would train on a few dozen patches over and over."""
    files = sorted(KODAK.glob("*.png"))[:3]
    train = CropDataset(files, 64, train=True)
    first, second = train[1][0], train[1 + len(files)][0]  # the same image in passes 0 and 1
    assert first.shape == second.shape == (3, 64, 64) and not torch.equal(first, second)
    assert torch.equal(train[1 + len(files)][0], second)  # reproducible


@pytest.mark.parametrize("setup, message", [
    (lambda p: p / "missing", "is not a directory"),
    (lambda p: p, "does not exist"),  # empty root: no list file
])
def test_missing_or_empty_vimeo_root(tmp_path, setup, message):
    with pytest.raises(LicSweepError, match=message):
        split_files("vimeo", setup(tmp_path), 0.1, "sep_trainlist.txt")


def test_empty_folder_root(tmp_path):
    with pytest.raises(LicSweepError, match="holds no PNG or JPEG"):
        split_files("folder", tmp_path, 0.1)


def test_list_naming_missing_sequences(tmp_path):
    shutil.copytree(VIMEO / "sequences" / "00001" / "0001", tmp_path / "sequences" / "00001" / "0001")
    (tmp_path / "sep_trainlist.txt").write_text("00001/0001\n00009/0042\n")
    with pytest.raises(LicSweepError, match=r"names 1 sequence.*00009/0042"):
        split_files("vimeo", tmp_path, 0.1, "sep_trainlist.txt")


def test_undecodable_file_is_skipped_and_named(tmp_path):
    good = tmp_path / "good.png"
    Image.open(KODAK / "kodim01.png").save(good)
    bad = tmp_path / "broken.png"
    bad.write_bytes(good.read_bytes()[:2000])  # truncated PNG
    ds = CropDataset([bad, good], 64, train=True)
    x, skipped = ds[0]
    assert x.shape == (3, 64, 64)
    assert "broken.png (cannot be decoded)" in skipped


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "I;16", "LA", "CMYK"])
def test_odd_modes_become_8bit_rgb(mode):
    rgb = Image.open(KODAK / "kodim05.png").convert("RGB").crop((0, 0, 64, 48))
    if mode == "I;16":
        gray = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257
        img = Image.fromarray(gray)
        assert img.mode.startswith("I;16")
        out = to_rgb8(img)
        np.testing.assert_array_equal(out[..., 0], np.asarray(rgb.convert("L")))
    else:
        out = to_rgb8(rgb.convert(mode))
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8


def test_small_images_padded_or_skipped(tmp_path):
    small = tmp_path / "small.png"
    Image.open(KODAK / "kodim01.png").crop((0, 0, 40, 30)).save(small)
    big = tmp_path / "big.png"
    Image.open(KODAK / "kodim02.png").save(big)
    x, skipped = CropDataset([small], 64, train=True, small_images="pad")[0]
    assert x.shape == (3, 64, 64) and not skipped
    x, skipped = CropDataset([small, big], 64, train=True, small_images="skip")[0]
    assert x.shape == (3, 64, 64) and "small.png (smaller than 64px crop)" in skipped


def test_num_workers_auto_follows_the_cpus_this_process_may_use(monkeypatch, tmp_path):
    import os

    from codec.data.training import loader_workers
    from codec.errors import ConfigError
    from tests.conftest import config_for, tiny_overrides

    assert loader_workers("3") == 3 and loader_workers("0") == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))  # e.g. Slurm's cpus_per_task=16
    assert loader_workers("auto") == 8 and loader_workers("auto", local_world_size=4) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert loader_workers("auto") == 0  # one CPU: load in the training process
    with pytest.raises(ConfigError, match="data.num_workers='many' must be auto or a number"):
        config_for(tiny_overrides(tmp_path, "data.num_workers=many"))
