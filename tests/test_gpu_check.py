"""The GPU check (benchmarks/gpu_check.py) in its CPU smoke mode, as CI runs it: `make gpu-check DEVICE=cpu
QUICK=1` finishes every part and writes the JSON and the table a GPU run will write; the wheel folder's
package list is the closure of requirements.txt minus what the GPU machine holds."""

import json
import subprocess

import pytest

from tests.conftest import REPO, subprocess_env

PARTS = ("throughput", "data", "correctness", "launch", "rd_ab")


@pytest.mark.slow
@pytest.mark.xdist_group("gpu_check")
def test_make_gpu_check_quick_on_the_cpu_writes_every_part(tmp_path):
    out = tmp_path / "gpu"
    # not the outer make's variables (CI's `make test ARGS=...` reaches a sub-make through MAKEFLAGS)
    env = {k: v for k, v in subprocess_env().items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    # A budget far above the ~2 minutes it takes idle: each part's runs get a share of what is left, and a
    # loaded 2-core CI machine must not turn a slow start into a part "out of time".
    env["GPU_CHECK_TIMEOUT"] = "1500"
    done = subprocess.run(["make", "-s", "gpu-check", "DEVICE=cpu", "QUICK=1", f"OUT={out}", "ARGS=--budget 1440"],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=1600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [path] = [p for p in out.glob("cpu-*-quick-*.json") if not p.name.endswith("-throughput.json")]
    report = json.loads(path.read_text())
    # the fp32 rates beside it, in benchmarks/throughput.json's form (`python -m codec.cost merge` files them)
    rates = json.loads(path.with_name(f"{path.stem}-throughput.json").read_text())
    entry = rates[report["device"]]["hyperprior"]
    assert entry["batch"] == 2 and entry["images_per_s"] > 0 and entry["source"].startswith("benchmarks/gpu_check.py")
    assert path.with_suffix(".md").read_text().startswith("# GPU check: cpu")
    assert report["quick"] is True and report["device_type"] == "cpu" and report["torch"]
    assert list(report["parts"]) == list(PARTS)
    assert {name: p["status"] for name, p in report["parts"].items()} == {name: "done" for name in PARTS}
    parts = {name: p["results"] for name, p in report["parts"].items()}
    # 1. every registered model timed in fp32 and bf16 next to CompressAI's loop, and one packed-data row
    from codec.models.registry import REGISTRY

    timed = [r for r in parts["throughput"] if "compressai img/s" in r]
    assert sorted(r["model"] for r in timed) == sorted(REGISTRY)
    for row in timed:
        for key in ("compressai img/s", "fp32 img/s", "bf16 img/s", "fp32 x peer", "fp32 MFU %"):
            assert isinstance(row[key], float) and row[key] > 0, (row["model"], key, row.get(key))
    assert any("packed" in str(r.get("note")) and r["bf16 img/s"] > 0 for r in parts["throughput"])
    # 2. PNG, packed, zip and zlib loaders, each against the step rate of part 1
    assert {r["source"] for r in parts["data"]} == {"PNG (decoded per access)", "packed", "zip in place (data.format=zip)",
                                                  "packed zlib"}
    assert all(r["crops/s"] > 0 and isinstance(r["keeps up"], bool) for r in parts["data"])
    # 3. finite training and a real-bitstream evaluation in both precisions; the bitstream round trip
    trained = [r for r in parts["correctness"] if r["check"] == "train + evaluate"]
    assert {(r["model"], r["precision"]) for r in trained} == {(m, p) for m in ("hyperprior", "checkerboard")
                                                             for p in ("32", "bf16")}
    assert all(r["finite"] and r["Kodak bpp"] > 0 and r["Kodak PSNR"] > 0 for r in trained)  # tiny: not trained
    crossed = [r for r in parts["correctness"] if r["check"] == "cross-device"]
    assert len(crossed) == 2 and all(r["bytes equal"] and r["max |x_hat diff|"] == 0.0 and
                                     r["latent mismatches"] == 0 for r in crossed)
    # 4. two jobs at once through the local launcher, torchrun (gloo here), and an exact resume on the CPU
    two, ddp, resume = parts["launch"]
    assert two["exit"] == 0 and two["jobs"] == 2 and two["ran at once"] and two["devices"] == "cpu/cpu"
    assert ddp["exit"] == 0 and ddp["backend"] == "gloo" and ddp["results"]
    assert resume["exit (straight/killed/resumed)"] == "0/-9/0" and resume["max |weight diff|"] == 0.0
    # 5. both precisions for both seeds, and the comparison's line
    assert {(r["precision"], r["seed"]) for r in parts["rd_ab"]} == {(p, s) for p in ("32", "bf16") for s in (0, 1)}
    assert any(n.startswith("fp32 vs bf16") for n in report["parts"]["rd_ab"]["notes"])


def test_the_wheel_folder_carries_what_the_gpu_machine_lacks_and_nothing_it_has():
    from benchmarks.gpu_wheels import ON_THE_MACHINE, closure

    carry = closure("3.12")
    for needed in ("compressai", "hydra-core", "omegaconf", "antlr4-python3-runtime", "wandb", "thop", "submitit",
                   "hydra-submitit-launcher", "bjontegaard", "pytorch-msssim", "pydantic"):
        assert needed in carry, needed
    assert not {"torch", "torchvision", "numpy", "pillow", "pandas", "matplotlib", "pytest"} & set(carry)
    assert not set(carry) & ON_THE_MACHINE
    assert carry["thop"][0] == "0.1.1.post2209072238"  # as pip spells the version, not as the metadata does


def test_a_device_call_with_the_wheels_stays_under_its_64_mib():
    """What travels to a borrowed GPU machine (tracked files, untracked ones git does not ignore, the carried
    .whl/) must stay under 64 MiB: with the folders the GPU check does not read set aside, and the wheel
    folder at the 24.7 MiB `make gpu-wheels` built on 2026-12-01 (a margin of 3 MiB for its growth)."""
    from benchmarks.gpu_wheels import LIMIT_MB, SET_ASIDE, travel_mb

    sizes = travel_mb(REPO / "no-such-folder", SET_ASIDE)
    assert sum(sizes.values()) + 24.7 + 3 < LIMIT_MB, sizes
