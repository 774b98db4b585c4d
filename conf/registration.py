"""What the config tree needs registered before Hydra composes it, in one place: the schema
(codec/schema.py's dataclasses, in Hydra's ConfigStore as `schema`, which conf/config.yaml extends, so
Hydra rejects unknown keys and wrong types), the OmegaConf resolvers the YAML files use, and a `model=<name>`
config for each model another installed package registers (it has no conf/model/<name>.yaml: its entry gives
its epochs and scheduler)."""

import functools
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from codec.models.registry import PLUGIN_ERRORS, REGISTRY, register_deferred, model_channels, registry_entry
from codec.models.rate import rate_tier
from codec.records import layout
from codec.records.layout import REPO as REPO_ROOT
from codec.schema import RunConfig

CONFIG_DIR = REPO_ROOT / "conf"


@functools.lru_cache(maxsize=8)
def _checkpoint_run_name(path: str, _mtime: float) -> str:
    from codec.models.checkpoint import checkpoint_identity

    try:
        identity = checkpoint_identity(path)
    except Exception:  # unreadable or refused: the evaluation itself reports why
        return "eval_unknown"
    # checked: a registry name and a finite positive float, never a string from the file
    return f"eval_{identity.model}_lmbda{identity.lmbda if identity.lmbda is not None else 'unknown'}"


def run_name(task: str, model: str, lmbda: float, checkpoint: str | None) -> str:
    """`<model>_lmbda<lambda>`; for task=eval the checkpoint's own model and lambda (`unknown` where the
    file does not record it), so an evaluation never lands in a folder named after the config's defaults."""
    if task == "eval" and checkpoint:
        path = Path(checkpoint)
        return _checkpoint_run_name(str(path), path.stat().st_mtime if path.is_file() else 0.0)
    return layout.run_name(model, lmbda)


def base_checkpoint(name: str) -> str | None:
    """The quickstart's base for a model: pretrained/<name>.pth where it exists or pretrained/MANIFEST.md lists
    it (a listed one that is missing stops the run, saying how to remake it); null for a model that has none
    (CompressAI's newer ones, a package's): its runs start from scratch."""
    path = REPO_ROOT / "pretrained" / f"{name}.pth"
    manifest = REPO_ROOT / "pretrained" / "MANIFEST.md"
    listed = manifest.is_file() and f"| {name} |" in manifest.read_text()
    return str(path) if path.is_file() or listed else None


def register() -> None:
    resolvers = {
        "rate_tier": rate_tier,
        # N or M of the model for the rate tier: the config's channel table if it has one, else the registry's.
        "model_channel": lambda name, rate, which, channels: model_channels(
            name, rate, which, OmegaConf.to_container(channels) if channels else None),
        # N or M for debug=tiny: the model's smallest channels (its registry entry's `tiny`)
        "tiny_channel": lambda name, which: registry_entry(name).tiny["NM".index(which)],
        # every registered model, as a sweep axis (experiment=zoo_smoke)
        "registered_models": lambda: ",".join(REGISTRY),
        "repo_root": lambda: str(REPO_ROOT),
        "base_checkpoint": base_checkpoint,
        "run_name": run_name,
        # the folders of a run and a sweep (codec/records/layout.py)
        "single_run_dir": layout.single_run_dir,
        "sweep_dir": layout.sweep_dir,
        "run_subdir": layout.run_subdir,
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
    store = ConfigStore.instance()
    store.store(name="schema", node=RunConfig, provider="lic-sweep")
    register_deferred()
    for name, entry in REGISTRY.items():
        if not (CONFIG_DIR / "model" / f"{name}.yaml").exists():
            store.store(group="model", name=name, provider="lic-sweep", node={
                "defaults": [{"/scheduler@_global_.scheduler": entry.scheduler}, "_self_"],
                "name": name, "epochs": entry.epochs})
    for name in set(PLUGIN_ERRORS) - set(REGISTRY):  # selectable, so that the config check says why not
        store.store(group="model", name=name, provider="lic-sweep", node={
            "defaults": [{"/scheduler@_global_.scheduler": "plateau"}, "_self_"], "name": name, "epochs": 1})
