"""The dependency rule of docs/architecture.md ("Layers"), checked on every import statement
of the package (those inside functions too): a module imports only from its own layer and the
layers below it, and components and golden models, side by side, never import each other."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FOLDERS = {"hdl": "heterotron.hdl", "sim": "heterotron.sim", "tb": "heterotron.tb",
           "scripts": "heterotron.scripts", "configs": "heterotron.configs"}

#: Layer of each package (longest prefix wins) and what it may import, from the bottom up.
LAYER_OF = {
    "heterotron.hdl.contract": "contract",
    "heterotron.hdl": "components",
    "heterotron.sim.golden": "golden",
    "heterotron.sim.host": "host",
    "heterotron.tb": "testbenches",
    "heterotron.sim.flows": "flows",
    "heterotron.sim.studies": "flows",
    "heterotron.sim.scale": "flows",
    "heterotron.scripts": "cli",
    "heterotron.configs": "data",
}
MAY_IMPORT = {
    "contract": {"contract"},
    "components": {"contract", "components"},
    "golden": {"contract", "golden"},
    "host": {"contract", "host"},
    "testbenches": {"contract", "components", "golden", "host", "testbenches"},
    "flows": {"contract", "components", "golden", "host", "testbenches", "flows"},
    "cli": {"contract", "components", "golden", "host", "testbenches", "flows", "cli"},
    "data": set(),
}


def layer(module: str) -> str | None:
    best = max((p for p in LAYER_OF if module == p or module.startswith(p + ".")), key=len,
               default=None)
    return LAYER_OF[best] if best else None


def modules() -> dict[str, Path]:
    found = {}
    for folder, name in FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            found[".".join([name, *(p for p in parts if p != "__init__")])] = path
    return found


def imports(module: str, path: Path) -> list[tuple[int, str]]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (importlib.util.resolve_name("." * node.level + (node.module or ""), package)
                    if node.level else node.module)
            found.append((node.lineno, base))
            # ``from heterotron.sim import golden`` names a package: judge the submodule.
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names
                      if f"{base}.{a.name}" in ALL]
    return [(line, name) for line, name in found if name.startswith("heterotron.")]


ALL = modules()


def test_every_module_has_a_layer():
    assert [m for m in ALL if layer(m) is None and m.count(".") > 1] == []


@pytest.mark.parametrize("module", sorted(ALL))
def test_imports_go_down_the_layers(module):
    mine = layer(module)
    bad = [f"{ALL[module].relative_to(REPO)}:{line}: {mine} imports {name} ({layer(name)})"
           for line, name in imports(module, ALL[module])
           if layer(name) is not None and layer(name) not in MAY_IMPORT[mine]]
    assert bad == []


def test_the_rule_catches_a_violation(tmp_path):
    """The check is real: a golden model importing a component, or a component importing a
    golden function, is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("from heterotron.hdl.softmax import Softmax\n"
                   "def f():\n    from heterotron.sim.golden import intops\n")
    found = [layer(name) for _, name in imports("heterotron.sim.golden.bad", bad)]
    assert "components" in found and "components" not in MAY_IMPORT["golden"]
    assert "golden" not in MAY_IMPORT["components"]


def test_every_command_module_follows_the_cli_protocol():
    """Each ``scripts/*_cmd.py`` is listed in ``cli.COMMAND_MODULES``, has ``add_commands``,
    and imports neither ``cli`` nor another command module nor a private name of ours
    (what they share lives in ``scripts/common.py``)."""
    from heterotron.scripts import cli

    found = sorted(p.stem for p in (REPO / "scripts").glob("*_cmd.py"))
    assert sorted(cli.COMMAND_MODULES) == found
    for name in found:
        module = f"heterotron.scripts.{name}"
        assert callable(getattr(importlib.import_module(module), "add_commands", None)), name
        tree = ast.parse(ALL[module].read_bytes())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("heterotron"):
                assert node.module != "heterotron.scripts.cli", f"{name} imports cli"
                assert not node.module.endswith("_cmd"), f"{name} imports {node.module}"
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert private == [], f"{name} imports private {private} from {node.module}"
