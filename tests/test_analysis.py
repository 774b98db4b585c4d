"""analysis: real offline W&B runs written with the wandb library, read back into tables and figures."""

import json
import math

import bjontegaard as bd
import pandas as pd
import pytest
import wandb

from analysis.__main__ import main as analysis_main
from analysis.report import build_report
from analysis.sources import from_offline_wandb, from_results
from analysis.tables import bd_table, part3_table, to_markdown
from codec.errors import LicSweepError

# Two models, four lambdas: invented but plausible RD points.
POINTS = {
    "factorized": [(0.0067, 0.30, 29.5), (0.013, 0.45, 31.1), (0.025, 0.65, 32.8), (0.0483, 0.95, 34.7)],
    "hyperprior": [(0.0067, 0.28, 29.9), (0.013, 0.42, 31.6), (0.025, 0.62, 33.4), (0.0483, 0.90, 35.3)],
}


def _log_run(root, model, lmbda, bpp, psnr, exit_code=0, summary=True):
    run = wandb.init(mode="offline", dir=str(root), project="lic-sweep", group="quickstart",
                     name=f"{model}_lmbda{lmbda}", tags=[model, "low", "quickstart"],
                     config={"model": model, "lmbda": lmbda, "N": 8, "M": 12, "rate": "low", "task": "train"},
                     reinit="finish_previous")
    for step in range(1, 4):
        run.log({"train/loss": 10.0 / step, "train/bpp": bpp}, step=step)
    run.log({"val/loss": 3.0}, step=3)
    if summary:
        run.summary.update({"bpp": bpp, "psnr": psnr, "ms_ssim": 0.95, "bits": bpp * 393216, "num_pixels": 393216,
                            "num_images": 24, "enc_time": 0.1, "dec_time": 0.2})
    run.finish(exit_code=exit_code)


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    for model, points in POINTS.items():
        for lmbda, bpp, psnr in points:
            _log_run(root / f"{model}_{lmbda}", model, lmbda, bpp, psnr)
    _log_run(root / "crashed", "checkerboard", 0.013, 0.4, 30.0, exit_code=1)
    _log_run(root / "incomplete", "checkerboard", 0.025, 0.6, 31.0, summary=False)
    return root


def test_offline_runs_become_one_row_per_finished_run(runs_root):
    runs = from_offline_wandb(runs_root)
    frame = runs.frame
    assert len(frame) == 8 and set(frame["model"]) == set(POINTS)
    row = frame[(frame["model"] == "hyperprior") & (frame["lmbda"] == 0.025)].iloc[0]
    assert (row["bpp"], row["psnr"], row["N"], row["M"], row["group"], row["state"]) == \
        (0.62, 33.4, 8, 12, "quickstart", "finished")
    assert any("checkerboard_lmbda0.013: failed" in s for s in runs.left_out)
    assert any("checkerboard_lmbda0.025: lacks bpp, psnr" in s for s in runs.left_out)


def test_part3_table_values(runs_root):
    table = part3_table(from_offline_wandb(runs_root).frame)
    assert list(table.columns) == ["model", "lambda", "pixels", "bits", "bpp", "PSNR (dB)", "MS-SSIM",
                                   "encode (s)", "decode (s)"]
    assert list(table["model"][:4]) == ["factorized"] * 4
    first = table.iloc[0]
    assert (first["lambda"], first["bpp"], first["PSNR (dB)"], first["pixels"]) == (0.0067, 0.30, 29.5, 393216)
    assert first["bits"] == pytest.approx(0.30 * 393216)


def test_bd_rate_matches_the_bjontegaard_package(runs_root):
    frame = from_offline_wandb(runs_root).frame
    table = bd_table(frame, reference="factorized").set_index("model")
    f = pd.DataFrame(POINTS["factorized"], columns=["l", "bpp", "psnr"])
    h = pd.DataFrame(POINTS["hyperprior"], columns=["l", "bpp", "psnr"])
    expected_rate = bd.bd_rate(f.bpp, f.psnr, h.bpp, h.psnr, method="pchip", require_matching_points=False)
    expected_psnr = bd.bd_psnr(f.bpp, f.psnr, h.bpp, h.psnr, method="pchip", require_matching_points=False)
    assert table.loc["hyperprior", "BD-rate (%)"] == pytest.approx(expected_rate)
    assert table.loc["hyperprior", "BD-PSNR (dB)"] == pytest.approx(expected_psnr)
    assert table.loc["hyperprior", "BD-rate (%)"] < 0  # better than the reference
    assert table.loc["factorized", "BD-rate (%)"] == pytest.approx(0, abs=1e-9)


def test_too_few_points_for_bd_rate_are_reported():
    frame = pd.DataFrame({"model": ["a", "a", "a", "b"], "bpp": [0.2, 0.4, 0.8, 0.3], "psnr": [28, 30, 33, 29]})
    table = bd_table(frame, reference="a").set_index("model")
    assert math.isnan(table.loc["b", "BD-rate (%)"]) and "too few points" in table.loc["b", "note"]
    assert "only 3 points" in table.loc["a", "note"]


def test_report_writes_figures_and_tables(runs_root, tmp_path):
    written = build_report(runs_root, tmp_path / "report", complexity=True)
    for name in ("rd_psnr", "rd_ms_ssim", "rd_psnr_with_anchors", "training_curves"):
        assert (tmp_path / "report" / f"{name}.png").stat().st_size > 10_000
        assert (tmp_path / "report" / f"{name}.pdf").is_file()
    for name in ("results", "bd_rate", "bd_rate_vs_compressai", "complexity"):
        for ext in ("md", "csv", "tex"):
            assert (tmp_path / "report" / f"{name}.{ext}").is_file()
    assert written["runs"] == 8
    header, first, *_ = _markdown_rows((tmp_path / "report" / "results.md").read_text())
    assert dict(zip(header, first)) == {"model": "factorized", "lambda": "0.0067", "pixels": "393216",
                                        "bits": "117965", "bpp": "0.3000", "PSNR (dB)": "29.50",
                                        "MS-SSIM": "0.9500", "encode (s)": "0.100", "decode (s)": "0.200"}
    assert pd.read_csv(tmp_path / "report" / "results.csv")["bits"].tolist()[0] == 117965
    complexity = pd.read_csv(tmp_path / "report" / "complexity.csv")
    assert set(complexity["model"]) == set(POINTS) and (complexity["true params"] > complexity["thop params"]).all()


def test_results_json_fallback(tmp_path):
    for model, points in POINTS.items():
        for lmbda, bpp, psnr in points:
            d = tmp_path / f"{model}_{lmbda}"
            d.mkdir()
            (d / "results.json").write_text(json.dumps({"model": model, "lmbda": lmbda, "bpp": bpp, "psnr": psnr,
                                                        "N": 8, "M": 12}))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text(json.dumps({"model": "x"}))
    runs = from_results(tmp_path)
    assert len(runs.frame) == 8 and any("lacks lmbda, bpp, psnr" in s for s in runs.left_out)


def test_no_runs_found_says_where_it_looked(tmp_path, capsys):
    with pytest.raises(LicSweepError, match=f"no offline W&B runs .* under {tmp_path}"):
        from_offline_wandb(tmp_path)
    assert analysis_main([str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err


def _results(root, model, lmbda, bpp, psnr, steps, init_from=None):
    run = root / "runs" / f"{model}_lmbda{lmbda}"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"model": model, "lmbda": lmbda, "bpp": bpp, "psnr": psnr,
                                                  "train_steps": steps, "init_from": init_from}))


def test_curve_checks_flag_non_monotone_curves_and_measure_the_gap_to_published():
    from analysis.anchors import load_anchors
    from analysis.tables import curve_checks

    frame = pd.DataFrame([{"model": m, "lmbda": l, "bpp": b, "psnr": p} for m, pts in POINTS.items()
                          for l, b, p in pts] + [{"model": "checkerboard", "lmbda": l, "bpp": b, "psnr": p}
                                                 for l, b, p in [(0.0067, 0.3, 29), (0.013, 0.29, 30), (0.025, 0.5, 29.5)]])
    checks = curve_checks(frame, load_anchors()["CompressAI bmshj2018-factorized"]).set_index("model")
    assert checks.loc["factorized", "bpp rises with lambda"] and checks.loc["factorized", "PSNR rises with bpp"]
    assert not checks.loc["checkerboard", "bpp rises with lambda"]
    assert not checks.loc["checkerboard", "PSNR rises with bpp"]
    # published factorized at 0.2878 bpp: 29.62 dB; ours at 0.30: 29.5, so about 0.3 dB under
    assert 0 < checks.loc["factorized", "dB under CompressAI bmshj2018-factorized (mean)"] < 1.5
    assert checks.loc["hyperprior", "min PSNR step (dB)"] == pytest.approx(1.7)


def test_seeds_separation_and_exit_code(tmp_path):
    from analysis.seeds import main as seeds_main, separation

    for seed, shift in ((1, 0.0), (2, 0.01), (3, -0.01)):
        for model, points in POINTS.items():
            for lmbda, bpp, psnr in points:
                _results(tmp_path / f"s{seed}", model, lmbda, bpp + shift, psnr + 10 * shift, 100)
    sweeps = [str(tmp_path / f"s{s}") for s in (1, 2, 3)]
    assert seeds_main(sweeps) == 0
    runs = pd.concat([from_results(s).frame for s in sweeps])
    sep = separation(runs)
    first = sep[(sep["model"] == "factorized") & (sep["lambdas"] == "0.0067 -> 0.013")].iloc[0]
    assert first["bpp separation"] == pytest.approx(0.15 / 0.02) and first["psnr separation"] == pytest.approx(1.6 / 0.2)
    # a fourth seed whose points overlap its neighbours: not separated, exit 1
    for model, points in POINTS.items():
        for lmbda, bpp, psnr in points:
            _results(tmp_path / "s4", model, lmbda, bpp + 0.2, psnr, 100)
    assert seeds_main([*sweeps, str(tmp_path / "s4")]) == 1


def test_ladder_against_scratch_steps_and_bd_rate(tmp_path):
    from analysis.compare import compare

    ladder, scratch = tmp_path / "ladder", tmp_path / "scratch"
    for model, points in POINTS.items():
        *rest, (top, bpp, psnr) = points
        _results(ladder, model, top, bpp, psnr, 3000)
        for lmbda, b, p in rest:
            _results(ladder, model, lmbda, b, p, 600, init_from="anchor.pth")
            _results(scratch, model, lmbda, b * 1.1, p, 600)  # scratch needs 10% more bits for the same PSNR
    table = compare(ladder, scratch).set_index("model")
    assert table.loc["factorized", "ladder steps"] == 3000 + 3 * 600
    assert table.loc["factorized", "all from scratch, anchor budget"] == 4 * 3000
    assert table.loc["factorized", "steps saved (%)"] == pytest.approx(100 * (1 - 4800 / 12000))
    assert -12 < table.loc["hyperprior", "BD-rate ladder vs scratch (%)"] < -3


@pytest.mark.parametrize("model, reference, pinned", [
    ("CompressAI bmshj2018-hyperprior", "VTM", 30.486), ("CompressAI mbt2018", "VTM", 11.017),
    ("CompressAI bmshj2018-hyperprior", "BPG 4:4:4", 3.930), ("CompressAI mbt2018", "BPG 4:4:4", -11.245),
])
def test_bd_rate_of_published_models_against_vtm_and_bpg_is_pinned(model, reference, pinned):
    """CompressAI's published Kodak curves against its published VTM and BPG curves. Pinned values: the
    bjontegaard package (pchip) once, checked by hand here: log10(bpp) as a monotone cubic (scipy's
    PchipInterpolator) of PSNR for each curve, integrated over the PSNR interval both cover; the mean
    difference d gives BD-rate = 10**d - 1. mbt2018 about 11% more bits than VTM and 11% fewer than BPG,
    as CompressAI's plots show."""
    import numpy as np
    from scipy.interpolate import PchipInterpolator

    from analysis.anchors import load_anchors
    from analysis.tables import psnr_overlap

    anchors = load_anchors()
    ref, test = anchors[reference], anchors[model]
    table = bd_table(pd.DataFrame(test.assign(model=model)), reference, anchors).iloc[0]
    assert table["BD-rate (%)"] == pytest.approx(pinned, abs=0.01)
    low, high, share = psnr_overlap(ref, test)
    assert table["PSNR range (dB)"] == f"{low:.2f}-{high:.2f}" and share == 1.0 and table["note"] == ""
    log_rate = [PchipInterpolator(c["psnr"].values, np.log10(c["bpp"].values)).integrate(low, high) for c in (ref, test)]
    assert 100 * (10 ** ((log_rate[1] - log_rate[0]) / (high - low)) - 1) == pytest.approx(pinned, abs=0.01)


def test_bd_table_says_when_the_psnr_overlap_is_small():
    from analysis.anchors import load_anchors

    low_curve = pd.DataFrame({"model": "m", "lmbda": [1, 2, 3, 4], "bpp": [0.02, 0.03, 0.045, 0.06],
                              "psnr": [20.0, 22.0, 24.5, 26.5]})
    row = bd_table(low_curve, "VTM", load_anchors()).iloc[0]
    assert row["PSNR range (dB)"] == "26.14-26.50" and math.isnan(row["BD-rate (%)"])
    assert row["note"] == ("curves overlap over 26.14-26.50 dB only, 5% of the narrower curve's PSNR range: "
                           "BD-rate not reliable, left out; curves overlap over 0.0482-0.0600 bpp only, 20% of "
                           "the narrower curve's bpp range (log scale): BD-PSNR not reliable, left out")


# The quickstart's seed 1 (docs/quickstart.md): bpp and PSNR at lambdas 0.0009-0.0067 on the first 8 Kodak images.
QUICKSTART = {
    "factorized": [(0.301, 24.32), (0.355, 25.28), (0.435, 25.93), (0.525, 26.34)],
    "joint_autoregressive": [(0.156, 24.03), (0.223, 25.14), (0.298, 25.85), (0.372, 26.32)],
    "checkerboard": [(0.165, 24.56), (0.242, 25.33), (0.335, 25.98), (0.426, 26.63)],
}


def _markdown_rows(markdown: str) -> list[list[str]]:
    """The header and the rows of a pipe table, each cell stripped."""
    lines = markdown.strip().splitlines()
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[:1] + lines[2:]]


def _curves(points: dict) -> pd.DataFrame:
    return pd.DataFrame([{"model": m, "lmbda": i, "bpp": b, "psnr": p} for m, pts in points.items()
                         for i, (b, p) in enumerate(pts)])


def test_a_sliver_of_psnr_overlap_gives_no_bd_rate_and_says_why_in_words():
    """The quickstart against VTM: 26.14-26.63 dB in common, VTM's lowest point and the checkerboard's highest.
    bjontegaard computes +640% (and warns about its min_overlap); the table shows no figure and says why in
    words of its own."""
    from analysis.anchors import load_anchors

    vtm = load_anchors()["VTM"]
    cb = _curves(QUICKSTART)[lambda f: f["model"] == "checkerboard"]
    raw = bd.bd_rate(vtm.bpp, vtm.psnr, cb.bpp, cb.psnr, method="pchip", require_matching_points=False, min_overlap=0)
    assert raw > 600  # what the table used to show
    table = bd_table(_curves(QUICKSTART), "VTM", load_anchors()).set_index("model")
    for model, share in (("checkerboard", 23), ("factorized", 10), ("joint_autoregressive", 8)):
        row = table.loc[model]
        assert math.isnan(row["BD-rate (%)"]), model
        assert f"{share}% of the narrower curve's PSNR range: BD-rate not reliable" in row["note"], row["note"]
        for library_words in ("min_overlap", "silence", "Insufficient", "Minimum overlap"):
            assert library_words not in row["note"]
    assert table.loc["checkerboard", "note"].startswith("curves overlap over 26.14-26.63 dB only")
    # BD-PSNR compares the curves at the same bpp, where the quickstart lies inside VTM's range: kept
    assert table.loc["checkerboard", "BD-PSNR (dB)"] == pytest.approx(
        bd.bd_psnr(vtm.bpp, vtm.psnr, cb.bpp, cb.psnr, method="pchip", require_matching_points=False, min_overlap=0))
    markdown = to_markdown(table.reset_index(), floatfmt=".2f")
    header, *rows = _markdown_rows(markdown)
    checkerboard = dict(zip(header, next(r for r in rows if r[0] == "checkerboard")))
    assert checkerboard["BD-rate (%)"] == "n/a" and checkerboard["BD-PSNR (dB)"] == "-6.03"
    assert "nan" not in markdown


def test_curves_without_overlap_and_with_a_tiny_one():
    from analysis.tables import bd_metrics

    ref = pd.DataFrame({"bpp": [0.1, 0.2, 0.4, 0.8], "psnr": [26.0, 28.0, 30.0, 32.0]})
    apart = pd.DataFrame({"bpp": [0.1, 0.2, 0.4, 0.8], "psnr": [33.0, 34.0, 35.0, 36.0]})
    rate, psnr, note = bd_metrics(ref, apart)
    assert math.isnan(rate) and note == ("curves do not overlap in PSNR (33.00-36.00 dB against the reference's "
                                         "26.00-32.00 dB): no BD-rate")
    assert psnr == pytest.approx(bd.bd_psnr(ref.bpp, ref.psnr, apart.bpp, apart.psnr, method="pchip"))
    sliver = pd.DataFrame({"bpp": [0.5, 0.7, 1.0, 1.4], "psnr": [31.5, 33.0, 34.5, 36.0]})  # 0.5 of 4.5 dB
    rate, psnr, note = bd_metrics(ref, sliver)
    assert math.isnan(rate) and "curves overlap over 31.50-32.00 dB only, 11%" in note
    assert "min_overlap" not in note and "silence" not in note


def test_bd_figures_with_enough_overlap_are_the_bjontegaard_packages():
    """The quickstart's context models against its factorized model (86-100% PSNR overlap; the joint
    autoregressive model 38% in log bpp, above the third): the figures the table gave before, no note."""
    table = bd_table(_curves(QUICKSTART), "factorized").set_index("model")
    f = _curves(QUICKSTART)[lambda c: c["model"] == "factorized"]
    for model, pinned in (("joint_autoregressive", -34.36), ("checkerboard", -32.72)):
        t = _curves(QUICKSTART)[lambda c: c["model"] == model]
        args = dict(method="pchip", require_matching_points=False, min_overlap=0)
        assert table.loc[model, "BD-rate (%)"] == pytest.approx(bd.bd_rate(f.bpp, f.psnr, t.bpp, t.psnr, **args))
        assert table.loc[model, "BD-rate (%)"] == pytest.approx(pinned, abs=0.01)
        assert table.loc[model, "BD-PSNR (dB)"] == pytest.approx(bd.bd_psnr(f.bpp, f.psnr, t.bpp, t.psnr, **args))
        assert table.loc[model, "note"] == ""


def test_integer_columns_print_as_integers(tmp_path):
    """A run without num_pixels makes the column float (NaN): the tables still print counts as integers,
    bits (a mean per image) rounded, each measure with its own decimals, the missing value as n/a."""
    from analysis.tables import write_table

    runs = pd.DataFrame({"model": "factorized", "lmbda": [0.0067, 0.013], "num_pixels": [393216.0, math.nan],
                         "bits": [117964.8, 176947.2], "bpp": [0.3, 0.45], "psnr": [29.5, 31.123],
                         "ms_ssim": [0.95, 0.96], "enc_time": [0.1234, 0.2], "dec_time": [0.2, 0.3]})
    paths = write_table(part3_table(runs), tmp_path, "results")
    md = paths["md"].read_text()
    _, *rows = _markdown_rows(md)
    assert rows[0] == ["factorized", "0.0067", "393216", "117965", "0.3000", "29.50", "0.9500", "0.123", "0.200"]
    assert rows[1][2:4] == ["n/a", "176947"] and rows[1][5] == "31.12"
    assert ".0000" not in md and "393216.0" not in paths["tex"].read_text()
    csv = pd.read_csv(paths["csv"])
    assert paths["csv"].read_text().splitlines()[1].startswith("factorized,0.0067,393216,117965,0.3,")
    assert csv["PSNR (dB)"].tolist() == [29.5, 31.123]  # the CSV keeps every decimal of the measures
    _, row = _markdown_rows(to_markdown(pd.DataFrame({"N": [128.0], "M": [192.0], "steps": [600.0],
                                                      "points": [4.0], "x": [1.25]}), floatfmt=".1f"))
    assert row == ["128", "192", "600", "4", "1.2"]


def test_per_image_bd_rate_with_a_bootstrap_interval(tmp_path):
    """Model b spends 10% fewer bits than a on 9 of 10 images and 5% more on one: the mean per-image
    BD-rate is about -8.5%, its 95% interval excludes 0, and 9 images are better."""
    from analysis.per_image import bootstrap_mean_ci, per_image_bd_table, per_image_points

    images = [f"img{i}.png" for i in range(10)]
    for model, factor in (("factorized", 1.0), ("hyperprior", 0.9)):
        for lmbda, bpp, psnr in POINTS["factorized"]:
            run = tmp_path / "runs" / f"{model}_{lmbda}"
            run.mkdir(parents=True)
            per_image = [{"image": name, "bpp": bpp * (1.05 if (model == "hyperprior" and i == 0) else factor)
                          * (1 + 0.1 * i), "psnr": psnr + 0.2 * i} for i, name in enumerate(images)]
            (run / "results.json").write_text(json.dumps({"model": model, "lmbda": lmbda, "per_image": per_image}))
    table = per_image_bd_table(per_image_points(tmp_path)).iloc[0]
    assert table["model"] == "hyperprior" and table["images"] == "10 of 10"
    assert table["mean BD-rate (%)"] == pytest.approx(0.9 * -10 + 0.1 * 5, abs=0.05)
    assert table["95% CI low"] < table["mean BD-rate (%)"] < table["95% CI high"] < 0
    assert table["images better than reference"] == 9
    assert bootstrap_mean_ci([1.0, 2.0, 3.0]) == bootstrap_mean_ci([1.0, 2.0, 3.0])  # seeded
    mean, low, high = bootstrap_mean_ci([5.0] * 4)
    assert mean == low == high == 5.0


def test_ladder_with_refined_anchors_counts_the_anchor_folder(tmp_path):
    from analysis.compare import compare

    ladder, anchors, scratch = tmp_path / "mini", tmp_path / "mini_anchors", tmp_path / "scratch"
    for model, points in POINTS.items():
        _results(anchors, model, points[-1][0], points[-1][1], points[-1][2] - 0.5, 3000)
        for lmbda, b, p in points:
            _results(ladder, model, lmbda, b, p, 600, init_from="anchor.pth")
            _results(scratch, model, lmbda, b * 1.2, p, 600)
    table = compare(ladder, scratch).set_index("model")
    assert table.loc["factorized", "ladder steps"] == 3000 + 4 * 600
    assert table.loc["factorized", "steps saved (%)"] == pytest.approx(100 * (1 - 5400 / 12000))
    assert table.loc["factorized", "BD-rate ladder vs scratch (%)"] == pytest.approx(100 * (1 / 1.2 - 1), abs=0.5)
