"""The folder tree is the architecture: codec's subpackages import only downward (a lower layer, or
their own package), no import circle, no Hydra inside codec/ (the entry points compose configs), and
the run records read without torch (the analysis imports them)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from tests.conftest import REPO

# Lowest first. A module may import codec modules of a lower layer or of its own package only.
LAYERS = [
    ["codec.errors"],
    ["codec.records"],  # the run record and the run directory: torch-free
    ["codec.models", "codec.data"],  # what is trained, and what it is trained and tested on
    ["codec.schema"],  # the run config: names models, test sets, rate tiers
    ["codec.training"],
    ["codec.evaluation"],
    ["codec.runs"],  # one job: train, evaluate, record, log
    ["codec.datasets", "codec.prepare", "codec.complexity", "codec.cost", "codec.pretrained"],  # python -m commands
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _owner(module: str) -> str:
    parts = module.split(".")
    for n in (2, 1):
        if ".".join(parts[:n]) in RANK:
            return ".".join(parts[:n])
    raise AssertionError(f"{module} is in no layer of tests/test_layers.py: give it one")


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module imported, line, at module level) for every codec import in a file, in functions too."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "codec":
                found.append((name, node.lineno, id(node) in top))
    return found


def _modules() -> dict[str, Path]:
    files = {}
    for path in sorted((REPO / "codec").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The codec module `name` refers to (a module, or a name imported from one)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name if name and name != "codec" else None


def test_codec_imports_only_go_down():
    modules = _modules()
    upward = []
    for module, path in modules.items():
        if module == "codec":
            continue
        own = _owner(module)
        for name, line, _ in _imports(path):
            target = _resolve(name, modules)
            if target is None:
                continue
            theirs = _owner(target)
            if theirs != own and RANK[theirs] >= RANK[own]:
                upward.append(f"{path.relative_to(REPO)}:{line} ({own}) imports {target} ({theirs})")
    assert not upward, "imports that go up or sideways:\n" + "\n".join(upward)


def test_no_import_circle_in_codec():
    modules = _modules()
    graph = defaultdict(set)
    for module, path in modules.items():
        for name, _, at_top in _imports(path):
            target = _resolve(name, modules)
            if at_top and target and target != module and not module.startswith(target + "."):
                graph[module].add(target)
    seen, on_path, cycles = set(), [], []

    def visit(node):
        if node in on_path:
            cycles.append(on_path[on_path.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        on_path.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt)
        on_path.pop()

    for module in sorted(modules):
        visit(module)
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The rule itself: a records module importing the models would be reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from codec.models.registry import build_model\n")
    found = _imports(bad)
    assert [(name, at_top) for name, _, at_top in found] == [("codec.models.registry", False),
                                                             ("codec.models.registry.build_model", False)]
    target = _resolve(found[1][0], _modules())
    assert target == "codec.models.registry" and RANK[_owner(target)] > RANK[_owner("codec.records.record")]


def test_no_hydra_inside_codec():
    used = [f"{path.relative_to(REPO)}" for path in (REPO / "codec").rglob("*.py")
            if any(isinstance(n, (ast.Import, ast.ImportFrom)) and
                   any((getattr(n, "module", None) or a.name).split(".")[0] == "hydra" for a in n.names)
                   for n in ast.walk(ast.parse(path.read_text())))]
    assert not used, f"Hydra belongs to the entry points, not the library: {used}"


def test_run_records_and_the_analysis_readers_load_without_torch():
    code = ("import sys, codec.records.record, codec.records.layout, codec.records.status, analysis.sources, "
            "analysis.per_image, analysis.compare; bad = [m for m in ('torch', 'compressai') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
