"""The complexity table: thop counts, true parameter counts, and the report's Part 4 figures."""

import pandas as pd
import pytest

from codec.models.complexity import human, main, measure
from codec.models.registry import build_model


def test_thop_macs_are_linear_in_batch():
    one = measure("hyperprior", 16, 24, batch=1, height=64, width=64)
    two_exact = measure("hyperprior", 16, 24, batch=2, height=64, width=64, exact_batch=True)
    two_scaled = measure("hyperprior", 16, 24, batch=2, height=64, width=64)
    assert two_exact.thop_macs == 2 * one.thop_macs == two_scaled.thop_macs


def test_true_params_count_what_thop_misses():
    c = measure("factorized", 16, 24, batch=1, height=64, width=64)
    model = build_model("factorized", 16, 24)
    assert c.true_params == sum(p.numel() for p in model.parameters())
    assert c.true_params > c.thop_params  # GDN and the entropy bottleneck are invisible to thop


def test_masked_context_convs_add_macs_only_for_context_models():
    for name, has_context in (("hyperprior", False), ("joint_autoregressive", True), ("checkerboard", True)):
        c = measure(name, 16, 24, batch=1, height=64, width=64)
        assert (c.macs_with_masked > c.thop_macs) == has_context


@pytest.mark.slow
def test_report_part4_figures():
    """The report's Part 4 figures are the low tier; its hyperprior row repeats the factorized one."""
    assert human(measure("factorized", 128, 192).thop_params) == "2.887M"
    assert human(measure("factorized", 128, 192).thop_macs) == "771.752G"
    hyper = measure("hyperprior", 128, 192)  # the report repeats the factorized row; docs/complexity.md gives these
    assert (human(hyper.thop_params), human(hyper.thop_macs)) == ("4.969M", "789.485G")
    ja = measure("joint_autoregressive", 192, 192)
    assert (human(ja.thop_params), human(ja.thop_macs)) == ("12.053M", "1.730T")
    cb = measure("checkerboard", 192, 192)
    assert (human(cb.thop_params), human(cb.thop_macs)) == ("12.053M", "1.747T")


def test_cli_writes_csv_and_markdown(tmp_path, capsys):
    assert main(["--models", "factorized", "--batch", "2", "--height", "64", "--width", "64",
                 "--out", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "complexity.csv")
    assert list(df["rate"]) == ["low", "high"] and set(df["input"]) == {"2x3x64x64"}
    assert (df["macs_per_pixel"] * 2 * 64 * 64 == df["thop_macs"]).all()
    assert "| factorized" in (tmp_path / "complexity.md").read_text()
    assert "factorized" in capsys.readouterr().out
