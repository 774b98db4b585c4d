"""Packed training data (codec/data/prepare.py, data.format=packed): a packed copy of data/vimeo-sample has the
source's split and gives the same crops pixel for pixel; packing resumes after an interruption; training
runs from it."""

import json

import numpy as np
import pytest

from codec.data import prepare as packing
from codec.data.training import CropDataset, split_files
from codec.errors import LicSweepError
from codec.runs.job import train_and_evaluate
from tests.conftest import REPO, config_for, tiny_overrides

VIMEO = REPO / "data" / "vimeo-sample"


def test_a_packed_copy_has_the_sources_split_and_the_same_crops(tmp_path):
    index = packing.prepare(VIMEO, tmp_path / "packed", "vimeo", "sep_trainlist.txt", shard_bytes=4 << 20)
    assert index["shards"] > 1 and not index["unreadable"]  # 4 MiB shards: several
    source = split_files("vimeo", VIMEO, 0.1, "sep_trainlist.txt")
    packed = split_files("packed", tmp_path / "packed", 0.1)
    assert [str(p.relative_to(VIMEO)) for p in source.train] == [p.name for p in packed.train]
    assert [str(p.relative_to(VIMEO)) for p in source.val] == [p.name for p in packed.val]
    for train in (True, False):
        a = CropDataset(source.train if train else source.val, 128, train, seed=3)
        b = CropDataset(packed.train if train else packed.val, 128, train, seed=3)
        a.set_epoch(2), b.set_epoch(2)
        for i in (0, 5, len(a) - 1):
            assert np.array_equal(a[i][0].numpy(), b[i][0].numpy())
    on_disk = sum(p.stat().st_size for p in (tmp_path / "packed").glob("shard-*.u8"))
    assert on_disk == sum(p.nbytes for p in packed.train + packed.val)


def test_packing_resumes_after_an_interruption(tmp_path, monkeypatch):
    full = packing.prepare(VIMEO, tmp_path / "full", "vimeo", "sep_trainlist.txt", shard_bytes=2 << 20)
    real, calls = packing.read_rgb, {"n": 0}

    def failing(path):
        calls["n"] += 1
        if calls["n"] == packing.SAMPLE + 40:  # the 40th image packed (after the estimate's sample)
            raise OSError(28, "No space left on device")
        return real(path)

    monkeypatch.setattr(packing, "read_rgb", failing)
    with pytest.raises(LicSweepError, match=r"packing into .* failed .*No space left.*finished shards are kept"):
        packing.prepare(VIMEO, tmp_path / "part", "vimeo", "sep_trainlist.txt", shard_bytes=2 << 20)
    progress = json.loads((tmp_path / "part" / "progress.json").read_text())
    assert 0 < progress["shards"] and progress["items"] < 39
    with pytest.raises(LicSweepError, match=r"packing was interrupted: rerun"):
        split_files("packed", tmp_path / "part", 0.1)
    monkeypatch.setattr(packing, "read_rgb", real)
    resumed = packing.prepare(VIMEO, tmp_path / "part", "vimeo", "sep_trainlist.txt", shard_bytes=2 << 20)
    assert resumed["images"] == full["images"] and not (tmp_path / "part" / "progress.json").exists()
    for a, b in zip(sorted((tmp_path / "full").glob("shard-*")), sorted((tmp_path / "part").glob("shard-*")), strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_training_from_a_packed_store(tmp_path):
    packing.prepare(VIMEO, tmp_path / "packed", "vimeo", "sep_trainlist.txt")
    config = config_for(tiny_overrides(tmp_path, "model=factorized", "data.format=packed",
                                       f"data.root={tmp_path / 'packed'}"))
    summary = train_and_evaluate(config, tmp_path / "run")
    assert summary["train_steps"] == 2 and summary["skipped_files"] == 0
    card = json.loads((tmp_path / "run" / "repro.json").read_text())
    source = split_files("vimeo", VIMEO, 0.1, "sep_trainlist.txt")
    assert card["train_data"]["files"] == len(source.train) + len(source.val)  # named by the source's frames
    with pytest.raises(LicSweepError, match=r"is not a packed store: no index.json.*python -m codec.prepare"):
        split_files("packed", VIMEO, 0.1)
