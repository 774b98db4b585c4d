"""CompressAI's newer models as registry entries (Cheng 2020 anchor, attention and checkerboard; ELIC and its
Chandelier variant): their published channels, their channel rules refused by name, their complexity as thop
counts it on CompressAI's own class. Training, bitstreams (against CompressAI's compress/decompress), state_dict
recognition and resume run for them in the suites that cover every registered model (test_models,
test_evaluation, test_training, test_resume)."""

import pytest
import torch
from compressai.models import Cheng2020Anchor, Cheng2020Attention
from compressai.models.sensetime import Cheng2020AnchorCheckerboard, Elic2022Chandelier, Elic2022Official

from codec.errors import ConfigError
from codec.models.complexity import _thop_profile, measure
from codec.models.registry import REGISTRY, elic_groups
from entry import compose, run_config

# name -> (CompressAI's class, its channels at the low and high tier as CompressAI's zoo and the papers give them)
PUBLISHED = {
    "cheng2020_anchor": (Cheng2020Anchor, (128, 128), (192, 192)),
    "cheng2020_attention": (Cheng2020Attention, (128, 128), (192, 192)),
    "cheng2020_checkerboard": (Cheng2020AnchorCheckerboard, (128, 128), (192, 192)),
    "elic": (Elic2022Official, (192, 320), (192, 320)),
    "elic_chandelier": (Elic2022Chandelier, (192, 320), (192, 320)),
}


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_channels_and_classes(name):
    cls, low, high = PUBLISHED[name]
    assert REGISTRY[name].cls is cls
    for lmbda, channels in ((0.0018, low), (0.0483, high)):
        s = run_config(compose(["experiment=seminar", f"model={name}", f"lmbda={lmbda}"]), require_data=False)
        assert (s.model.N, s.model.M) == channels
        assert s.scheduler.name == "plateau" and s.model.epochs == 250


def test_elic_groups_are_the_papers_at_320_and_scale_with_m():
    assert elic_groups(320) == [16, 16, 32, 64, 192] == Elic2022Official(N=8, M=320).groups
    assert sum(elic_groups(40)) == 40 and len(elic_groups(40)) == 5
    with pytest.raises(ValueError, match="M >= 20"):
        elic_groups(12)


@pytest.mark.parametrize("overrides, message", [
    (["model=cheng2020_anchor", "model.N=8", "model.M=12"], r"model=cheng2020_anchor cannot be built with "
                                                            r"model.N=8 model.M=12: .*set model.M=8"),
    (["model=elic", "model.N=8", "model.M=12"], r"model=elic cannot be built .*M >= 20"),
])
def test_channels_an_architecture_cannot_take_are_refused_by_name(overrides, message):
    with pytest.raises(ConfigError, match=message):
        run_config(compose(overrides), require_data=False)


@pytest.mark.parametrize("name", PUBLISHED)
def test_complexity_is_thops_count_on_compressais_own_class(name):
    """Our complexity row (built through the registry) equals thop on CompressAI's class built directly, with
    CompressAI's own defaults (ELIC: its default groups at M=320)."""
    cls = PUBLISHED[name][0]
    N, M = (8, 320) if name.startswith("elic") else (8, 8)
    theirs = cls(N=N, M=M) if name.startswith("elic") else cls(N=N)
    torch.manual_seed(0)
    x = torch.rand(1, 3, 128, 192)
    ours = measure(name, N, M, batch=1, height=128, width=192)
    macs, params = _thop_profile(theirs.train(), x, count_masked=False)
    assert (ours.thop_macs, ours.thop_params) == (macs, params)
    assert ours.true_params == sum(p.numel() for p in theirs.parameters())


@pytest.mark.parametrize("experiment, channels", [("quickstart", (64, 64)), ("quickstart_scratch", (48, 48))])
def test_an_experiments_channel_table_gives_chengs_latent_n_channels(experiment, channels):
    s = run_config(compose([f"experiment={experiment}", "model=cheng2020_attention", "lmbda=0.05"]), require_data=False)
    assert (s.model.N, s.model.M) == channels
    elic = run_config(compose([f"experiment={experiment}", "model=elic", "lmbda=0.05"]), require_data=False)
    assert elic.model.M > elic.model.N


def test_zoo_smoke_sweeps_every_registered_model_into_one_report(tmp_path):
    """experiment=zoo_smoke's grid is the registry (an installed package's models included, tested in
    test_model_packages); here one lambda, 2 steps, 1 image: every model trains, codes and is plotted."""
    import json
    import subprocess
    import sys

    from sweeps.grid import grid_overrides
    from tests.conftest import REPO, subprocess_env

    jobs = grid_overrides(["experiment=zoo_smoke"])
    assert sorted({j for job in jobs for j in job if j.startswith("model=")}) == sorted(f"model={m}" for m in REGISTRY)
    sweep = tmp_path / "sweep"
    out = subprocess.run([sys.executable, "sweep.py", "experiment=zoo_smoke", "lmbda=0.0483", "trainer.max_steps=2",
                          "trainer.steps_per_epoch=2", "eval.max_images=1", "logger.mode=offline",
                          f"hydra.sweep.dir={sweep}"], cwd=REPO, capture_output=True, text=True, timeout=900,
                         env=subprocess_env())
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in (sweep / "runs").glob("*/results.json")]
    assert sorted(r["model"] for r in results) == sorted(REGISTRY)
    assert all((r["N"], r["M"]) == REGISTRY[r["model"]].tiny and r["bits"] > 0 for r in results)
    table = (sweep / "report" / "results.md").read_text()
    assert all(name in table for name in REGISTRY) and (sweep / "report" / "rd_psnr.png").is_file()


def test_the_quickstart_fine_tunes_from_a_listed_base_and_starts_others_from_scratch():
    """pretrained/MANIFEST.md lists the shipped bases: those models fine-tune from them (a listed file that is
    missing stops the run, as before); a model without a base (Cheng, ELIC, a package's) starts from scratch."""
    from conf.registration import base_checkpoint

    assert base_checkpoint("factorized").endswith("pretrained/factorized.pth")
    assert base_checkpoint("elic") is None and base_checkpoint("no_such_model") is None
    s = run_config(compose(["experiment=quickstart", "model=cheng2020_anchor", "lmbda=0.0035"]), require_data=False)
    assert s.init_from is None
