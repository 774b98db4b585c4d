"""Test sets as data (codec/data/test_sets.py, data/manifests/): fetch verifies every checksum, refuses a file
that does not match and names it, resumes a partial download (local mirror and HTTP Range), never writes
outside its destination. Only local mirrors: no test touches the network."""

import hashlib
import http.server
import json
import threading
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from codec.data import test_sets as datasets
from codec.data.archives import UnsafeArchive
from codec.data.test_sets import ChecksumMismatch, fetch, manifests, set_folder
from codec.errors import LicSweepError

KODAK = Path(__file__).resolve().parent.parent / "data" / "kodak"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A zip of three small images in a mirror folder, and a manifest for it in a private manifest folder."""
    images = tmp_path / "build" / "valid"
    images.mkdir(parents=True)
    for i in range(3):
        Image.open(KODAK / f"kodim0{i + 1}.png").resize((64, 48)).save(images / f"img{i}.png")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    archive = mirror / "tiny_valid.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(images.iterdir()):
            zf.write(p, f"valid/{p.name}")
    manifest_dir = tmp_path / "manifests"
    manifest_dir.mkdir()
    entry = {"name": archive.name, "url": "https://example.invalid/tiny_valid.zip", "sha256": _sha(archive),
             "size": archive.stat().st_size, "unpack": True}
    (manifest_dir / "tiny.json").write_text(json.dumps({
        "name": "tiny", "description": "three images", "licence": "test", "homepage": "-", "num_images": 3,
        "files": [entry]}))
    monkeypatch.setattr(datasets, "MANIFESTS", manifest_dir)
    return mirror, archive, manifest_dir


def test_fetch_from_a_mirror_verifies_unpacks_and_the_set_is_found_by_name(mirror, tmp_path, capsys):
    mirror_dir, _, _ = mirror
    dest = tmp_path / "sets"
    with pytest.raises(LicSweepError, match=r"tiny is not fetched .*python -m codec.datasets fetch tiny"):
        set_folder("tiny", dest)
    folder = fetch("tiny", dest, source=str(mirror_dir))
    assert sorted(p.name for p in folder.rglob("*.png")) == ["img0.png", "img1.png", "img2.png"]
    assert set_folder("tiny", dest) == folder and not (folder / ".downloads").exists()
    record = json.loads((folder / ".fetched.json").read_text())
    assert record["images"] == 3
    assert datasets.main(["list", "--dest", str(dest)]) == 0
    assert "fetched in" in capsys.readouterr().out
    fetch("tiny", dest, source=mirror_dir.as_uri())  # already there: left as it is
    assert "already fetched" in capsys.readouterr().out


def test_a_file_that_does_not_match_its_checksum_is_refused_and_named(mirror, tmp_path):
    mirror_dir, archive, _ = mirror
    data = bytearray(archive.read_bytes())
    data[-30] ^= 0xFF  # one flipped byte, same size
    archive.write_bytes(bytes(data))
    dest = tmp_path / "sets"
    with pytest.raises(ChecksumMismatch, match=r"tiny_valid.zip: refused, it does not match the manifest"):
        fetch("tiny", dest, source=str(mirror_dir))
    assert (dest / "tiny" / ".downloads" / "tiny_valid.zip.rejected").is_file()
    assert not (dest / "tiny" / ".fetched.json").exists() and not list((dest / "tiny").rglob("*.png"))


def test_a_partial_download_resumes_from_where_it_stopped(mirror, tmp_path):
    mirror_dir, archive, _ = mirror
    downloads = tmp_path / "sets" / "tiny" / ".downloads"
    downloads.mkdir(parents=True)
    half = archive.stat().st_size // 2
    # a wrong first half of the right length: a fetch that resumes keeps it (and the checksum refuses the
    # result); one that started again from byte 0 would succeed
    (downloads / "tiny_valid.zip.part").write_bytes(b"\0" * half)
    with pytest.raises(ChecksumMismatch, match="tiny_valid.zip: refused"):
        fetch("tiny", tmp_path / "sets", source=mirror_dir.as_uri())
    (downloads / "tiny_valid.zip.rejected").unlink()
    (downloads / "tiny_valid.zip.part").write_bytes(archive.read_bytes()[:half])
    fetch("tiny", tmp_path / "sets", source=mirror_dir.as_uri())
    assert len(list((tmp_path / "sets" / "tiny").rglob("*.png"))) == 3


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder and honours `Range: bytes=N-` (http.server alone does not)."""
    ranges: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if (header := self.headers.get("Range")) and header.startswith("bytes="):
            start = int(header[6:].split("-")[0])
            type(self).ranges.append(start)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


def test_an_http_download_resumes_with_a_range_request(mirror, tmp_path):
    mirror_dir, archive, _ = mirror
    handler = type("Handler", (_RangeHandler,), {"ranges": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(mirror_dir)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        downloads = tmp_path / "sets" / "tiny" / ".downloads"
        downloads.mkdir(parents=True)
        third = archive.stat().st_size // 3
        (downloads / "tiny_valid.zip.part").write_bytes(archive.read_bytes()[:third])
        fetch("tiny", tmp_path / "sets", source=f"http://127.0.0.1:{server.server_port}/")
    finally:
        server.shutdown()
    assert handler.ranges == [third]
    assert len(list((tmp_path / "sets" / "tiny").rglob("*.png"))) == 3


def test_an_archive_that_climbs_out_of_its_destination_is_refused_before_extraction(mirror, tmp_path):
    mirror_dir, archive, manifest_dir = mirror
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("valid/ok.png", b"x")
        zf.writestr("../escaped.txt", b"owned")
    manifest = json.loads((manifest_dir / "tiny.json").read_text())
    manifest["files"][0] |= {"sha256": _sha(archive), "size": archive.stat().st_size}
    (manifest_dir / "tiny.json").write_text(json.dumps(manifest))
    with pytest.raises(UnsafeArchive, match=r"entry '../escaped.txt' would be written outside"):
        fetch("tiny", tmp_path / "sets", source=str(mirror_dir))
    assert not (tmp_path / "sets" / "escaped.txt").exists() and not (tmp_path / "sets" / "tiny" / "valid").exists()


def test_a_file_without_a_checksum_is_refused_unless_the_first_download_is_trusted(mirror, tmp_path):
    mirror_dir, archive, manifest_dir = mirror
    manifest = json.loads((manifest_dir / "tiny.json").read_text())
    manifest["files"][0] |= {"sha256": None, "size": None}
    (manifest_dir / "tiny.json").write_text(json.dumps(manifest))
    with pytest.raises(ChecksumMismatch, match=r"the manifest has no checksum .*--trust-first-download"):
        fetch("tiny", tmp_path / "sets", source=str(mirror_dir))
    folder = fetch("tiny", tmp_path / "sets", source=str(mirror_dir), trust_first_download=True)
    assert json.loads((folder / ".fetched.json").read_text())["sha256"]["tiny_valid.zip"] == _sha(archive)


def test_the_shipped_manifests_parse_and_kodak_matches_its_shipped_copy(tmp_path):
    known = manifests()
    assert {"kodak", "clic2020-professional-valid", "clic2020-professional-test", "clic2020-mobile-valid",
            "clic2020-mobile-test", "clic2021-test", "tecnick"} <= set(known)
    for m in known.values():
        assert m.licence and m.homepage and m.files, m.name
    kodak = known["kodak"]
    assert set_folder("kodak") == KODAK and len(kodak.files) == kodak.num_images == 24
    for entry in kodak.files:
        assert _sha(KODAK / entry.name) == entry.sha256 and (KODAK / entry.name).stat().st_size == entry.size
    # the shipped copy is a mirror of the manifest's files: a fetch through the command line verifies all 24
    assert datasets.main(["fetch", "kodak", "--dest", str(tmp_path), "--source", str(KODAK)]) == 0
    assert len(list((tmp_path / "kodak").glob("*.png"))) == 24
    valid = known["clic2020-professional-valid"].files[0]
    assert valid.size == 134862753 and valid.sha256.startswith("e56568e2")


def test_an_unknown_set_name_lists_the_known_ones():
    with pytest.raises(LicSweepError, match=r"neither a known test set \(.*kodak.*\) nor an existing folder"):
        set_folder("kodakk")
