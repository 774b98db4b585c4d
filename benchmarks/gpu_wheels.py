"""The wheels a GPU machine without a package registry needs to run `make gpu-check`: every package this
project imports that the machine's Python does not hold, at this venv's versions, built for that Python.

    python benchmarks/gpu_wheels.py                  # -> .whl/ (git-ignored), for CPython 3.12 on x86_64 Linux
    python benchmarks/gpu_wheels.py --check          # only list what it would fetch, and why
    python benchmarks/gpu_wheels.py --travel         # what a device call would send, against its 64 MiB

On the GPU machine: `python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl` and
`export PYTHONPATH=/tmp/site` (what `make gpu-check` does when it finds .whl/). The machine's own torch,
numpy, pillow, pandas, matplotlib, scipy, ... are used, not carried: the code must run on them.

The closure starts from requirements.txt (test tools and torch/torchvision left out) and follows each
package's requirements (extras left out, markers evaluated for the target Python) until it reaches a package
the machine holds. Packages published only as source (antlr4-python3-runtime 4.9.3) are built into a wheel
here; they are pure Python. The folder must stay under the 64 MiB that travels with the working tree.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / ".whl"
LIMIT_MB = 64

# What the GPU machine's python3 already holds (the device tool's KINDS.md, "Python packages already
# there", read 2026-11-17), by normalized name. Carried anyway where our pins need a version it may lack:
CARRY_ANYWAY = {"typing-extensions", "protobuf"}
ON_THE_MACHINE = set("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cycler cython einops filelock fonttools
frozenlist fsspec h11 h5py httpcore httpx huggingface-hub idna imageio iniconfig jinja2 joblib kiwisolver
lazy-loader markdown markdown-it-py markupsafe matplotlib mdurl mpmath msgpack multidict networkx ninja numpy
packaging pandas pillow pip pluggy portalocker propcache protobuf psutil pyarrow pybind11 pygments pyparsing
pytest pytest-xdist python-dateutil pyyaml regex requests rich safetensors scikit-image scikit-learn scipy
setuptools six sympy tabulate threadpoolctl tifffile torch torch-geometric torchvision tqdm triton
typing-extensions urllib3 werkzeug wheel xxhash yarl zipp
""".split()) - CARRY_ANYWAY
NOT_NEEDED = {"torch", "torchvision", "pytest", "pytest-xdist", "tabulate"}  # the machine's own, or tests only
# The GPU machine's glibc takes manylinux wheels up to 2.35 at least (Ubuntu 24.04's python 3.12.3); pip
# matches each tag exactly, so every one is named.
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in range(39, 16, -1)] + ["manylinux2014_x86_64", "manylinux1_x86_64"]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(python_version: str = "3.12") -> dict[str, tuple[str, str]]:
    """{package: (version here, who asked for it)} for every package to carry."""
    environment = {"python_version": python_version, "python_full_version": f"{python_version}.0",
                   "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
                   "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
    lines = (REPO / "requirements.txt").read_text().splitlines()
    todo = [(Requirement(line.split("#")[0].strip()), "requirements.txt") for line in lines
            if line.split("#")[0].strip()]
    carry: dict[str, tuple[str, str]] = {}
    while todo:
        req, why = todo.pop()
        name = normalize(req.name)
        if name in carry or name in ON_THE_MACHINE or name in NOT_NEEDED:
            continue
        if req.marker is not None and not req.marker.evaluate(environment):
            continue
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            raise SystemExit(f"{req.name} (asked for by {why}) is not installed here: run `make venv` first")
        carry[name] = (str(Version(dist.version)), why)
        todo += [(Requirement(r), name) for r in dist.requires or [] if "extra ==" not in r]
    return carry


def fetch(carry: dict[str, tuple[str, str]], out: Path, python_version: str) -> None:
    out.mkdir(exist_ok=True)
    for old in out.glob("*.whl"):
        old.unlink()
    for name, (version, _) in sorted(carry.items()):
        spec = f"{name}=={version}"
        binary = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                  "--python-version", python_version, "--implementation", "cp",
                  *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(out), spec]
        if subprocess.run(binary, capture_output=True, text=True).returncode != 0:  # source only: build it here
            before = set(out.glob("*.whl"))
            built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-binary", name,
                                    "-w", str(out), spec], capture_output=True, text=True)
            new = set(out.glob("*.whl")) - before
            if built.returncode != 0 or not all(w.name.endswith("-py3-none-any.whl") for w in new):
                for w in new:
                    w.unlink()
                raise SystemExit(f"no wheel of {spec} for CPython {python_version} on x86_64 Linux, and it does not "
                                 f"build into a pure-Python one here\n{built.stderr[-2000:]}")
        print(f"  {spec}", flush=True)
    for stray in out.glob("*.tar.gz"):
        stray.unlink()


# Tracked folders the GPU check does not read: set aside (moved out of the checkout) for a device call, whose
# working tree (tracked and untracked-not-ignored files, and what it carries) must stay under 64 MiB.
SET_ASIDE = ("data/train-photos", "pretrained")


def travel_mb(out: Path = OUT, set_aside: tuple[str, ...] = ()) -> dict[str, float]:
    """MiB per top folder of what a device call sends: the files git tracks or does not ignore, and `out`."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    sizes: dict[str, float] = {}
    for name in filter(None, listed):
        path = REPO / name
        if path.is_file() and not any(name == a or name.startswith(a + "/") for a in set_aside):
            top = "/".join(name.split("/")[:2]) if name.startswith("data/") else name.split("/")[0]
            sizes[top] = sizes.get(top, 0.0) + path.stat().st_size / 2 ** 20
    sizes[out.name] = sum(f.stat().st_size for f in out.glob("*.whl")) / 2 ** 20
    return sizes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python-version", default="3.12")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--check", action="store_true", help="list what would be fetched, fetch nothing")
    parser.add_argument("--travel", action="store_true",
                        help="print what a device call would send with .whl/, with and without the folders the GPU "
                             "check does not need")
    args = parser.parse_args()
    if args.travel:
        for aside in ((), SET_ASIDE):
            sizes = travel_mb(args.out, aside)
            big = ", ".join(f"{k} {v:.1f}" for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:6])
            print(f"{'without ' + ' and '.join(aside) if aside else 'whole tree'}: {sum(sizes.values()):.1f} MiB "
                  f"(limit {LIMIT_MB}; largest: {big})")
        return 0
    carry = closure(args.python_version)
    print(f"{len(carry)} packages to carry for CPython {args.python_version}:")
    for name, (version, why) in sorted(carry.items()):
        print(f"  {name}=={version}  (for {why})")
    if args.check:
        return 0
    if args.out.exists() and not args.out.is_dir():
        raise SystemExit(f"{args.out} is not a folder")
    fetch(carry, args.out, args.python_version)
    size = sum(f.stat().st_size for f in args.out.glob("*.whl")) / 2 ** 20
    print(f"{args.out}: {len(list(args.out.glob('*.whl')))} wheels, {size:.1f} MiB (limit {LIMIT_MB} MiB)")
    if size > LIMIT_MB:
        print(f"over the {LIMIT_MB} MiB that travels with the working tree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
