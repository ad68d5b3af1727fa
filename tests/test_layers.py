"""The package has one direction (shared/DESIGN.md "Layout"): a module imports only from
its own layer or the layers below it. Every import is read from the source, function-level
ones included, so a lazy import cannot hide a dependency that runs upward."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import advgeom
from advgeom import registry

ROOT = Path(advgeom.__file__).parent

# The order, bottom to top; one entry per layer, naming its top-level modules or packages.
LAYERS: list[set[str]] = [
    {"", "types", "registry", "config", "errors", "seeding", "logits", "progress", "distributed",
     "hashing", "stats"},
    {"data", "models", "nn"},
    {"attacks"},
    {"analysis", "inference"},
    {"eval", "results"},
    {"defenses"},
    {"train"},
    {"experiments"},
    {"cli", "__main__"},
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["advgeom", *parts])


def _top(module: str) -> str:
    """The layer-defining part of a dotted advgeom module name ("" for the package root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every advgeom import in ``path``, at any depth, and of
    ``importlib.import_module("advgeom....")`` calls with a literal name."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base]
            if base == "advgeom":  # "from advgeom import attacks" imports a subpackage
                targets = [f"advgeom.{a.name}" if a.name in LAYER_OF else "advgeom" for a in node.names]
            out += [(node.lineno, t) for t in targets]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", ""))
              == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            out.append((node.lineno, node.args[0].value))
    return [(line, m) for line, m in out if m == "advgeom" or m.startswith("advgeom.")]


def _violations() -> list[str]:
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        own = _top(_module_name(path))
        assert own in LAYER_OF, f"{path}: top-level module {own!r} has no layer in LAYERS"
        for line, target in _imports(path):
            other = _top(target)
            assert other in LAYER_OF, f"{path}:{line}: {target} has no layer in LAYERS"
            if LAYER_OF[other] > LAYER_OF[own]:
                bad.append(f"{path.relative_to(ROOT)}:{line} ({own or 'advgeom'}, layer "
                           f"{LAYER_OF[own]}) imports {target} (layer {LAYER_OF[other]})")
    return bad


def test_no_module_imports_from_a_layer_above() -> None:
    bad = _violations()
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_the_checker_sees_function_level_and_relative_imports(tmp_path: Path, monkeypatch) -> None:
    """The reader must find a lazy import inside a function and resolve relative ones."""
    fake = tmp_path / "advgeom"
    (fake / "attacks").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "attacks" / "__init__.py").write_text("")
    (fake / "attacks" / "x.py").write_text(
        "def f():\n    from advgeom.eval.runner import evaluate\n"
        "def g():\n    from ..analysis import jacobian\n"
        "def h():\n    import importlib\n    importlib.import_module('advgeom.train')\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake)
    found = sorted(m for _, m in _imports(fake / "attacks" / "x.py"))
    assert found == ["advgeom.analysis", "advgeom.eval.runner", "advgeom.train"]
    assert len(_violations()) == 3


@pytest.mark.parametrize("kind", sorted(registry.KINDS))
def test_each_kind_is_registered_in_its_own_package(kind: str) -> None:
    """A model is registered in models/, an attack in attacks/ ...: a reader finds it by
    folder name, and listing a kind imports one package. (Names that tests register from
    their own modules are not advgeom's and are left out.)"""
    package = registry.KINDS[kind]
    modules = ((n, str(getattr(registry.get(kind, n), "__module__", ""))) for n in registry.names(kind))
    outside = [f"{name} ({module})" for name, module in modules
               if module.startswith("advgeom.") and not module.startswith(package)]
    assert not outside, f"{kind}s registered outside {package}: {', '.join(outside)}"
