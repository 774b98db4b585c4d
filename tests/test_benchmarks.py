"""The benchmark scripts run and print their tables (tiny settings; the figures are not checked)."""

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, subprocess_env


def _run(script, *args):
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True,
                         text=True, timeout=600, env=subprocess_env(), cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    return [line for line in out.stdout.splitlines() if line.startswith("| factorized")]


@pytest.mark.slow
def test_training_throughput_prints_a_ratio_per_variant():
    [row] = _run("training_throughput.py", "--models", "factorized", "--steps", "3", "--repeats", "1", "--ablation")
    assert len(re.findall(r"\(\d+\.\d\dx\)", row)) == 4


@pytest.mark.slow
def test_evaluation_time_agrees_on_bpp_with_eval_model(tmp_path):
    [row] = _run("evaluation_time.py", "--models", "factorized", "--images", "1", "--checkpoints", str(tmp_path))
    ours, theirs = map(float, re.search(r"\| ([\d.]+) / ([\d.]+) \|", row).groups())
    assert ours == pytest.approx(theirs, rel=1e-3)


@pytest.mark.slow
def test_peak_memory_prints_positive_figures():
    [row] = _run("peak_memory.py", "--models", "factorized")
    train, evaluation = (int(v) for v in row.strip(" |").split("|")[-2:])
    assert train > 0 and evaluation > 0


@pytest.mark.slow
def test_data_loading_prints_png_and_packed_rates():
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "data_loading.py"), "--seconds", "0.5",
                          "--patch", "128"], capture_output=True, text=True, timeout=600, env=subprocess_env(), cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith(("| PNG", "| packed"))]
    assert len(rows) == 2 and all(float(r.split("|")[2]) > 0 and r.rstrip().endswith("MB |") for r in rows)
