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
    """At the quickstart's size, as make bench runs it (N, M, batch and crop from its config)."""
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "training_throughput.py"), "--quickstart",
                          "--models", "factorized", "--steps", "2", "--repeats", "1", "--ablation"],
                         capture_output=True, text=True, timeout=600, env=subprocess_env(), cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    from entry import config_for

    quickstart = config_for(["experiment=quickstart", "model=factorized"], require_data=False)
    assert f"N={quickstart.model.N} M={quickstart.model.M}, batch {quickstart.data.batch_size} of " \
           f"{quickstart.data.patch_size}x{quickstart.data.patch_size} crops" in out.stdout
    [row] = [line for line in out.stdout.splitlines() if line.startswith("| factorized")]
    assert len(re.findall(r"\(\d+\.\d\dx\)", row)) == 4


@pytest.mark.slow
def test_serial_coding_benchmark_checks_both_coders_and_prints_their_times():
    """benchmarks/joint_autoregressive_coding.py (in make bench): it asserts identical bitstreams and decoded
    images itself, and prints seconds for CompressAI's coder, ours and the checkerboard model's."""
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "joint_autoregressive_coding.py"), "--images", "1",
                          "--N", "32", "--M", "48", "--crop", "256"], capture_output=True, text=True, timeout=600, env=subprocess_env(),
                         cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {line.split("|")[1].strip(): [float(v) for v in line.split("|")[2:4]]
            for line in out.stdout.splitlines() if re.match(r"\| (CompressAI|ours|checkerboard)", line)}
    assert len(rows) == 3 and all(t > 0 for times in rows.values() for t in times), out.stdout
    assert "identical bitstreams and decoded images" in out.stdout


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
def test_data_loading_prints_every_forms_rate_and_prepares_rate():
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "data_loading.py"), "--seconds", "0.5",
                          "--patch", "128"], capture_output=True, text=True, timeout=600, env=subprocess_env(), cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith(("| PNG", "| packed", "| zip"))]
    assert len(rows) == 5 and all(float(r.split("|")[2]) > 0 and r.rstrip().endswith("GB |") for r in rows)
    rates = {r.split("|")[1].strip().split(" (")[0]: float(r.split("|")[2]) for r in rows}
    # ~13x measured (no decoding against a PNG decode per crop); each rate is a 0.5-s wall-clock window on a
    # machine the other test worker shares, hence the wide margin
    assert rates["packed uint8"] > 1.5 * rates["PNG folder"]
    packing = [line for line in out.stdout.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert len(packing) == 2 and all(float(r.split("|")[2]) > 0 for r in packing)
    assert "The writing process alone" in out.stdout
