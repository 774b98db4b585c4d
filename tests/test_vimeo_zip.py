"""Vimeo-90k from its zip to training (issue: training data at the protocol's scale), on a synthetic archive in
vimeo_septuplet.zip's layout (tests/vimeo_zip.py): fetched from a local mirror by its manifest and kept as the
zip; read in place (data.format=zip) with the unpacked folder's split, names, crops and data manifest; packed
from the zip on 2 workers into the same shards as from the folder; killed in the middle and resumed; trained on."""

import json
import os
import signal
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from codec.data import prepare as packing
from codec.data.test_sets import ChecksumMismatch, fetch, manifests, set_folder
from codec.data.training import CropDataset, split_files
from codec.errors import LicSweepError
from codec.runs.job import train_and_evaluate
from codec.runs.provenance import files_manifest
from tests.conftest import REPO, config_for, tiny_overrides
from tests.vimeo_zip import BROKEN, make_vimeo_zip


@pytest.fixture(scope="module")
def vimeo(tmp_path_factory):
    """The synthetic archive (as the manifest names it), its unpacked folder, and its packing from that folder."""
    root = tmp_path_factory.mktemp("vimeo")
    archive = root / "mirror" / "vimeo_septuplet.zip"
    archive.parent.mkdir()
    lists = make_vimeo_zip(archive)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(root / "unpacked")
    folder = root / "unpacked" / "vimeo_septuplet"
    index = packing.prepare(folder, root / "packed-from-folder", "vimeo", "sep_trainlist.txt", shard_bytes=200_000)
    return {"zip": archive, "folder": folder, "lists": lists, "index": index, "packed": root / "packed-from-folder"}


def _shards(store):
    return [p.read_bytes() for p in sorted(store.glob("shard-*.u8"))]


def test_the_training_manifests_and_a_fetch_from_a_mirror_that_keeps_the_zip(vimeo, tmp_path):
    known = manifests()
    training = {n for n, m in known.items() if m.purpose == "training"}
    assert {"vimeo90k-septuplet", "vimeo90k-triplet", "div2k-train-hr", "clic2020-train-professional",
            "clic2020-train-mobile"} <= training
    for name in training:
        m = known[name]
        assert m.licence and m.use and all(f.max_size or f.size for f in m.files), name  # no 16 GiB default cap
    septuplet = known["vimeo90k-septuplet"]
    assert septuplet.files[0].max_size > 82e9 and not septuplet.files[0].unpack
    with pytest.raises(LicSweepError, match=r"vimeo90k-septuplet is a training set, not one to evaluate on"):
        set_folder("vimeo90k-septuplet")
    mirror = str(vimeo["zip"].parent)
    with pytest.raises(ChecksumMismatch, match=r"no checksum .*--trust-first-download"):
        fetch("vimeo90k-septuplet", tmp_path / "sets", source=mirror)
    folder = fetch("vimeo90k-septuplet", tmp_path / "sets", source=mirror, trust_first_download=True)
    kept = folder / "vimeo_septuplet.zip"
    assert kept.read_bytes() == vimeo["zip"].read_bytes()  # kept as the zip: nothing unpacked, no second copy
    assert sorted(p.name for p in folder.iterdir()) == [".fetched.json", "vimeo_septuplet.zip"]
    record = json.loads((folder / ".fetched.json").read_text())
    assert record["files"] == {"vimeo_septuplet.zip": kept.stat().st_size}
    assert fetch("vimeo90k-septuplet", tmp_path / "sets", source=mirror) == folder  # already fetched: left as it is


def test_a_training_set_is_read_no_further_than_its_manifests_max_size(vimeo, tmp_path, monkeypatch):
    from codec.data import test_sets

    raw = json.loads((test_sets.MANIFESTS / "vimeo90k-septuplet.json").read_text())
    raw["files"][0]["max_size"] = 10_000
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "vimeo90k-septuplet.json").write_text(json.dumps(raw))
    monkeypatch.setattr(test_sets, "MANIFESTS", tmp_path / "manifests")
    with pytest.raises(test_sets.TooLarge, match=r"over the limit of 10,000 bytes"):
        fetch("vimeo90k-septuplet", tmp_path / "sets", source=str(vimeo["zip"].parent), trust_first_download=True)


def test_the_zip_read_in_place_is_the_unpacked_folder(vimeo):
    from_zip = split_files("zip", vimeo["zip"], 0.1)  # no list file named: Vimeo's own is found inside
    from_folder = split_files("vimeo", vimeo["folder"], 0.1, "sep_trainlist.txt")
    assert [z.name for z in from_zip.train] == [str(p.relative_to(vimeo["folder"])) for p in from_folder.train]
    assert [z.name for z in from_zip.val] == [str(p.relative_to(vimeo["folder"])) for p in from_folder.val]
    assert len(from_zip.train) + len(from_zip.val) == 7 * len(vimeo["lists"]["train"])  # the test list is not read
    # the run's data manifest (repro.json) is the unpacked folder's: same names, same file sizes
    assert files_manifest(from_zip.train) == files_manifest(from_folder.train, vimeo["folder"])
    for train in (True, False):
        a = CropDataset(from_zip.train if train else from_zip.val, 48, train, seed=5)
        b = CropDataset(from_folder.train if train else from_folder.val, 48, train, seed=5)
        a.set_epoch(1), b.set_epoch(1)
        for i in range(0, len(a), 17):
            assert np.array_equal(a[i][0].numpy(), b[i][0].numpy()) and a[i][1].count("\n") == b[i][1].count("\n")
    broken = next(i for i, z in enumerate(from_zip.train + from_zip.val) if z.name.endswith(f"{BROKEN}/im4.png"))
    dataset = CropDataset(from_zip.train + from_zip.val, 48, True)
    assert f"vimeo_septuplet.zip:vimeo_septuplet/sequences/{BROKEN}/im4.png (cannot be decoded)" in dataset[broken][1]
    with pytest.raises(LicSweepError, match=r"data.list_file: .* holds no tri_trainlist.txt"):
        split_files("zip", vimeo["zip"], 0.1, "tri_trainlist.txt")
    with pytest.raises(LicSweepError, match=r"data.root: .*sep_trainlist.txt is not a readable zip"):
        split_files("zip", vimeo["folder"] / "sep_trainlist.txt", 0.1)
    with pytest.raises(LicSweepError, match=r"is not a directory \(a .zip archive: data.format=zip reads it"):
        split_files("vimeo", vimeo["zip"], 0.1, "sep_trainlist.txt")


def test_a_corrupt_member_is_named_and_skipped_not_decoded(vimeo, tmp_path):
    """A member whose bytes changed after the zip was written (a bad download or disk): its CRC fails, the
    crop is replaced by the next image, and the member is named."""
    from codec.data.images import UnreadableImage

    broken = tmp_path / "vimeo_septuplet.zip"
    data = bytearray(vimeo["zip"].read_bytes())
    item = split_files("zip", vimeo["zip"], 0.1).train[3]
    data[item.offset + 30 + len(item.member) + item.stored // 2] ^= 0xFF  # a byte inside the member's data
    broken.write_bytes(bytes(data))
    split = split_files("zip", broken, 0.1)
    with pytest.raises(UnreadableImage, match=r"vimeo_septuplet.zip:vimeo_septuplet/sequences/.*/im\d.png: "):
        split.train[3].read()
    tensor, skipped = CropDataset(split.train, 48, True)[3]
    assert tensor.shape == (3, 48, 48) and skipped.startswith(f"{broken}:{item.member} (cannot be decoded)")


def test_packing_the_zip_on_two_workers_gives_the_folders_shards(vimeo, tmp_path, capsys):
    index = packing.prepare(vimeo["zip"], tmp_path / "packed", workers=2, shard_bytes=200_000)
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert f"{vimeo['lists']['frames'] - 14:,} images in" in first and "to pack: about 0.00" in first
    assert "GB free in" in first and "on 2 worker(s)" in first
    assert index["format"] == "zip" and index["list_file"] is None
    assert index["images"] == vimeo["index"]["images"] and index["shards"] == vimeo["index"]["shards"] > 3
    assert index["unreadable"] == vimeo["index"]["unreadable"] == [f"sequences/{BROKEN}/im4.png"]
    assert _shards(tmp_path / "packed") == _shards(vimeo["packed"])
    names = [[p.name for p in split_files("packed", store, 0.1).val] for store in (tmp_path / "packed", vimeo["packed"])]
    assert names[0] == names[1]


def test_a_zlib_packing_gives_the_same_pixels_in_58_percent_of_the_bytes(vimeo, tmp_path):
    index = packing.prepare(vimeo["zip"], tmp_path / "packed", workers=2, compression="zlib")
    assert index["compression"] == "zlib" and [e["name"] for e in index["images"]] == [
        e["name"] for e in vimeo["index"]["images"]]
    raw, small = (split_files("packed", store, 0.1) for store in (vimeo["packed"], tmp_path / "packed"))
    for a, b in zip(raw.train + raw.val, small.train + small.val, strict=True):
        assert a.name == b.name and np.array_equal(a.read(), b.read())
    ratio = sum(map(len, _shards(tmp_path / "packed"))) / sum(map(len, _shards(vimeo["packed"])))
    assert 0.3 < ratio < 0.8  # real frames: about 0.58 on Vimeo's
    assert files_manifest(small.train) == files_manifest(raw.train)  # the run's data manifest: the same data
    with pytest.raises(LicSweepError, match=r"holds a packed copy of .*compression zlib\), not of .*compression none\)"):
        packing.prepare(vimeo["zip"], tmp_path / "packed", workers=1)


def test_packing_refuses_a_disk_too_small_before_it_writes(vimeo, tmp_path, monkeypatch):
    class Usage:
        free = 5 << 20

    monkeypatch.setattr(packing.shutil, "disk_usage", lambda path: Usage)
    with pytest.raises(LicSweepError, match=r"packing needs about 0.0 GB \(\+1 GB margin\) but its disk has 0.0 GB "
                                            r"free.*data.format=zip reads the archive in place"):
        packing.prepare(vimeo["zip"], tmp_path / "packed", workers=1)
    assert not list((tmp_path / "packed").glob("shard-*"))


def _prepare(args, point=None):
    command = [sys.executable, "tests/killpoint.py", point, *args] if point else [
        sys.executable, "-m", "codec.prepare", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, start_new_session=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_packing_the_zip_resumes_after_sigkill(vimeo, tmp_path):
    args = [str(vimeo["zip"]), str(tmp_path / "packed"), "--workers", "2", "--shard-mb", str(200_000 / (1 << 20))]
    killed = _prepare(args, "prepare_image:150")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert "to pack: about" in killed.stdout.splitlines()[0]  # the estimate comes first
    progress = json.loads((tmp_path / "packed" / "progress.json").read_text())
    assert 0 < progress["shards"] < vimeo["index"]["shards"] and progress["items"] < 150
    assert (tmp_path / "packed" / f"shard-{progress['shards']:05d}.u8").exists()  # the shard it was writing
    resumed = _prepare(args)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {progress['shards']} shards" in resumed.stdout
    index = json.loads((tmp_path / "packed" / "index.json").read_text())
    assert index["images"] == vimeo["index"]["images"] and index["unreadable"] == vimeo["index"]["unreadable"]
    assert _shards(tmp_path / "packed") == _shards(vimeo["packed"])


@pytest.mark.parametrize("form", ["zip", "packed"])
def test_training_from_the_zip_and_from_its_packed_copy(vimeo, tmp_path, form):
    # the zip itself, or the store codec.prepare makes from it on 2 workers
    root = vimeo["zip"] if form == "zip" else tmp_path / "packed"
    if form == "packed":
        packing.prepare(vimeo["zip"], root, workers=2)
    config = config_for(tiny_overrides(tmp_path, "model=factorized", f"data.format={form}", f"data.root={root}",
                                       "data.patch_size=64", "data.num_workers=2"))
    summary = train_and_evaluate(config, tmp_path / "run")
    assert summary["train_steps"] == 2
    card = json.loads((tmp_path / "run" / "repro.json").read_text())
    assert card["train_data"]["files"] == 7 * len(vimeo["lists"]["train"]) - (form == "packed")


def test_the_dry_run_checks_the_loader_against_the_devices_rate(vimeo, tmp_path):
    """--dry-run --for-device: the hours and the loader check with another device's figures (a login node
    planning for GPU nodes); a model the device trains faster than the loader crops is warned about."""
    figures = {"Test GPU": {"hyperprior": {"N": 128, "M": 192, "patch": 256, "batch": 16, "images_per_s": 1e6,
                                           "source": "test"},
                            "factorized": {"N": 128, "M": 192, "patch": 256, "batch": 16, "images_per_s": 1.0,
                                           "source": "test"}}}
    (tmp_path / "throughput.json").write_text(json.dumps(figures))
    out = subprocess.run([sys.executable, "sweep.py", "--dry-run", "--for-device", "Test GPU", "experiment=seminar",
                          "model=hyperprior,factorized", "lmbda=0.0067", "data.format=zip", f"data.root={vimeo['zip']}",
                          "data.num_workers=1"], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "LIC_SWEEP_LOCAL_THROUGHPUT": str(tmp_path / "throughput.json")})
    assert out.returncode == 0, out.stderr
    assert "on Test GPU" in out.stdout and f"data {vimeo['zip']} (zip): " in out.stdout
    lines = {line.split(":")[0].strip(): line for line in out.stdout.splitlines() if " crops/s on Test GPU" in line}
    assert "WARNING: the loader would starve it" in lines["hyperprior N=128 M=192"]
    assert "python -m codec.prepare" in lines["hyperprior N=128 M=192"]
    assert lines["factorized N=128 M=192"].endswith("keeps up")


def test_hostile_sources_and_outputs_are_refused_with_the_name(vimeo, tmp_path):
    # Vimeo's layout one folder deeper than its own zip (a re-zipped download): still Vimeo, test list left out
    deep = tmp_path / "deep.zip"
    make_vimeo_zip(deep, sequences=10, top="download/vimeo_septuplet")
    split = split_files("zip", deep, 0.1)
    assert {z.name.split("/")[1] + "/" + z.name.split("/")[2] for z in split.train + split.val} == set(
        f"00001/{k:04d}" for k in range(1, 9))
    # the same without its list files: refused, not read as a folder of images (its test sequences would train)
    bare = tmp_path / "bare.zip"
    with zipfile.ZipFile(deep) as src, zipfile.ZipFile(bare, "w") as dst:
        for info in src.infolist():
            if not info.filename.endswith("list.txt"):
                dst.writestr(info, src.read(info))
    with pytest.raises(LicSweepError, match=r"looks like Vimeo-90k .* holds no sep_trainlist.txt or tri_trainlist"):
        split_files("zip", bare, 0.1)
    # a zip of images in the unpacked folder's order (Path order, not the names' string order)
    images = tmp_path / "images.zip"
    png = (vimeo["folder"] / "sequences" / "00001" / "0001" / "im1.png").read_bytes()
    with zipfile.ZipFile(images, "w") as zf:
        for name in ("a.png", "a-c.png", "a/b.png"):
            zf.writestr(name, png)
    zf_names = [z.name for z in split_files("zip", images, 0.4).train + split_files("zip", images, 0.4).val]
    with zipfile.ZipFile(images) as zf:
        zf.extractall(tmp_path / "images")
    folder = split_files("folder", tmp_path / "images", 0.4)
    assert sorted(zf_names) == sorted(str(p.relative_to(tmp_path / "images")) for p in folder.train + folder.val)
    assert [z.name for z in split_files("zip", images, 0.4).train] == [
        str(p.relative_to(tmp_path / "images")) for p in folder.train]
    # nothing decodable: refused before packing, naming the first failure (not an empty store)
    garbage = tmp_path / "garbage.zip"
    with zipfile.ZipFile(garbage, "w") as zf:
        for k in range(5):
            zf.writestr(f"photo{k}.png", b"not a png")
    with pytest.raises(LicSweepError, match=r"none of the 5 images sampled .*garbage.zip:photo0.png: cannot identify"
                                            r" image file\)"):
        packing.prepare(garbage, tmp_path / "out-garbage")
    # OUT is a file; SRC does not exist; a shard size of nothing
    assert _prepare([str(vimeo["zip"]), str(vimeo["zip"])]).stderr.startswith("error: OUT ")
    assert "error: SRC " in _prepare([str(tmp_path / "nope.zip"), str(tmp_path / "o")]).stderr
    assert "--shard-mb nan" in _prepare([str(vimeo["zip"]), str(tmp_path / "o"), "--shard-mb", "nan"]).stderr
    # a record that cannot be read: named, with what to do
    (tmp_path / "o2").mkdir()
    (tmp_path / "o2" / "progress.json").write_text("{not json")
    with pytest.raises(LicSweepError, match=r"progress.json cannot be read .*delete OUT"):
        packing.prepare(vimeo["zip"], tmp_path / "o2")


def test_a_source_that_changed_under_a_partial_packing_is_not_mixed_in(vimeo, tmp_path):
    other = tmp_path / "vimeo_septuplet.zip"
    make_vimeo_zip(other, sequences=12)
    done = packing.prepare(other, tmp_path / "packed", shard_bytes=200_000)
    progress = {**done, "items": 7, "shards": 1, "images": done["images"][:7]}
    (tmp_path / "packed" / "index.json").unlink()
    (tmp_path / "packed" / "progress.json").write_text(json.dumps(progress))
    make_vimeo_zip(other, sequences=14)  # replaced by a larger download at the same path
    with pytest.raises(LicSweepError, match=r"holds a partial packing of .*, 70 images, .*not of .*, 84 images"):
        packing.prepare(other, tmp_path / "packed", shard_bytes=200_000)


def test_the_loader_check_gives_slurm_jobs_their_own_cpus():
    from codec.runs.cost import loader_check

    entry = {"N": 128, "M": 192, "patch": 256, "batch": 16, "images_per_s": 2000.0, "source": "test"}
    data = {"source": "/data/vimeo.zip", "format": "zip", "patch": 256, "num_workers": "auto", "per_core": 300.0}
    row = {"model": "hyperprior", "N": 128, "M": 192, "figures": entry, "device": "Test GPU", "data": data}
    slurm = [row | {"slots": (None, "Slurm"), "cpus_per_job": 8} for _ in range(16)]
    lines = loader_check(slurm)  # 8 CPUs: 7 workers x 300 = 2,100 crops/s per job, whatever this machine has
    assert lines[1].endswith("the loader gives ~2,100: keeps up"), lines
    lines = loader_check([r | {"cpus_per_job": 4} for r in slurm])  # 3 workers: 900 of 2,000
    assert "the loader gives ~900: WARNING: the loader would starve it: 7 workers needed" in lines[1]
