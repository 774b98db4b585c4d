"""A model from another installed package (examples/lic_sweep_example, installed with pip as a user would):
registered by its entry point in every process, it sweeps, evaluates with real bitstreams, appears in the
complexity table, plots and BD-rate tables, and resumes after a kill; broken entries are named before any work."""

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO, small_eval_folder, subprocess_env

EXAMPLE = REPO / "examples" / "lic_sweep_example"
NAME = "residual_factorized"


def _install(package: Path, target: Path) -> None:
    """pip install of a package folder into `target` (no network, no build isolation: the setuptools of
    lic-sweep's environment builds it); on PYTHONPATH it is installed, entry points included. Built from a
    copy: setuptools writes build/ and *.egg-info next to the sources."""
    source = target.parent / f"{target.name}-src-{package.name}"
    shutil.copytree(package, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(target), str(source)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    target = tmp_path_factory.mktemp("site")
    _install(EXAMPLE, target)
    return subprocess_env(PYTHONPATH=str(target))


def _run(env, *args, timeout=600):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def test_the_installed_package_registers_its_model(installed):
    out = _run(installed, "-c", "from codec.models.registry import REGISTRY, PLUGINS, PLUGIN_ERRORS; "
                                f"e = REGISTRY['{NAME}']; print(e.cls.__module__, PLUGINS['{NAME}'], PLUGIN_ERRORS)")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["lic_sweep_example.model", "lic_sweep_example.model:ENTRY", "{}"]
    # without the package on the path the name is unknown, and the message lists what is registered
    bare = _run(subprocess_env(), "run.py", f"model={NAME}", "logger=none")
    assert bare.returncode != 0 and f"model/{NAME}" in bare.stderr + bare.stdout


def test_a_quickstart_sweep_of_the_packaged_model_reaches_the_report(installed, tmp_path):
    sweep = tmp_path / "sweep"
    out = _run(installed, "sweep.py", "experiment=quickstart", f"model={NAME},factorized", "lmbda=0.0035,0.0067",
               "trainer.max_steps=3", "trainer.steps_per_epoch=3", "trainer.epochs=1", "logger.mode=offline",
               f"eval.sets=[{small_eval_folder(tmp_path)}]", "eval.max_images=null", "data.num_workers=0",
               f"hydra.sweep.dir={sweep}", "hydra/launcher=basic")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    results = {p.parent.name: json.loads(p.read_text()) for p in (sweep / "runs").glob("*/results.json")}
    ours = {k: v for k, v in results.items() if k.startswith(NAME)}
    assert set(ours) == {f"{NAME}_lmbda0.0035", f"{NAME}_lmbda0.0067"}
    for r in ours.values():
        assert r["model"] == NAME and r["bits"] > 0 and r["init_from"] is None  # no base checkpoint: from scratch
        assert (r["N"], r["M"]) == (64, 96)  # the quickstart's channel table
    # the factorized runs fine-tuned from the shipped base, as before
    assert all(r["init_from"].endswith("pretrained/factorized.pth") for k, r in results.items() if k.startswith("factorized"))
    report = sweep / "report"
    assert (report / "rd_psnr.png").is_file()
    for table in ("results.md", "complexity.md", "bd_rate.md"):
        assert NAME in (report / table).read_text(), table


def test_it_resumes_after_a_kill_and_evaluates_its_checkpoint_by_name(installed, tmp_path):
    run_dir = tmp_path / "run"
    overrides = ["experiment=quickstart_scratch", "debug=tiny", f"model={NAME}", "logger.mode=offline",
                 "trainer.max_steps=4", "trainer.steps_per_epoch=4", "trainer.checkpoint_every_steps=1",
                 f"eval.sets=[{small_eval_folder(tmp_path)}]",
                 "eval.max_images=null", f"hydra.run.dir={run_dir}"]
    killed = subprocess.run([sys.executable, "tests/killpoint.py", "step:2", *overrides], cwd=REPO, env=installed,
                            capture_output=True, text=True, timeout=600, start_new_session=True)
    assert killed.returncode != 0 and not (run_dir / "results.json").exists()
    again = _run(installed, "run.py", *overrides)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert re.search(r"resuming from \S+: epoch \d+, step 2", again.stdout), again.stdout[-3000:]
    assert json.loads((run_dir / "results.json").read_text())["train_steps"] == 4
    # its checkpoint names the model; task=eval finds the packaged class by that name
    evaluated = _run(installed, "run.py", "task=eval", f"checkpoint={run_dir / 'checkpoints' / 'best.pth'}",
                     f"eval.sets=[{small_eval_folder(tmp_path)}]", "logger=none", f"hydra.run.dir={tmp_path / 'eval'}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["model"] == NAME
    complexity = _run(installed, "-m", "codec.complexity", "--models", NAME, "--batch", "1", "--height", "64",
                      "--width", "64", "--out", str(tmp_path / "complexity"))
    assert complexity.returncode == 0 and NAME in (tmp_path / "complexity" / "complexity.md").read_text()


BROKEN = {
    "not_an_entry": ("broken_models:NOT_AN_ENTRY", r"it is a dict, not a codec\.models\.registry\.ModelEntry"),
    "cannot_import": ("broken_models.missing:ENTRY", r"ModuleNotFoundError: No module named 'broken_models\.missing'"),
    "factorized": ("broken_models:CLASH", r"model 'factorized' is already registered by lic-sweep's own registry"),
    "wrong_channels": ("broken_models:WRONG_CHANNELS", r"channels\['high'\] is \(192,\), not a \(N, M\) pair"),
    "bad_scheduler": ("broken_models:BAD_SCHEDULER", r"scheduler='cosine'.*one of multistep, plateau"),
    "wrong_keys": ("broken_models:WRONG_KEYS", r"its channel_keys \('g_a.0.weight', 'g_a.6.weight'\) give "
                                              r"\(N, M\) = \(8, None\)"),
}


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> dict:
    package = tmp_path_factory.mktemp("broken")
    (package / "broken_models").mkdir()
    (package / "broken_models" / "__init__.py").write_text(textwrap.dedent("""
        import dataclasses
        from lic_sweep_example.model import ENTRY
        NOT_AN_ENTRY = {"name": "not_an_entry"}
        CLASH = dataclasses.replace(ENTRY, name="factorized")
        WRONG_CHANNELS = dataclasses.replace(ENTRY, name="wrong_channels", channels={"low": (8, 12), "high": (192,)})
        BAD_SCHEDULER = dataclasses.replace(ENTRY, name="bad_scheduler", scheduler="cosine")
        WRONG_KEYS = dataclasses.replace(ENTRY, name="wrong_keys", channel_keys=("g_a.0.weight", "g_a.6.weight"))

        from compressai.models import ScaleHyperprior
        from codec.models.coding import HyperpriorCoding

        class HyperpriorVariant(ScaleHyperprior):  # a built-in's parameters, another loss or forward
            pass

        SAME_PARAMETERS = dataclasses.replace(ENTRY, name="hyperprior_variant", cls=HyperpriorVariant,
                                              coding=HyperpriorCoding(), channel_keys=("g_a.0.weight", "g_a.6.weight"))
    """))
    points = "\n".join(f"{name} = \"{value}\"" for name, (value, _) in BROKEN.items())
    points += "\nhyperprior_variant = \"broken_models:SAME_PARAMETERS\""
    (package / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "broken-models"
        version = "0.0.1"
        [tool.setuptools]
        packages = ["broken_models"]
        [project.entry-points."lic_sweep.models"]
    """) + points + "\n")
    target = tmp_path_factory.mktemp("broken_site")
    _install(EXAMPLE, target)
    _install(package, target)
    return subprocess_env(PYTHONPATH=str(target))


@pytest.mark.parametrize("name", [n for n in BROKEN if n != "factorized"])
def test_a_broken_entry_is_named_when_used_and_the_rest_still_work(broken, tmp_path, name):
    value, why = BROKEN[name]
    out = _run(broken, "run.py", f"model={name}", "experiment=quickstart_scratch", "debug=tiny", "logger=none",
               f"hydra.run.dir={tmp_path / 'run'}")
    message = out.stdout + out.stderr
    assert out.returncode != 0 and f"entry point {name} = {value}" in message and re.search(why, message), message
    assert "broken-models" in message  # the package that ships it
    assert "Traceback" not in message and not (tmp_path / "run" / "checkpoints").exists()


def test_a_name_clash_leaves_the_builtin_model_and_warns(broken):
    out = _run(broken, "-c", "from codec.models.registry import REGISTRY, PLUGIN_ERRORS; "
                             "print(REGISTRY['factorized'].cls.__name__, REGISTRY['residual_factorized'].name); "
                             "print(PLUGIN_ERRORS['factorized'])")
    assert out.returncode == 0, out.stderr[-2000:]
    first, second = out.stdout.splitlines()
    assert first == "FactorizedPrior residual_factorized"
    assert re.search(BROKEN["factorized"][1], second) and "broken-models" in second
    assert re.search(r"warning: model=factorized cannot be used: entry point factorized = broken_models:CLASH.*"
                     r"model=factorized is lic-sweep's own", out.stderr), out.stderr


def test_a_file_with_a_builtins_parameters_is_the_builtins_and_an_early_import_is_registered_late(broken):
    """A package's model with exactly the scale hyperprior's parameters (another forward or loss): a state_dict
    without model_meta is the built-in's. A script that imports its model module before lic-sweep (so the entry
    point's module is half-imported while the registry loads) still finds the model at its first lookup."""
    out = _run(broken, "-c", "import lic_sweep_example.model\n"
                             "from compressai.models import ScaleHyperprior\n"
                             "from codec.models.registry import entry_for_state_dict, registry_entry, REGISTRY\n"
                             "print(entry_for_state_dict(ScaleHyperprior(N=8, M=12).state_dict()).name, "
                             "'hyperprior_variant' in REGISTRY)\n"
                             "print(registry_entry('residual_factorized').cls.__name__)")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["hyperprior", "True", "ResidualFactorizedPrior"]

